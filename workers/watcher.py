"""inotify through watchdog, turned into ``Change`` records for the batcher.

Started before the initial scan, so nothing written during it is missed. A
directory the rules keep from being monitored gets no watch (nor does anything
below it). Two watchdog gaps are closed here:

- a kernel queue overflow is only logged by watchdog: a log handler turns that
  record into an OVERFLOW change (a full rescan);
- a directory that cannot get a watch (watch limit, EACCES, a path longer than
  PATH_MAX) is skipped silently by watchdog: a watch-group subclass notices the
  missing watch and reports it, so the worker rescans and falls back to
  periodic rescans.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import warnings
from collections.abc import Callable
from typing import Any

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup

from workers.batching import Change, Kind, as_plain
from workers.rules import Rules

log = logging.getLogger(__name__)

_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileAttribEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirAttribEvent,
    DirDeletedEvent,
    DirMovedEvent,
    DirModifiedEvent,  # a child came or went: the directory's own mtime changed
]

Sink = Callable[[Change], None]
_WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


def relative(root: str, path: str) -> str | None:
    """PATH relative to ROOT ('' for ROOT itself), None when outside."""
    if path == root:
        return ""
    if path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return None


def translate(event: FileSystemEvent, root: str, rules: Rules, size: int = 0) -> list[Change]:
    """The changes one watchdog event means (none for excluded paths)."""
    if event.is_synthetic and isinstance(event, (FileMovedEvent, DirMovedEvent)):
        return []  # the directory's own move covers its content
    path = relative(root, os.fsdecode(event.src_path))
    if path is None:
        return []
    is_dir = event.is_directory
    if isinstance(event, (FileMovedEvent, DirMovedEvent)):
        new = relative(root, os.fsdecode(event.dest_path))
        old_in = rules.allows(path, is_dir, events=True)
        new_in = new is not None and rules.allows(new, is_dir, events=True)
        if old_in and new_in:
            assert new is not None
            return [Change(Kind.MOVED, path, is_dir, dest_path=new)]
        return as_plain(path if old_in else None, new if new_in else None, is_dir)
    if not rules.allows(path, is_dir, events=True):
        return []
    if isinstance(event, (FileDeletedEvent, DirDeletedEvent)):
        return [Change(Kind.DELETED, path, is_dir)]
    if isinstance(event, DirCreatedEvent):
        return [Change(Kind.DIR_CREATED, path, True)]
    return [Change(Kind.CONTENT, path, is_dir, size=size)]


def default_max_watches(sysctl: str = "/proc/sys/fs/inotify/max_user_watches") -> int:
    """A quarter of the host's per-user watches: one container's huge tree must
    not take every watch of root (every worker's)."""
    try:
        with open(sysctl, encoding="ascii") as handle:
            return max(1, int(handle.read()) // 4)
    except (OSError, ValueError):
        return 8192 // 4


def _unwatched_dir(path: bytes) -> bool:
    """PATH, which got no watch, is a directory that should have had one: also a
    path longer than PATH_MAX (inotify takes paths only; watchdog then skips the
    whole subtree silently, so a rescan must cover it)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as err:
        return err.errno == errno.ENAMETOOLONG


class _OverflowLog(logging.Handler):
    """Turns watchdog's 'queue overflowed' log record into an OVERFLOW change."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.sink(Change(Kind.OVERFLOW))


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.watcher.handle(event)


class Watcher:
    """Recursive inotify watch of ROOT; changes go to ``sink`` (thread-safe)."""

    def __init__(
        self,
        root: str,
        rules: Callable[[], Rules],
        sink: Sink,
        *,
        on_degraded: Callable[[str], None],
        sizes: bool = False,
        max_watches: int = 0,
    ) -> None:
        self.root = os.path.abspath(root).rstrip("/") or "/"
        self.rules = rules
        self.sink = sink
        self.sizes = sizes
        self.on_degraded = on_degraded
        self.max_watches = max_watches or default_max_watches()
        self.capped = False  # the cap was reached (said once)
        self._observer: BaseObserver | None = None
        self._overflow = _OverflowLog(sink)
        self._groups: list[Any] = []  # our InotifyWatchGroup subclass (defined in start)

    def start(self) -> None:
        """Add the watches (raises OSError when ROOT itself cannot be watched)."""
        watcher = self

        class Group(InotifyWatchGroup):
            def _add_all_callbacks(self, path: bytes) -> None:
                # watchdog watches every directory below PATH: an excluded tree
                # gets none (the host's watches are shared by every worker)
                if path != self.path and not watcher.wants(path):
                    return
                self._add_callback(path)
                if not (self.is_recursive and os.path.isdir(path)):
                    return
                for top, dirnames, _ in os.walk(path):
                    dirnames[:] = [d for d in dirnames if watcher.wants(os.path.join(top, d))]
                    for name in dirnames:
                        full = os.path.join(top, name)
                        if not os.path.islink(full):
                            self._add_callback(full)

            def _add_callback(self, path: bytes) -> None:
                held = len(self._active_callbacks_by_path)  # the watcher's one group
                if held >= watcher.max_watches and path not in self._active_callbacks_by_path:
                    if not watcher.capped:  # once: every directory past the cap is in the rescans
                        watcher.capped = True
                        watcher.on_degraded(
                            f"no inotify watch on {os.fsdecode(path)!r}: the watch cap "
                            f"{watcher.max_watches} is reached (--max-watches: the host's watches "
                            "are shared by every worker)"
                        )
                    return
                super()._add_callback(path)
                if path not in self._active_callbacks_by_path and _unwatched_dir(path):
                    watcher.on_degraded(f"no inotify watch on {os.fsdecode(path)!r}")

            def rewatch(self) -> None:
                """Watch what the rules now want, and nothing they exclude."""
                with self._lock:
                    if not self.is_active:
                        return
                    dropped = [
                        wd
                        for wd, path in self._active_callbacks_by_watch.items()
                        if path != self.path and not watcher.wants(path)
                    ]
                    self._remove_callbacks(dropped)
                    self._add_all_callbacks(self.path)

        class Emitter(InotifyEmitter):
            def on_thread_start(self) -> None:
                self._inotify = Group(
                    self._inotify_fd,
                    os.fsencode(self.watch.path),
                    is_recursive=self.watch.is_recursive,
                    event_mask=self.get_event_mask_from_filter(),
                    follow_symlink=self.watch.follow_symlink,
                )
                watcher._groups.append(self._inotify)

        # watchdog warns with its whole watch table when a new directory is watched twice
        warnings.filterwarnings("ignore", message="Callback .* already exists", category=RuntimeWarning)
        for name in _WATCHDOG_LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self._overflow)
            if logger.getEffectiveLevel() > logging.WARNING:
                logger.setLevel(logging.WARNING)
        observer = BaseObserver(emitter_class=Emitter)
        observer.schedule(_Handler(self), self.root, recursive=True, event_filter=_EVENTS)
        try:
            observer.start()
        except BaseException:
            self._detach_log()
            raise
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        self._detach_log()

    def wants(self, path: bytes) -> bool:
        """Does directory PATH need a watch: may its events be monitored?"""
        rel = relative(self.root, os.fsdecode(path))
        return rel is not None and self.rules().can_enter(rel, events=True)

    def rewatch(self) -> None:
        """The rules changed: add and drop watches to match them."""
        for group in self._groups:
            group.rewatch()

    @property
    def watches(self) -> int:
        return sum(len(group._active_callbacks_by_path) for group in self._groups)

    def handle(self, event: FileSystemEvent) -> None:
        size = 0
        if (
            self.sizes
            and not event.is_directory
            and isinstance(event, (FileModifiedEvent, FileClosedEvent, FileCreatedEvent))
        ):
            try:
                size = os.lstat(event.src_path).st_size
            except OSError:
                size = 0
        for change in translate(event, self.root, self.rules(), size):
            self.sink(change)

    def _detach_log(self) -> None:
        for name in _WATCHDOG_LOGGERS:
            logging.getLogger(name).removeHandler(self._overflow)
