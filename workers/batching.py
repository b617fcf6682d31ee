"""Turn a stream of changes into batches: the pure half of the watcher.

Time is passed in (``now``, seconds on a monotonic clock). Rules:

- a batch's collect window opens with its first change and closes ``delay`` later
  (a steady trickle of changes does not hold it back);
- files larger than ``bigfile_threshold`` (if > 0) collect in their own window of
  ``bigfile_delay``;
- two handler runs are at least ``sync_interval`` apart (end to start);
- an overflow (or a requested resync) turns the next batch into a full one; the
  paths that were pending go with it (``paths``): the handler's full compare
  may not see a change that kept size and mtime, so they are sent as changed;
- a rename moves whatever was pending below the old name to the new name, and is
  kept so the handler can repeat it at DEST instead of copying the content again;
- a rename seen while a run may still have been reading the old name (between the
  run's start and ``event_lag`` after its end: ``reading``/``ran``) makes the new
  name ``suspect``: that run may have read the file that took the old name's place
  (rsync lists a file, then opens it by name), so DEST's copy can hold other
  content under the right size and mtime; the handler compares it by content
  (so does it for a parked path renamed: DEST holds its old version);
- ``flush`` releases everything at once (stop, standby ended);
- paths handed back with ``requeue`` keep their age: nothing is ever dropped;
- paths a run could not send while the rest went through (an unreadable file)
  are ``park``ed: kept with their age, out of the batches until their own backoff
  (doubling per failure) has passed, so they never hold back other changes;
  ``settled`` forgets their failures once a run sent them;
- an event storm is bounded: past ``max_pending`` paths recorded since the last
  full batch, the next batch is a full one and new paths are left to its compare
  (syncthing's aggregator does the same past its ``maxFiles``).

Every change costs O(log n) plus what it touches (n: pending paths): prefix
questions (a deletion, a rename) go to a sorted index of the pending paths, the
oldest age to a heap; a batch costs O(n).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from dataclasses import dataclass, field
from enum import Enum

MAX_PENDING = 50_000  # paths recorded since the last full batch before a storm collapses to one


class Kind(Enum):
    CONTENT = "content"  # created, modified, attributes changed
    DIR_CREATED = "dir-created"  # a directory appeared: its whole tree must be walked
    DELETED = "deleted"
    MOVED = "moved"  # path -> dest_path, both inside SOURCE and both synced
    OVERFLOW = "overflow"  # events were lost: a full rescan is needed


@dataclass(frozen=True)
class Change:
    kind: Kind
    path: str = ""
    is_dir: bool = False
    dest_path: str = ""
    size: int = 0
    seen: float = 0.0  # when the watcher saw it (monotonic; 0: when added)


def as_plain(old: str | None, new: str | None, is_dir: bool) -> list[Change]:
    """A rename as plain changes, not repeated at DEST: OLD deleted, NEW created (a
    directory walked whole); an end that is None is not synced."""
    changes = []
    if old is not None:
        changes.append(Change(Kind.DELETED, old, is_dir))
    if new is not None:
        changes.append(Change(Kind.DIR_CREATED if is_dir else Kind.CONTENT, new, is_dir))
    return changes


@dataclass(frozen=True)
class Move:
    old: str
    new: str
    is_dir: bool


@dataclass(frozen=True)
class Batch:
    """What one handler run must make equal at DEST.

    ``paths`` are listed to the handler (a path missing at SOURCE is deleted at
    DEST); ``walk`` are directories whose whole tree must be listed too; ``moves``
    are tried at DEST first; ``moved_only`` are the paths that need no transfer if
    their move succeeded; of those, ``suspect`` ones (a directory: all below it)
    must be compared by content after the move. A ``full`` batch compares
    everything instead.
    """

    paths: tuple[str, ...] = ()
    walk: frozenset[str] = frozenset()
    moves: tuple[Move, ...] = ()
    moved_only: frozenset[str] = frozenset()
    full: bool = False
    oldest: float = 0.0  # when the oldest change in it was seen
    suspect: frozenset[str] = frozenset()


@dataclass
class _Entry:
    since: float
    walk: bool = False
    big: bool = False
    moved_only: bool = False


@dataclass
class _Read:
    """What one run read from SOURCE (``paths`` sorted; None: everything), and
    until when a rename of it may have been seen after it was read (None: the run
    is still going)."""

    paths: tuple[str, ...] | None
    until: float | None = None

    def below(self, path: str, is_dir: bool) -> list[str]:
        """The file PATH if it was read; for a directory, what was read below it (a
        listed directory itself is only its attributes)."""
        if self.paths is None:
            return [path]
        if not is_dir:
            start = bisect_left(self.paths, path)
            return [path] if start < len(self.paths) and self.paths[start] == path else []
        prefix = path + "/"
        found = []
        for other in self.paths[bisect_left(self.paths, prefix) :]:
            if not other.startswith(prefix):
                break
            found.append(other)
        return found


@dataclass
class _Parked:
    since: float
    due: float
    walk: bool


class _SortedPaths:
    """Paths in sorted order: those below a directory are one slice of it."""

    def __init__(self) -> None:
        self._paths: list[str] = []

    def add(self, path: str) -> None:
        at = bisect_left(self._paths, path)
        if at == len(self._paths) or self._paths[at] != path:
            self._paths.insert(at, path)

    def discard(self, path: str) -> None:
        at = bisect_left(self._paths, path)
        if at < len(self._paths) and self._paths[at] == path:
            del self._paths[at]

    def pop_below(self, directory: str) -> list[str]:
        """Remove and return every path below DIRECTORY (not DIRECTORY itself)."""
        low = bisect_left(self._paths, directory + "/")
        high = bisect_left(self._paths, directory + "0", low)  # "0" follows "/"
        below = self._paths[low:high]
        del self._paths[low:high]
        return below

    def reset(self, paths: list[str]) -> None:
        self._paths = sorted(paths)


@dataclass
class Batcher:
    delay: float = 1.0
    sync_interval: float = 0.0
    bigfile_threshold: int = 0
    bigfile_delay: float = 30.0
    max_pending: int = MAX_PENDING
    event_lag: float = 5.0  # an event may be seen this long after its change

    _pending: dict[str, _Entry] = field(default_factory=dict)
    _sorted: _SortedPaths = field(default_factory=_SortedPaths)  # the keys of _pending
    _ages: list[tuple[float, str]] = field(default_factory=list)  # heap; stale items skipped
    _added: int = 0  # paths changes recorded since the last full batch
    _moves: list[Move] = field(default_factory=list)
    _full_since: float | None = None
    _normal_since: float | None = None
    _big_since: float | None = None
    _parked: dict[str, _Parked] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)  # per parked path, until settled
    _parked_since: float | None = None  # the oldest and the earliest due of _parked
    _parked_due: float | None = None
    _last_run_end: float | None = None
    _reads: list[_Read] = field(default_factory=list)  # runs a rename may have raced
    _suspect: set[str] = field(default_factory=set)

    # -- input ------------------------------------------------------------

    def add(self, change: Change, now: float) -> None:
        self._forget_reads(change.seen or now)
        if change.kind is Kind.OVERFLOW:
            self.request_full(now)
        elif change.kind is Kind.MOVED:
            self._add_move(change, now)
        elif self._storm(change.path, now):
            return  # a full batch is due: its compare covers this path
        elif change.kind is Kind.DELETED:
            self._drop_below(change.path)
            self._touch(change.path, now)
        else:
            walk = change.kind is Kind.DIR_CREATED
            if walk and self._walked_above(change.path):
                return  # an ancestor's walk already covers it
            big = 0 < self.bigfile_threshold < change.size
            self._touch(change.path, now, walk=walk, big=big)

    def request_full(self, now: float) -> None:
        if self._full_since is None:
            self._full_since = now

    def requeue(self, batch: Batch, now: float, paths: tuple[str, ...] | None = None) -> None:
        """Give back what a failed run did not deliver (all of it, or ``paths``)."""
        since = min(now, batch.oldest)
        if batch.full:
            self._full_since = since if self._full_since is None else min(self._full_since, since)
        for path in batch.paths if paths is None else paths:
            self._age(path, self._touch(path, since, walk=path in batch.walk), since)

    def park(
        self,
        paths: tuple[str, ...] | list[str],
        since: float,
        now: float,
        *,
        retry_delay: float,
        max_delay: float,
        walk: frozenset[str] = frozenset(),
    ) -> None:
        """PATHS failed on their own: retry each after its backoff, keeping its age."""
        for path in paths:
            tries = self._failures[path] = self._failures.get(path, 0) + 1
            due = now + min(retry_delay * 2 ** (tries - 1), max_delay)
            parked = self._parked.get(path)
            if parked is not None:
                since = min(since, parked.since)
            self._parked[path] = _Parked(since=since, due=due, walk=path in walk)
        self._sum_parked()

    def settled(self, paths: tuple[str, ...] | list[str] | None = None) -> None:
        """A run sent PATHS (None: everything, a full sync): their failures are over."""
        if paths is None:
            self._failures.clear()
            return
        for path in paths:
            self._failures.pop(path, None)

    @property
    def parked(self) -> tuple[str, ...]:
        return tuple(sorted(self._parked))

    def reading(self, paths: tuple[str, ...] | list[str], *, everything: bool = False) -> None:
        """A run starts reading PATHS (EVERYTHING: the whole tree) from SOURCE."""
        self._reads.append(_Read(None if everything else tuple(sorted(paths))))

    def ran(self, now: float) -> None:
        """A handler run ended at ``now`` (for ``sync_interval``; what it read may
        be renamed under it until ``event_lag`` later)."""
        self._last_run_end = now
        for read in self._reads:
            if read.until is None:
                read.until = now + self.event_lag

    # -- output -----------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._parked) + (1 if self._full_since is not None else 0)

    def oldest(self) -> float | None:
        """When the oldest change still pending was seen (for lag)."""
        times = [t for t in (self._full_since, self._parked_since, self._oldest_pending()) if t is not None]
        return min(times) if times else None

    def ready_at(self) -> float | None:
        """The earliest time at which ``take`` would return a batch (None: nothing)."""
        windows = [] if self._parked_due is None else [self._parked_due]
        if self._full_since is not None:
            windows.append(self._full_since + self.delay)
        if self._normal_since is not None:
            windows.append(self._normal_since + self.delay)
        if self._big_since is not None:
            windows.append(self._big_since + self.bigfile_delay)
        if not windows:
            return None
        ready = min(windows)
        if self._last_run_end is not None:
            ready = max(ready, self._last_run_end + self.sync_interval)
        return ready

    def take(self, now: float, *, flush: bool = False) -> Batch | None:
        """Release the batch that is due at ``now`` (everything with ``flush``)."""
        self._unpark(now, flush)
        ready = self.ready_at()
        if ready is None or (not flush and now < ready):
            return None
        if self._full_since is not None:
            oldest = self.oldest()
            batch = Batch(
                paths=tuple(sorted(self._pending)),
                full=True,
                oldest=self._full_since if oldest is None else oldest,
            )
            self._reset()
            return batch
        big_due = flush or (self._big_since is not None and now >= self._big_since + self.bigfile_delay)
        normal_due = flush or (self._normal_since is not None and now >= self._normal_since + self.delay)
        taken = {p: e for p, e in self._pending.items() if (big_due if e.big else normal_due)}
        if not taken:
            return None
        for path in taken:
            del self._pending[path]
        self._reindex()
        moves = tuple(self._moves)  # renames go with the first batch that runs, big or not
        self._moves.clear()
        return Batch(
            paths=tuple(sorted(taken)),
            walk=frozenset(p for p, e in taken.items() if e.walk),
            moves=moves,
            moved_only=frozenset(p for p, e in taken.items() if e.moved_only),
            oldest=min(e.since for e in taken.values()),
            suspect=self._take_suspect(),
        )

    # -- internals --------------------------------------------------------

    def _storm(self, path: str, now: float) -> bool:
        """Past ``max_pending`` new paths since the last full batch, a full batch is
        due and new paths are not recorded (True: leave PATH to the full compare)."""
        if path in self._pending:
            return False
        if self._added >= self.max_pending:
            self.request_full(now)
            return True
        self._added += 1
        return False

    def _unpark(self, now: float, flush: bool) -> None:
        """Parked paths whose backoff is over (all with FLUSH) join the pending ones."""
        if not flush and (self._parked_due is None or now < self._parked_due):
            return
        for path in [p for p, parked in self._parked.items() if flush or parked.due <= now]:
            parked = self._parked.pop(path)
            self._age(path, self._touch(path, parked.since, walk=parked.walk), parked.since)
        self._sum_parked()

    def _sum_parked(self) -> None:
        self._parked_since = min((p.since for p in self._parked.values()), default=None)
        self._parked_due = min((p.due for p in self._parked.values()), default=None)

    def _touch(self, path: str, now: float, *, walk: bool = False, big: bool = False) -> _Entry:
        entry = self._pending.get(path)
        if entry is None:
            entry = self._pending[path] = _Entry(since=now)
            self._sorted.add(path)
            self._push(now, path)
        entry.walk = entry.walk or walk
        entry.moved_only = False
        entry.big = big
        if big:
            self._big_since = self._big_since if self._big_since is not None else now
        elif self._normal_since is None:
            self._normal_since = now
        return entry

    def _age(self, path: str, entry: _Entry, since: float) -> None:
        """PATH's change is at least as old as SINCE."""
        if since < entry.since:
            entry.since = since
            self._push(since, path)

    def _push(self, since: float, path: str) -> None:
        if len(self._ages) > 2 * len(self._pending) + 1024:  # mostly stale: start again
            self._ages = [(e.since, p) for p, e in self._pending.items()]
            heapq.heapify(self._ages)
        heapq.heappush(self._ages, (since, path))

    def _oldest_pending(self) -> float | None:
        ages = self._ages
        while ages:
            since, path = ages[0]
            entry = self._pending.get(path)
            if entry is not None and entry.since == since:
                return since
            heapq.heappop(ages)  # the path went (or was renamed), or its age was lowered since
        return None

    def _add_move(self, change: Change, now: float) -> None:
        old, new = change.path, change.dest_path
        below = self._sorted.pop_below(old)
        if old in self._pending:
            self._sorted.discard(old)
            below.append(old)
        for path in below:
            entry = self._pending.pop(path)
            renamed = new + path[len(old) :]
            self._pending[renamed] = entry
            self._sorted.add(renamed)
            self._push(entry.since, renamed)
        self._touch(old, now)
        moved = self._pending.get(new)
        if moved is None:
            moved = self._touch(new, now)
            moved.moved_only = True
        self._moves.append(Move(old, new, change.is_dir))
        self._suspect_move(change)

    def _suspect_move(self, change: Change) -> None:
        """Suspect names follow a rename; the new name is suspect if a run may have
        read the old one after the rename (the rename was seen before that run's
        window closed), or if a run failed to send it (parked: DEST's copy is old)."""
        old, new = change.path, change.dest_path
        prefix = old + "/"
        for path in [p for p in self._suspect if p == old or p.startswith(prefix)]:
            self._suspect.discard(path)
            self._suspect.add(new + path[len(old) :])
        self._suspect.update(new + p[len(old) :] for p in self._parked if p == old or p.startswith(prefix))
        for read in self._reads:
            self._suspect.update(new + path[len(old) :] for path in read.below(old, change.is_dir))

    def _forget_reads(self, seen: float) -> None:
        """Changes come in the order they were seen: no later one can race a run
        whose window closed before SEEN."""
        self._reads = [r for r in self._reads if r.until is None or r.until >= seen]

    def _take_suspect(self) -> frozenset[str]:
        """The suspect names go with their moves."""
        suspect = frozenset(self._suspect)
        self._suspect.clear()
        return suspect

    def _drop_below(self, path: str) -> None:
        for child in self._sorted.pop_below(path):
            del self._pending[child]

    def _walked_above(self, path: str) -> bool:
        while path:
            path = path.rpartition("/")[0]
            entry = self._pending.get(path)
            if entry is not None and entry.walk:
                return True
        return False

    def _reindex(self) -> None:
        """After a batch took some of the pending paths: the index, the ages and
        the windows of what is left (O(what is left))."""
        self._sorted.reset(list(self._pending))
        self._ages = [(e.since, p) for p, e in self._pending.items()]
        heapq.heapify(self._ages)
        normal = [e.since for e in self._pending.values() if not e.big]
        big = [e.since for e in self._pending.values() if e.big]
        self._normal_since = min(normal) if normal else None
        self._big_since = min(big) if big else None

    def _reset(self) -> None:
        self._pending.clear()
        self._sorted.reset([])
        self._ages.clear()
        self._added = 0
        self._parked.clear()  # a full batch compares everything: they are in it
        self._sum_parked()
        self._moves.clear()
        self._suspect.clear()  # moves are not repeated: what they touch is compared
        self._full_since = self._normal_since = self._big_since = None
