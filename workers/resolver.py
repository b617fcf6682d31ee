"""Decide what a full sync must list so that DEST ends up equal to SOURCE.

Pure: it takes two scans and a rule predicate. Every synced SOURCE path is
listed (the handler compares and copies); a DEST-only path is listed for
deletion only if the rules would sync it, and a DEST-only directory is listed
whole only when nothing inside it is excluded, so files that exist only at DEST
and match an exclude are left alone (the handler may then delete listed
directories with everything in them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from workers.splitbrain import Meta


class _Typed(Protocol):
    @property
    def is_dir(self) -> bool: ...


def mirror_list(
    source: Mapping[str, _Typed],
    dest: Mapping[str, _Typed],
    allows: Callable[[str, bool], bool],
) -> list[str]:
    """Sorted paths to hand to the handler for a full sync."""
    extra = {path: entry.is_dir for path, entry in dest.items() if path not in source}
    blocked = _dirs_holding_excluded(dest, allows)
    listed: list[str] = []
    whole: str | None = None  # the last DEST-only directory listed whole
    for path in sorted(extra, key=lambda p: p.split("/")):  # children right after their dir
        if whole is not None and path.startswith(whole + "/"):
            continue
        if not allows(path, extra[path]):
            continue
        if extra[path] and path in blocked:
            continue  # keep the directory: something excluded lives in it
        listed.append(path)
        if extra[path]:
            whole = path
    return sorted([*source, *listed])


def _dirs_holding_excluded(dest: Mapping[str, _Typed], allows: Callable[[str, bool], bool]) -> set[str]:
    """Every directory at DEST that has an excluded entry somewhere below it."""
    blocked: set[str] = set()
    for path, entry in dest.items():
        if allows(path, entry.is_dir):
            continue
        parent = path.rpartition("/")[0]
        while parent and parent not in blocked:
            blocked.add(parent)
            parent = parent.rpartition("/")[0]
    return blocked


class _Scanned(_Typed, Meta, Protocol):
    """A scan's entry: its type, size and mtime (splitbrain.Meta) and is_dir."""


def unlike(
    source: Mapping[str, _Scanned],
    dest: Mapping[str, _Scanned],
    window: float,
    allows: Callable[[str, bool], bool],
) -> list[str]:
    """Sorted paths where DEST does not hold what SOURCE holds, for two scans of
    the same subtrees: missing, another type, or a file or link of another size
    or mtime (beyond WINDOW s), plus what a full sync would delete. Directories
    compare by type: their mtimes move whenever something inside does."""
    changed = [
        path
        for path, entry in source.items()
        if (theirs := dest.get(path)) is None
        or theirs.type != entry.type
        or (entry.type != "d" and (theirs.size != entry.size or abs(theirs.mtime - entry.mtime) > window))
    ]
    gone = {path: entry for path, entry in dest.items() if path not in source}
    return sorted([*changed, *mirror_list({}, gone, allows)])
