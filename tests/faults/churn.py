"""Files that keep changing while a fault happens: a thread doing random file
operations in one directory (create, same-size overwrite within the second,
append, rename of files and directories, deletions), counted by kind."""

from __future__ import annotations

import collections
import os
import random
import shutil
import threading
from pathlib import Path


class Churn:
    def __init__(self, root: Path, *, seed: int = 1, interval: float = 0.02, limit: int = 300) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.interval = interval
        self.limit = limit
        self.ops: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"churn {root.name}", daemon=True)

    def __enter__(self) -> Churn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def _entries(self) -> tuple[list[Path], list[Path]]:
        files, dirs = [], []
        for dirpath, dirnames, filenames in os.walk(self.root):
            here = Path(dirpath)
            dirs += [here / d for d in dirnames]
            files += [here / f for f in filenames]
        return files, dirs

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except FileNotFoundError:
                self.ops["raced"] += 1  # another step's rename or delete came first

    def step(self) -> None:
        files, dirs = self._entries()
        rng = self.rng
        parent = rng.choice([self.root, *dirs])
        name = f"f{rng.randrange(10**6)}"
        kind = rng.choice(
            ["create"] * 4 + ["same-size", "append", "rename", "mkdir", "rename-dir", "delete", "rmtree"]
        )
        if len(files) + len(dirs) > self.limit and kind in ("create", "mkdir"):
            kind = "delete"
        if kind in ("same-size", "append", "rename", "delete") and not files:
            kind = "create"
        if kind in ("rename-dir", "rmtree") and not dirs:
            kind = "mkdir"
        if kind == "create":
            (parent / name).write_bytes(os.urandom(rng.randrange(1, 64 * 1024)))
        elif kind == "same-size":
            # The edit clsync and lsyncd miss: same size, same second.
            target = rng.choice(files)
            size = target.stat().st_size
            target.write_bytes(os.urandom(size))
        elif kind == "append":
            with rng.choice(files).open("ab") as handle:
                handle.write(os.urandom(rng.randrange(1, 4096)))
        elif kind == "rename":
            rng.choice(files).rename(parent / name)
        elif kind == "mkdir":
            made = parent / f"d{rng.randrange(10**6)}"
            made.mkdir()
            (made / name).write_bytes(os.urandom(rng.randrange(1, 4096)))
        elif kind == "rename-dir":
            source = rng.choice(dirs)
            target = self.root / f"d{rng.randrange(10**6)}"
            source.rename(target)
        elif kind == "delete":
            rng.choice(files).unlink()
        elif kind == "rmtree":
            shutil.rmtree(rng.choice(dirs))
        self.ops[kind] += 1
