"""What carrying hard links, ACLs and xattrs costs (rsync -H -A -X, tandem's default).

Run:  python -m bench.attrs [--files 20000] [--runs 3]

One tree of small files in 200 directories (every 10th file has a second name,
every 10th an xattr), copied into a fresh DEST by plain ``rsync -a``, by
``rsync -aHAX``, and by ``tandem sync --only-initial-sync`` with its default
(-H -A -X) and with ``--no-H --no-A --no-X``. Prints the median wall time and
the CPU (the tool and its children) of each, and the ratios to ``rsync -a``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.compare import run_timed, tandem_bin


def make_tree(root: Path, files: int) -> None:
    for i in range(files):
        folder = root / f"d{i % 200:03d}"
        folder.mkdir(exist_ok=True)
        path = folder / f"f{i:06d}"
        path.write_bytes(os.urandom(1024 + i % 3072))
        if i % 10 == 0:
            os.link(path, folder / f"link{i:06d}")
        if i % 10 == 5:
            os.setxattr(path, "user.tag", b"x")


def variants(src: Path, dst: Path) -> dict[str, list[str]]:
    tandem = tandem_bin() or "tandem"
    once = [tandem, "sync", str(src), str(dst), "--only-initial-sync"]
    return {
        "rsync -a": ["rsync", "-a", f"{src}/", str(dst)],
        "rsync -aHAX": ["rsync", "-aHAX", f"{src}/", str(dst)],
        "tandem (-HAX, default)": once,
        "tandem --no-H --no-A --no-X": [
            *once,
            "--rsync-arg=--no-H",
            "--rsync-arg=--no-A",
            "--rsync-arg=--no-X",
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attrs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="tandem-bench-attrs-"))
    try:
        src = scratch / "src"
        src.mkdir()
        make_tree(src, args.files)
        figures: dict[str, tuple[float, float]] = {}
        for name in variants(src, scratch / "dst"):
            walls, cpus = [], []
            for run in range(args.runs):
                dst = scratch / f"dst{run}"
                argv = variants(src, dst)[name]
                wall, cpu = run_timed(argv, scratch / "log", timeout=600)
                if isinstance(wall, str):
                    print(f"{name}: {wall}: {(scratch / 'log').read_text()[-400:]}", file=sys.stderr)
                    return 1
                walls.append(wall)
                cpus.append(cpu)
                shutil.rmtree(dst)
            figures[name] = (statistics.median(walls), statistics.median(cpus))
        base_wall, base_cpu = figures["rsync -a"]
        print(
            f"{args.files} files (+{args.files // 10} hard links, {args.files // 10} xattrs),",
            f"median of {args.runs} runs",
        )
        print(f"{'what':32} {'wall s':>8} {'cpu s':>8} {'wall/rsync -a':>14} {'cpu/rsync -a':>13}")
        for name, (wall, cpu) in figures.items():
            print(f"{name:32} {wall:8.2f} {cpu:8.2f} {wall / base_wall:14.2f} {cpu / base_cpu:13.2f}")
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
