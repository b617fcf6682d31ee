"""Hostile input (issue 7): what a container, a label, the config file or an API
caller can put in tandem's way must never make it read or write outside the
container's trees, crash it, or lose data.

- Links: a real ``tandem serve`` and a real Docker container whose volume holds
  symlinks to host paths (/etc, ``../..`` chains, a host canary directory), a
  symlinked directory, loops and hard links, with traps at DEST too (a symlink
  where SOURCE has a directory, before a first start and in a split-brain scan).
- Names: ``tandem sync`` with real inotify and rsync, local and ssh DEST: new
  lines, tabs, leading dashes, bytes that are not UTF-8, 255-byte names, paths
  of ~4090 bytes below SOURCE (longer than PATH_MAX as absolute paths), before
  the start and while running, and a rename of a directory holding them.
- Values: bad, huge and path-climbing labels, config values and API payloads
  are refused with a clear one-line reason, and nothing changes.
- Fuzz (hypothesis): labels -> policy -> worker spec, and settings loading.

Every scenario that syncs ends with DEST equal to SOURCE by content hash and 0
lost (tests/faults/compare.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from docker.models.containers import Container as DockerContainer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.policy import LABEL_KEYS, PolicyError, from_labels, plan
from orchestrator.runtimes import Container, Mount
from orchestrator.settings import MAX_TEXT, ConfigError, ContainerPolicy, Settings, load
from tests.conftest import ROOT, WorkerProc, wait_until
from tests.dockerd import DockerDaemon, dockerd_fixture, fresh_docker_fixture  # noqa: F401
from tests.faults.compare import digest, wait_equal
from tests.serve import Serve, serve_fixture  # noqa: F401
from tests.sshpeer import running_peer

pytestmark = [pytest.mark.faults]

ON = {"tandem.enable": "true", "tandem.delay": "0.2"}
PATH_MAX = 4096
DEEP = 4090  # bytes of a deep path below SOURCE: under rsync's 4096, over PATH_MAX once absolute
LEAF = 40  # bytes of the file name at its end


# -- helpers: canaries, trees with any bytes in their names -------------------------------------------


class Canary:
    """A host directory outside every tree, with a file holding a unique token:
    its content must never show up in a synced tree, and nothing may change it."""

    def __init__(self, where: Path) -> None:
        self.dir = where / "canary"
        self.dir.mkdir()
        self.token = secrets.token_hex(16).encode()
        (self.dir / "secret").write_bytes(b"host secret " + self.token + b"\n")
        (self.dir / "sub").mkdir()
        (self.dir / "sub" / "inner").write_bytes(b"inner " + self.token + b"\n")
        self.before = self.state()

    def state(self) -> tuple[dict[bytes, tuple[object, ...]], list[int]]:
        """Content and every mtime/ctime of the canary tree."""
        times = []
        for dirpath, dirnames, filenames in os.walk(self.dir):
            for name in ["", *dirnames, *filenames]:
                st_ = os.lstat(os.path.join(dirpath, name))
                times += [st_.st_mtime_ns, st_.st_ctime_ns]
        return digest(self.dir), times

    def untouched(self) -> None:
        assert self.state() == self.before, "something wrote into the canary directory outside the tree"

    def nowhere_in(self, *roots: Path) -> None:
        """No regular file below ROOTS (symlinks not followed) holds the token, or
        is a copy of this host's /etc/passwd: nothing outside was read into them."""
        passwd = Path("/etc/passwd").read_bytes()
        for root in roots:
            for path, data in _files(root):
                assert self.token not in data, f"canary content read into {path!r}"
                assert not (passwd and data == passwd), f"host /etc/passwd read into {path!r}"


def _files(root: Path) -> Iterator[tuple[bytes, bytes]]:
    for dirpath, _dirs, filenames, dirfd in os.fwalk(os.fsencode(root), follow_symlinks=False):
        for name in filenames:
            st_ = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISREG(st_.st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dirfd)
                with os.fdopen(fd, "rb") as handle:
                    yield os.path.join(dirpath, name), handle.read()


def deep_parts(tag: bytes, length: int = DEEP, leaf: int = LEAF) -> list[bytes]:
    """Names of directories and a final LEAF-byte file whose joined path is LENGTH
    bytes; directory names of up to the 255-byte maximum, each starting with TAG."""
    chain = length - leaf - 1  # the directories, joined
    count = -(-(chain + 1) // 256)  # names of <= 255 bytes plus their slashes
    base, extra = divmod(chain - (count - 1), count)
    sizes = [base + (i < extra) for i in range(count)]
    parts = [(tag + b"%02d-" % i + b"d" * 255)[:size] for i, size in enumerate(sizes)]
    parts.append((tag + b"-leaf-" + b"f" * 255)[:leaf])
    assert len(b"/".join(parts)) == length and max(map(len, parts)) <= 255
    return parts


def write_at(root: Path, parts: list[bytes], content: bytes) -> None:
    """Make ROOT/PARTS (directories, then a file) through directory fds: works
    whatever the absolute length."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=fd)
            step = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = step
        out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd)
        try:
            os.write(out, content)
        finally:
            os.close(out)
    finally:
        os.close(fd)


# Every byte but NUL and '/' is legal in a name.
ODD = [
    b"new\nline",
    b"\nleading newline",
    b"trailing newline\n",
    b"tab\there",
    b"-dash",
    b"--delete",
    b"-e sh -c 'touch pwned'",
    b"\xff\xfe not utf-8",
    b"caf\xe9 latin-1",
    b"x" * 255,
    "\u2603".encode() * 85,  # 255 bytes of snowmen
    b" leading and trailing space ",
    b"back\\slash",
    b"*?[glob]{a,b}",
    b"$(touch pwned)`id`",
    b"quote'double\"",
    b"\x01\x1b[31mescape\x7f",
    b".hidden",
    b"..dots",
]


def tagged(name: bytes, tag: bytes) -> bytes:
    """NAME.TAG, cut to the 255-byte maximum of a name."""
    return name[: 255 - len(tag) - 1] + b"." + tag


def odd_tree(root: Path, tag: bytes) -> None:
    """Files and directories with every odd name, a file inside each directory."""
    top = os.fsencode(root)
    os.makedirs(os.path.join(top, b"odd-" + tag), exist_ok=True)
    for i, name in enumerate(ODD):
        with open(os.path.join(top, tagged(name, tag)), "wb") as f:
            f.write(b"file %d %s\n" % (i, tag))
        folder = os.path.join(top, b"odd-" + tag, name)
        os.mkdir(folder)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"inside %d %s\n" % (i, tag))
    write_at(root, deep_parts(b"deep-" + tag), b"deep content " + tag)


def links_tree(root: Path, canary: Canary) -> None:
    """Symlinks out of the tree, loops and hard links (made on the host side)."""
    (root / "links").mkdir()
    os.symlink("/etc", root / "links" / "etc-abs")
    os.symlink("/etc/passwd", root / "links" / "passwd-abs")
    os.symlink("../" * 12 + "etc/passwd", root / "links" / "up-passwd")
    os.symlink(canary.dir, root / "links" / "canary-dir")
    os.symlink(canary.dir / "secret", root / "links" / "canary-file")
    os.symlink("loop-b", root / "links" / "loop-a")
    os.symlink("loop-a", root / "links" / "loop-b")
    os.symlink("self", root / "links" / "self")
    (root / "links" / "hard1").write_text("hard linked\n")
    os.link(root / "links" / "hard1", root / "links" / "hard2")


def assert_no_loss(source: Path, dest: Path, timeout: float = 30.0) -> None:
    """DEST equals SOURCE by content hash, with 0 lost."""
    loss = wait_equal(source, dest, timeout)
    assert loss.lost == 0 and loss.equal, str(loss)


def degraded(worker: WorkerProc, timeout: float = 5.0) -> str:
    """The worker's first non-empty ``degraded`` status (waited for)."""

    def first() -> str:
        return next((str(line["degraded"]) for line in worker.lines if line.get("degraded")), "")

    with contextlib.suppress(AssertionError):
        wait_until(first, timeout, "a degraded status")
    return first()


# -- 1. links, with a real container -----------------------------------------------------------------


def serve_docker(tmp_path: Path, serve: Callable[..., Serve], daemon: DockerDaemon) -> Serve:
    conf = f"""
heartbeat = 0.5
heartbeat_timeout = 5
restart_delay = 0.2
dest_roots = ["{tmp_path}/dest"]
[defaults]
dest = "{tmp_path}/dest/{{host}}/{{container}}/{{mount}}"
"""
    s: Serve = serve(conf, "--no-lxd", "--host", "h1", env={"DOCKER_HOST": daemon.host})
    s.wait_runtime("docker")
    return s


def dest_of(tmp_path: Path, container: str, mount: str = "data") -> Path:
    return tmp_path / "dest" / "h1" / container / mount


def sh(container: DockerContainer, script: str) -> None:
    """Run SCRIPT with the container's sh; fail unless it exits 0."""
    code, output = container.exec_run(["sh", "-c", script])
    assert code == 0, f"{script!r} in {container.name} exited {code}: {output!r}"


def prepare_volume(daemon: DockerDaemon, name: str, script: str) -> None:
    """Fill volume NAME from inside a container (one that is not synced)."""
    prep = daemon.run(f"prep-{name}", volumes=[f"{name}:/data"], command=("sh", "-c", f"set -e; {script}"))
    result = prep.wait(timeout=30)
    logs = prep.logs()
    prep.remove(force=True)
    assert result["StatusCode"] == 0, logs


# Run inside the container: busybox has ln as an applet only.
LINKS_SCRIPT = """
cd /data
mkdir -p sub/deeper
echo inside > sub/deeper/file
busybox ln -s /etc etc-abs
busybox ln -s /etc/passwd passwd-abs
busybox ln -s ../../../../../../../../etc up-etc
busybox ln -s ../../../../../../../../../etc/passwd sub/deeper/up-passwd
busybox ln -s {canary} host-canary
busybox ln -s {canary}/secret host-secret
busybox ln -s loop-b loop-a
busybox ln -s loop-a loop-b
busybox ln -s self self
busybox ln -s . dot
busybox ln -s .. dotdot
busybox ln -s nowhere dangling
echo linked > h1
busybox ln h1 h2
busybox ln h1 sub/h3
"""


@pytest.mark.real
@pytest.mark.docker
def test_container_links_never_lead_outside(
    tmp_path: Path, serve: Callable[..., Serve], fresh_docker: DockerDaemon
) -> None:
    """Symlinks to host paths, ../ chains, a symlinked directory out of the tree,
    loops and hard links made inside a container, before its start and live, plus
    a directory swapped for a symlink to /etc within a batch and a symlink planted
    at DEST where SOURCE has a directory: they arrive as symlinks with the same
    targets, nothing outside is read or written, 0 lost."""
    canary = Canary(tmp_path)
    prepare_volume(fresh_docker, "trapdata", LINKS_SCRIPT.format(canary=canary.dir))
    s = serve_docker(tmp_path, serve, fresh_docker)
    trap = fresh_docker.run("trap", volumes=["trapdata:/data"], labels=ON)
    s.wait_state("trap", "running")
    src, dst = fresh_docker.volume("trapdata"), dest_of(tmp_path, "trap")
    assert_no_loss(src, dst)
    for name, target in [
        ("etc-abs", "/etc"),
        ("up-etc", "../../../../../../../../etc"),
        ("host-canary", str(canary.dir)),
        ("loop-a", "loop-b"),
        ("self", "self"),
        ("dotdot", ".."),
    ]:
        assert (dst / name).is_symlink() and os.readlink(dst / name) == target, name
    assert (dst / "h2").read_text() == "linked\n" and (dst / "sub" / "h3").read_text() == "linked\n"

    # Live: new links, and directories swapped for symlinks out of the tree after
    # their content was written (the batch must not read through them).
    sh(
        trap,
        f"""set -e; cd /data
        busybox ln -s /etc live-etc
        busybox ln -s {canary.dir} live-canary
        mkdir swap; echo mine > swap/passwd; rm -r swap; busybox ln -s /etc swap
        mkdir swap2; echo mine > swap2/secret; mv swap2 swap2-real; busybox ln -s {canary.dir} swap2
        busybox ln h1 live-hard
        mkdir live-dir; busybox ln -s ../../../.. live-dir/up""",
    )
    assert_no_loss(src, dst)
    assert os.readlink(dst / "swap") == "/etc" and os.readlink(dst / "swap2") == str(canary.dir)

    # DEST-side trap: a synced directory replaced at DEST by a symlink to the canary;
    # the next changes below it must replace the symlink, never write through it.
    shutil.rmtree(dst / "sub")
    os.symlink(canary.dir, dst / "sub")
    sh(trap, "set -e; echo new > /data/sub/new; echo deeper > /data/sub/deeper/new2")
    wait_until(lambda: (dst / "sub" / "new").exists() or not (dst / "sub").is_symlink(), 15, "sub sent")
    canary.untouched()
    with httpx.Client(base_url=s.url(), timeout=10) as client:
        client.post("/workers/trap/resync").raise_for_status()  # DEST was changed behind tandem's back
    assert_no_loss(src, dst)
    assert not (dst / "sub").is_symlink()
    canary.untouched()
    canary.nowhere_in(src, dst)
    trap.stop(timeout=10)
    s.wait_state("trap", "stopped")
    assert_no_loss(src, dst, timeout=1)


@pytest.mark.real
@pytest.mark.docker
def test_split_brain_scan_never_reads_outside(
    tmp_path: Path, serve: Callable[..., Serve], fresh_docker: DockerDaemon
) -> None:
    """A DEST that already holds data is resolved by a scan of both sides. Traps:
    DEST has symlinks to the canary where SOURCE has a directory and a file, and
    one of its own (SOURCE wins: 'local'); then the synced container restarts
    after DEST was replaced by such links (the ancestor says only DEST changed:
    its links come back to SOURCE as links). The canary is never read or
    written; 0 lost."""
    canary = Canary(tmp_path)
    script = f"mkdir -p /data/sub; echo mine > /data/sub/f; echo top > /data/file; {LINKS_SCRIPT}"
    prepare_volume(fresh_docker, "localdata", script.format(canary=canary.dir))
    at_dest = dest_of(tmp_path, "sblocal")
    at_dest.mkdir(parents=True)
    os.symlink(canary.dir, at_dest / "sub")
    os.symlink(canary.dir / "secret", at_dest / "file")
    os.symlink(canary.dir, at_dest / "dest-only")

    s = serve_docker(tmp_path, serve, fresh_docker)
    local = fresh_docker.run(
        "sblocal", volumes=["localdata:/data"], labels={**ON, "tandem.split-brain": "local"}
    )
    s.wait_state("sblocal", "running")
    src = fresh_docker.volume("localdata")
    assert_no_loss(src, at_dest)
    assert (at_dest / "sub").is_dir() and not (at_dest / "sub").is_symlink()
    assert (at_dest / "sub" / "deeper" / "file").read_text() == "inside\n"
    canary.untouched()
    canary.nowhere_in(src, at_dest)

    local.stop(timeout=10)
    s.wait_state("sblocal", "stopped")
    shutil.rmtree(at_dest / "sub")
    os.symlink(canary.dir, at_dest / "sub")
    (at_dest / "file").unlink()
    os.symlink(canary.dir / "sub", at_dest / "file")
    local.start()
    s.wait_state("sblocal", "running")
    assert_no_loss(src, at_dest)
    assert os.readlink(src / "sub") == str(canary.dir) and os.readlink(src / "file") == str(
        canary.dir / "sub"
    )
    canary.untouched()
    canary.nowhere_in(src, at_dest)


@pytest.mark.real
@pytest.mark.docker
def test_split_brain_pull_through_a_symlinked_source_dir(
    tmp_path: Path, serve: Callable[..., Serve], fresh_docker: DockerDaemon
) -> None:
    """SOURCE has a symlink to the canary where DEST has a directory with files,
    and DEST wins ('remote'): the directory and everything in it come to SOURCE
    (the symlink is replaced, never written through), and DEST keeps it all."""
    canary = Canary(tmp_path)
    prepare_volume(fresh_docker, "remotedata", f"busybox ln -s {canary.dir} /data/trapdir; echo x > /data/x")
    at_dest = dest_of(tmp_path, "sbremote")
    (at_dest / "trapdir" / "nested").mkdir(parents=True)
    (at_dest / "trapdir" / "payload").write_text("from the peer\n")
    (at_dest / "trapdir" / "nested" / "more").write_text("more from the peer\n")
    winner = digest(at_dest)

    s = serve_docker(tmp_path, serve, fresh_docker)
    fresh_docker.run("sbremote", volumes=["remotedata:/data"], labels={**ON, "tandem.split-brain": "remote"})
    s.wait_state("sbremote", "running")
    src = fresh_docker.volume("remotedata")
    assert_no_loss(src, at_dest)
    canary.untouched()
    canary.nowhere_in(src, at_dest)
    assert digest(at_dest) == winner, "the winning side lost files"
    assert digest(src) == winner


# -- 2. odd names, long paths, links: tandem sync, local and ssh DEST --------------------------------


@contextlib.contextmanager
def destination(kind: str, tmp_path: Path) -> Iterator[tuple[str, Path, tuple[str, ...]]]:
    """(DEST argument, the directory it is, extra worker arguments) for a local
    DEST or one on a real ssh peer (which shares this filesystem)."""
    dst = tmp_path / "dst"
    dst.mkdir()
    if kind == "local":
        yield str(dst), dst, ()
        return
    with running_peer() as peer:
        yield peer.dest(dst), dst, ("--rsh", peer.rsh)


@pytest.mark.real
@pytest.mark.parametrize("kind", ["local", pytest.param("ssh", marks=pytest.mark.ssh)])
def test_odd_names_long_paths_and_links(
    kind: str, tmp_path: Path, start_worker: Callable[..., WorkerProc]
) -> None:
    """Every odd name, 255-byte names, a ~4090-byte path below SOURCE (longer than
    PATH_MAX as an absolute path) and links out of the tree, made before the start
    (initial sync) and while running (live events, a deep tree moved in), then a
    directory holding them renamed; a symlink planted at DEST where SOURCE has a
    directory is replaced, never written through. DEST equals SOURCE, 0 lost."""
    src = tmp_path / "src"
    src.mkdir()
    canary = Canary(tmp_path)
    odd_tree(src, b"before")
    links_tree(src, canary)
    deepest = len(os.fsencode(src)) + 1 + DEEP - LEAF - 1
    assert deepest > PATH_MAX, "the deep directories must be longer than PATH_MAX as absolute paths"
    with destination(kind, tmp_path) as (dest, dst, extra):
        os.symlink(canary.dir, dst / "odd-before")  # DEST-side trap where SOURCE has a directory
        worker = start_worker(src, dest, "--delay", "0.1", *extra)
        worker.wait_running(30)
        assert_no_loss(src, dst)
        assert "no inotify watch" in degraded(worker)  # the deep part is rescanned, not watched

        odd_tree(src, b"live")  # new names (and a new deep tree below SOURCE) while running
        top = os.fsencode(src)
        for name in ODD[:6]:
            with open(os.path.join(top, b"odd-before", name, name), "ab") as f:
                f.write(b"appended live\n")
        os.unlink(os.path.join(top, tagged(ODD[7], b"before")))
        stage = tmp_path / "stage"
        stage.mkdir()
        write_at(stage, [b"moved-in", *deep_parts(b"moved", DEEP - len(b"moved-in/"))], b"moved in whole")
        os.rename(stage / "moved-in", src / "moved-in")
        assert_no_loss(src, dst)

        # A 255-byte name in the deepest directory that still has a watch: the path of its
        # event is longer than PATH_MAX (no new deep directory now, so no rescan covers it).
        parts = deep_parts(b"deep-before")
        base = len(os.fsencode(src)) + 1
        k = max(i for i in range(len(parts)) if base + len(b"/".join(parts[:i])) < PATH_MAX)
        assert base + len(b"/".join(parts[:k])) + 256 > PATH_MAX
        write_at(src, [*parts[:k], b"L" * 255], b"a long name in a watched directory")
        assert_no_loss(src, dst)

        os.rename(os.path.join(top, b"odd-before"), os.path.join(top, b"renamed\nwith \xff odd names"))
        os.rename(os.path.join(top, b"odd-live"), os.path.join(top, b"-renamed live"))
        assert_no_loss(src, dst)
        assert worker.stop() == 0, worker.err()
    assert_no_loss(src, dst, timeout=1)
    canary.untouched()
    canary.nowhere_in(src, dst)


@pytest.mark.real
def test_changes_deep_below_path_max_arrive_by_rescan(
    dirs: tuple[Path, Path], start_worker: Callable[..., WorkerProc]
) -> None:
    """A directory beyond PATH_MAX cannot get an inotify watch (inotify takes
    paths): the worker says so (degraded) and its rescans send what changes
    there; nothing is lost."""
    src, dst = dirs
    parts = deep_parts(b"deep")
    write_at(src, parts, b"v1")
    worker = start_worker(src, dst, "--delay", "0.1", "--rescan-interval", "1")
    worker.wait_running()
    assert_no_loss(src, dst)
    assert "no inotify watch" in degraded(worker)
    write_at(src, parts, b"v2, longer")
    write_at(src, [*parts[:-1], b"another file"], b"new")
    assert_no_loss(src, dst, timeout=15)
    assert worker.stop() == 0, worker.err()


@pytest.mark.real
def test_write_through_one_hard_link_reaches_the_others(
    dirs: tuple[Path, Path], start_worker: Callable[..., WorkerProc]
) -> None:
    """Hard links inside SOURCE, one of them written to while running: every
    name at DEST gets the new content."""
    src, dst = dirs
    (src / "sub").mkdir()
    (src / "h1").write_text("one\n")
    os.link(src / "h1", src / "h2")
    os.link(src / "h1", src / "sub" / "h3")
    worker = start_worker(src, dst, "--delay", "0.1")
    worker.wait_running()
    assert_no_loss(src, dst)
    with open(src / "h1", "a") as f:
        f.write("two\n")
    try:
        assert_no_loss(src, dst, timeout=3)
        # A link made while running (its partner was a plain file at the scan), then
        # a write through the old name: a full scan learns the pair, both arrive.
        (src / "solo").write_text("solo\n")
        assert_no_loss(src, dst, timeout=5)
        os.link(src / "solo", src / "sub" / "partner")
        assert_no_loss(src, dst, timeout=5)
        with open(src / "solo", "a") as f:
            f.write("more\n")
        assert_no_loss(src, dst, timeout=5)
        # A write through one name, then that name's folder deleted within the
        # batch window: the other names still carry the write (found by the soak).
        with open(src / "sub" / "h3", "a") as f:
            f.write("three\n")
        shutil.rmtree(src / "sub")
        assert_no_loss(src, dst, timeout=5)
    finally:
        worker.stop()


# -- 3. bad, huge and climbing values: labels, config file, API --------------------------------------

HUGE = 200_000  # bytes of a label value


def bad_labels(tmp_path: Path) -> dict[str, tuple[dict[str, str], str]]:
    """container -> (its labels, words its reason must hold)."""
    return {
        "enable-maybe": ({"tandem.enable": "maybe"}, "tandem.enable"),
        "delay-negative": ({**ON, "tandem.delay": "-1"}, "greater than or equal to 0"),
        "delay-overflow": ({**ON, "tandem.delay": "1e309"}, "finite number"),
        "delay-nan": ({**ON, "tandem.delay": "nan"}, "finite number"),
        "maxlag-inf": ({**ON, "tandem.max-lag": "inf"}, "finite number"),
        "sb-bogus": ({**ON, "tandem.split-brain": "bogus"}, "'newest', 'local'"),
        "regex-bad": ({**ON, "tandem.exclude": "("}, "bad regex"),
        "regex-overflow": ({**ON, "tandem.exclude": "a{4294967296}"}, "repetition number is too large"),
        "regex-deep": ({**ON, "tandem.exclude": "(" * 1200 + ")" * 1200}, "bad regex"),
        "json-deep": ({**ON, "tandem.exclude": "[" * HUGE}, "nested too deeply"),
        "huge-dest": ({**ON, "tandem.dest": "/" + "d" * HUGE}, "at most 4096 characters"),
        "huge-exclude": ({**ON, "tandem.exclude": "a," * (HUGE // 2)}, "at most 1024 items"),
        "huge-key": ({**ON, "tandem." + "k" * HUGE: "1"}, "unknown label"),
        "paths-climb": ({**ON, "tandem.paths": "/../../etc"}, "'..' is not allowed"),
        "paths-data-climb": ({**ON, "tandem.paths": "/data/../../etc"}, "'..' is not allowed"),
        "paths-data-up": ({**ON, "tandem.paths": "/data/.."}, "'..' is not allowed"),
        "paths-nul": ({**ON, "tandem.paths": '["/data\\u0000/x"]'}, "not an absolute container path"),
        "dest-climb": ({**ON, "tandem.dest": f"{tmp_path}/dest/../escaped/{{container}}"}, "'..'"),
        "dest-outside": ({**ON, "tandem.dest": "/etc/tandem-hostile/{container}"}, "outside the allowed"),
        "dest-dash": ({**ON, "tandem.dest": "-oProxyCommand=touch:/x"}, "not a host name or address"),
        "dest-placeholder": ({**ON, "tandem.dest": f"{tmp_path}/dest/{{container.__class__}}"}, "not one of"),
    }


@pytest.mark.real
@pytest.mark.docker
def test_bad_labels_fail_the_container_with_a_reason(
    tmp_path: Path, serve: Callable[..., Serve], fresh_docker: DockerDaemon
) -> None:
    """Bad, huge and path-climbing labels: that container is 'failed' with a short
    one-line reason naming the problem, no worker starts for it, nothing is
    written anywhere; a good container next to them is synced (0 lost)."""
    s = serve_docker(tmp_path, serve, fresh_docker)
    cases = bad_labels(tmp_path)
    for name, (labels, _words) in cases.items():
        fresh_docker.run(name, volumes=[f"{name}-vol:/data"], labels=labels)
    good = fresh_docker.run("good", volumes=["gooddata:/data"], labels=ON)
    for name, (_labels, words) in cases.items():
        worker = s.wait_state(name, "failed")
        reason = worker["reason"]
        assert words in reason, (name, reason[:300])
        assert "\n" not in reason and len(reason) < 1000, (name, len(reason))
        assert worker["pid"] is None
    s.wait_state("good", "running")
    sh(good, "echo fine > /data/f")
    assert_no_loss(fresh_docker.volume("gooddata"), dest_of(tmp_path, "good"))
    assert sorted(os.listdir(tmp_path / "dest" / "h1")) == ["good"]  # no destination for the others
    assert not (tmp_path / "escaped").exists() and not Path("/etc/tandem-hostile").exists()
    assert {pid.stem for pid in (s.state_dir / "workers").glob("*.pid")} <= {"good"}
    s.alive()
    with httpx.Client(base_url=s.url(), timeout=10) as client:
        listed = {w["container"]: w for w in client.get("/workers").json()}
    assert listed["good"]["state"] == "running"
    assert all(listed[name]["state"] == "failed" for name in cases)


BAD_CONFIGS: list[tuple[str, str]] = [
    ("frobnicate = 1", "frobnicate: Extra inputs"),
    ("heartbeat = -1", "heartbeat: Input should be greater than 0"),
    ("stop_timeout = inf", "stop_timeout: Input should be a finite number"),
    ("modify_window = nan", "modify_window: Input should be a finite number"),
    ("api_port = 99999999999999999999999", "api_port: Input should be less than or equal to 65535"),
    (f'host = "{"h" * 300_000}"', "host: String should have at most 255 characters"),
    ("[defaults]\ndelay = 1e400", "defaults.delay: Input should be a finite number"),
    ("[defaults]\nmax-lag = inf", "defaults.max-lag: Input should be a finite number"),
    ('[defaults]\npaths = ["/../etc"]', "defaults.paths: Value error, '/../etc': '..' is not allowed"),
    (f'[defaults]\ndest = "/{"d" * 300_000}"', "defaults.dest: String should have at most 4096 characters"),
    (
        "[defaults]\nexclude = [" + '"a",' * 2000 + "]",
        "defaults.exclude: Tuple should have at most 1024 items",
    ),
    ('[[rules]]\nmatch = "*"\nexclude = ["a{4294967296}"]', "rules.0.exclude: Value error, bad regex"),
    ('[[rules]]\nmatch = "*"\nexclude = ["' + "(" * 1200 + ")" * 1200 + '"]', "rules.0.exclude"),
    ('[[rules]]\nmatch = "*"\nsplit-brain = "coin"', "rules.0.split-brain: Input should be 'newest'"),
    ("this is not toml", "Expected '=' after a key"),
    ("[defaults]\n" * 2, "defaults"),
]


@pytest.mark.parametrize(("text", "words"), BAD_CONFIGS, ids=[w.split(":")[0][:30] for _t, w in BAD_CONFIGS])
def test_bad_config_is_refused_naming_file_and_key(tmp_path: Path, text: str, words: str) -> None:
    """A config file with a bad, huge or non-finite value, an unknown key or bad
    TOML is refused with one short line naming the file and the key."""
    config = tmp_path / "tandem.toml"
    config.write_text(text + "\n")
    with pytest.raises(ConfigError) as refused:
        load(str(config))
    message = str(refused.value)
    assert message.startswith(f"{config}: ") and words in message, message[:500]
    assert "\n" not in message and len(message) < 1000, message[:500]


@pytest.mark.real
def test_serve_with_a_bad_config_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    """``tandem serve`` with such a file exits 2 at once, says why on one line of
    stderr, and creates nothing (no state directory, no API, no worker)."""
    chosen = [BAD_CONFIGS[i] for i in (0, 2, 5, 8, 14)]
    runs = []
    for i, (text, words) in enumerate(chosen):
        config, state = tmp_path / f"bad{i}.toml", tmp_path / f"state{i}"
        config.write_text(text + "\n")
        argv = [sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(config)]
        argv += ["--state-dir", str(state), "--no-docker", "--no-lxd"]
        env = {**os.environ, "TANDEM_API_PORT": "0"}  # should one start after all: never on 8765
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        runs.append((proc, config, state, words))
    try:
        for proc, config, state, words in runs:
            out, err_bytes = proc.communicate(timeout=60)
            err = err_bytes.decode(errors="replace")
            assert proc.returncode == 2, err[-2000:]
            assert err.startswith(f"tandem serve: {config}: ") and words in err, err[:500]
            assert err.count("\n") == 1 and len(err) < 1000 and not out, err[:500]
            assert not state.exists()
    finally:
        for proc, *_rest in runs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)


def bad_bodies(tmp_path: Path) -> list[tuple[bytes, int, str]]:
    """(raw JSON body, status, words of the detail) for PUT /containers/api1/policy."""

    def body(value: object) -> bytes:
        return json.dumps(value).encode()

    return [
        (body({"dest": f"{tmp_path}/dest/../../etc/{{container}}"}), 422, "may not contain '..'"),
        (body({"dest": "/etc/{container}"}), 422, "outside the allowed dest_roots"),
        (body({"dest": f"{tmp_path}/dest/{{container}}/{{mount!r}}"}), 422, "is not one of"),
        (body({"paths": ["/data/.."]}), 422, "'..' is not allowed"),
        (body({"paths": ["/../../etc"]}), 422, "'..' is not allowed"),
        (body({"paths": ["/data\0"]}), 422, "not an absolute container path"),
        (b'{"max-lag": Infinity}', 422, "finite number"),
        (b'{"delay": NaN}', 422, "finite number"),
        (body({"exclude": ["a{4294967296}"]}), 422, "repetition number is too large"),
        (body({"exclude": ["(" * 1200 + ")" * 1200]}), 422, "bad regex"),
        (body({"exclude": ["a"] * 1_000_000}), 413, "larger than 1 MiB"),  # ~5 MB: not even parsed
        (body({"dest": "/" + "d" * 5_000_000}), 413, "larger than 1 MiB"),
        (body({"exclude": ["a"] * 2000}), 422, "at most 1024 items"),
        (body({"dest": "/" + "d" * 100_000}), 422, "at most 4096 characters"),
        (b'{"exclude": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "error parsing the body"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400, "error parsing the body"),
        (b'{"dest": "\xff\xfe"}', 400, "error parsing the body"),
        (body({"enable": True, "dest": None, "unknown": 1}), 422, "Extra inputs"),
    ]


BAD_NAMES = [
    ("..", 404),
    ("%2e%2e", 422),
    ("..%2F..%2Fetc", 404),
    ("a%2Fb", 404),
    ("a%00b", 422),
    ("a%0Ab", 422),
    (".hidden", 422),
    ("-dash", 422),
    ("x" * 129, 422),
    ("%FF%FE", 422),
]


@pytest.mark.real
@pytest.mark.docker
def test_hostile_api_payloads_change_nothing(
    tmp_path: Path, serve: Callable[..., Serve], fresh_docker: DockerDaemon
) -> None:
    """PUT policy with climbing or outside destinations, '..' paths, non-finite
    numbers, bad regexes, 5 MB bodies, deeply nested or broken JSON, and
    container names with '..', '/', NUL or 129 characters: each a 4xx with a
    short one-line detail; the stored policy, the worker and its data are the
    same afterwards (0 lost)."""
    s = serve_docker(tmp_path, serve, fresh_docker)
    api1 = fresh_docker.run("api1", volumes=["apidata:/data"], labels=ON)
    pid = s.wait_state("api1", "running")["pid"]
    with httpx.Client(base_url=s.url(), timeout=60) as client:
        before = client.get("/containers/api1/policy").json()
        history = client.get("/workers/api1/history").json()
        for raw, status, words in bad_bodies(tmp_path):
            response = client.put(
                "/containers/api1/policy", content=raw, headers={"content-type": "application/json"}
            )
            detail = response.json()["detail"]
            assert response.status_code == status and words in str(detail), (raw[:80], response.text[:300])
            assert isinstance(detail, str) and "\n" not in detail and len(detail) < 1000, detail[:300]
            assert client.get("/containers/api1/policy").json() == before, raw[:80]
        for name, status in BAD_NAMES:
            for method in ("GET", "PUT", "DELETE"):
                response = client.request(method, f"/containers/{name}/policy", json={"enable": True})
                assert response.status_code == status, (method, name, response.text[:300])
                detail = response.json()["detail"]
                assert isinstance(detail, str) and "\n" not in detail and len(detail) < 1000
        assert client.get("/containers/api1/policy").json() == before
        assert client.get("/workers/api1/history").json() == history  # nothing stored, nothing restarted
        assert client.get("/workers/api1").json()["pid"] == pid
    sh(api1, "echo still > /data/synced")
    assert_no_loss(fresh_docker.volume("apidata"), dest_of(tmp_path, "api1"))
    assert not (tmp_path / "etc").exists() and sorted(os.listdir(tmp_path / "dest" / "h1")) == ["api1"]


# -- 4. fuzz: labels -> policy -> worker spec, and settings loading ----------------------------------

MOUNTS = (
    Mount(name="data", source="/vol/data", target="/data", kind="volume"),
    Mount(name="var-lib", source="/vol/var-lib", target="/var/lib", kind="volume"),
)
LAYER = Mount(name="rootfs", source="/layer/upper", target="/", kind="layer")
ROOTS = ("/srv/tandem",)
FUZZ_SETTINGS = Settings(
    host="h1",
    state_dir=Path("/nonexistent/tandem-state"),
    dest_roots=ROOTS,
    defaults=ContainerPolicy(dest="/srv/tandem/{host}/{container}/{mount}"),
    docker=False,
    lxd=False,
)
TRICKY = [
    *("true", "false", "yes", "maybe", "", " 1 ", "-1", "0", "-0", "86400", "86401", "1_0", "0x10"),
    *("1e309", "-1e309", "nan", "inf", "-inf", "1e-320", "newest", "keep-both", "bogus"),
    *("/", "/data", "/data/", "/data/..", "/data/../..", "/../etc", "/data/./x", "//data", "/data\0"),
    *("/var//lib", "/var/lib/../../data", "/data,/var/lib", '["/data", "/.."]', '["/data", 1]', "["),
    *("(", "a{4294967296}", "(" * 300 + ")" * 300, "[" * 2000, "[]", '["a,b", "c"]', "\\", "x" * 5000),
    *("/srv/tandem/{container}", "/srv/tandem/{host}/{container}/{mount}", "/srv/tandem/../etc/{mount}"),
    *("/srv/tandem/{container}/..", "/srv/tandemx/{mount}", "/srv/tandem/{nope}", "/srv/tandem/{0}"),
    *("/srv/tandem/{mount!r}", "/srv/tandem/{", "/srv/tandem/}", "-oProxyCommand=x:/srv/tandem/x"),
    *("u@-h:/srv/tandem/x", "peer:/srv/tandem/{mount}", "rsync://peer/m/../{mount}", "/etc/{mount}"),
]
GOOD = {
    "enable": ["true", "false", "yes"],
    "dest": ["/srv/tandem/{container}/{mount}", "peer:/srv/tandem/{host}/{container}/{mount}"],
    "paths": ["/data", "/", "/var/lib", "/data,/var/lib", '["/data", "/"]', "/data/"],
    "exclude": ["\\.tmp$", "^cache/,\\.swp$", '["a{1,3}"]'],
    "delay": ["0.5", "0", "86400", "1e-3"],
    "split-brain": ["newest", "local", "remote", "keep-both", "manual"],
    "max-lag": ["30", "0.001", "1e6"],
}


# Good labels, then up to two keys given tricky values or any text (an unknown key too).
LABELS = st.builds(
    lambda good, bad: {**good, **bad},
    st.fixed_dictionaries(
        {"tandem.enable": st.sampled_from(GOOD["enable"])},
        optional={f"tandem.{k}": st.sampled_from(v) for k, v in GOOD.items() if k != "enable"},
    ),
    st.dictionaries(
        st.sampled_from([*(f"tandem.{k}" for k in LABEL_KEYS), "tandem.bogus", "tandem.", "tandem.Enable"]),
        st.one_of(st.sampled_from(TRICKY), st.text(max_size=20)),
        max_size=2,
    ),
)


def check_policy(policy: ContainerPolicy) -> None:
    """What any accepted layer must look like."""
    for seconds, low_ok in ((policy.delay, True), (policy.max_lag, False)):
        assert seconds is None or (math.isfinite(seconds) and (seconds >= 0 if low_ok else seconds > 0))
    for path in policy.paths or ():
        assert path.startswith("/") and "\0" not in path and ".." not in path.split("/"), path
        assert len(path) <= MAX_TEXT
    for pattern in policy.exclude or ():
        re.compile(pattern)
    assert policy.dest is None or len(policy.dest) <= MAX_TEXT
    # the store keeps it as JSON: it must come back the same (no inf turned into null)
    stored = policy.model_dump_json(exclude_none=True, by_alias=True)
    assert ContainerPolicy.model_validate_json(stored) == policy


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LABELS)
@example({"tandem.enable": "true", "tandem.paths": "/data/.."})
@example({"tandem.enable": "true", "tandem.exclude": "a{4294967296}"})
@example({"tandem.enable": "true", "tandem.exclude": "[" * 5000})
@example({"tandem.enable": "true", "tandem.max-lag": "inf"})
def test_labels_become_a_valid_spec_or_a_policy_error(labels: dict[str, str]) -> None:
    """Any labels: ``from_labels`` and ``plan`` raise only PolicyError, with a
    bounded one-line message; what they accept is valid: finite seconds, paths
    without '..', regexes that compile, and a spec whose sources are the
    container's own mounts and whose destinations lie under dest_roots with no
    '..' and no option-like host."""
    container = Container("docker", "c1", "id1", labels, MOUNTS, (LAYER,))
    try:
        policy = from_labels(labels)
        spec = plan(container, FUZZ_SETTINGS)
    except PolicyError as err:
        assert "\n" not in str(err) and len(str(err)) < 2000, str(err)[:300]
        return
    check_policy(policy)
    if spec is None:
        return
    assert {pair.source for pair in spec.pairs} <= {m.source for m in (*MOUNTS, LAYER)}
    for pair in spec.pairs:
        dest = pair.destination
        assert ".." not in dest.path.split("/") and not dest.host.startswith("-"), pair.dest
        assert any(str(dest) == root or str(dest).startswith(root + "/") for root in ROOTS), pair.dest
        assert math.isfinite(pair.delay) and all(re.compile(x) for x in pair.exclude)


FINITE_OR_NOT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(["1", "nan", "inf", "", "x", True, None]),
)
POLICY_DICT = st.fixed_dictionaries(
    {},
    optional={
        "enable": st.sampled_from([True, False, "yes", "maybe", 1, None]),
        "dest": st.sampled_from(["/srv/{mount}", "rel", "/x/../y", "/" + "d" * 5000, "", None]),
        "paths": st.lists(st.sampled_from(["/", "/data", "/..", "/data/..", "rel", "/a\0"]), max_size=3),
        "exclude": st.lists(st.sampled_from(["a", "(", "a{4294967296}", "\\d+"]), max_size=3),
        "delay": FINITE_OR_NOT,
        "max-lag": FINITE_OR_NOT,
        "split-brain": st.sampled_from(["newest", "manual", "coin", None]),
    },
)
SETTINGS_DICT = st.fixed_dictionaries(
    {},
    optional={
        "host": st.one_of(st.text(max_size=10), st.just("h" * 300)),
        "heartbeat": FINITE_OR_NOT,
        "heartbeat_timeout": FINITE_OR_NOT,
        "stop_timeout": FINITE_OR_NOT,
        "restart_delay": FINITE_OR_NOT,
        "restart_delay_max": FINITE_OR_NOT,
        "healthy_after": FINITE_OR_NOT,
        "inotify_warn": FINITE_OR_NOT,
        "modify_window": FINITE_OR_NOT,
        "api_port": st.integers(min_value=-5, max_value=2**40),
        "api_host": st.sampled_from(["127.0.0.1", "::1", "0.0.0.0", "localhost", "example.org"]),
        "log_level": st.sampled_from(["info", "debug", "loud"]),
        "dest_roots": st.lists(st.sampled_from(["/srv", "rel", ""]), max_size=2),
        "defaults": POLICY_DICT,
        "rules": st.lists(
            POLICY_DICT.map(lambda d: {"match": "*", **d}) | st.just({"runtime": "kvm"}), max_size=2
        ),
        "frobnicate": st.just(1),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SETTINGS_DICT)
@example({"stop_timeout": math.inf})
@example({"defaults": {"max-lag": math.inf}})
@example({"defaults": {"paths": ["/data/.."]}})
@example({"rules": [{"match": "*", "exclude": ["a{4294967296}"]}]})
def test_settings_load_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, values: dict[str, Any]
) -> None:
    """Any settings values: ``load`` raises only ConfigError with a one-line
    message, or gives settings whose numbers are all finite and whose defaults
    and rules are valid policies (so every worker spec can be sent as JSON)."""
    config = tmp_path_factory.getbasetemp() / "empty.toml"
    config.touch()
    try:
        loaded = load(str(config), **values)
    except ConfigError as err:
        assert "\n" not in str(err) and len(str(err)) < 2000, str(err)[:300]
        return
    for name, value in loaded.model_dump().items():
        if isinstance(value, float):
            assert math.isfinite(value), name
    assert loaded.heartbeat * 2 <= loaded.heartbeat_timeout and len(loaded.host) <= 255
    for layer in (loaded.defaults, *loaded.rules):
        check_policy(ContainerPolicy.model_validate(layer.model_dump(exclude={"match", "runtime"})))
