"""Hard links: inotify reports a write under the one name it was made through,
so the other names of that file would stay stale at DEST (rsync sends each name
as a file of its own). This keeps, for every regular file with more than one
link, all its names as the last full scan saw them, and adds them to a batch
that names one of them (also when that name is gone or replaced by the time the
batch runs: a write through it came first). A file with more links than names known, which the last
full scan did not see, asks for a full scan (it finds every name inside
SOURCE); names outside SOURCE cannot be found and are not asked for again."""

from __future__ import annotations

import os
import stat

Key = tuple[int, int]  # (st_dev, st_ino)


class HardLinks:
    def __init__(self) -> None:
        self._names: dict[Key, set[str]] = {}
        self._key: dict[str, Key] = {}
        self._scanned: set[Key] = set()  # what the last full scan saw: its names are all we can know

    def rebuild(self, found: dict[Key, list[str]]) -> None:
        """What a full scan found (``scan_local(links=...)``)."""
        self._names = {key: set(names) for key, names in found.items()}
        self._key = {name: key for key, names in self._names.items() for name in names}
        self._scanned = set(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def moved(self, old: str, new: str) -> None:
        """OLD (a file, or a directory with everything below it) is now NEW."""
        prefix = old + "/"
        for name in [n for n in self._key if n == old or n.startswith(prefix)]:
            key = self._key.pop(name)
            renamed = new + name[len(old) :]
            self._names[key].discard(name)
            self._names[key].add(renamed)
            self._key[renamed] = key

    def others(self, root: str, paths: set[str]) -> tuple[set[str], bool]:
        """The other names of the multiply linked files among PATHS, and whether
        some file has names that are not known (then only a full scan finds them).
        A path gone from SOURCE stands for the names below it too: a directory's
        deletion drops the pending writes inside it, and they may have gone
        through a name whose partners live on elsewhere."""
        extra: set[str] = set()
        unknown = False
        gone: set[str] = set()
        for path in paths:
            known = self._key.get(path)
            if known is not None:  # whatever was written through PATH shows under these names,
                extra |= self._names.get(known, set())  # even when PATH is gone or replaced since
            try:
                st = os.lstat(os.path.join(root, path))
            except OSError:
                gone.add(path)
                self._forget(path)
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_nlink < 2:
                self._forget(path)
                continue
            key = (st.st_dev, st.st_ino)
            if self._key.get(path) != key:
                self._forget(path)
                self._key[path] = key
                self._names.setdefault(key, set()).add(path)
            names = self._names[key]
            extra |= names
            unknown = unknown or (len(names) < st.st_nlink and key not in self._scanned)
        if gone:
            for name in [n for n in self._key if _inside(n, gone)]:
                extra |= self._names[self._key[name]]
                self._forget(name)
            extra = {n for n in extra if not _inside(n, gone)}
        return extra - paths, unknown

    def _forget(self, path: str) -> None:
        key = self._key.pop(path, None)
        if key is not None:
            names = self._names.get(key)
            if names is not None:
                names.discard(path)
                if not names:
                    del self._names[key]


def _inside(name: str, dirs: set[str]) -> bool:
    """NAME is in DIRS or below one of them."""
    while name:
        if name in dirs:
            return True
        name = name.rpartition("/")[0]
    return False
