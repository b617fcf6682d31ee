"""Hard links: inotify reports a write under the one name it was made through,
so the other names of that file would stay stale at DEST (rsync sends each name
as a file of its own). This keeps, for every regular file with more than one
link, all its names as the last full scan saw them, and adds them to a batch
that names one of them. A file with more links than names known, which the last
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
        some file has names that are not known (then only a full scan finds them)."""
        extra: set[str] = set()
        unknown = False
        for path in paths:
            try:
                st = os.lstat(os.path.join(root, path))
            except OSError:
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
        return extra - paths, unknown

    def _forget(self, path: str) -> None:
        key = self._key.pop(path, None)
        if key is not None:
            names = self._names.get(key)
            if names is not None:
                names.discard(path)
                if not names:
                    del self._names[key]
