"""``tandem sync SRC root@PEER:/dest --rsh ...`` against a real sshd in a network namespace.

The peer shares the filesystem (only the network is isolated), so DEST is
checked directly on this host.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import WorkerProc, tree, wait_until
from tests.sshpeer import SshPeer, running_peer
from workers.snapshot import ScanError, scan_dest, scan_local, ssh_argv
from workers.spec import Destination, ExitCode

pytestmark = [pytest.mark.ssh, pytest.mark.real]

SYNC_TIMEOUT = 15.0
# Names that break naive tools: spaces, brackets, globs, quotes, a leading dash,
# a backslash, unicode, a newline, bytes that are not UTF-8.
ODD_NAMES = [
    "plain.txt",
    "with space.txt",
    "[brackets] (1).txt",
    "glob*?.txt",
    "quo'te\"s.txt",
    "-leading-dash",
    "back\\slash",
    "ünïcødé ✓ 文字.txt",
    "new\nline.txt",
    "arrow -> not a link",
    os.fsdecode(b"latin1-\xe9\xff.bin"),
]


@pytest.fixture
def ssh_peer() -> Iterator[SshPeer]:
    with running_peer() as peer:
        yield peer


StartWorker = Callable[..., WorkerProc]


def start_ssh(start_worker: StartWorker, peer: SshPeer, src: Path, dst: Path, *args: str) -> WorkerProc:
    return start_worker(src, peer.dest(dst), "--rsh", peer.rsh, "--delay", "0.2", *args)


def wait_same(src: Path, dst: Path, worker: WorkerProc, what: str, timeout: float = SYNC_TIMEOUT) -> None:
    def same() -> bool:
        assert worker.proc.poll() is None, f"worker exited {worker.proc.returncode}: {worker.err()}"
        return tree(src) == tree(dst)

    try:
        wait_until(same, timeout, what)
    except AssertionError:
        diff = {k: (tree(src).get(k), tree(dst).get(k)) for k in tree(src).keys() ^ tree(dst).keys()}
        raise AssertionError(f"{what}: trees differ {diff}\nworker stderr:\n{worker.err()}") from None


def resyncs(worker: WorkerProc) -> int:
    """Full resyncs the worker has finished (from its JSON status lines)."""
    return max((int(str(line.get("resyncs", 0))) for line in worker.lines), default=0)


def write(path: Path, data: bytes | str = b"x", mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        path.chmod(mode)
    return path


def make_odd_tree(root: Path) -> None:
    for i, name in enumerate(ODD_NAMES):
        write(root / name, f"content {i} of {name!r}\n", 0o644 if i % 2 else 0o600)
    write(root / "dir with space" / "[sub] dir" / "ünï" / "deep file", b"\0\1\2" * 1000, 0o640)
    write(root / "new\nline dir" / "inside", "x")
    write(root / "exec.sh", "#!/bin/sh\necho hi\n", 0o755)
    (root / "private").mkdir(mode=0o700)
    write(root / "private" / "secret", "s", 0o400)
    (root / "private").chmod(0o700)
    (root / "empty dir").mkdir()
    (root / "link to plain").symlink_to("plain.txt")
    (root / "dangling link").symlink_to("no/such [target]")
    (root / "dir with space" / "up link").symlink_to("../exec.sh")


# 1 ------------------------------------------------------------------------------


def test_initial_sync_reaches_peer(
    ssh_peer: SshPeer, dirs: tuple[Path, Path], start_worker: StartWorker
) -> None:
    src, dst = dirs
    make_odd_tree(src)
    worker = start_ssh(start_worker, ssh_peer, src, dst)
    worker.wait_running()
    wait_same(src, dst, worker, "initial sync")
    assert len(tree(dst)) >= len(ODD_NAMES) + 10
    assert worker.stop() == ExitCode.OK, worker.err()


# 2 ------------------------------------------------------------------------------


def test_live_changes_propagate(
    ssh_peer: SshPeer, dirs: tuple[Path, Path], start_worker: StartWorker
) -> None:
    src, dst = dirs
    write(src / "keep.txt", "keep")
    write(src / "doomed.txt", "bye")
    write(src / "doomed dir" / "a", "a")
    write(src / "doomed dir" / "sub [x]" / "b\nc", "b")
    worker = start_ssh(start_worker, ssh_peer, src, dst)
    worker.wait_running()
    wait_same(src, dst, worker, "initial sync")

    # create: a file, and a file in a brand-new nested directory
    write(src / "new file.txt", "new", 0o604)
    write(src / "new dir" / "inner" / "ünï\nfile", "deep")
    wait_same(src, dst, worker, "creates")

    # modify with the same size, same mtime: rsync's quick check would miss it
    fast = write(src / "fast.txt", "aaaa")
    wait_until(
        lambda: (dst / "fast.txt").exists() and (dst / "fast.txt").read_bytes() == b"aaaa",
        SYNC_TIMEOUT,
        "aaaa at DEST",
    )
    before = os.stat(fast).st_mtime_ns
    fast.write_bytes(b"bbbb")
    os.utime(fast, ns=(before, before))
    wait_until(lambda: (dst / "fast.txt").read_bytes() == b"bbbb", SYNC_TIMEOUT, "bbbb at DEST")
    assert os.stat(dst / "fast.txt").st_mtime_ns == before

    # delete a file and a non-empty directory
    (src / "doomed.txt").unlink()
    for path in sorted((src / "doomed dir").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (src / "doomed dir").rmdir()
    wait_same(src, dst, worker, "deletes")
    assert not (dst / "doomed dir").exists() and not (dst / "doomed.txt").exists()
    assert worker.stop() == ExitCode.OK, worker.err()


# 3 ------------------------------------------------------------------------------


def test_directory_rename_is_a_move_at_peer(
    ssh_peer: SshPeer, dirs: tuple[Path, Path], start_worker: StartWorker
) -> None:
    src, dst = dirs
    write(src / "old dir" / "big file", os.urandom(256 * 1024))
    write(src / "old dir" / "sub [1]" / "small\nfile", "small")
    write(src / "other", "o")
    worker = start_ssh(start_worker, ssh_peer, src, dst)
    worker.wait_running()
    wait_same(src, dst, worker, "initial sync")
    # Hold the DEST files open: a re-copy could otherwise get the freed inode numbers back (ext4).
    names = ("big file", "sub [1]/small\nfile")
    held = {name: os.open(dst / "old dir" / name, os.O_RDONLY) for name in names}
    try:
        syncs = worker.syncs()
        os.rename(src / "old dir", src / "new dir")
        wait_same(src, dst, worker, "rename")
        assert not (dst / "old dir").exists()
        worker.wait_synced(syncs)
        for name, fd in held.items():
            old = os.fstat(fd)
            assert old.st_nlink > 0, f"{name!r} was deleted at DEST and copied again, not moved"
            assert os.stat(dst / "new dir" / name).st_ino == old.st_ino, f"{name!r} is not the moved file"
    finally:
        for fd in held.values():
            os.close(fd)
    assert worker.stop() == ExitCode.OK, worker.err()


# 4 ------------------------------------------------------------------------------


def test_excluded_files_never_sent_and_dest_only_kept(
    ssh_peer: SshPeer, dirs: tuple[Path, Path], start_worker: StartWorker
) -> None:
    src, dst = dirs
    write(src / "a.txt", "a")
    write(src / "at start.tmp", "excluded from the start")
    write(src / "sub" / "b.txt", "b")
    write(dst / "keep.tmp", "dest only")
    write(dst / "sub" / "keep.tmp", "dest only, below")
    worker = start_ssh(start_worker, ssh_peer, src, dst, "--exclude", r"\.tmp$")
    worker.wait_running()

    def synced_part(root: Path) -> dict[str, object]:
        return {k: v for k, v in tree(root).items() if not k.endswith(".tmp")}

    wait_until(lambda: synced_part(dst) == synced_part(src), SYNC_TIMEOUT, "initial sync")
    assert not (dst / "at start.tmp").exists()

    # a brand-new directory with an excluded file (and a nested one) in it
    write(src / "fresh" / "x.tmp", "no")
    write(src / "fresh" / "deep" / "z.tmp", "no")
    write(src / "fresh" / "y.txt", "yes")
    write(src / "sub" / "later.tmp", "no")
    write(src / "sub" / "b.txt", "b changed")
    wait_until(
        lambda: (dst / "fresh" / "y.txt").exists() and (dst / "sub" / "b.txt").read_text() == "b changed",
        SYNC_TIMEOUT,
        "new directory at DEST",
    )
    assert (dst / "fresh" / "deep").is_dir()

    # a full resync (SIGUSR2) compares everything: still nothing excluded moves
    before = resyncs(worker)
    worker.signal(signal.SIGUSR2)
    wait_until(lambda: resyncs(worker) > before, SYNC_TIMEOUT, "a full resync")
    syncs = worker.syncs()
    write(src / "sub" / "c.txt", "c")
    worker.wait_synced(syncs)
    wait_until(lambda: (dst / "sub" / "c.txt").exists(), SYNC_TIMEOUT, "c.txt")

    sent = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.tmp"))
    assert sent == ["keep.tmp", "sub/keep.tmp"], worker.err()
    assert (dst / "keep.tmp").read_text() == "dest only"
    assert (dst / "sub" / "keep.tmp").read_text() == "dest only, below"
    assert synced_part(dst) == synced_part(src)
    assert worker.stop() == ExitCode.OK, worker.err()


def test_deleted_directory_keeps_dest_only_excluded_files(
    ssh_peer: SshPeer, dirs: tuple[Path, Path], start_worker: StartWorker
) -> None:
    src, dst = dirs
    write(src / "sub" / "b.txt", "b")
    write(dst / "sub" / "keep.tmp", "dest only")
    worker = start_ssh(start_worker, ssh_peer, src, dst, "--exclude", r"\.tmp$")
    worker.wait_running()
    wait_until(lambda: (dst / "sub" / "b.txt").exists(), SYNC_TIMEOUT, "initial sync")
    (src / "sub" / "b.txt").unlink()
    (src / "sub").rmdir()
    wait_until(lambda: not (dst / "sub" / "b.txt").exists(), SYNC_TIMEOUT, "the delete at DEST")
    assert (dst / "sub" / "keep.tmp").exists(), "DEST-only excluded file deleted"


# 5 ------------------------------------------------------------------------------


def test_scan_dest_over_ssh_reads_odd_names(ssh_peer: SshPeer, tmp_path: Path) -> None:
    dest = tmp_path / "dest dir [x]"
    make_odd_tree(dest)
    os.mkfifo(dest / "a fifo")
    expected = scan_local(str(dest))
    assert "new\nline.txt" in expected and "new\nline dir/inside" in expected

    got = scan_dest(
        Destination.parse(ssh_peer.dest(dest)), rsh=ssh_peer.rsh, rsync_binary="rsync", timeout=20
    )

    assert sorted(got) == sorted(expected)
    for path, entry in expected.items():
        assert (got[path].type, got[path].size) == (entry.type, entry.size), path
        assert abs(got[path].mtime - entry.mtime) < 1e-5, path
    assert got["a fifo"].type == "o" and got["link to plain"].type == "l"

    missing = Destination.parse(ssh_peer.dest(tmp_path / "no such dir"))
    assert scan_dest(missing, rsh=ssh_peer.rsh, rsync_binary="rsync", timeout=20) == {}

    ssh_peer.stop_sshd()
    with pytest.raises(ScanError):
        scan_dest(Destination.parse(ssh_peer.dest(dest)), rsh=ssh_peer.rsh, rsync_binary="rsync", timeout=20)


def test_ssh_argv_unbrackets_ipv6_hosts() -> None:
    dest = Destination.parse("root@[fd00::5]:/srv/dest")
    assert dest.host == "[fd00::5]" and dest.rsync_root() == "root@[fd00::5]:/srv/dest/"
    assert ssh_argv(dest, "ssh -p 2222", "true") == ["ssh", "-p", "2222", "--", "root@fd00::5", "true"]


@pytest.mark.parametrize("host", ["[-oProxyCommand=touch {mark}]", "u@[-oProxyCommand=touch {mark}]"])
def test_a_host_ssh_would_take_for_an_option_is_refused(dirs, start_worker, tmp_path, host: str) -> None:
    """Issue 15 item 8: the leading-dash check looked at '[' and ssh_argv stripped it."""
    src, _ = dirs
    mark = tmp_path / "pwned"
    worker = start_worker(src, f"{host.format(mark=mark)}:/x", "--delay", "0.1")
    assert worker.wait(20) == ExitCode.CONFIG
    assert "not a host name or address" in worker.err()
    assert not mark.exists()


# 6 ------------------------------------------------------------------------------


def test_unreachable_peer_at_start_fails_with_sync_failed(
    ssh_peer: SshPeer, dirs: tuple[Path, Path], start_worker: StartWorker
) -> None:
    src, dst = dirs
    write(src / "a.txt", "a")
    ssh_peer.stop_sshd()
    assert not ssh_peer.reachable()
    worker = start_ssh(start_worker, ssh_peer, src, dst, "--retries", "1", "--retry-delay", "0.1")
    code = worker.wait(timeout=30)
    assert code == ExitCode.SYNC_FAILED, worker.err()
    assert "sync failed after 2 tries" in worker.err()
    assert "Connection refused" in worker.err()
    assert os.listdir(dst) == []


def test_unreachable_peer_with_ignore_failures_recovers(
    ssh_peer: SshPeer, dirs: tuple[Path, Path], start_worker: StartWorker
) -> None:
    src, dst = dirs
    write(src / "a.txt", "a")
    write(src / "d" / "b.txt", "b")
    ssh_peer.stop_sshd()
    worker = start_ssh(
        start_worker, ssh_peer, src, dst, "--retries", "1", "--retry-delay", "0.1", "--ignore-failures"
    )
    wait_until(
        lambda: "nothing sent until it passes" in worker.err() or worker.proc.poll() is not None,
        SYNC_TIMEOUT,
        "the worker waiting for DEST's check (no write before it)",
    )
    assert worker.proc.poll() is None, worker.err()
    write(src / "while down.txt", "later")
    time.sleep(0.5)
    assert worker.proc.poll() is None, worker.err()
    assert os.listdir(dst) == []

    ssh_peer.start_sshd()
    # after giving up the runner cools down for at most MAX_BACKOFF (30 s) before the next try
    wait_same(src, dst, worker, "recovery after sshd is back", timeout=40)
    assert worker.stop() == ExitCode.OK, worker.err()


def test_log_rotated_while_its_run_reads_it_reaches_peer(
    ssh_peer: SshPeer, dirs: tuple[Path, Path], start_worker: StartWorker
) -> None:
    """The rename is repeated at the peer (mv over ssh) after a run that listed
    app.log sent the new log under it: the renamed file is compared by content."""
    src, dst = dirs
    log = write(src / "app.log", "old line\n" * 100)
    worker = start_ssh(start_worker, ssh_peer, src, dst, "--rsync-arg=--bwlimit=2000")
    worker.wait_running()
    wait_same(src, dst, worker, "initial sync")
    write(src / "a.big", os.urandom(3 * 1024 * 1024))  # listed before app.log: sent first
    write(log, "old line\n" * 99 + "last old line\n")
    wait_until(lambda: any(n.startswith(".a.big.") for n in os.listdir(dst)), SYNC_TIMEOUT, "run under way")
    log.rename(src / "app.log.1")
    write(log, "new line\n" * 99 + "last new line\n")  # the same size
    assert worker.stop() == ExitCode.OK, worker.err()
    assert tree(src) == tree(dst)
