#!/usr/bin/env python3
"""Benchmark tandem's tree scans against GNU find (the split-brain check scans both sides).

Run:  /work/main/.venv/bin/python bench/scan.py [--entries N] [--runs N] [--json] [--dir DIR]

Needs root (the ssh peer lives in a network namespace: ``tests/sshpeer.py``).

1. Builds a tree of ENTRIES entries (default 100 000) in a temp dir: ~5% nested
   directories (up to 4 levels), ~2% symlinks, the rest empty or tiny files.
2. local: ``find ROOT -printf '%y %s %T@ %P\\0'`` read fully from a pipe, against
   ``workers.snapshot.scan_local(ROOT)`` (a dict path -> Entry).
3. peer: the same find over ssh to an sshd peer in a network namespace (the floor),
   against ``workers.snapshot.scan_dest`` on ``root@PEER:ROOT`` (find -printf over
   the same ssh, output parsed into a dict). The peer shares the filesystem, so it
   scans the same tree.

Each scan runs once to warm up (page cache, ssh ControlMaster), then RUNS times;
the table shows median and min seconds and tandem / find of the medians (goal:
within 1.5x). Both sides must report ENTRIES entries. The tree is removed and the
peer stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.sshpeer import running_peer  # noqa: E402  (the same sshd peer the tests use)
from workers.snapshot import scan_dest, scan_local  # noqa: E402
from workers.spec import Destination  # noqa: E402

FIND_FORMAT = "%y %s %T@ %P\\0"
GOAL = 1.5  # tandem / find, medians
MAX_DEPTH = 4


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_tree(root: str, entries: int, seed: int = 1) -> None:
    """ENTRIES entries under ROOT: ~5% dirs, ~2% symlinks, the rest files of 0-64 bytes."""
    rng = random.Random(seed)
    n_dirs = max(1, entries * 5 // 100)
    n_links = entries * 2 // 100
    n_files = entries - n_dirs - n_links
    dirs = [("", 0)]  # (relative path, depth); "" is ROOT itself (not an entry)
    parents = dirs[:]  # the dirs that may still get a subdirectory
    for i in range(n_dirs):
        parent, depth = rng.choice(parents)
        rel = f"{parent}/d{i:05d}" if parent else f"d{i:05d}"
        os.mkdir(os.path.join(root, rel))
        dirs.append((rel, depth + 1))
        if depth + 1 < MAX_DEPTH:
            parents.append((rel, depth + 1))
    files = []
    for i in range(n_files):
        rel = os.path.join(rng.choice(dirs)[0], f"f{i:06d}{rng.choice(('.txt', '.json', '.log', ''))}")
        fd = os.open(os.path.join(root, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        if rng.random() < 0.3:
            os.write(fd, rng.randbytes(rng.randint(1, 64)))
        os.close(fd)
        files.append(rel)
    for i in range(n_links):
        here = rng.choice(dirs)[0]
        target = os.path.relpath(rng.choice(files), here or ".") if rng.random() < 0.9 else "missing"
        os.symlink(target, os.path.join(root, here, f"l{i:05d}"))


def count_find(output: bytes) -> int:
    """Records in find -printf output, without ROOT itself (always the first)."""
    return output.count(b"\0") - 1


def find_local(root: str) -> int:
    argv = ["find", root, "-printf", FIND_FORMAT]
    return count_find(subprocess.run(argv, stdout=subprocess.PIPE, check=True).stdout)


def timed(fn: Callable[[], int], runs: int) -> tuple[list[float], int]:
    """One warm-up call, then RUNS timed calls; the seconds and the last entry count."""
    count = fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        count = fn()
        times.append(time.perf_counter() - start)
    return times, count


def summary(times: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(times), "min": min(times), "times": times}


def figures(name: str, find: tuple[list[float], int], tandem: tuple[list[float], int]) -> dict[str, Any]:
    (find_times, find_count), (tandem_times, tandem_count) = find, tandem
    ratio = statistics.median(tandem_times) / statistics.median(find_times)
    return {
        "scan": name,
        "find": summary(find_times),
        "tandem": summary(tandem_times),
        "ratio": ratio,
        "within_goal": ratio <= GOAL,
        "entries": {"find": find_count, "tandem": tandem_count},
    }


def bench_local(root: str, runs: int) -> dict[str, Any]:
    log("local: find vs scan_local")
    find = timed(lambda: find_local(root), runs)
    tandem = timed(lambda: len(scan_local(root, None)), runs)
    return figures("local", find, tandem)


def bench_peer(root: str, runs: int) -> dict[str, Any]:
    log("peer: starting sshd in a network namespace")
    with running_peer() as peer:
        target = f"root@{peer.peer_ip}"
        argv = [*shlex.split(peer.rsh), target, f"find {shlex.quote(root)} -printf '{FIND_FORMAT}'"]
        dest = Destination.parse(peer.dest(root))

        def find_ssh() -> int:
            return count_find(subprocess.run(argv, stdout=subprocess.PIPE, check=True, timeout=300).stdout)

        def tandem_ssh() -> int:
            return len(scan_dest(dest, rsh=peer.rsh, rsync_binary="rsync", timeout=300))

        log("peer: find over ssh vs scan_dest")
        find = timed(find_ssh, runs)
        tandem = timed(tandem_ssh, runs)
    return figures("peer (ssh)", find, tandem)


def print_table(results: list[dict[str, Any]], entries: int, runs: int) -> None:
    print(f"{entries} entries, {runs} runs after one warm-up; seconds; goal: tandem within {GOAL}x of find")
    header = ("scan", "find median", "find min", "tandem median", "tandem min", "tandem/find", "")
    rows = [header]
    for r in results:
        counts = r["entries"]
        verdict = "ok" if r["within_goal"] else f"over {GOAL}x"
        if not counts["find"] == counts["tandem"] == entries:
            verdict += f" COUNT MISMATCH {counts}"
        rows.append(
            (
                r["scan"],
                f"{r['find']['median']:.3f}",
                f"{r['find']['min']:.3f}",
                f"{r['tandem']['median']:.3f}",
                f"{r['tandem']['min']:.3f}",
                f"{r['ratio']:.2f}x",
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=100_000, help="entries in the tree (default 100000)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per scan after a warm-up (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    parser.add_argument("--dir", help="make the tree in a temp dir under DIR (default: the system temp dir)")
    args = parser.parse_args()
    if args.entries < 1 or args.runs < 1:
        parser.error("--entries and --runs must be at least 1")

    root = tempfile.mkdtemp(prefix="tandem-scan-", dir=args.dir)
    try:
        log(f"building {args.entries} entries in {root}")
        start = time.perf_counter()
        build_tree(root, args.entries)
        log(f"built in {time.perf_counter() - start:.1f} s")
        results = [bench_local(root, args.runs), bench_peer(root, args.runs)]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    if args.json:
        report = {"entries": args.entries, "runs": args.runs, "goal": GOAL, "scans": results}
        print(json.dumps(report, indent=2))
    else:
        print_table(results, args.entries, args.runs)
    counts_ok = all(r["entries"]["find"] == r["entries"]["tandem"] == args.entries for r in results)
    return 0 if counts_ok else 1


if __name__ == "__main__":
    sys.exit(main())
