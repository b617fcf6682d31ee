"""The batcher as it was before its index (every prefix question a scan of every
pending path): the model the property tests hold ``workers.batching.Batcher`` to.
Slow on purpose; never imported by the worker."""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.batching import Batch, Change, Kind, Move


@dataclass
class _Entry:
    since: float
    walk: bool = False
    big: bool = False
    moved_only: bool = False


@dataclass
class _Parked:
    since: float
    due: float
    walk: bool


@dataclass
class NaiveBatcher:
    delay: float = 1.0
    sync_interval: float = 0.0
    bigfile_threshold: int = 0
    bigfile_delay: float = 30.0

    _pending: dict[str, _Entry] = field(default_factory=dict)
    _moves: list[Move] = field(default_factory=list)
    _full_since: float | None = None
    _normal_since: float | None = None
    _big_since: float | None = None
    _parked: dict[str, _Parked] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)  # per parked path, until settled
    _last_run_end: float | None = None

    # -- input ------------------------------------------------------------

    def add(self, change: Change, now: float) -> None:
        if change.kind is Kind.OVERFLOW:
            self.request_full(now)
        elif change.kind is Kind.MOVED:
            self._add_move(change, now)
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
            entry = self._touch(path, since, walk=path in batch.walk)
            entry.since = min(entry.since, since)

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

    def ran(self, now: float) -> None:
        """A handler run ended at ``now`` (for ``sync_interval``)."""
        self._last_run_end = now

    # -- output -----------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._parked) + (1 if self._full_since is not None else 0)

    def oldest(self) -> float | None:
        """When the oldest change still pending was seen (for lag)."""
        times = [e.since for e in self._pending.values()] + [p.since for p in self._parked.values()]
        if self._full_since is not None:
            times.append(self._full_since)
        return min(times) if times else None

    def ready_at(self) -> float | None:
        """The earliest time at which ``take`` would return a batch (None: nothing)."""
        windows = [p.due for p in self._parked.values()]
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
        moves = tuple(self._moves)  # renames go with the first batch that runs, big or not
        self._moves.clear()
        self._recompute_windows()
        return Batch(
            paths=tuple(sorted(taken)),
            walk=frozenset(p for p, e in taken.items() if e.walk),
            moves=moves,
            moved_only=frozenset(p for p, e in taken.items() if e.moved_only),
            oldest=min(e.since for e in taken.values()),
        )

    # -- internals --------------------------------------------------------

    def _unpark(self, now: float, flush: bool) -> None:
        """Parked paths whose backoff is over (all with FLUSH) join the pending ones."""
        for path in [p for p, parked in self._parked.items() if flush or parked.due <= now]:
            parked = self._parked.pop(path)
            entry = self._touch(path, parked.since, walk=parked.walk)
            entry.since = min(entry.since, parked.since)

    def _touch(self, path: str, now: float, *, walk: bool = False, big: bool = False) -> _Entry:
        entry = self._pending.get(path)
        if entry is None:
            entry = self._pending[path] = _Entry(since=now)
        entry.walk = entry.walk or walk
        entry.moved_only = False
        entry.big = big
        if big:
            self._big_since = self._big_since if self._big_since is not None else now
        elif self._normal_since is None:
            self._normal_since = now
        return entry

    def _add_move(self, change: Change, now: float) -> None:
        old, new = change.path, change.dest_path
        prefix = old + "/"
        for path in [p for p in self._pending if p == old or p.startswith(prefix)]:
            entry = self._pending.pop(path)
            self._pending[new + path[len(old) :]] = entry
        self._touch(old, now)
        moved = self._pending.get(new)
        if moved is None:
            moved = self._touch(new, now)
            moved.moved_only = True
        self._moves.append(Move(old, new, change.is_dir))

    def _drop_below(self, path: str) -> None:
        prefix = path + "/"
        for child in [p for p in self._pending if p.startswith(prefix)]:
            del self._pending[child]

    def _walked_above(self, path: str) -> bool:
        while path:
            path = path.rpartition("/")[0]
            entry = self._pending.get(path)
            if entry is not None and entry.walk:
                return True
        return False

    def _recompute_windows(self) -> None:
        normal = [e.since for e in self._pending.values() if not e.big]
        big = [e.since for e in self._pending.values() if e.big]
        self._normal_since = min(normal) if normal else None
        self._big_since = min(big) if big else None

    def _reset(self) -> None:
        self._pending.clear()
        self._parked.clear()  # a full batch compares everything: they are in it
        self._moves.clear()
        self._full_since = self._normal_since = self._big_since = None
