"""A real worker (real inotify, real rsync) keeps a local DEST equal to SOURCE."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import tree, wait_until
from workers.runner import EVENT_LAG

pytestmark = pytest.mark.real

ODD_NAMES = ["with space", "br[ack]ets*?", "ünïcødé ☃", "new\nline", "-dash", "semi;colon'quote\""]


def converged(src: Path, dst: Path, timeout: float = 10.0) -> None:
    wait_until(lambda: tree(src) == tree(dst), timeout, "DEST equal to SOURCE")


def test_initial_sync_and_live_changes(dirs, start_worker) -> None:
    src, dst = dirs
    (src / "a").write_text("a")
    (src / "dir").mkdir()
    (src / "dir" / "b").write_text("b")
    worker = start_worker(src, dst, "--delay", "0.1")
    worker.wait_running()
    converged(src, dst)
    (src / "c").write_text("created")
    (src / "a").write_text("modified content")
    (src / "dir" / "b").unlink()
    converged(src, dst)
    assert worker.stop() == 0


def test_same_second_same_size_edit_is_delivered(dirs, start_worker) -> None:
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "0.05")
    worker.wait_running()
    target = src / "f"
    target.write_text("aaaa")
    wait_until(lambda: (dst / "f").exists() and (dst / "f").read_text() == "aaaa")
    mtime = target.stat().st_mtime_ns
    target.write_text("bbbb")  # same size ...
    os.utime(target, ns=(mtime, mtime))  # ... and the very same mtime: quick check cannot see it
    wait_until(lambda: (dst / "f").read_text() == "bbbb", 5, "same-size same-mtime edit")
    assert worker.stop() == 0


def test_symlinks_and_directories_keep_their_mtimes_to_the_nanosecond(dirs, start_worker) -> None:
    """Made and sent within one second: rsync's whole-second compare once left
    them with DEST's own creation time, newer than SOURCE's (the next start's
    split-brain check then took DEST's symlinks for changes made there)."""
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "0.05")
    worker.wait_running()
    wait_until(lambda: time.time() % 1 < 0.3, 2, "the start of a second")
    (src / "d").mkdir()
    (src / "d" / "link").symlink_to("nowhere")
    (src / "link").symlink_to("d")
    made = [src / "d", src / "d" / "link", src / "link"]
    wait_until(lambda: all(os.path.lexists(dst / p.relative_to(src)) for p in made), 5, "the links at DEST")
    worker.stop()
    there = [os.lstat(dst / p.relative_to(src)).st_mtime_ns for p in made]
    assert there == [p.lstat().st_mtime_ns for p in made]


def test_rename_of_non_empty_directory_moves_in_place(dirs, start_worker) -> None:
    src, dst = dirs
    (src / "old" / "deep").mkdir(parents=True)
    for i in range(50):
        (src / "old" / "deep" / f"f{i}").write_text(str(i) * 100)
    worker = start_worker(src, dst, "--delay", "0.1")
    worker.wait_running()
    converged(src, dst)
    inode = (dst / "old" / "deep" / "f7").stat().st_ino
    (src / "old").rename(src / "new")
    converged(src, dst)
    assert not (dst / "old").exists()
    assert (dst / "new" / "deep" / "f7").stat().st_ino == inode, "content was copied again"
    # a rename of a file inside, and a rename back
    (src / "new" / "deep" / "f1").rename(src / "new" / "f1-moved")
    (src / "new").rename(src / "old")
    converged(src, dst)
    assert worker.stop() == 0


def test_rename_after_unsynced_change_sends_the_change(dirs, start_worker) -> None:
    src, dst = dirs
    (src / "d").mkdir()
    (src / "d" / "f").write_text("v1")
    worker = start_worker(src, dst, "--delay", "0.5")
    worker.wait_running()
    converged(src, dst)
    (src / "d" / "f").write_text("v2")  # changed, then renamed within one batch
    (src / "d").rename(src / "e")
    converged(src, dst)
    assert (dst / "e" / "f").read_text() == "v2"
    assert worker.stop() == 0


def test_move_in_and_move_out_of_trees(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    outside = tmp_path / "outside"
    (outside / "tree" / "x" / "y").mkdir(parents=True)
    (outside / "tree" / "x" / "y" / "file").write_text("moved in")
    (src / "leaving" / "sub").mkdir(parents=True)
    (src / "leaving" / "sub" / "f").write_text("bye")
    worker = start_worker(src, dst, "--delay", "0.1")
    worker.wait_running()
    converged(src, dst)
    (outside / "tree").rename(src / "tree")
    (src / "leaving").rename(outside / "left")
    converged(src, dst)
    assert (dst / "tree" / "x" / "y" / "file").read_text() == "moved in"
    assert not (dst / "leaving").exists()
    assert worker.stop() == 0


def test_deep_mkdir_p_and_immediate_writes(dirs, start_worker) -> None:
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "0.1")
    worker.wait_running()
    deep = src.joinpath(*[f"level{i}" for i in range(12)])
    deep.mkdir(parents=True)
    (deep / "leaf").write_text("leaf")
    for i in range(5):
        (deep.parent / f"sibling{i}").write_text("s")
    converged(src, dst)
    shutil.rmtree(src / "level0")
    converged(src, dst)
    assert worker.stop() == 0


def test_symlinks_modes_mtimes_and_odd_names(dirs, start_worker) -> None:
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "0.1")
    worker.wait_running()
    for name in ODD_NAMES:
        (src / name).write_text(name)
    (src / "dir with space").mkdir()
    (src / "dir with space" / "ünï").write_text("x")
    os.symlink("/etc", src / "link-out")  # not followed: stays a symlink
    os.symlink("../a/b", src / "dangling")
    (src / "exec").write_text("#!/bin/sh\n")
    os.chmod(src / "exec", 0o751)
    os.utime(src / ODD_NAMES[0], (1_000_000_000, 1_000_000_000))
    converged(src, dst)
    assert (dst / "link-out").is_symlink() and os.readlink(dst / "link-out") == "/etc"
    assert (dst / ODD_NAMES[0]).stat().st_mtime == 1_000_000_000
    os.chmod(src / "exec", 0o700)  # a mode change alone propagates
    wait_until(lambda: (dst / "exec").stat().st_mode & 0o777 == 0o700)
    assert worker.stop() == 0


def test_sigusr2_forces_a_full_resync(dirs, start_worker) -> None:
    src, dst = dirs
    (src / "f").write_text("data")
    worker = start_worker(src, dst, "--delay", "0.1")
    worker.wait_running()
    converged(src, dst)
    (dst / "f").unlink()  # DEST damaged behind the worker's back
    (dst / "stray").write_text("not in source")
    worker.signal(signal.SIGUSR2)
    converged(src, dst)
    wait_until(lambda: any(line["resyncs"] for line in worker.lines), 5, "resync counted")
    assert worker.stop() == 0


def test_write_during_initial_sync_is_not_lost(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    for i in range(20):
        (src / f"pre{i}").write_text("x")
    slow = tmp_path / "slow-rsync"
    slow.write_text(f'#!/bin/sh\nsleep 1\nexec {shutil.which("rsync")} "$@"\n')
    slow.chmod(0o755)
    worker = start_worker(src, dst, "--delay", "0.1", "--rsync-binary", str(slow))
    wait_until(lambda: worker.status() == "initial-sync", 10, "initial sync started")
    (src / "during").write_text("written while the initial sync ran")
    worker.wait_running()
    converged(src, dst, timeout=15)
    assert worker.stop() == 0


def test_same_second_same_size_edit_while_stopped_reaches_dest(dirs, start_worker) -> None:
    """The edit clsync and lsyncd never deliver, made while no worker watched: the
    next start's full sync compares mtimes to the nanosecond, not the second."""
    src, dst = dirs
    target = src / "f"
    target.write_text("aaaa")
    assert start_worker(src, dst, "--only-initial-sync").wait() == 0
    before = target.stat()
    target.write_text("bbbb")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 1000))  # same second, same size
    assert start_worker(src, dst, "--only-initial-sync").wait() == 0
    assert (dst / "f").read_text() == "bbbb"


@pytest.mark.parametrize("mode", ["--only-initial-sync", "running"])
def test_an_edit_keeping_size_and_mtime_while_stopped_reaches_dest(
    dirs, start_worker, tmp_path, mode
) -> None:
    """Made while no worker watched, with mtime put back to the nanosecond: no
    compare of size and mtime can see it, the ctime after the last sync does."""
    src, dst = dirs
    snapshot = str(tmp_path / "state" / "snap.json.gz")
    (src / "d").mkdir()
    for name in ("f", "d/g", "untouched"):
        (src / name).write_text("aaaa")
    time.sleep(EVENT_LAG + 0.5)  # older than the last sync's margin: not sent again below
    assert start_worker(src, dst, "--only-initial-sync", "--snapshot-file", snapshot).wait() == 0
    for name in ("f", "d/g"):
        before = (src / name).stat()
        (src / name).write_text("bbbb")
        os.utime(src / name, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.chmod(src / "untouched", (src / "untouched").stat().st_mode)  # its ctime moves, not its content
    untouched = (dst / "untouched").stat().st_ino
    if mode == "running":
        worker = start_worker(src, dst, "--delay", "0.1", "--snapshot-file", snapshot)
        worker.wait_running()
        wait_until(lambda: (dst / "f").read_text() == (dst / "d" / "g").read_text() == "bbbb", 5, "the edits")
        assert worker.stop() == 0
    else:
        assert start_worker(src, dst, "--only-initial-sync", "--snapshot-file", snapshot).wait() == 0
        assert (dst / "f").read_text() == (dst / "d" / "g").read_text() == "bbbb"
    assert (dst / "untouched").stat().st_ino == untouched  # compared by content: not written again


def test_synced_until_moves_only_after_a_full_sync(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    snapshot = tmp_path / "state" / "snap.json.gz"

    def synced_until() -> float:
        with gzip.open(snapshot, "rt") as f:
            return float(json.load(f)["synced_until"])

    (src / "f").write_text("a")
    before = time.time()
    assert start_worker(src, dst, "--only-initial-sync", "--snapshot-file", str(snapshot)).wait() == 0
    first = synced_until()  # no watcher: the full sync's start is the limit
    assert before - EVENT_LAG <= first <= time.time() - EVENT_LAG
    worker = start_worker(src, dst, "--skip-initial-sync", "--delay", "0.1", "--snapshot-file", str(snapshot))
    worker.wait_running()
    (src / "g").write_text("b")
    wait_until(lambda: (dst / "g").exists(), 5, "g at DEST")
    assert worker.stop() == 0
    assert synced_until() == first  # no full sync in that run: what changed before it is not known
    worker = start_worker(src, dst, "--delay", "0.1", "--snapshot-file", str(snapshot))
    worker.wait_running()
    (src / "h").write_text("c")
    wait_until(lambda: (dst / "h").exists(), 5, "h at DEST")
    assert worker.stop() == 0
    assert synced_until() > first


def test_the_ancestor_follows_a_renamed_directory(dirs, start_worker, tmp_path) -> None:
    """Found by the soak: the entries below a renamed directory left the ancestor,
    so a file the container deleted there before the next start's check looked
    made at DEST, and the check brought it back."""
    src, dst = dirs
    snapshot = tmp_path / "state" / "snap.json.gz"
    (src / "d" / "sub").mkdir(parents=True)
    (src / "d" / "sub" / "x").write_text("x")
    worker = start_worker(src, dst, "--delay", "0.1", "--snapshot-file", str(snapshot))
    worker.wait_running()
    (src / "d").rename(src / "e")
    wait_until(lambda: (dst / "e" / "sub" / "x").exists(), 5, "the rename at DEST")
    assert worker.stop() == 0
    with gzip.open(snapshot, "rt") as f:
        entries = json.load(f)["entries"]
    assert {"e", "e/sub", "e/sub/x"} <= set(entries) and not any(p.startswith("d") for p in entries)
    (src / "e" / "sub" / "x").unlink()  # while stopped
    worker = start_worker(
        src, dst, "--delay", "0.1", "--snapshot-file", str(snapshot), "--split-brain", "newest"
    )
    worker.wait_running()
    assert worker.stop() == 0
    assert not (src / "e" / "sub" / "x").exists() and not (dst / "e" / "sub" / "x").exists()


def test_the_ancestor_keeps_a_folders_files_when_the_folder_changes_during_a_run(
    dirs, start_worker, tmp_path
) -> None:
    """Found by the soak: a run that listed folder d while a file was made in d
    (d's ctime after the run began) dropped every entry below d from the ancestor,
    so a file there that the container deleted before the next start's check
    looked made at DEST, and the check brought it back."""
    src, dst = dirs
    snapshot = tmp_path / "state" / "snap.json.gz"
    arm = tmp_path / "arm"
    rsync = tmp_path / "rsync-making-a-file-in-d"  # a change in d while the run is on
    make_z = f"if [ -e {arm} ]; then rm {arm}; echo z > {src}/d/z; fi"
    rsync.write_text(f'#!/bin/sh\n{make_z}\nexec {shutil.which("rsync")} "$@"\n')
    rsync.chmod(0o755)
    (src / "d").mkdir()
    (src / "d" / "x").write_text("x")
    args = ("--delay", "0.1", "--snapshot-file", str(snapshot), "--rsync-binary", str(rsync))
    worker = start_worker(src, dst, *args)
    worker.wait_running()
    arm.touch()
    (src / "d" / "y").write_text("y")
    wait_until(lambda: (dst / "d" / "y").exists() and (dst / "d" / "z").exists(), 5, "y and z at DEST")
    assert worker.stop() == 0 and not arm.exists()
    with gzip.open(snapshot, "rt") as f:
        entries = json.load(f)["entries"]
    assert {"d", "d/x", "d/y", "d/z"} <= set(entries)
    (src / "d" / "x").unlink()  # while stopped
    worker = start_worker(src, dst, *args, "--split-brain", "newest")
    worker.wait_running()
    assert worker.stop() == 0
    assert not (src / "d" / "x").exists() and not (dst / "d" / "x").exists()


def test_the_ancestor_learns_a_hard_link_renamed_away_from_during_a_run(dirs, start_worker, tmp_path) -> None:
    """Found by the soak (log-rotate of a hard-linked app.log): a run sends a and b
    (one file, two names) after a write through a, and a is renamed before the run
    ends: the inode's ctime moves, so both names left the ancestor; the rename was
    done at DEST, so nothing named b again (it has no event of its own). b stayed
    out of the ancestor, and the next start's check brought b back if the
    container had deleted it. Such names are now sent again until they rest."""
    src, dst = dirs
    snapshot = tmp_path / "state" / "snap.json.gz"
    arm = tmp_path / "arm"
    rsync = tmp_path / "rsync-renaming-a"  # after rsync sent a, before the run ends
    rename_a = f"if [ -e {arm} ]; then rm {arm}; mv {src}/a {src}/a2; fi"
    rsync.write_text(f'#!/bin/sh\n{shutil.which("rsync")} "$@"\ncode=$?\n{rename_a}\nexit $code\n')
    rsync.chmod(0o755)
    (src / "a").write_text("a")
    os.link(src / "a", src / "b")
    args = ("--delay", "0.1", "--snapshot-file", str(snapshot), "--rsync-binary", str(rsync))
    worker = start_worker(src, dst, *args)
    worker.wait_running()
    arm.touch()
    with open(src / "a", "a") as f:
        f.write("more")
    wait_until(lambda: (dst / "a2").exists() and not (dst / "a").exists(), 5, "the rename at DEST")
    converged(src, dst)
    assert worker.stop() == 0 and not arm.exists()
    with gzip.open(snapshot, "rt") as f:
        entries = json.load(f)["entries"]
    assert {"a2", "b"} <= set(entries)
    (src / "b").unlink()  # while stopped
    worker = start_worker(src, dst, *args, "--split-brain", "newest")
    worker.wait_running()
    assert worker.stop() == 0
    assert not (src / "b").exists() and not (dst / "b").exists()


def test_the_ancestor_learns_what_is_below_a_folder_renamed_during_its_run(
    dirs, start_worker, tmp_path
) -> None:
    """Found by the soak: a run sends d/x, and d is renamed to e before the run
    ends; the ancestor cannot find d/x any more, and the next batch renames d at
    DEST, where e/x is then equal to SOURCE's and not sent: e/x stayed out of the
    ancestor, and the next start's check brought e/x back if the container had
    deleted it. What the renamed tree's compare finds equal is now known."""
    src, dst = dirs
    snapshot = tmp_path / "state" / "snap.json.gz"
    arm = tmp_path / "arm"
    rsync = tmp_path / "rsync-renaming-d"  # after rsync sent d/x, before the run ends
    rename_d = f"if [ -e {arm} ]; then rm {arm}; mv {src}/d {src}/e; fi"
    rsync.write_text(f'#!/bin/sh\n{shutil.which("rsync")} "$@"\ncode=$?\n{rename_d}\nexit $code\n')
    rsync.chmod(0o755)
    (src / "d").mkdir()
    args = ("--delay", "0.1", "--snapshot-file", str(snapshot), "--rsync-binary", str(rsync))
    worker = start_worker(src, dst, *args)
    worker.wait_running()
    arm.touch()
    (src / "d" / "x").write_text("x")
    wait_until(lambda: (dst / "e" / "x").exists() and not (dst / "d").exists(), 5, "the rename at DEST")
    converged(src, dst)
    assert worker.stop() == 0 and not arm.exists()
    with gzip.open(snapshot, "rt") as f:
        entries = json.load(f)["entries"]
    assert {"e", "e/x"} <= set(entries)
    (src / "e" / "x").unlink()  # while stopped
    worker = start_worker(src, dst, *args, "--split-brain", "newest")
    worker.wait_running()
    assert worker.stop() == 0
    assert not (src / "e" / "x").exists() and not (dst / "e" / "x").exists()


def test_a_log_rotated_while_its_run_is_on_keeps_each_content_under_its_name(dirs, start_worker) -> None:
    """rsync lists app.log (size, mtime), then sends the large file listed before
    it while app.log is renamed to app.log.1 and a new app.log is written; it opens
    app.log by name and sends the new log with the old log's mtime, and the next
    batch's rename at DEST carries that content to app.log.1."""
    src, dst = dirs
    (src / "app.log").write_bytes(b"old log line\n" * 1000)
    worker = start_worker(src, dst, "--delay", "0.1", "--rsync-arg=--bwlimit=2000")
    worker.wait_running()
    (src / "a-big").write_bytes(os.urandom(4 << 20))  # 2 s at 2 MB/s, sent before app.log
    with open(src / "app.log", "ab") as log:  # in the same batch
        log.write(b"last line\n")
    wait_until(lambda: any(p.name.startswith(".a-big.") for p in dst.iterdir()), 5, "the run sending a-big")
    (src / "app.log").rename(src / "app.log.1")
    (src / "app.log").write_bytes(b"new log\n")
    wait_until(
        lambda: (dst / "app.log.1").exists() and (dst / "app.log").exists(), 10, "the rotation at DEST"
    )
    converged(src, dst, timeout=5)
    assert worker.stop() == 0


def test_a_log_rotated_before_its_run_lists_it_keeps_each_content_under_its_name(
    dirs, start_worker, tmp_path
) -> None:
    """The soak's log-rotate (seed 22635 after the ancestor fixes: lost 2, then
    pulled and reverted 2): the batch with app.log is taken, app.log is renamed to
    app.log.1 and a new app.log written before rsync lists it; rsync rightly sends
    the new app.log, and the next batch's rename done at DEST carries that content
    to app.log.1. The ancestor holds SOURCE's app.log.1, so the next start's check
    takes DEST's for a change there, pulls it and moves the container's log away."""
    src, dst = dirs
    arm = tmp_path / "arm"
    rsync = tmp_path / "rsync-rotating-first"
    rotate = f"if [ -e {arm} ]; then rm {arm}; mv {src}/app.log {src}/app.log.1; echo new > {src}/app.log; fi"
    rsync.write_text(f'#!/bin/sh\n{rotate}\nexec {shutil.which("rsync")} "$@"\n')
    rsync.chmod(0o755)
    (src / "app.log").write_bytes(b"old log line\n" * 1000)
    worker = start_worker(src, dst, "--delay", "0.1", "--rsync-binary", str(rsync))
    worker.wait_running()
    arm.touch()
    with open(src / "app.log", "ab") as log:
        log.write(b"last line\n")
    wait_until(lambda: (dst / "app.log.1").exists() and not arm.exists(), 5, "the rotation at DEST")
    converged(src, dst, timeout=5)
    assert worker.stop() == 0


@pytest.mark.parametrize("flag", ["--skip-initial-sync", "--only-initial-sync"])
def test_initial_sync_flags(dirs, start_worker, flag: str) -> None:
    src, dst = dirs
    (src / "existing").write_text("old")
    worker = start_worker(src, dst, flag, "--delay", "0.1")
    if flag == "--only-initial-sync":
        assert worker.wait() == 0
        assert tree(src) == tree(dst)
        return
    worker.wait_running()
    (src / "new").write_text("new")
    wait_until(lambda: (dst / "new").exists())
    assert not (dst / "existing").exists()
    assert worker.stop() == 0


def test_one_handler_run_per_batch_and_split_above_limit(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    calls = tmp_path / "calls"
    counting = tmp_path / "counting-rsync"
    # runs of the root's own attributes alone (--exclude=/*, when idle) are not batches
    counting.write_text(
        f'#!/bin/sh\ncase "$*" in *--exclude=/\\**) ;; *) echo run >> {calls};; esac\n'
        f'exec {shutil.which("rsync")} "$@"\n'
    )
    counting.chmod(0o755)
    worker = start_worker(
        src,
        dst,
        "--delay",
        "1",
        "--rsync-binary",
        str(counting),
        "--skip-initial-sync",
        "--max-batch-paths",
        "40",
    )
    worker.wait_running()
    for i in range(30):
        (src / f"f{i}").write_text("x")
    converged(src, dst)
    assert calls.read_text().count("run") == 1  # 30 files (+ nothing else): one run
    for i in range(100):
        (src / f"g{i}").write_text("x")
    converged(src, dst)
    assert calls.read_text().count("run") == 1 + 3  # 100 paths in runs of at most 40
    assert worker.stop() == 0


def test_delay_is_a_window_not_a_debounce(dirs, start_worker) -> None:
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "0.3", "--skip-initial-sync")
    worker.wait_running()
    start_syncs = worker.syncs()
    end = time.monotonic() + 2.0
    i = 0
    while time.monotonic() < end:  # an event every 50 ms, never a quiet gap
        (src / f"t{i}").write_text("x")
        i += 1
        time.sleep(0.05)
    assert worker.syncs() - start_syncs >= 3, "a steady trickle held every batch back"
    converged(src, dst)
    assert worker.stop() == 0


def test_bigfile_waits_for_its_own_window(dirs, start_worker) -> None:
    src, dst = dirs
    worker = start_worker(
        src,
        dst,
        "--delay",
        "0.1",
        "--bigfile-threshold",
        "1000",
        "--bigfile-delay",
        "2",
        "--skip-initial-sync",
    )
    worker.wait_running()
    start = time.monotonic()
    (src / "big").write_bytes(b"x" * 5000)
    (src / "small").write_bytes(b"x" * 1000)  # not strictly larger: small
    wait_until(lambda: (dst / "small").exists(), 5)
    assert not (dst / "big").exists()
    wait_until(lambda: (dst / "big").exists(), 5)
    assert time.monotonic() - start >= 1.9
    assert worker.stop() == 0


def test_files_that_vanish_before_the_run_are_not_an_error(dirs, start_worker) -> None:
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "0.3", "--retries", "0")
    worker.wait_running()
    syncs = worker.syncs()
    for i in range(200):
        path = src / f"short-lived{i}"
        path.write_text("x")
        path.unlink()
    (src / "survivor").write_text("x")
    converged(src, dst)
    wait_until(lambda: worker.syncs() > syncs)
    assert all(line["failures"] == 0 for line in worker.lines)
    assert worker.stop() == 0


@pytest.mark.parametrize(("rules", "recursive"), [((), True), (("--exclude", r"\.tmp$"), False)])
def test_full_sync_recurses_only_without_rules(dirs, start_worker, tmp_path, rules, recursive) -> None:
    src, dst = dirs
    (src / "d").mkdir()
    (src / "d" / "f").write_text("x")
    (src / "d" / "x.tmp").write_text("excluded")
    (dst / "stray").write_text("deleted by the full sync")
    argv_log = tmp_path / "argv"
    recording = tmp_path / "recording-rsync"
    recording.write_text(f'#!/bin/sh\necho "$@" >> {argv_log}\nexec {shutil.which("rsync")} "$@"\n')
    recording.chmod(0o755)
    worker = start_worker(src, dst, "--only-initial-sync", "--rsync-binary", str(recording), *rules)
    assert worker.wait() == 0
    assert (" -r " in argv_log.read_text()) is recursive
    assert (dst / "d" / "f").exists() and not (dst / "stray").exists()
    assert (dst / "d" / "x.tmp").exists() is recursive


@pytest.mark.parametrize("how", ["rm -rf", "move out"])
def test_directory_recreated_in_one_batch_loses_its_old_content(dirs, start_worker, tmp_path, how) -> None:
    src, dst = dirs
    (src / "d" / "sub").mkdir(parents=True)
    for i in range(5):
        (src / "d" / f"old{i}").write_text("old")
    (src / "d" / "sub" / "deep-old").write_text("old")
    worker = start_worker(src, dst, "--delay", "0.5")
    worker.wait_running()
    converged(src, dst)
    if how == "rm -rf":
        shutil.rmtree(src / "d")
    else:
        (src / "d").rename(tmp_path / "elsewhere")
    (src / "d").mkdir()  # the same name again, within the same batch
    (src / "d" / "new").write_text("new")
    converged(src, dst)
    assert sorted(p.name for p in (dst / "d").iterdir()) == ["new"]
    assert worker.stop() == 0


def test_directory_rename_never_carries_content_the_rules_exclude(dirs, start_worker) -> None:
    src, dst = dirs
    (src / "a").mkdir()
    (src / "a" / "secret.key").write_text("s")
    (src / "a" / "pub").write_text("p")
    worker = start_worker(src, dst, "--exclude", "^b/secret", "--delay", "0.1")
    worker.wait_running()
    wait_until(lambda: (dst / "a" / "secret.key").exists())  # not excluded under the old name
    (src / "a").rename(src / "b")
    wait_until(lambda: (dst / "b" / "pub").exists() and not (dst / "a").exists(), 10)
    assert not (dst / "b" / "secret.key").exists()
    assert worker.stop() == 0


def test_directory_mtimes_follow(dirs, start_worker) -> None:
    src, dst = dirs
    (src / "d").mkdir()
    (src / "d" / "old").write_text("x")
    worker = start_worker(src, dst, "--delay", "0.1")
    worker.wait_running()
    time.sleep(1.1)  # a new second, so a stale directory mtime would show
    (src / "d" / "new").write_text("y")
    (src / "d" / "old").unlink()
    converged(src, dst)
    for rel in ("", "d"):
        wait_until(
            lambda rel=rel: int((dst / rel).stat().st_mtime) == int((src / rel).stat().st_mtime),
            5,
            f"mtime of {rel!r}",
        )
    assert worker.stop() == 0


def test_root_changes_never_send_excluded_top_level_files(dirs, start_worker) -> None:
    # rsync sends a listed "." with its whole first level: the root must never be listed
    src, dst = dirs
    worker = start_worker(src, dst, "--exclude", r"\.tmp$", "--delay", "0.1")
    worker.wait_running()
    (src / "x.tmp").write_text("excluded")
    (src / "y").write_text("synced")
    os.chmod(src, 0o750)  # an attribute event on the root itself
    wait_until(lambda: (dst / "y").exists())
    time.sleep(0.5)
    assert not (dst / "x.tmp").exists()
    assert worker.stop() == 0


def test_a_renamed_directory_is_completed_where_dests_copy_was_not(dirs, start_worker) -> None:
    """A directory rename is repeated at DEST, but DEST's copy may lack what was on
    its way (content renamed while its run went on): the renamed tree is compared
    and what differs is sent, without copying the rest again."""
    src, dst = dirs
    (src / "a" / "deep").mkdir(parents=True)
    for name in ("x", "y", "deep/z"):
        (src / "a" / name).write_text(name * 100)
    worker = start_worker(src, dst, "--delay", "0.1")
    worker.wait_running()
    converged(src, dst)
    (dst / "a" / "deep" / "z").unlink()  # never arrived
    (dst / "a" / "y").write_text("half")  # arrived half
    (dst / "a" / "stale").write_text("gone at SOURCE")
    kept = (dst / "a" / "x").stat().st_ino
    (src / "a").rename(src / "b")
    converged(src, dst)
    assert (dst / "b" / "x").stat().st_ino == kept  # renamed at DEST, not copied again
    assert worker.stop() == 0


def test_an_edit_pending_when_a_full_resync_is_asked_for_is_not_lost(dirs, start_worker) -> None:
    """A same-size edit that puts the mtime back is seen by inotify, but a full
    resync asked for while it waits (an overflow, SIGUSR2) compares size and
    mtime only: the pending paths are sent again as changed afterwards."""
    src, dst = dirs
    target = src / "f"
    target.write_text("aaaa")
    worker = start_worker(src, dst, "--delay", "2")
    worker.wait_running()
    wait_until(lambda: (dst / "f").exists(), 10, "the first version")
    before = target.stat()
    target.write_text("bbbb")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # size and mtime as before
    time.sleep(0.3)  # the event is in the batch
    worker.signal(signal.SIGUSR2)
    wait_until(lambda: (dst / "f").read_text() == "bbbb", 15, "the edit at DEST")
    assert worker.stop() == 0
