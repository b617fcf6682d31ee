"""Signals, files, hooks, standby, failures and exit codes of a real worker."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, tree, wait_until
from workers.spec import ExitCode

pytestmark = pytest.mark.real


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGTERM])
def test_stop_flushes_everything_pending(dirs, start_worker, sig: int) -> None:
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "60", "--skip-initial-sync")
    worker.wait_running()
    for i in range(200):
        (src / f"f{i}").write_text(str(i))
    (src / "sub").mkdir()
    (src / "sub" / "x").write_text("x")
    time.sleep(0.3)  # let inotify deliver; the 60 s window is far away
    assert not list(dst.iterdir())
    worker.signal(sig)
    assert worker.wait() == 0
    assert tree(src) == tree(dst)
    assert worker.lines[-1]["event"] == "exit" and worker.lines[-1]["exit_code"] == 0


def test_pid_status_files_hooks_and_status_words(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    pid_file, status_file, hooks = tmp_path / "w.pid", tmp_path / "w.status", tmp_path / "hooks"
    pre = script(tmp_path / "pre", f'echo "pre $1" >> {hooks}\n')
    post = script(tmp_path / "post", f'echo "exit $1" >> {hooks}\n')
    worker = start_worker(
        src, dst, "--label", "box1", "--pid-file", str(pid_file), "--status-file", str(status_file),
        "--pre-exit-hook", str(pre), "--exit-hook", str(post),
    )  # fmt: skip
    worker.wait_running()
    assert pid_file.read_text().strip() == str(worker.pid)
    assert status_file.read_text().strip() == "running"
    assert worker.stop() == 0
    assert hooks.read_text().splitlines() == ["pre box1", "exit box1"]
    assert not pid_file.exists() and not status_file.exists()
    words = [line["status"] for line in worker.lines if line["event"] == "phase"]
    assert words == ["starting", "initial-sync", "running", "stopping"]
    assert all(line["label"] == "box1" for line in worker.lines)


def test_pid_file_of_a_live_worker_is_refused(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    pid_file = tmp_path / "w.pid"
    first = start_worker(src, dst, "--pid-file", str(pid_file))
    first.wait_running()
    second = start_worker(src, dst, "--pid-file", str(pid_file))
    assert second.wait() == ExitCode.CONFIG
    assert "pid file" in second.err() and str(first.pid) in second.err()
    # the refused start leaves the holder's file alone: a third start is refused too
    assert pid_file.read_text().strip() == str(first.pid)
    third = start_worker(src, dst, "--pid-file", str(pid_file))
    assert third.wait() == ExitCode.CONFIG
    assert first.status() == "running"
    assert first.stop() == 0
    assert not pid_file.exists()


def test_pid_file_left_by_a_dead_worker_is_taken(dirs, start_worker, tmp_path) -> None:
    """The lock is the proof of life, not the pid: a file naming a live but
    unrelated process (a reused pid) holds nothing back."""
    src, dst = dirs
    pid_file = tmp_path / "w.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    worker = start_worker(src, dst, "--pid-file", str(pid_file))
    worker.wait_running()
    assert pid_file.read_text().strip() == str(worker.pid)
    assert worker.stop() == 0


def test_a_second_stop_signal_cuts_the_flush_short(dirs, start_worker) -> None:
    """Ctrl-C twice: the first waits for the flush (here ~20 s at 200 KB/s), the
    second ends it now with what is undelivered said (exit 4)."""
    src, dst = dirs
    worker = start_worker(
        src, dst, "--delay", "60", "--stop-timeout", "60", "--rsync-arg=--bwlimit=200"
    )  # fmt: skip
    worker.wait_running()
    (src / "big").write_bytes(os.urandom(4 << 20))
    time.sleep(0.3)
    worker.signal(signal.SIGINT)
    wait_until(lambda: worker.status() == "stopping", 5, "stopping")
    time.sleep(1.0)
    assert worker.proc.poll() is None, "the first signal waits for the flush"
    start = time.monotonic()
    worker.signal(signal.SIGINT)
    assert worker.wait(15) == ExitCode.SYNC_FAILED
    assert time.monotonic() - start < 5
    assert b"second stop signal" in worker.stderr


def test_sigabrt_writes_every_threads_stack(dirs, start_worker, tmp_path) -> None:
    """The supervisor's SIGABRT to a hung worker: the stacks go to stderr (the
    worker's log), and no core file is left."""
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "0.1")
    worker.wait_running()
    worker.signal(signal.SIGABRT)
    assert worker.wait(10) == -signal.SIGABRT
    wait_until(lambda: b"most recent call first" in worker.stderr, 5, "a stack trace")
    assert b"runner.py" in worker.stderr and b"Current thread" in worker.stderr
    assert not list(ROOT.glob("core*")) and not list(tmp_path.glob("core*"))


def test_standby_file_holds_everything_then_one_run(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    standby = tmp_path / "standby"
    standby.touch()
    (src / "before").write_text("x")
    worker = start_worker(src, dst, "--standby-file", str(standby), "--delay", "0.1")
    wait_until(lambda: worker.status() == "standby", 10, "standby")
    time.sleep(0.5)
    assert not list(dst.iterdir()), "synced during standby (not even the initial sync may run)"
    (src / "during").write_text("changed in standby")
    (src / "before").write_text("edited in standby")
    time.sleep(0.3)  # the events are held
    standby.unlink()
    worker.wait_running()
    wait_until(lambda: tree(src) == tree(dst))
    time.sleep(0.5)
    assert worker.syncs() == 1, "the initial sync covers what changed in standby: one run"
    standby.touch()
    wait_until(lambda: worker.status() == "standby", 5, "standby again")
    syncs = worker.syncs()
    for i in range(20):
        (src / f"f{i}").write_text("x")
    time.sleep(0.6)
    assert not (dst / "f0").exists()
    standby.unlink()
    wait_until(lambda: tree(src) == tree(dst))
    wait_until(lambda: worker.syncs() > syncs)
    time.sleep(0.3)
    assert worker.syncs() == syncs + 1, "everything pending goes in one run"
    assert worker.stop() == 0


def test_source_vanishing_halts_without_deleting(dirs, start_worker) -> None:
    src, dst = dirs
    for i in range(10):
        (src / f"f{i}").write_text("x")
    worker = start_worker(src, dst, "--delay", "0.5")
    worker.wait_running()
    wait_until(lambda: len(list(dst.iterdir())) == 10)
    src.rename(src.parent / "moved-away")
    assert worker.wait() == ExitCode.SAFETY_HALT
    assert "vanished" in worker.err()
    assert len(list(dst.iterdir())) == 10


def test_sighup_reloads_rules_and_keeps_old_ones_on_error(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    rules = tmp_path / "rules"
    rules.write_text("-f\\.tmp$\n")
    worker = start_worker(src, dst, "--rules", str(rules), "--delay", "0.1")
    worker.wait_running()
    (src / "a.tmp").write_text("x")
    (src / "a.log").write_text("x")
    wait_until(lambda: (dst / "a.log").exists())
    assert not (dst / "a.tmp").exists()
    rules.write_text("-f\\.log$\n")
    worker.signal(signal.SIGHUP)
    wait_until(lambda: b"rules reloaded" in worker.stderr, 5, "reload logged")
    (src / "b.tmp").write_text("x")
    (src / "b.log").write_text("x")
    wait_until(lambda: (dst / "b.tmp").exists())
    assert not (dst / "b.log").exists()
    rules.write_text("-f(unclosed\n")
    worker.signal(signal.SIGHUP)
    wait_until(lambda: b"keeping the old ones" in worker.stderr, 5, "bad reload logged")
    (src / "c.log").write_text("x")
    (src / "c.tmp").write_text("x")
    wait_until(lambda: (dst / "c.tmp").exists())
    assert not (dst / "c.log").exists(), "old rules must stay in force"
    assert worker.stop() == 0


def test_an_excluded_directory_costs_no_inotify_watch(dirs, start_worker, tmp_path) -> None:
    """Watches are the host's scarcest resource (one budget for every worker of
    root): an excluded tree gets none, also when made later; a reload that
    includes it watches it, one that excludes it again gives the watches back."""
    src, dst = dirs
    for i in range(40):
        (src / "skipdir" / f"s{i}").mkdir(parents=True)
    (src / "keep").mkdir()
    rules = tmp_path / "rules"
    rules.write_text("-d^skipdir$\n")
    worker = start_worker(src, dst, "--rules", str(rules), "--delay", "0.1")
    worker.wait_running()

    def watches() -> int:
        worker.signal(signal.SIGUSR2)  # a sync run reports the count now
        syncs = worker.syncs()
        wait_until(lambda: worker.syncs() > syncs, 10, "a report")
        return int(worker.lines[-1]["watches"])

    assert watches() == 2  # SOURCE and keep
    (src / "skipdir" / "later").mkdir()
    (src / "keep" / "sub").mkdir()
    wait_until(lambda: (dst / "keep" / "sub").is_dir(), 10, "keep/sub synced")
    assert watches() == 3
    rules.write_text("-f\\.tmp$\n")
    worker.signal(signal.SIGHUP)
    wait_until(lambda: b"rules reloaded" in worker.stderr, 5, "reload logged")
    assert watches() == 3 + 42
    (src / "skipdir" / "s7" / "f").write_text("now synced")
    wait_until(lambda: (dst / "skipdir" / "s7" / "f").exists(), 10, "a file in the newly watched tree")
    rules.write_text("-d^skipdir$\n")
    worker.signal(signal.SIGHUP)
    wait_until(lambda: worker.stderr.count(b"rules reloaded") == 2, 5, "second reload logged")
    assert watches() == 3
    assert worker.stop() == 0


def test_excluded_path_never_reaches_dest_even_in_new_directory(dirs, start_worker) -> None:
    src, dst = dirs
    (dst / "keep.tmp").write_text("DEST-only, excluded: left alone")
    (dst / "olddir").mkdir()
    (dst / "olddir" / "keep2.tmp").write_text("also left alone")
    (dst / "olddir" / "gone").write_text("DEST-only, synced: deleted")
    worker = start_worker(src, dst, "--exclude", r"\.tmp$", "--exclude", "^cache(/|$)", "--delay", "0.1")
    worker.wait_running()
    (src / "fresh" / "deeper").mkdir(parents=True)
    (src / "fresh" / "deeper" / "x.tmp").write_text("never")
    (src / "fresh" / "deeper" / "y").write_text("yes")
    (src / "cache" / "sub").mkdir(parents=True)
    (src / "cache" / "sub" / "z").write_text("never")
    wait_until(lambda: (dst / "fresh" / "deeper" / "y").exists())
    time.sleep(0.3)
    assert not (dst / "fresh" / "deeper" / "x.tmp").exists()
    assert not (dst / "cache").exists()
    assert (dst / "keep.tmp").exists() and (dst / "olddir" / "keep2.tmp").exists()
    assert not (dst / "olddir" / "gone").exists()
    (src / "fresh").rename(src / "renamed")
    wait_until(lambda: (dst / "renamed" / "deeper" / "y").exists() and not (dst / "fresh").exists())
    assert not (dst / "renamed" / "deeper" / "x.tmp").exists()
    assert worker.stop() == 0


def test_full_initial_sync_ignores_rules_once(dirs, start_worker) -> None:
    src, dst = dirs
    (src / "log.tmp").write_text("copied by the initial sync only")
    worker = start_worker(src, dst, "--exclude", r"\.tmp$", "--full-initial-sync", "--delay", "0.1")
    worker.wait_running()
    assert (dst / "log.tmp").exists()
    (src / "log.tmp").write_text("changed later: excluded")
    (src / "marker").write_text("x")
    wait_until(lambda: (dst / "marker").exists())
    assert (dst / "log.tmp").read_text() == "copied by the initial sync only"
    assert worker.stop() == 0


def test_failed_runs_are_retried_with_backoff(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    count = tmp_path / "count"
    flaky = script(
        tmp_path / "flaky",
        f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}\n"
        f'[ "$n" -lt 2 ] && exit 12\nexec {shutil.which("rsync")} "$@"\n',
    )
    (src / "f").write_text("x")
    worker = start_worker(src, dst, "--rsync-binary", str(flaky), "--retries", "3", "--retry-delay", "0.05")
    worker.wait_running()
    assert (dst / "f").exists()
    assert max(int(line["failures"]) for line in worker.lines) == 2
    assert worker.stop() == 0


def test_retries_exhausted_exit_sync_failed(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    broken = script(tmp_path / "broken", "echo 'connection refused' >&2\nexit 12\n")
    (src / "f").write_text("x")
    worker = start_worker(src, dst, "--rsync-binary", str(broken), "--retries", "1", "--retry-delay", "0.05")
    assert worker.wait() == ExitCode.SYNC_FAILED
    assert "connection refused" in worker.err()


def test_ignore_failures_keeps_paths_for_later(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    gate = tmp_path / "gate-open"
    gated = script(tmp_path / "gated", f'[ -e {gate} ] || exit 12\nexec {shutil.which("rsync")} "$@"\n')
    worker = start_worker(
        src, dst, "--rsync-binary", str(gated), "--retries", "0", "--ignore-failures",
        "--skip-initial-sync", "--delay", "0.1",
    )  # fmt: skip
    worker.wait_running()
    (src / "f").write_text("must not be dropped")
    wait_until(lambda: any(line["failures"] for line in worker.lines), 5, "a failure")
    assert worker.proc.poll() is None
    gate.touch()
    (src / "g").write_text("a later change triggers the next batch")
    wait_until(lambda: (dst / "f").exists() and (dst / "g").exists(), 40, "failed path delivered later")
    assert worker.stop() == 0


def test_timeout_kills_the_handler(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    hung = script(tmp_path / "hung", "sleep 30\n")
    (src / "f").write_text("x")
    worker = start_worker(src, dst, "--rsync-binary", str(hung), "--timeout", "0.5", "--retries", "0")
    start = time.monotonic()
    assert worker.wait() == ExitCode.SYNC_FAILED
    assert time.monotonic() - start < 10
    assert "killed after" in worker.err()


def test_ignore_exit_code(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    odd = script(tmp_path / "odd", f'{shutil.which("rsync")} "$@"\nexit 12\n')
    (src / "f").write_text("x")
    worker = start_worker(src, dst, "--rsync-binary", str(odd), "--ignore-exit-code", "12", "--retries", "0")
    worker.wait_running()
    assert (dst / "f").exists()
    assert worker.stop() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rules", "RULES"], "rules:2"),
        (["--exclude", "(unclosed"], "bad regex"),
        (["--rsync-binary", "/nonexistent/rsync"], "not found"),
        (["--mode", "shell", "--handler", "/nonexistent/handler"], "not found"),
        (["--mode", "python", "--handler", "no_such_module_xyz:f"], "cannot import"),
        (["--mode", "shell"], "needs --handler"),
        (["--delay", "-1"], "delay"),
        (["--skip-initial-sync", "--only-initial-sync"], "exclude each other"),
    ],
)
def test_bad_input_is_a_config_error_and_dest_untouched(dirs, start_worker, tmp_path, args, message) -> None:
    src, dst = dirs
    (src / "f").write_text("x")
    rules = tmp_path / "rules"
    rules.write_text("# comment\n+x^ok$\n")
    worker = start_worker(src, dst, *[str(rules) if a == "RULES" else a for a in args])
    assert worker.wait() == ExitCode.CONFIG
    assert message in worker.err()
    assert not list(dst.iterdir())


def test_missing_source_is_a_config_error(tmp_path, start_worker) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    worker = start_worker(tmp_path / "nope", dst)
    assert worker.wait() == ExitCode.CONFIG
    assert "SOURCE" in worker.err() and "not a directory" in worker.err()
    assert not list(dst.iterdir())


def test_json_lines_carry_counters_lag_and_heartbeats(dirs, start_worker) -> None:
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "1.5")
    worker.wait_running()
    (src / "f").write_text("x")
    wait_until(lambda: any(line["pending"] and line["lag"] > 0 for line in worker.lines), 5, "lag reported")
    wait_until(lambda: (dst / "f").exists())
    assert worker.stop() == 0
    events = {line["event"] for line in worker.lines}
    assert {"phase", "sync", "heartbeat", "exit"} <= events
    last_sync = [line for line in worker.lines if line["event"] == "sync"][-1]
    assert last_sync["syncs"] >= 2 and last_sync["files"] >= 1 and last_sync["watches"] >= 1


def test_stop_right_after_writes_and_a_rename_loses_nothing(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    (src / "x").write_text("x")
    worker = start_worker(src, dst, "--delay", "10")
    worker.wait_running()
    (src / "x").rename(tmp_path / "moved-out")  # watchdog holds a rename 0.5 s for pairing
    for i in range(200):
        (src / f"f{i}").write_text(str(i))
    worker.signal(signal.SIGTERM)  # no pause: events are still on their way
    assert worker.wait() == 0
    assert tree(src) == tree(dst)


def test_sighup_that_widens_the_rules_sends_newly_included_files(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    rules = tmp_path / "rules"
    rules.write_text("-f\\.log$\n")
    (src / "a.log").write_text("was excluded")
    worker = start_worker(src, dst, "--rules", str(rules), "--delay", "0.1")
    worker.wait_running()
    assert not (dst / "a.log").exists()
    rules.write_text("-f\\.txt$\n")
    worker.signal(signal.SIGHUP)
    wait_until(lambda: (dst / "a.log").exists(), 10, "newly included file sent")
    assert worker.stop() == 0


def test_a_worker_holds_at_most_its_inotify_watch_cap(dirs, start_worker) -> None:
    """Issue 15 item 13: watches are shared by every worker of root; past its cap
    a worker degrades to periodic rescans instead of taking them all."""
    src, dst = dirs
    for i in range(30):
        (src / f"d{i}").mkdir()
    worker = start_worker(src, dst, "--delay", "0.1", "--max-watches", "10")
    worker.wait_running()
    wait_until(lambda: worker.lines[-1]["degraded"], 10, "degraded")
    assert "watch cap 10 is reached" in str(worker.lines[-1]["degraded"])
    assert 0 < int(worker.lines[-1]["watches"]) <= 10
    (src / "d29" / "f").write_text("unwatched: found by a rescan")
    worker.signal(signal.SIGUSR2)
    wait_until(lambda: (dst / "d29" / "f").exists(), 10, "rescanned")
    assert worker.stderr.count(b"watch cap 10 is reached") == 1
    assert worker.stop() == 0
