"""Editor saves under a live ``tandem sync --delay 1`` (issue 14, item 3).

Run from the repository (about a minute; the full sizes are the issue's):

    /work/main/.venv/bin/python -m bench.editor_saves                  # 1 000 files, 43 s of saves
    /work/main/.venv/bin/python -m bench.editor_saves --files 100 --seconds 0.1 --json out.json

SOURCE holds real source files: the ``.py`` files of /usr/lib/python3.11 (666
here), then of /usr/lib/python3/dist-packages up to ``--files``. With the worker
running, saves as three editors make them, mixed at random over the files:
atomic (write ``.NAME.N.tmp``, rename it over NAME), vim (rename NAME to NAME~,
write NAME anew, unlink NAME~), emacs (a dangling ``.#NAME`` lock symlink, rename
NAME over NAME~, write NAME anew, remove the lock). 20 s as fast as possible,
20 s at 200 saves a second, ``sed -i`` twice over all files, 3 s more saves as
fast as possible (times ``--seconds``); then SIGTERM at once, and DEST is
compared with SOURCE (content, modes, links).

Figures as ``bench.git_workload``'s (its worker, measures and report are used
here), plus the saves done and ``backups_differing``: the NAME~ files that DEST
holds in another version than SOURCE's, or that SOURCE no longer has.
"""

from __future__ import annotations

import argparse
import os
import random
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.git_workload import Figures, build, report, start, stop, tally

TREES = ("/usr/lib/python3.11", "/usr/lib/python3/dist-packages")
SED_TIMEOUT = 600.0


@dataclass
class SaveFigures(Figures):
    saves: int = 0
    backups_differing: int = 0  # NAME~ at DEST in another version than SOURCE's (or none there)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create PATH (it must not exist) with DATA and MODE, as an editor writes a file anew."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def edited(path: Path, n: int) -> tuple[bytes, int]:
    """PATH's content with save N's line added, and its mode."""
    return path.read_bytes() + f"# save {n}\n".encode(), stat.S_IMODE(path.stat().st_mode)


def atomic_save(path: Path, n: int) -> None:
    data, mode = edited(path, n)
    temp = path.with_name(f".{path.name}.{n}.tmp")
    write_new(temp, data, mode)
    os.rename(temp, path)


def vim_save(path: Path, n: int) -> None:
    data, mode = edited(path, n)
    backup = path.with_name(f"{path.name}~")
    os.rename(path, backup)
    write_new(path, data, mode)
    os.unlink(backup)


def emacs_save(path: Path, n: int) -> None:
    lock = path.with_name(f".#{path.name}")
    os.symlink(f"bench@tandem.{os.getpid()}:{n}", lock)  # dangling, as emacs makes it
    data, mode = edited(path, n)
    os.rename(path, path.with_name(f"{path.name}~"))
    write_new(path, data, mode)
    os.unlink(lock)


EDITORS: tuple[Callable[[Path, int], None], ...] = (atomic_save, vim_save, emacs_save)


def saves(files: list[Path], rng: random.Random, seconds: float, rate: float, done: int) -> int:
    """Saves over FILES for SECONDS, RATE a second (0: as fast as possible).
    DONE numbers the first; returns DONE plus the saves made."""
    begin = time.monotonic()
    end = begin + seconds
    n = done
    while (now := time.monotonic()) < end:
        due = begin + (n - done) / rate if rate else now
        if due > now:
            time.sleep(min(due, end) - now)
            continue
        rng.choice(EDITORS)(rng.choice(files), n)
        n += 1
    return n


def workload(files: list[Path], rng: random.Random, seconds: float, rate: float) -> int:
    """The issue's editor session, durations times SECONDS. Returns the saves made."""
    n = saves(files, rng, 20 * seconds, 0, 0)
    n = saves(files, rng, 20 * seconds, rate, n)
    for expression in ("s/e/E/", "s/a/A/"):
        subprocess.run(["sed", "-i", expression, *map(str, files)], check=True, timeout=SED_TIMEOUT)
    return saves(files, rng, 3 * seconds, 0, n)


def run(
    trees: list[str],
    workdir: Path,
    *,
    files: int = 1_000,
    seconds: float = 1.0,
    rate: float = 200.0,
    seed: int = 1,
    args: tuple[str, ...] = ("--delay", "1", "--heartbeat", "1"),
    stop_timeout: float = 60.0,
) -> SaveFigures:
    source, dest = workdir / "src", workdir / "dst"
    source.mkdir()
    dest.mkdir()
    figures = SaveFigures(files=build(source, trees, files, ".py"))
    regular = sorted(p for p in source.rglob("*.py") if p.is_file() and not p.is_symlink())
    worker = start(source, dest, args, stop_timeout, figures)
    try:
        begin = time.monotonic()
        figures.saves = workload(regular, random.Random(seed), seconds, rate)
        figures.workload = time.monotonic() - begin
        stop(worker, figures, begin, stop_timeout)
    finally:
        if worker.proc.returncode is None:
            worker.stop(5)
    loss = tally(worker, figures, source, dest)
    figures.backups_differing = sum(path.endswith(b"~") for path in loss.differing + loss.stale)
    if not loss.equal:
        figures.notes.append(str(loss))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", nargs="*", default=list(TREES), help="trees the .py files come from")
    parser.add_argument("--files", type=int, default=1_000, help="how many .py files")
    parser.add_argument("--seconds", type=float, default=1.0, help="phase durations times this")
    parser.add_argument("--rate", type=float, default=200.0, help="saves a second in the paced phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the figures to this file")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tandem-saves-") as scratch:
        figures = run(
            opts.trees, Path(scratch), files=opts.files, seconds=opts.seconds, rate=opts.rate, seed=opts.seed
        )
    return report(figures, opts.json)


if __name__ == "__main__":
    sys.exit(main())
