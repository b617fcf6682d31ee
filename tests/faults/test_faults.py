"""Faults while files keep changing, each ending with DEST equal to SOURCE by
content hash and nothing lost: the peer unreachable, the destination's disk
full, source files that cannot be read or that vanish mid-run.

The containers here are plain LXC records made by ``tandem lxc-hook`` (the way
LXC calls it) on directories of the test: the fault is on the sync path, and
the supervisor, its workers, rsync, ssh and the peer are all real."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until
from tests.faults.churn import Churn
from tests.faults.compare import compare, wait_equal
from tests.orchestrator.test_supervisor import ON, peer_config, rootfs
from tests.serve import Serve, lxc_hook, serve_fixture  # noqa: F401
from tests.sshpeer import running_peer

pytestmark = [pytest.mark.faults, pytest.mark.real]

ARGS = ("--no-docker", "--no-lxd", "--host", "h1")
OUTAGE = 60.0  # the figure: a minute without the peer


def local_config(dest: Path, extra: str = "") -> str:
    return (
        f"heartbeat = 0.5\nrestart_delay = 0.5\n{extra}[defaults]\n"
        f"dest = {json.dumps(str(dest) + '/{host}/{container}/{mount}')}\ndelay = 0.2\n"
    )


def container(s: Serve, tmp_path: Path, name: str, *labels: str) -> Path:
    """A running plain-LXC container NAME (its rootfs, a directory of the test) that
    the supervisor S syncs; returns SOURCE."""
    s.wait_runtime("lxc")  # the hook's record must reach a listening supervisor
    src = rootfs(tmp_path, name)
    lxc_hook(s.state_dir, name, "start-host", src, ON, *labels)
    s.wait_state(name, "running")
    return src


def counters(s: Serve, name: str) -> dict[str, object]:
    """What the API says about worker NAME: state, reason, restarts, lag, counters."""
    worker = httpx.get(f"{s.url()}/workers/{name}", timeout=10).json()
    keys = ("state", "reason", "restarts", "pending", "lag", "last_error")
    return {**{k: worker[k] for k in keys}, **worker["counters"]}


@pytest.mark.ssh
@pytest.mark.timeout(420)
def test_peer_unreachable_for_a_minute_while_files_change(tmp_path: Path, serve) -> None:
    with running_peer() as peer:
        remote = tmp_path / "remote"
        s = serve(peer_config(peer, remote), *ARGS)
        src = container(s, tmp_path, "web")
        dest = remote / "h1" / "web" / "rootfs"
        wait_equal(src, dest, timeout=30)
        with Churn(src, seed=7) as churn:
            time.sleep(2)
            peer.link(False)  # packets dropped, not refused: a hung peer
            time.sleep(OUTAGE)
            during = counters(s, "web")
            peer.link(True)
            time.sleep(2)
        loss = wait_equal(src, dest, timeout=180)
        print(f"outage {OUTAGE:.0f} s, {churn.total} operations {dict(churn.ops)}; during: {during}; {loss}")
        assert loss.lost == 0
        s.alive()


@pytest.mark.timeout(300)
def test_destination_disk_full_then_freed(tmp_path: Path, serve) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tandem-test", str(disk)], check=True, timeout=10
    )
    try:
        s = serve(local_config(disk), *ARGS)
        src = container(s, tmp_path, "web")
        dest = disk / "h1" / "web" / "rootfs"
        wait_equal(src, dest, timeout=30)
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError as err:
            assert err.errno == errno.ENOSPC
        finally:
            os.close(fd)
        with Churn(src, seed=11) as churn:
            time.sleep(15)
            during = counters(s, "web")
        assert not compare(src, dest).equal, "the disk was not full enough to fail a run"
        filler.unlink()
        loss = wait_equal(src, dest, timeout=120)
        print(f"{churn.total} operations on a full disk; during: {during}; {loss}")
        assert loss.lost == 0
        s.alive()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, timeout=10)


NO_READ = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")


@pytest.mark.timeout(120)
def test_unreadable_and_vanishing_files_never_block_the_rest(dirs, start_worker) -> None:
    """A worker that cannot read some files (root without the capabilities that
    override file modes) sends everything else, says which files failed, keeps
    running, and sends them once they can be read; files deleted while a run
    lists them are not an error."""
    src, dst = dirs
    for i in range(50):
        (src / f"ok{i}").write_text(f"ok {i}")
    locked = [src / "locked", src / "sub" / "locked"]
    for path in locked:
        path.parent.mkdir(exist_ok=True)
        path.write_text("secret until chmod")
        path.chmod(0)
    worker = start_worker(src, dst, "--delay", "0.2", wrap=NO_READ)
    wait_until(lambda: (dst / "ok49").exists(), timeout=20, what="the readable files")
    # Changes keep flowing while the locked files fail.
    for i in range(20):
        (src / f"later{i}").write_text(f"later {i}")
        wait_until(lambda i=i: (dst / f"later{i}").exists(), timeout=15, what=f"later{i} during the failures")
    assert worker.proc.poll() is None, worker.err()
    assert b"locked" in worker.stderr, "the failing file is not named"
    assert not (dst / "locked").exists()
    # Vanishing files: made and deleted as fast as possible while runs go on.
    for i in range(300):
        path = src / f"blink{i}"
        path.write_bytes(os.urandom(1000))
        path.unlink()
    for path in locked:
        path.chmod(0o644)  # no other event: the chmod, or the retries, bring it across
    loss = wait_equal(src, dst, timeout=60)
    assert loss.lost == 0
    assert worker.proc.poll() is None, worker.err()
