"""A rename whose content was read by a run that was still going on when the
rename happened: DEST must end up with the renamed file's own content."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import tree, wait_until

pytestmark = pytest.mark.real

FILES = 300
BIG = 3 * 1024 * 1024  # at --bwlimit=2000 (KiB/s): a run of ~1.5 s before app.log is opened


def _sending(dst: Path, name: str) -> bool:
    """rsync's temp file for NAME is at DEST: the run is under way."""
    return any(entry.startswith(f".{name}.") for entry in os.listdir(dst))


@pytest.mark.parametrize("same_size", [True, False], ids=["same-size", "other-size"])
def test_log_rotated_while_its_run_reads_it(dirs, start_worker, same_size: bool) -> None:
    """rsync sends the new app.log under the rotated one's size and mtime; the
    rename repeated at DEST then made that app.log.1 (same size: no size+mtime
    compare could see it)."""
    src, dst = dirs
    log = src / "app.log"
    log.write_text("old line\n" * 100)
    worker = start_worker(src, dst, "--delay", "0.1", "--rsync-arg=--bwlimit=2000")
    worker.wait_running()
    wait_until(lambda: tree(src) == tree(dst), 10, "first sync")
    (src / "a.big").write_bytes(os.urandom(BIG))  # listed before app.log: sent first
    with log.open("a") as f:
        f.write("last old line\n")
    wait_until(lambda: _sending(dst, "a.big"), 10, "the run under way")
    log.rename(src / "app.log.1")  # rotated after rsync listed app.log, before it opened it
    log.write_text(("new line\n" * 100 + "last new line\n") if same_size else "new\n")
    assert worker.stop() == 0
    assert (dst / "app.log.1").read_text() == (src / "app.log.1").read_text()
    assert tree(src) == tree(dst)


def _save(path: Path, how: str, version: int) -> None:
    """One editor save of PATH, the way HOW saves (~10 kB, a size that changes too)."""
    text = f"{path.name} version {version}\n" * (500 + version % 7 * 10)
    backup = path.with_name(path.name + "~")
    if how == "atomic":
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(text)
        temp.rename(path)
    elif how == "vim":
        path.rename(backup)
        path.write_text(text)
        backup.unlink()
    else:  # emacs: the lock is a dangling symlink while the buffer is modified
        lock = path.with_name(f".#{path.name}")
        lock.symlink_to(f"user@host.{version}:1")
        path.rename(backup)  # over the last backup
        path.write_text(text)
        lock.unlink()


@pytest.mark.parametrize("how", ["atomic", "vim", "emacs"])
def test_editor_saves_at_full_speed_then_sigterm(dirs, start_worker, how: str) -> None:
    """Saves as fast as they go; then one save of every file, and one more of each
    while the (slow: --bwlimit, a big file first) run of the first reads them; then
    SIGTERM at once.
    Without the content compare emacs's backups end wrong; atomic and vim saves
    leave no backup behind, they show the compare breaks nothing."""
    src, dst = dirs
    files = [src / f"f{i:03}.txt" for i in range(FILES)]
    for path in files:
        path.write_text("first\n")
        if how == "emacs":
            path.with_name(path.name + "~").write_text("backup\n")
    worker = start_worker(src, dst, "--delay", "1", "--rsync-arg=--bwlimit=2000")
    worker.wait_running()
    wait_until(lambda: tree(src) == tree(dst), 10, "first sync")
    end, version = time.monotonic() + 2, 0
    while time.monotonic() < end:
        version += 1
        for path in files:
            _save(path, how, version)
    wait_until(lambda: tree(src) == tree(dst), 15, "DEST equal after the saves at full speed")
    (src / "0.big").write_bytes(os.urandom(BIG))  # listed first: the run is slow from the start
    for path in files:
        _save(path, how, version + 1)
    wait_until(lambda: _sending(dst, "0.big"), 10, "the run under way")
    for path in files:  # overtakes the run: it opens these after they were saved again
        _save(path, how, version + 2)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.err()
    assert tree(src) == tree(dst)
