"""Trust boundaries of destinations (issue 15): a destination is checked as a
resolved path, without following links, on both hosts; one container's
destination can never be another's; what tandem makes on DEST's path is closed
to other users.

Real components only: ``tandem sync`` with real rsync, local and on a real ssh
peer (tests/sshpeer.py), and a real ``tandem serve`` fed by its LXC hook.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import WorkerProc, tree, wait_until
from tests.faults.compare import digest
from tests.faults.test_hostile import Canary
from tests.orchestrator.test_api import api
from tests.orchestrator.test_supervisor import ON, args, config, dest, peer_config, rootfs
from tests.serve import Serve, lxc_hook, serve_fixture  # noqa: F401
from tests.sshpeer import running_peer

pytestmark = [pytest.mark.faults, pytest.mark.real]

KINDS = ["local", pytest.param("ssh", marks=pytest.mark.ssh)]


@contextlib.contextmanager
def dest_for(kind: str) -> Iterator[tuple[Callable[[Path], str], tuple[str, ...]]]:
    """(a function naming a directory as DEST, the worker's extra arguments)."""
    if kind == "local":
        yield str, ()
        return
    with running_peer() as peer:
        yield peer.dest, ("--rsh", peer.rsh)


def replicate(start_worker: Callable[..., WorkerProc], src: Path, dest: str, *extra: str) -> None:
    """One ``tandem sync --only-initial-sync`` run of SRC to DEST."""
    worker = start_worker(src, dest, "--only-initial-sync", *extra)
    assert worker.wait(60) == 0, worker.err()


# -- 1. a destination through a symlink tandem replicated itself ----------------------------------


@pytest.mark.parametrize("policy", ["remote", "local"])
@pytest.mark.parametrize("kind", KINDS)
def test_dest_through_a_replicated_symlink_is_refused(
    kind: str, policy: str, tmp_path: Path, start_worker: Callable[..., WorkerProc]
) -> None:
    """Container A's volume holds ``x -> host dir``; tandem copies it, as a symlink,
    into A's replica. B's DEST names ``A's replica/x``: the worker refuses it
    before writing anything, so the host directory is neither pulled into B's
    volume (remote) nor overwritten and moved to a backup (local)."""
    canary = Canary(tmp_path)
    src_a, src_b = tmp_path / "a", tmp_path / "b"
    src_a.mkdir()
    src_b.mkdir()
    os.symlink(canary.dir, src_a / "x")
    (src_b / "secret").write_text("b's own file, other content\n")
    (src_b / "only-b").write_text("b\n")
    before_b = digest(src_b)
    replica_a = tmp_path / "root" / "h1" / "a" / "rootfs"
    replica_a.parent.mkdir(parents=True)
    with dest_for(kind) as (name, extra):
        replicate(start_worker, src_a, name(replica_a), *extra)
        assert (replica_a / "x").is_symlink(), "tandem replicates the container's symlink as one"
        worker = start_worker(
            src_b,
            name(replica_a / "x"),
            "--only-initial-sync",
            "--split-brain",
            policy,
            "--snapshot-file",
            str(tmp_path / "b.snap"),
            *extra,
        )
        code = worker.wait(60)
    canary.untouched()
    canary.nowhere_in(src_b)
    assert digest(src_b) == before_b
    assert code == 2, worker.err()
    assert "'x' on its path is a symbolic link" in worker.err()


@pytest.mark.parametrize("kind", KINDS)
def test_dest_below_a_symlinked_directory_is_refused(
    kind: str, tmp_path: Path, start_worker: Callable[..., WorkerProc]
) -> None:
    """A link higher up (DEST = link/deeper/path, not there yet): nothing is made
    through it, the worker refuses at start."""
    canary = Canary(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f\n")
    os.symlink(canary.dir, tmp_path / "link")
    with dest_for(kind) as (name, extra):
        # --mkpath as the supervisor gave it before: it made the path through the link
        worker = start_worker(
            src,
            name(tmp_path / "link" / "deeper" / "dst"),
            "--only-initial-sync",
            "--rsync-arg=--mkpath",
            *extra,
        )
        code = worker.wait(60)
    canary.untouched()
    assert code == 2, worker.err()
    assert "'link' on its path is a symbolic link" in worker.err()


# -- 7. setuid files and device nodes: the directories on the way are closed ----------------------


def special_tree(src: Path) -> None:
    """A setuid binary and a device node, as in a root filesystem."""
    (src / "bin").mkdir()
    tool = src / "bin" / "tool"
    tool.write_bytes(b"#!/bin/sh\n")
    tool.chmod(0o4755)
    (src / "dev").mkdir()
    os.mknod(src / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))


@pytest.mark.parametrize("kind", KINDS)
def test_made_directories_are_closed_to_other_users(
    kind: str, tmp_path: Path, start_worker: Callable[..., WorkerProc]
) -> None:
    """DEST's missing directories are made 0700 by the worker (not by rsync's
    --mkpath: 0755, through links); the setuid file and the device node arrive
    as they are, behind them."""
    src = tmp_path / "src"
    src.mkdir()
    special_tree(src)
    base = tmp_path / "replicas"
    base.mkdir(mode=0o755)
    dst = base / "h1" / "c1" / "rootfs"
    with dest_for(kind) as (name, extra):
        replicate(start_worker, src, name(dst), "--rsync-arg=--mkpath", *extra)  # as serve gave it
    for made in (base / "h1", base / "h1" / "c1"):  # DEST itself takes SOURCE's mode, as a replica
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    assert stat.S_IMODE((dst / "bin" / "tool").stat().st_mode) == 0o4755
    assert stat.S_ISCHR((dst / "dev" / "null").lstat().st_mode)


@pytest.mark.parametrize("kind", KINDS)
def test_a_dest_every_user_can_reach_is_warned_about(
    kind: str, tmp_path: Path, start_worker: Callable[..., WorkerProc]
) -> None:
    """Every directory on DEST's path is o+x (made so by the operator): the worker
    says so at start; behind a closed directory it does not."""
    src = tmp_path / "src"
    src.mkdir()
    special_tree(src)
    base = Path(tempfile.mkdtemp(prefix="tandem-open-", dir="/tmp"))  # pytest's tmp is 0700
    try:
        base.chmod(0o755)
        (base / "dst").mkdir(mode=0o755)
        with dest_for(kind) as (name, extra):
            worker = start_worker(src, name(base / "dst"), "--only-initial-sync", *extra)
            assert worker.wait(60) == 0, worker.err()
            assert "is reachable by every user" in worker.err()
            closed = start_worker(src, name(tmp_path / "dst"), "--only-initial-sync", *extra)
            assert closed.wait(60) == 0, closed.err()
            assert "reachable by every user" not in closed.err()
    finally:
        shutil.rmtree(base)


# -- the supervisor: labels and API overrides ----------------------------------------------------


def roots_config(tmp_path: Path) -> str:
    """Every container to tmp/dest/{host}/{container}/{mount}; labels and the API
    may choose only below tmp/dest."""
    return config(tmp_path, f'dest_roots = ["{tmp_path}/dest"]')


def test_serve_refuses_a_label_dest_through_a_replicated_symlink(tmp_path: Path, serve) -> None:
    """The issue's case through ``tandem serve`` and its LXC hook: container a's
    rootfs holds ``x -> host dir``, replicated as a symlink; b's label (and then an
    API override) names a's replica/x, under dest_roots as text. b fails with the
    reason; the host directory is neither read into b nor written."""
    canary = Canary(tmp_path)
    s = serve(roots_config(tmp_path), *args())
    s.wait_runtime("lxc")
    root_a = rootfs(tmp_path, "a")
    os.symlink(canary.dir, root_a / "x")
    lxc_hook(s.state_dir, "a", "start-host", root_a, ON, "tandem.delay=0.2")
    replica = dest(tmp_path, "a")
    wait_until(lambda: (replica / "x").is_symlink(), 15, "a's symlink replicated")
    root_b = rootfs(tmp_path, "b")
    (root_b / "secret").write_text("b's own\n")
    before = digest(root_b)
    lxc_hook(
        s.state_dir, "b", "start-host", root_b, ON, f"tandem.dest={replica}/x", "tandem.split-brain=remote"
    )
    reason = s.wait_state("b", "failed")["reason"]
    assert "'x' on its path is a symbolic link" in reason, reason
    with api(s) as client:
        body = {"dest": f"{replica}/x/{{container}}", "split-brain": "local"}
        put = client.put("/containers/b/policy", json=body)
        assert put.status_code == 422 and "symbolic link" in put.json()["detail"], put.text
    canary.untouched()
    canary.nowhere_in(root_b)
    assert digest(root_b) == before
    s.alive()


def test_a_container_cannot_take_another_containers_place(tmp_path: Path, serve) -> None:
    """Under dest_roots, labels naming a's replica (as it is, below it, or built
    from a container named like a's host part) and an API override doing the
    same are refused with the reason, also once a has stopped (a known spec);
    a's replica is untouched, nothing is pulled into the others."""
    s = serve(roots_config(tmp_path), *args())
    s.wait_runtime("lxc")
    root_a = rootfs(tmp_path, "a")
    (root_a / "data").write_text("a's data\n")
    lxc_hook(s.state_dir, "a", "start-host", root_a, ON, "tandem.delay=0.2")
    replica = dest(tmp_path, "a")
    wait_until(lambda: tree(replica) == tree(root_a), 15, "a synced")
    kept = digest(replica)
    top = tmp_path / "dest"
    cases = {
        "b": (f"tandem.dest={replica}", "must keep {container}"),
        "c": (f"tandem.dest={replica}/{{container}}", "overlaps a's destination"),
        "h1": (f"tandem.dest={top}/{{container}}/a/{{mount}}", "is a's destination"),
    }
    roots = {}
    for name, (label, _words) in cases.items():
        roots[name] = rootfs(tmp_path, name)
        (roots[name] / "data").write_text(f"{name}'s data\n")
        lxc_hook(s.state_dir, name, "start-host", roots[name], ON, label, "tandem.split-brain=local")
    for name, (_label, words) in cases.items():
        reason = s.wait_state(name, "failed")["reason"]
        assert words in reason, (name, reason)
    lxc_hook(s.state_dir, "e", "start-host", rootfs(tmp_path, "e"), ON)
    s.wait_state("e", "running")
    with api(s) as client:
        put = client.put("/containers/e/policy", json={"dest": f"{replica}/{{container}}"})
        assert put.status_code == 422 and "overlaps a's destination" in put.json()["detail"], put.text
    lxc_hook(s.state_dir, "a", "post-stop")
    s.wait_state("a", "stopped")
    lxc_hook(s.state_dir, "h1", "start-host", roots["h1"], ON, cases["h1"][0], "tandem.split-brain=local")
    wait_until(lambda: "is a's destination" in s.worker("h1").get("reason", ""), 15, "h1 refused again")
    assert s.worker("h1")["state"] == "failed"
    assert digest(replica) == kept
    for name, root in roots.items():
        assert (root / "data").read_text() == f"{name}'s data\n"
    s.alive()


@pytest.mark.ssh
def test_serve_over_ssh_refuses_a_dest_through_a_replicated_symlink_on_the_peer(
    tmp_path: Path, serve
) -> None:
    """The same on an ssh peer, after a supervisor restart that forgot a (so no
    overlap check can help): b's worker walks its DEST on the peer, finds the
    symlink tandem replicated there, and fails before writing; the peer's host
    directory is neither read into b nor written."""
    canary = Canary(tmp_path)
    remote = tmp_path / "remote"
    with running_peer() as peer:
        settings = peer_config(peer, remote, f"dest_roots = [{json.dumps(peer.dest(remote))}]\n")
        first = serve(settings, *args())
        first.wait_runtime("lxc")
        root_a = rootfs(tmp_path, "a")
        os.symlink(canary.dir, root_a / "x")
        lxc_hook(first.state_dir, "a", "start-host", root_a, ON)
        replica = remote / "h1" / "a" / "rootfs"
        wait_until(lambda: (replica / "x").is_symlink(), 30, "a's symlink replicated on the peer")
        lxc_hook(first.state_dir, "a", "post-stop")
        first.wait_state("a", "stopped")
        assert first.stop() == 0
        second = serve(settings, *args())
        second.wait_runtime("lxc")
        root_b = rootfs(tmp_path, "b")
        (root_b / "secret").write_text("b's own\n")
        before = digest(root_b)
        label = f"tandem.dest={peer.dest(replica / 'x')}/{{container}}"
        lxc_hook(second.state_dir, "b", "start-host", root_b, ON, label, "tandem.split-brain=remote")
        reason = second.wait_state("b", "failed", timeout=60)["reason"]
        assert "on the peer: 'x' on its path is a symbolic link" in reason, reason
    canary.untouched()
    canary.nowhere_in(root_b)
    assert digest(root_b) == before
