"""A git workload under a live ``tandem sync --delay 1`` (issue 14, item 2).

Run from the repository (a few minutes; the full sizes are the issue's):

    /work/main/.venv/bin/python -m bench.git_workload                     # 5 361 files
    /work/main/.venv/bin/python -m bench.git_workload --include           # 13 310 files
    /work/main/.venv/bin/python -m bench.git_workload --trees /usr/lib/python3.11 --limit 2000 \
        --scale 0.2 --json out.json

SOURCE is a git repository made from real trees (by default
/usr/lib/python3/dist-packages and /usr/lib/python3.11; ``--include`` adds
/usr/include). With the worker running: ``git add -A`` and commit; a branch that
``git mv``s 60 directories and 150 files (renamed, then ``git add -A``); one that deletes half the files; one
that edits 800 files with ``sed -i`` and adds 300; 20 quick checkouts; ``git gc
--aggressive``; ``git repack -ad`` (counts times ``--scale``). Then it waits for
the worker to report nothing pending (with ``--stop-at-once`` it does not wait),
stops it with SIGTERM and compares DEST with SOURCE (content, modes, links).

Figures: the workload's wall time; the longest gap between two status lines
(heartbeats, syncs) and between two syncs; the longest lag and most paths
pending the worker reported; the time to catch up after the workload; the time
from SIGTERM to exit and the exit code; the worker's CPU with its rsync runs
(``os.wait4``: it reaps them); what was missing, differing or stale at DEST.
``run()`` is the core; ``tests/workers/test_git_workload.py`` runs it small.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.compare import Loss, compare

ROOT = Path(__file__).resolve().parent.parent
TREES = ("/usr/lib/python3/dist-packages", "/usr/lib/python3.11")
INCLUDE = "/usr/include"
GIT_TIMEOUT = 600.0


@dataclass
class Figures:
    files: int = 0
    workload: float = 0.0  # s
    max_line_gap: float = 0.0  # s between two status lines, workload start to exit
    max_sync_gap: float = 0.0  # s something stayed pending with no sync
    max_lag: float = 0.0  # s, reported, aged until the next report while anything was pending
    max_pending: int = 0
    catch_up: float = 0.0  # s from the workload's end until nothing was pending
    stop: float = 0.0  # s from SIGTERM to exit
    exit_code: int | None = None
    cpu: float = 0.0  # s, user + system, the worker and its rsync runs
    syncs: int = 0
    missing: int = 0
    differing: int = 0
    stale: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.missing or self.differing or self.stale)


class Worker:
    """``tandem sync SOURCE DEST --json``; status lines kept with their arrival time."""

    def __init__(self, source: Path, dest: Path, args: list[str]) -> None:
        argv = [sys.executable, "-m", "orchestrator.cli", "sync", str(source), str(dest), "--json", *args]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, start_new_session=True
        )
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.rusage: Any = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.lines.append((time.monotonic(), json.loads(line)))

    def last(self) -> dict[str, Any]:
        return self.lines[-1][1] if self.lines else {}

    def wait_for(self, check: Any, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if check(self.last()) or self.proc.poll() is not None:
                return bool(check(self.last()))
            time.sleep(0.1)
        return False

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, wait up to TIMEOUT (then SIGKILL); reap with the rusage of its children."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        code: int | None = None
        while time.monotonic() < end:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                code, self.rusage = os.waitstatus_to_exitcode(status), usage
                break
            time.sleep(0.05)
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            _, status, self.rusage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = code if code is not None else -9  # reaped here, not by Popen
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


def git(repo: Path, *args: str, stdin: str | None = None) -> None:
    subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        input=stdin,
        text=True,
        stdout=subprocess.DEVNULL,
        timeout=GIT_TIMEOUT,
    )


def listed(repo: Path) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z"], check=True, capture_output=True, timeout=GIT_TIMEOUT
    )
    return sorted(os.fsdecode(p) for p in out.stdout.split(b"\0") if p)


def listed_now(repo: Path) -> list[str]:
    """The files in REPO's work tree now (not below .git)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        out += [os.path.relpath(os.path.join(dirpath, f), repo) for f in sorted(filenames)]
    return out


def build(source: Path, trees: list[str], limit: int, suffix: str = "") -> int:
    """Copy TREES' files (those named *SUFFIX) into SOURCE, at most LIMIT (0: all).
    Returns the file count."""
    count = 0
    for top in trees:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel = Path(Path(top).name) / os.path.relpath(dirpath, top)
            for name in sorted(n for n in filenames if n.endswith(suffix)):
                if limit and count >= limit:
                    return count
                target = source / rel / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OSError):
                    shutil.copy2(os.path.join(dirpath, name), target, follow_symlinks=False)
                    count += 1
    return count


def workload(repo: Path, rng: random.Random, scale: float) -> None:
    """The issue's git session, counts times SCALE."""
    n = lambda count: max(1, round(count * scale))  # noqa: E731
    git(repo, "init", "-q", "-b", "master")
    git(repo, "config", "user.email", "bench@tandem")
    git(repo, "config", "user.name", "bench")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    files = listed(repo)
    dirs = sorted({os.path.dirname(f) for f in files if os.path.dirname(f)})
    git(repo, "checkout", "-qb", "moves")
    moved: list[str] = []
    for directory in rng.sample(dirs, min(n(60), len(dirs))):  # git mv, renames first
        if (repo / directory).is_dir() and not any(directory.startswith(m + "/") for m in moved):
            os.rename(repo / directory, repo / f"{directory}.mv")
            moved.append(directory)
    for path in rng.sample(listed_now(repo), n(150)):
        os.rename(repo / path, repo / f"{path}.mv")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "moves")
    git(repo, "checkout", "-q", "master")
    git(repo, "checkout", "-qb", "prune")
    gone = rng.sample(files, len(files) // 2)
    git(repo, "rm", "-q", "--pathspec-from-file=-", stdin="\n".join(gone) + "\n")
    git(repo, "commit", "-qm", "prune")
    git(repo, "checkout", "-q", "master")
    git(repo, "checkout", "-qb", "edits")
    edited = [str(repo / p) for p in rng.sample(files, n(800)) if not (repo / p).is_symlink()]
    subprocess.run(["sed", "-i", "s/e/E/", *edited], check=False, stderr=subprocess.DEVNULL, timeout=600)
    for i in range(n(300)):
        target = repo / rng.choice(dirs) / f"added-{i}.txt"
        target.write_text(f"added {i} {rng.random()}\n" * rng.randint(1, 50))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "edits")
    branches = ["master", "moves", "prune", "edits"]
    for i in range(n(20)):
        git(repo, "checkout", "-q", branches[i % len(branches)])
    git(repo, "gc", "-q", "--aggressive")
    git(repo, "repack", "-adq")


def longest_lag(lines: list[tuple[float, dict[str, Any]]], end: float) -> float:
    """The lag as a reader of the reports sees it: each report's lag, aged until
    the next report while anything is pending (the supervisor's ``lag_at``)."""
    longest = 0.0
    for (t, line), next_t in zip(lines, [*(t for t, _ in lines[1:]), end], strict=True):
        aged = next_t - t if line.get("pending") else 0.0
        longest = max(longest, float(line.get("lag", 0.0)) + aged)
    return longest


def gaps(lines: list[tuple[float, dict[str, Any]]], since: float, end: float) -> tuple[float, float]:
    """The longest gap between status lines and between syncs while something was
    pending, from SINCE to END."""
    times = [since] + [t for t, _ in lines if since <= t] + [end]
    line_gap = max(b - a for a, b in itertools.pairwise(times))
    sync_gap = 0.0
    last_sync = since
    for t, line in lines:
        if t < since:
            continue
        if line.get("pending"):
            sync_gap = max(sync_gap, t - last_sync)
        if line.get("event") == "sync" or not line.get("pending"):
            last_sync = t  # (nothing pending: nothing to wait for)
    return line_gap, sync_gap


def run(
    trees: list[str],
    workdir: Path,
    *,
    limit: int = 0,
    scale: float = 1.0,
    seed: int = 1,
    args: tuple[str, ...] = ("--delay", "1", "--heartbeat", "1"),
    catch_up: float = 600.0,
    stop_timeout: float = 60.0,
    stop_at_once: bool = False,
) -> Figures:
    source, dest = workdir / "src", workdir / "dst"
    source.mkdir()
    dest.mkdir()
    figures = Figures(files=build(source, trees, limit))
    worker = start(source, dest, args, stop_timeout, figures)
    try:
        begin = time.monotonic()
        workload(source, random.Random(seed), scale)
        done = time.monotonic()
        figures.workload = done - begin
        idle = stop_at_once or worker.wait_for(
            lambda line: line.get("pending") == 0 and line.get("event") != "sync", catch_up
        )
        figures.catch_up = 0.0 if stop_at_once else time.monotonic() - done
        if not idle:
            figures.notes.append(f"still {worker.last().get('pending')} pending after {catch_up:.0f}s")
        stop(worker, figures, begin, stop_timeout)
    finally:
        if worker.proc.returncode is None:
            worker.stop(5)
    tally(worker, figures, source, dest)
    return figures


def start(source: Path, dest: Path, args: tuple[str, ...], stop_timeout: float, figures: Figures) -> Worker:
    """The worker, once it reports running (or a note that it never did)."""
    worker = Worker(source, dest, [*args, "--stop-timeout", str(stop_timeout)])
    if not worker.wait_for(lambda line: line.get("status") == "running", 300):
        figures.notes.append(f"never running: {worker.last()}")
    return worker


def stop(worker: Worker, figures: Figures, begin: float, stop_timeout: float) -> None:
    """SIGTERM; the exit code, the stop time, and the gaps and lag from BEGIN to SIGTERM."""
    term = time.monotonic()
    figures.exit_code = worker.stop(stop_timeout + 120)
    figures.stop = time.monotonic() - term
    figures.max_line_gap, figures.max_sync_gap = gaps(worker.lines, begin, term)
    figures.max_lag = longest_lag([(t, r) for t, r in worker.lines if r.get("event") != "exit"], term)


def tally(worker: Worker, figures: Figures, source: Path, dest: Path) -> Loss:
    """The stopped worker's reports and CPU, and DEST against SOURCE."""
    reports = [line for _, line in worker.lines]
    figures.max_pending = max((int(r.get("pending", 0)) for r in reports), default=0)
    figures.syncs = max((int(r.get("syncs", 0)) for r in reports), default=0)
    if worker.rusage is not None:
        figures.cpu = worker.rusage.ru_utime + worker.rusage.ru_stime
    loss = compare(source, dest)
    figures.missing, figures.differing, figures.stale = (
        len(loss.missing),
        len(loss.differing),
        len(loss.stale),
    )
    return loss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", nargs="*", default=list(TREES), help="trees SOURCE is made of")
    parser.add_argument("--include", action="store_true", help=f"add {INCLUDE} (13 310 files)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many files (0: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="operation counts times this")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stop-at-once", action="store_true", help="SIGTERM when the workload ends")
    parser.add_argument("--json", help="also write the figures to this file")
    opts = parser.parse_args()
    trees = [*opts.trees, INCLUDE] if opts.include else opts.trees
    with tempfile.TemporaryDirectory(prefix="tandem-git-") as scratch:
        figures = run(
            trees,
            Path(scratch),
            limit=opts.limit,
            scale=opts.scale,
            seed=opts.seed,
            stop_at_once=opts.stop_at_once,
        )
    return report(figures, opts.json)


def report(figures: Figures, path: str | None) -> int:
    """Print FIGURES (and write them to PATH as JSON); 0 if DEST ended equal after exit 0."""
    out = {**asdict(figures), "equal": figures.equal}
    width = max(map(len, out))
    for key, value in out.items():
        print(f"{key:>{width}}: {round(value, 2) if isinstance(value, float) else value}")
    if path:
        Path(path).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if figures.equal and figures.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
