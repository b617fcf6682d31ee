"""Hard links: inotify reports a write under the one name it was made through,
so the other names of that file would stay stale at DEST (rsync sends each name
as a file of its own). This keeps, for every regular file with more than one
link, all its names as the last full scan saw them, and adds them to a batch
that names one of them (also when that name is gone or replaced by the time the
batch runs: a write through it came first). A file with more links than names
known, which the last full scan did not see, asks for a full scan (it finds
every name inside SOURCE); names outside SOURCE cannot be found and are not
asked for again."""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator

Key = tuple[int, int]  # (st_dev, st_ino)


def _parents(name: str) -> Iterator[str]:
    while "/" in name:
        name = name.rpartition("/")[0]
        yield name


class HardLinks:
    def __init__(self) -> None:
        self._names: dict[Key, set[str]] = {}
        self._key: dict[str, Key] = {}
        self._below: Counter[str] = Counter()  # directory -> known names below it
        self._scanned: set[Key] = set()  # what the last full scan saw: its names are all we can know

    def rebuild(self, found: dict[Key, list[str]]) -> None:
        """What a full scan found (``scan_local(links=...)``)."""
        self._names, self._key, self._below = {}, {}, Counter()
        for key, names in found.items():
            for name in names:
                self._add(name, key)
        self._scanned = set(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def moved(self, old: str, new: str) -> None:
        """OLD (a file, or a directory with everything below it) is now NEW."""
        for name in self._at_or_below(old):
            key = self._key[name]
            self._remove(name)
            self._add(new + name[len(old) :], key)

    def others(
        self, root: str, paths: set[str], fresh: set[str] | frozenset[str] = frozenset()
    ) -> tuple[set[str], bool]:
        """The other names of the multiply linked files among PATHS, and whether
        some file has names that are not known (then only a full scan finds them).
        A path gone from SOURCE, or one of FRESH (directories made anew), stands
        for the names known below it too: deleting a directory drops the pending
        writes inside it, and they may have gone through a name whose partners
        live on elsewhere."""
        extra: set[str] = set()
        unknown = False
        swept: set[str] = set()  # paths that may have lost names below them
        for path in paths:
            known = self._key.get(path)
            if known is not None:  # whatever was written through PATH shows under these names,
                extra |= self._names[known]  # even when PATH is gone or replaced since
            try:
                st = os.lstat(os.path.join(root, path))
            except OSError:
                swept.add(path)
                self._remove(path)
                continue
            if path in fresh:
                swept.add(path)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink < 2:
                self._remove(path)
                continue
            key = (st.st_dev, st.st_ino)
            if known != key:
                self._remove(path)
                self._add(path, key)
            names = self._names[key]
            extra |= names
            unknown = unknown or (len(names) < st.st_nlink and key not in self._scanned)
        for path in swept:
            for name in self._at_or_below(path):
                key = self._key[name]
                try:
                    st = os.lstat(os.path.join(root, name))
                    same = (st.st_dev, st.st_ino) == key
                except OSError:
                    same = False
                if not same:  # gone with its directory: its partners may carry a write
                    extra |= self._names[key]
                    self._remove(name)
        return {n for n in extra - paths if n in self._key}, unknown

    def _at_or_below(self, path: str) -> list[str]:
        """The known names PATH is or holds (cheap when it holds none)."""
        found = [path] if path in self._key else []
        if self._below[path]:
            prefix = path + "/"
            found += [n for n in self._key if n.startswith(prefix)]
        return found

    def _add(self, name: str, key: Key) -> None:
        self._key[name] = key
        self._names.setdefault(key, set()).add(name)
        self._below.update(_parents(name))

    def _remove(self, name: str) -> None:
        key = self._key.pop(name, None)
        if key is None:
            return
        names = self._names[key]
        names.discard(name)
        if not names:
            del self._names[key]
        self._below.subtract(_parents(name))
