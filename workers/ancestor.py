"""The ancestor: what SOURCE and DEST agreed on after the last successful sync.

The worker keeps it in memory (rebuilt from the scan of a full sync, updated
path by path after every incremental one) and writes it to its snapshot file
in the state directory (atomically: a crash leaves the old file or the new
one) after the initial sync, at most every ``SAVE_EVERY`` seconds while it
changes, and at stop. Split-brain classification reads it at the next start,
and the next full sync its ``synced_until``.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import stat
import time
from collections.abc import Iterable
from typing import Any

from workers.snapshot import Entry, Tree, type_of
from workers.splitbrain import is_backup

log = logging.getLogger(__name__)

VERSION = 1
SAVE_EVERY = 30.0


def _read(path: str | None, pair: tuple[str, str]) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("snapshot %s unreadable, ignored: %s", path, err)
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION or data.get("pair") != list(pair):
        return None
    return data


def load(path: str | None, pair: tuple[str, str]) -> Tree | None:
    """The saved ancestor of PAIR (SOURCE, DEST), or None (no file, unreadable,
    another version, or saved for another pair: a new DEST has no ancestor)."""
    data = _read(path, pair)
    if data is None:
        return None
    return {p: Entry(t, int(s), float(m)) for p, (t, s, m) in data["entries"].items()}


def load_synced_until(path: str | None, pair: tuple[str, str]) -> float | None:
    """The saved ``Ancestor.synced_until`` of PAIR, or None. When the clock now
    reads earlier than at the save, it was set back: the value moves back as far."""
    data = _read(path, pair)
    if data is None:
        return None
    value, saved = _number(data.get("synced_until")), _number(data.get("saved"))
    if value is None:
        return None
    return value - max(0.0, saved - time.time()) if saved is not None else value


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def save(path: str, tree: Tree, pair: tuple[str, str], synced_until: float | None = None) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    data = {
        "version": VERSION,
        "pair": list(pair),
        "saved": time.time(),
        "synced_until": synced_until,
        "entries": {p: [e.type, e.size, e.mtime] for p, e in tree.items()},
    }
    temp = f"{path}.tmp"
    with gzip.open(temp, "wt", encoding="utf-8", compresslevel=3) as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(temp, path)


class Ancestor:
    """The in-memory ancestor of one pair and when to write it."""

    def __init__(self, path: str | None, root: str, pair: tuple[str, str]) -> None:
        self.path = path
        self.root = root
        self.pair = pair
        self.tree: dict[str, Entry] = {}
        # Wall time before which every change to SOURCE has reached DEST (None:
        # not known). What changed after it while nobody watched (ctime >= it) is
        # sent as changed by the next full sync: its size+mtime compare cannot see
        # an edit that kept both, and inotify saw nothing then.
        self.synced_until: float | None = load_synced_until(path, pair)
        self.dirty = False
        self._next_save = 0.0

    def replace(self, tree: Tree) -> None:
        self.tree = {p: e for p, e in tree.items() if not is_backup(p)}
        self.dirty = True

    def update(self, paths: Iterable[str], since: float) -> list[str]:
        """PATHS were just synced by a run that started at wall time SINCE: both
        sides now hold what SOURCE holds, unless a path changed again after SINCE
        (its ctime says so). Such a path is dropped: unknown is safer than a state
        DEST may never have received (it would look like a change made there).
        Only the path itself: a run does not send what is below a listed folder,
        whose entries stay as their own runs left them (any change in a folder
        changes its ctime, and dropping them all made every file in a busy folder
        look made at DEST). A path that is no longer a folder has nothing below it.
        Returns the paths dropped that still exist: a name of a hard-linked file
        changes with its other names and has no event of its own, so the caller
        sends them again, or the ancestor would lack them until a full sync."""
        changed = []
        for path in paths:
            if not path or is_backup(path):
                continue
            try:
                st = os.lstat(os.path.join(self.root, path))
            except OSError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode):
                self.forget([path])
            if st is None or st.st_ctime >= since:
                self.tree.pop(path, None)
                if st is not None:
                    changed.append(path)
                continue
            self.tree[path] = Entry(type_of(st.st_mode), st.st_size, st.st_mtime)
        self.dirty = True
        return changed

    def synced(self, until: float) -> None:
        if until != self.synced_until:
            self.synced_until = until
            self.dirty = True

    def moved(self, old: str, new: str) -> None:
        """OLD (with everything below it) was renamed to NEW on both sides. Without
        this the entries below a renamed directory were lost, and the next start's
        check took DEST's copy of a file the container deleted meanwhile for one
        made at DEST, and brought it back."""
        prefix = old + "/"
        below = [p for p in self.tree if p == old or p.startswith(prefix)]
        self.forget([new])
        for path in below:
            self.tree[new + path[len(old) :]] = self.tree.pop(path)
        self.dirty = True

    def forget(self, paths: Iterable[str]) -> None:
        """PATHS (and what is below them) are not known to be on both sides."""
        for path in paths:
            prefix = path + "/"
            for gone in [p for p in self.tree if p == path or p.startswith(prefix)]:
                del self.tree[gone]
                self.dirty = True

    def maybe_save(self, now: float, *, force: bool = False) -> None:
        if not self.path or not self.dirty or (not force and now < self._next_save):
            return
        try:
            save(self.path, self.tree, self.pair, self.synced_until)
        except OSError as err:
            log.warning("cannot write snapshot %s: %s", self.path, err)
            return
        self.dirty = False
        self._next_save = now + SAVE_EVERY
