"""The end of every fault scenario: DEST equals SOURCE, by content hash, and a
count of what was lost (0 or the test fails).

Trees are read with directory file descriptors (``os.fwalk`` on bytes paths),
so names that are not UTF-8 and paths longer than PATH_MAX below the root are
compared like any other; symlinks are compared by target, never followed.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

Entry = tuple[object, ...]
IGNORED = (b".tandem-backup",)  # split-brain backups live at DEST only


def digest(root: Path | str) -> dict[bytes, Entry]:
    """relative path -> ("f", sha256, mode) | ("d", mode) | ("l", target) | ("o", mode)."""
    out: dict[bytes, Entry] = {}
    top = os.fsencode(root)
    for dirpath, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
        rel_dir = os.path.relpath(dirpath, top) if dirpath != top else b""
        if rel_dir == b"":
            dirnames[:] = [d for d in dirnames if d not in IGNORED]
        for name in dirnames + filenames:
            rel = os.path.join(rel_dir, name) if rel_dir else name
            try:
                out[rel] = _entry(name, dirfd)
            except FileNotFoundError:
                out[rel] = ("vanished",)
    return out


def _entry(name: bytes, dirfd: int) -> Entry:
    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return ("l", os.readlink(name, dir_fd=dirfd))
    if stat.S_ISDIR(st.st_mode):
        return ("d", mode)
    if not stat.S_ISREG(st.st_mode):
        return ("o", stat.S_IFMT(st.st_mode), mode)
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dirfd)
    try:
        hasher = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            hasher.update(chunk)
    finally:
        os.close(fd)
    return ("f", hasher.hexdigest(), mode)


@dataclass
class Loss:
    """How DEST differs from SOURCE. ``lost`` counts what SOURCE has and DEST lacks
    or holds differently; ``stale`` what DEST has that SOURCE no longer has."""

    missing: list[bytes] = field(default_factory=list)
    differing: list[bytes] = field(default_factory=list)
    stale: list[bytes] = field(default_factory=list)
    files: int = 0

    @property
    def lost(self) -> int:
        return len(self.missing) + len(self.differing)

    @property
    def equal(self) -> bool:
        return not (self.missing or self.differing or self.stale)

    def __str__(self) -> str:
        def some(paths: list[bytes]) -> str:
            return ", ".join(repr(p)[:80] for p in sorted(paths)[:5])

        return (
            f"{self.files} entries in SOURCE; lost {self.lost} (missing {len(self.missing)}: "
            f"{some(self.missing)}; differing {len(self.differing)}: {some(self.differing)}); "
            f"stale at DEST {len(self.stale)}: {some(self.stale)}"
        )


def compare(source: Path | str, dest: Path | str, *, modes: bool = True) -> Loss:
    src, dst = digest(source), digest(dest)
    if not modes:
        src, dst = _no_modes(src), _no_modes(dst)
    loss = Loss(files=len(src))
    for path, entry in src.items():
        if path not in dst:
            loss.missing.append(path)
        elif dst[path] != entry or entry == ("vanished",):
            loss.differing.append(path)
    loss.stale = [path for path in dst if path not in src]
    return loss


def _no_modes(tree: dict[bytes, Entry]) -> dict[bytes, Entry]:
    return {p: e[:2] if e[0] == "f" else e[:1] if e[0] == "d" else e for p, e in tree.items()}


def wait_equal(source: Path | str, dest: Path | str, timeout: float = 60.0, *, modes: bool = True) -> Loss:
    """Poll until DEST equals SOURCE; fail with the count of what was lost."""
    end = time.monotonic() + timeout
    while True:
        loss = compare(source, dest, modes=modes)
        if loss.equal:
            return loss
        if time.monotonic() > end:
            raise AssertionError(f"DEST never became equal to SOURCE in {timeout}s: {loss}")
        time.sleep(0.25)
