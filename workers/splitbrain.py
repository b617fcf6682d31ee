"""Split-brain: what to do when DEST already holds data before the first sync.

Pure. It takes the two scans (path -> Entry, HERE = SOURCE, THERE = DEST), the
ancestor (the tree both sides agreed on after the last successful sync, or
None), and returns per-path classes and, for a policy, a ``Decision``: which
paths go from here to there (``push``), which come back (``pull``), which
conflicting paths keep both versions, or why nothing may happen (``halt``).
A listed path that is absent on the side it comes from is deleted on the
other; the executor moves whatever it overwrites or deletes into the backup
folder of that side first.

Rules:
- Two entries are the same when their types match and, for files and links,
  sizes match and mtimes differ by at most the modify window (directories:
  type only).
- With an ancestor, a path changed on a side when that side differs from the
  ancestor; changed on both sides to different results is a conflict.
  Without one, a path on one side only counts as new there, and a path that
  differs is a conflict.
- The latest change of a side is the newest mtime among its entries that
  differ from the ancestor (all entries without one); directories count, so
  a deletion (which touches its directory) is a change.
- With an ancestor and changes on one side only there is no split-brain:
  that side's changes go across, whatever the policy. A policy decides when
  both sides changed, or when there is no ancestor to tell.
- Ties (mtimes within the window) go to the side whose host name sorts first:
  the same answer on both hosts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Side(StrEnum):
    HERE = "here"
    THERE = "there"


class Class(StrEnum):
    SAME = "same"
    HERE = "changed-here"
    THERE = "changed-there"
    CONFLICT = "conflict"


POLICIES = ("newest", "local", "remote", "keep-both", "manual")
BACKUP_DIR = ".tandem-backup"
CONFLICT_MARK = ".tandem-conflict-"


class Meta(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def mtime(self) -> float: ...


Tree = Mapping[str, Meta]


@dataclass(frozen=True)
class PathDiff:
    path: str
    cls: Class
    here: Meta | None
    there: Meta | None


@dataclass(frozen=True)
class Conflict:
    path: str
    winner: Side
    copy: str  # the loser's version is kept under this name, on both sides


@dataclass(frozen=True)
class Decision:
    policy: str
    winner: Side | None = None  # whole-tree policies: the side that wins
    push: tuple[str, ...] = ()  # here -> there (absent here: deleted there)
    pull: tuple[str, ...] = ()  # there -> here (absent there: deleted here)
    conflicts: tuple[Conflict, ...] = ()  # keep-both: the loser renamed to its copy first
    halt: str = ""  # nothing may happen, and why

    @property
    def changes(self) -> int:
        return len(self.push) + len(self.pull) + len(self.conflicts)


def is_backup(path: str) -> bool:
    return path == BACKUP_DIR or path.startswith(BACKUP_DIR + "/")


def same(a: Meta | None, b: Meta | None, window: float) -> bool:
    if a is None or b is None:
        return a is b
    if a.type != b.type:
        return False
    if a.type == "d":
        return True
    return a.size == b.size and abs(a.mtime - b.mtime) <= window


def classify(here: Tree, there: Tree, ancestor: Tree | None, window: float) -> list[PathDiff]:
    """Every path that is not the same on both sides, sorted, with its class."""
    out = []
    for path in sorted(set(here) | set(there), key=lambda p: p.split("/")):
        h, t = here.get(path), there.get(path)
        if same(h, t, window):
            continue
        if ancestor is None:
            cls = Class.HERE if t is None else Class.THERE if h is None else Class.CONFLICT
        else:
            a = ancestor.get(path)
            changed_here, changed_there = not same(h, a, window), not same(t, a, window)
            if changed_here and changed_there:
                cls = Class.CONFLICT
            elif changed_here:
                cls = Class.HERE
            elif changed_there:
                cls = Class.THERE
            else:  # each side within the window of the ancestor but not of the other
                cls = Class.CONFLICT
        out.append(PathDiff(path, cls, h, t))
    return out


def latest_change(tree: Tree, other: Tree, paths: Iterable[str], window: float) -> float | None:
    """The newest mtime in TREE among PATHS (the paths that differ) and those of
    their parent directories whose mtime differs from OTHER's (a deletion touches
    its directory); None: nothing. Only what differs counts, so a half-applied
    decision decides the same again."""
    look: set[str] = set()
    for path in paths:
        look.add(path)
        while "/" in path:
            path = path.rpartition("/")[0]
            mine, theirs = tree.get(path), other.get(path)
            if mine is not None and (theirs is None or abs(mine.mtime - theirs.mtime) > window):
                look.add(path)
    return max((tree[p].mtime for p in look if p in tree), default=None)


def _tie_winner(host_here: str, host_there: str) -> Side:
    return Side.HERE if host_here <= host_there else Side.THERE


def newer(here: float | None, there: float | None, window: float, host_here: str, host_there: str) -> Side:
    """Which side's time is later; within WINDOW the host name decides."""
    if here is None and there is None:
        return _tie_winner(host_here, host_there)
    if there is None:
        return Side.HERE
    if here is None:
        return Side.THERE
    if abs(here - there) <= window:
        return _tie_winner(host_here, host_there)
    return Side.HERE if here > there else Side.THERE


def safety(here: Tree, there: Tree, ancestor: Tree | None) -> str:
    """Why syncing now could wipe a side ('' when it cannot): SOURCE is empty
    while DEST holds data, or DEST is empty although it held data at the last sync."""
    has_here = any(p for p in here)
    has_there = any(p for p in there)
    if not has_here and has_there:
        return f"SOURCE is empty but DEST holds {len(there) - ('' in there)} entries"
    if has_here and not has_there and ancestor is not None and any(p for p in ancestor):
        return (
            f"DEST is empty (or missing) but held {len(ancestor) - ('' in ancestor)} entries at the last sync"
        )
    return ""


def conflict_name(path: str, host: str, stamp: str) -> str:
    head, _, name = path.rpartition("/")
    copy = f"{name}{CONFLICT_MARK}{host}-{stamp}"
    return f"{head}/{copy}" if head else copy


def _subtree(tree: Tree, path: str) -> list[str]:
    prefix = path + "/"
    return [p for p in tree if p.startswith(prefix)]


def decide(
    diffs: list[PathDiff],
    here: Tree,
    there: Tree,
    ancestor: Tree | None,
    policy: str,
    *,
    window: float,
    host_here: str,
    host_there: str,
    stamp: str,
) -> Decision:
    """What POLICY does with DIFFS. STAMP names conflict copies (e.g. 20261124T2054Z)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown split-brain policy {policy!r} (one of {', '.join(POLICIES)})")
    if not diffs:
        return Decision(policy)
    paths = ordered(d.path for d in diffs)
    if ancestor is not None:  # only one side changed: no split-brain, its changes go across
        if all(d.cls is Class.HERE for d in diffs):
            return Decision(policy, Side.HERE, push=paths)
        if all(d.cls is Class.THERE for d in diffs):
            return Decision(policy, Side.THERE, pull=paths)
    if policy == "manual":
        conflicts = sum(d.cls is Class.CONFLICT for d in diffs)
        return Decision(
            policy,
            halt=f"split-brain: {len(diffs)} paths differ ({conflicts} conflicts); "
            "waiting for a decision (POST /containers/NAME/resolve)",
        )
    if policy == "keep-both":
        return _keep_both(
            diffs, here, there, window=window, host_here=host_here, host_there=host_there, stamp=stamp
        )
    if policy == "local":
        winner = Side.HERE
    elif policy == "remote":
        winner = Side.THERE
    else:
        winner = newer(
            latest_change(here, there, paths, window),
            latest_change(there, here, paths, window),
            window,
            host_here,
            host_there,
        )
    return Decision(
        policy, winner, push=paths if winner is Side.HERE else (), pull=paths if winner is Side.THERE else ()
    )


def _keep_both(
    diffs: list[PathDiff],
    here: Tree,
    there: Tree,
    *,
    window: float,
    host_here: str,
    host_there: str,
    stamp: str,
) -> Decision:
    push: list[str] = []
    pull: list[str] = []
    conflicts: list[Conflict] = []
    renamed: set[str] = set()  # conflicting directories moved aside: their subtrees follow them
    for d in diffs:
        if any(d.path.startswith(r + "/") for r in renamed):
            continue
        if d.cls is Class.HERE:
            push.append(d.path)
        elif d.cls is Class.THERE:
            pull.append(d.path)
        elif d.here is None or d.there is None:
            # changed on one side, deleted on the other: keep the data
            (pull if d.here is None else push).append(d.path)
        else:
            winner = newer(d.here.mtime, d.there.mtime, window, host_here, host_there)
            loser_host = host_there if winner is Side.HERE else host_here
            copy = conflict_name(d.path, loser_host, stamp)
            conflicts.append(Conflict(d.path, winner, copy))
            loser_tree = there if winner is Side.HERE else here
            winner_tree = here if winner is Side.HERE else there
            # The winner's version goes to the loser's side, the loser's copy comes back.
            moved = [copy, *(copy + p[len(d.path) :] for p in _subtree(loser_tree, d.path))]
            own = [d.path, *_subtree(winner_tree, d.path)]
            if winner is Side.HERE:
                push.extend(own)
                pull.extend(moved)
            else:
                pull.extend(own)
                push.extend(moved)
            renamed.add(d.path)
    _keep_what_changed_below(push, pull, here, there)
    return Decision("keep-both", None, ordered(push), ordered(pull), tuple(conflicts))


def _keep_what_changed_below(push: list[str], pull: list[str], here: Tree, there: Tree) -> None:
    """A directory deleted on one side while something below it changed on the
    other: the directory is not deleted (rsync would delete it with what is in
    it); it goes the other way, back to the side that deleted it."""
    for deleting, keeping, sender in ((pull, push, there), (push, pull, here)):
        for path in list(deleting):
            if path not in sender and any(p.startswith(path + "/") for p in keeping):
                deleting.remove(path)
                keeping.append(path)


def describe(decision: Decision) -> str:
    if decision.halt:
        return decision.halt
    if not decision.changes:
        return "both sides are the same"
    who = f"{decision.winner} wins; " if decision.winner else ""
    return (
        f"{decision.policy}: {who}{len(decision.push)} paths to DEST, {len(decision.pull)} from DEST, "
        f"{len(decision.conflicts)} conflicts kept both ways"
    )


def explain(
    decision: Decision,
    diffs: list[PathDiff],
    here: Tree,
    there: Tree,
    ancestor: Tree | None,
    window: float,
    limit: int = 20,
) -> list[str]:
    """Log lines for what DECISION does: why (the classes; for a whole-tree winner
    each side's latest change), then per path moved (at most LIMIT each way) its
    class and the three versions. A pull where only tandem writes DEST is a
    defect, and these lines are what tells it apart from a real change there."""
    if not decision.changes:
        return []
    counts = {c.value: n for c in Class if (n := sum(d.cls is c for d in diffs))}
    why = ", ".join(f"{n} {c}" for c, n in counts.items())
    lines = [f"decision: {describe(decision)} ({why}; ancestor {'yes' if ancestor is not None else 'none'})"]
    if decision.winner is not None and any(d.cls is not Class.HERE for d in diffs):
        differ = [d.path for d in diffs]
        latest = (latest_change(here, there, differ, window), latest_change(there, here, differ, window))
        when = ["none" if t is None else f"{t:.6f}" for t in latest]
        lines.append(f"latest change of the differing paths: SOURCE {when[0]}, DEST {when[1]}")
    by_path = {d.path: d for d in diffs}
    for direction, paths in (("push", decision.push), ("pull", decision.pull)):
        for path in paths[:limit]:
            d = by_path.get(path)
            cls = d.cls.value if d else "below a moved path"
            old = _meta(ancestor.get(path)) if ancestor is not None else "none"
            lines.append(
                f"{direction} {path!r}: {cls}; SOURCE {_meta(here.get(path))}, "
                f"DEST {_meta(there.get(path))}, ancestor {old}"
            )
        if len(paths) > limit:
            lines.append(f"{direction}: {len(paths) - limit} more paths")
    for c in decision.conflicts[:limit]:
        lines.append(f"conflict {c.path!r}: {c.winner} wins, the other kept as {c.copy!r}")
    return lines


def _meta(entry: Meta | None) -> str:
    return "absent" if entry is None else f"{entry.type} {entry.size} {entry.mtime:.6f}"


def ordered(paths: Iterable[str]) -> tuple[str, ...]:
    """PATHS once each, a directory before what is in it."""
    return tuple(sorted(set(paths), key=lambda p: p.split("/")))
