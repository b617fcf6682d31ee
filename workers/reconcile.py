"""Carry out a split-brain decision before the worker's first sync.

Scan both sides (the backup folders left out), classify against the ancestor,
decide with the pair's policy (``splitbrain``), then act: rename the losing
versions of conflicting paths to their conflict copies, pull what DEST wins,
push what SOURCE wins. Every rsync run here backs up what it overwrites or
deletes into ``.tandem-backup/STAMP/`` on the receiving side, so a wrong
decision can be undone. A halt (policy ``manual``, or a side that is empty)
writes the per-path report for the API and stops the worker with exit 3.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from workers.batching import Move
from workers.snapshot import Entry, Tree, lstat_long, scan_local, type_of
from workers.spec import ExitCode, WorkerSpec
from workers.splitbrain import (
    BACKUP_DIR,
    POLICIES,
    Class,
    Decision,
    PathDiff,
    Side,
    classify,
    decide,
    describe,
    explain,
    is_backup,
    latest_change,
    safety,
    same,
)
from workers.transfer import Deadline, Verdict
from workers.transfer.localfs import NotInside, rename_below

log = logging.getLogger(__name__)

REPORT_PATHS = 5000  # a report lists at most this many paths (the counts are always whole)


class Unresolved(Exception):
    """Nothing may be synced: CODE and the reason (the report is written)."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def stamp(now: float) -> str:
    """UTC to the millisecond: two decisions within a second get apart backup folders."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def names(spec: WorkerSpec) -> tuple[str, str]:
    here = spec.host_name or socket.gethostname()
    dest = spec.destination
    there = spec.peer_name or (dest.host if dest.kind != "local" else f"{here}-dest")
    return here, there


def plan(
    spec: WorkerSpec, here: Tree, there: Tree, ancestor: Tree | None, now: float
) -> tuple[list[PathDiff], Decision, str]:
    """The diffs, the decision of the pair's policy, and a safety reason ('' if none)."""
    host_here, host_there = names(spec)
    diffs = classify(here, there, ancestor, spec.modify_window)
    danger = "" if spec.allow_empty else safety(here, there, ancestor)
    decision = decide(
        diffs,
        here,
        there,
        ancestor,
        spec.split_brain or "newest",
        window=spec.modify_window,
        host_here=host_here,
        host_there=host_there,
        stamp=stamp(now),
    )
    return diffs, decision, danger


def report(
    spec: WorkerSpec,
    diffs: list[PathDiff],
    here: Tree,
    there: Tree,
    ancestor: Tree | None,
    halt: str,
    now: float,
) -> dict[str, Any]:
    """What the API shows for a halted pair: the paths and what each policy would do."""
    host_here, host_there = names(spec)

    def meta(e: Any) -> list[Any] | None:
        return None if e is None else [e.type, e.size, e.mtime]

    previews = {}
    for policy in POLICIES:
        if policy == "manual":
            continue
        d = decide(
            diffs,
            here,
            there,
            ancestor,
            policy,
            window=spec.modify_window,
            host_here=host_here,
            host_there=host_there,
            stamp=stamp(now),
        )
        previews[policy] = {
            "winner": d.winner.value if d.winner else None,
            "push": list(d.push[:REPORT_PATHS]),
            "pull": list(d.pull[:REPORT_PATHS]),
            "conflicts": [{"path": c.path, "winner": c.winner.value, "copy": c.copy} for c in d.conflicts],
            "summary": describe(d),
        }
    return {
        "label": spec.name,
        "source": spec.source,
        "dest": spec.dest,
        "here": host_here,
        "there": host_there,
        "policy": spec.split_brain,
        "halt": halt,
        "ancestor": ancestor is not None,
        "written": now,
        "total": len(diffs),
        "latest": {  # the newest mtime among the differing paths, per side
            "here": latest_change(here, there, [d.path for d in diffs], spec.modify_window),
            "there": latest_change(there, here, [d.path for d in diffs], spec.modify_window),
        },
        "counts": {c.value: sum(d.cls is c for d in diffs) for c in Class},
        "paths": [
            {"path": d.path, "class": d.cls.value, "here": meta(d.here), "there": meta(d.there)}
            for d in diffs[:REPORT_PATHS]
        ],
        "policies": previews,
    }


def write_report(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temp = f"{path}.tmp"
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(temp, path)


def clear_report(path: str | None) -> None:
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def without_backups(tree: Tree, allows: Callable[[str, bool], bool]) -> dict[str, Entry]:
    return {p: e for p, e in tree.items() if p and not is_backup(p) and allows(p, e.is_dir)}


def resolve(
    spec: WorkerSpec,
    handler: Any,
    source: str,
    rules: Any,
    ancestor: Tree | None,
    deadline: Deadline,
    now: float,
    progress: Callable[[int], object] | None = None,
) -> str:
    """Resolve SOURCE against DEST; return a summary. PROGRESS hears of scanned
    entries. Raises Unresolved to halt, ScanError when a side cannot be listed
    (the caller retries)."""
    here = without_backups(scan_local(source, rules, on_entry=progress), rules.allows)
    listed = handler.scan_dest(deadline)
    if listed is None:
        return "DEST cannot be listed by this handler: no split-brain check"
    there = without_backups(listed, rules.allows)
    if not there and not (ancestor and not spec.allow_empty):
        clear_report(spec.split_brain_report)
        return "DEST is empty: the initial sync sends everything"
    diffs, decision, danger = plan(spec, here, there, ancestor, now)
    halt = f"split-brain safety halt: {danger}" if danger else decision.halt
    if halt:
        write_report(spec.split_brain_report, report(spec, diffs, here, there, ancestor, halt, now))
        raise Unresolved(ExitCode.SAFETY_HALT, halt)
    clear_report(spec.split_brain_report)
    for line in explain(decision, diffs, here, there, ancestor, spec.modify_window):
        log.info("split-brain %s", line)
    if not decision.changes:
        return "both sides are the same" if not diffs else describe(decision)
    if not hasattr(handler, "transfer"):
        raise Unresolved(
            ExitCode.CONFIG, f"split-brain resolution needs the rsync handler ({describe(decision)})"
        )
    if any(c.winner is Side.HERE for c in decision.conflicts) and spec.destination.kind == "rsyncd":
        halt = "split-brain: keep-both cannot rename at an rsync daemon DEST; choose another policy"
        write_report(spec.split_brain_report, report(spec, diffs, here, there, ancestor, halt, now))
        raise Unresolved(ExitCode.SAFETY_HALT, halt)
    if decision.winner is Side.HERE and not there:
        return describe(decision)  # DEST is empty: the initial sync sends it all, nothing to back up
    backups = _backup_folders(spec, handler, source, decision, there, now, deadline)
    if isinstance(backups, str):
        write_report(spec.split_brain_report, report(spec, diffs, here, there, ancestor, backups, now))
        raise Unresolved(ExitCode.SAFETY_HALT, backups)
    expected = dict(here)  # SOURCE as it should be now, unless the container changed it
    for conflict in decision.conflicts:
        _rename_loser(handler, source, conflict.path, conflict.copy, conflict.winner, here, there, deadline)
        if conflict.winner is Side.THERE:
            expected.pop(conflict.path, None)  # our version is its copy now
    changed: dict[str, Entry | None] = {}  # what the container changed during the check: path -> now
    for listed, pull in ((decision.pull, True), (decision.push, False)):
        sender, receiver = (there, here) if pull else (here, there)
        paths = inside(listed, sender, receiver)
        if pull:
            paths, changed = unchanged(source, paths, expected, there, rules, spec.modify_window)
        elif changed:
            # Newer than the decision: sent now, with DEST's version kept in its backup
            # folder like any loser's (the sync that follows would overwrite it unkept).
            log.info("%d paths changed at SOURCE during the check: sent, not pulled", len(changed))
            paths = (*paths, *inside(tuple(p for p in changed if p not in set(paths)), here, there))
        absent = {p for p in paths if (changed[p] is None if p in changed else p not in sender)}
        # Deletions in a run of their own: rsync's generator (deleting, with backups)
        # and receiver (updating, with backups) race to make the backup folders.
        for run in ([p for p in paths if p in absent], [p for p in paths if p not in absent]):
            if not run:
                continue
            outcome = handler.transfer(
                source, tuple(run), pull=pull, backup_dir=backups[pull], deadline=deadline
            )
            if outcome.verdict is not Verdict.OK:
                raise Unresolved(
                    ExitCode.SYNC_FAILED,
                    f"split-brain {'pull' if pull else 'push'} failed: {outcome.message}",
                )
    summary = describe(decision)
    where = " and ".join(sorted(set(backups.values()))) or "its side's backup folder"
    log.warning("split-brain resolved: %s (what lost is under %s)", summary, where)
    return summary


def _backup_folders(
    spec: WorkerSpec,
    handler: Any,
    source: str,
    decision: Decision,
    there: Tree,
    now: float,
    deadline: Deadline,
) -> dict[bool, str] | str:
    """The --backup-dir of each receiving side (key: pull), made before anything
    changes; or why not (a halt). The default folder is below each side's root,
    where the container may have put a symlink in its place: it is made a real
    directory and given to rsync as an absolute path (a configured one is used
    as it is). DEST's is made only when a push may replace something there
    (nobody but tandem writes DEST: a push of new paths backs nothing up, and
    leaves no empty folder)."""
    rel = f"{BACKUP_DIR}/{stamp(now)}"
    if spec.backup_dir:
        return {True: f"{spec.backup_dir}/{stamp(now)}", False: f"{spec.backup_dir}/{stamp(now)}"}
    folders: dict[bool, str] = {False: rel}
    # A pull may turn into pushes (paths the container changed meanwhile): DEST's too.
    replaces = any(p in there for p in decision.push) or bool(decision.pull)
    for pull, needed in ((True, bool(decision.pull)), (False, replaces)):
        if not needed:
            continue
        side = "SOURCE" if pull else "DEST"
        try:
            folders[pull] = handler.backup_folder(source, rel, pull=pull, deadline=deadline)
        except NotInside as err:
            return (
                f"split-brain safety halt: {side}'s backup folder {BACKUP_DIR!r} is not a real "
                f"directory ({err.strerror}): remove or rename it, then start again"
            )
        except OSError as err:
            raise Unresolved(
                ExitCode.SYNC_FAILED, f"split-brain: cannot make {side}'s backup folder: {err}"
            ) from None
    return folders


def unchanged(
    source: str, paths: tuple[str, ...], expected: Tree, there: Tree, rules: Any, window: float
) -> tuple[tuple[str, ...], dict[str, Entry | None]]:
    """PATHS to pull split into those SOURCE still holds as EXPECTED and those the
    container changed since (with what SOURCE holds now): a pull over those would
    undo a change newer than the decision. A directory the pull deletes (absent
    from THERE) counts as changed when anything below it is new or changed."""
    keep: list[str] = []
    changed: dict[str, Entry | None] = {}
    for path in paths:
        try:
            st = lstat_long(os.path.join(source, path))
            now: Entry | None = Entry(type_of(st.st_mode), st.st_size, st.st_mtime)
        except (FileNotFoundError, NotADirectoryError):
            now = None
        kept = same(now, expected.get(path), window)
        if kept and now is not None and now.is_dir and path not in there:
            below = without_backups(scan_local(source, rules, below=path), rules.allows)
            kept = all(same(entry, expected.get(p), window) for p, entry in below.items())
        if kept:
            keep.append(path)
        else:
            changed[path] = now
    return tuple(keep), changed


def inside(paths: tuple[str, ...], sender: Tree, receiver: Tree) -> tuple[str, ...]:
    """PATHS without those rsync would send through a symlink out of the tree:
    below a parent that is not a real directory at the sender, or at the
    receiver unless that parent is listed too (then rsync replaces the link with
    the sender's directory before it writes below it; the winning side's files
    there must not be left out). A parent that is a link at the sender is listed
    (its type changed), so the link is copied as a link."""
    listed = set(paths)

    def real(path: str) -> bool:
        parent = path.rpartition("/")[0]
        while parent:
            here, there = sender.get(parent), receiver.get(parent)
            if here is not None and here.type != "d":
                return False
            if there is not None and there.type != "d" and parent not in listed:
                return False
            parent = parent.rpartition("/")[0]
        return True

    return tuple(p for p in paths if real(p))


def _rename_loser(
    handler: Any,
    source: str,
    path: str,
    copy: str,
    winner: Side,
    here: Tree,
    there: Tree,
    deadline: Deadline,
) -> None:
    """The losing version of PATH becomes COPY on its own side (a failure is retried
    by a later start: nothing was overwritten yet)."""
    if winner is Side.THERE:  # our version loses: it becomes the copy, here
        try:
            # Through directory fds, never a symlink: the container may have swapped
            # a directory on the way for a link to a host directory since the scan.
            rename_below(source, path, copy, here[path].type)
        except OSError as err:
            raise Unresolved(
                ExitCode.SYNC_FAILED, f"split-brain: cannot keep {path!r} as {copy!r}: {err}"
            ) from None
        return
    entry = there[path]
    if not handler.move(Move(old=path, new=copy, is_dir=entry.is_dir), deadline):
        raise Unresolved(
            ExitCode.SYNC_FAILED, f"split-brain: cannot keep DEST's version of {path!r} as {copy!r}"
        )
