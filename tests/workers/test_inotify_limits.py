"""Overflow and watch limits: every file still arrives, with no operator action.

These tests lower host-wide inotify sysctls for a moment (root needed; CI is
root) and always restore them.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import tree, wait_until

pytestmark = pytest.mark.real

SYSCTL = Path("/proc/sys/fs/inotify")


@contextlib.contextmanager
def sysctl(name: str, value: int) -> Iterator[None]:
    path = SYSCTL / name
    old = path.read_text().strip()
    path.write_text(str(value))
    try:
        yield
    finally:
        path.write_text(old)


def burst(root: Path, dirs: int, files: int, *, existing: bool = False) -> int:
    count = 0
    for d in range(dirs):
        sub = root / f"burst{d}"
        sub.mkdir(exist_ok=existing)
        for f in range(files):
            (sub / f"f{f}").write_bytes(b"x")
            count += 1
    return count


def test_queue_overflow_triggers_a_full_resync(dirs, start_worker) -> None:
    src, dst = dirs
    for d in range(10):
        (src / f"burst{d}").mkdir()  # watched from the start, so every new file is an event
    with sysctl("max_queued_events", 64):  # the worker's inotify instance gets a tiny queue
        worker = start_worker(src, dst, "--delay", "0.2")
        worker.wait_running()
    worker.signal(signal.SIGSTOP)  # nobody reads the queue: it must overflow
    try:
        assert burst(src, 10, 300, existing=True) == 3000
    finally:
        worker.signal(signal.SIGCONT)
    wait_until(lambda: tree(src, content=False) == tree(dst, content=False), 30, "all 3000 files")
    wait_until(lambda: b"overflow" in worker.stderr.lower(), 5, f"overflow noticed; {worker.err()}")
    wait_until(lambda: any(line["resyncs"] for line in worker.lines), 5, f"resync counted; {worker.err()}")
    assert worker.stop() == 0


def test_thirty_thousand_files_in_a_few_seconds(dirs, start_worker) -> None:
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "0.5")
    worker.wait_running()
    assert burst(src, 30, 1000) == 30_000
    wait_until(lambda: sum(len(files) for _, _, files in os.walk(dst)) == 30_000, 90, "30000 files at DEST")
    assert tree(src, content=False) == tree(dst, content=False)
    assert worker.stop() == 0


def test_watch_limit_falls_back_to_rescans(dirs, start_worker) -> None:
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "0.2")
    worker.wait_running()
    with sysctl("max_user_watches", 1):  # no new watch can be added now
        for d in range(5):
            (src / f"unwatched{d}").mkdir()
            (src / f"unwatched{d}" / "f").write_text("x")
        wait_until(lambda: b"no inotify watch" in worker.stderr, 10, "watch failure noticed")
    wait_until(lambda: tree(src) == tree(dst), 15, "files under unwatched dirs")
    assert worker.stop() == 0


def test_no_watch_at_all_still_syncs_by_rescans(dirs, start_worker) -> None:
    src, dst = dirs
    (src / "sub").mkdir()
    with sysctl("max_user_watches", 1):
        worker = start_worker(src, dst, "--delay", "0.1", "--rescan-interval", "0.5")
        worker.wait_running()
    assert b"cannot watch" in worker.stderr or b"no inotify watch" in worker.stderr
    (src / "sub" / "later").write_text("found by a rescan")
    wait_until(lambda: tree(src) == tree(dst), 10, "rescan delivered")
    assert worker.stop() == 0


def test_a_degraded_worker_rescans_at_stop(dirs, start_worker) -> None:
    """Changes under a directory with no watch, made after the last rescan, are
    found by the stop's flush (a scan), not left behind."""
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "0.2")
    worker.wait_running()
    with sysctl("max_user_watches", 1):
        (src / "unwatched").mkdir()
        (src / "unwatched" / "f").write_text("x")
        wait_until(lambda: b"no inotify watch" in worker.stderr, 10, "watch failure noticed")
    wait_until(lambda: tree(src) == tree(dst), 15, "the first rescan")
    (src / "unwatched" / "late").write_text("made after the rescan, no event")
    code = worker.stop()
    assert code == 0, worker.err()
    assert tree(src) == tree(dst)
