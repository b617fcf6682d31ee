"""The worker's main loop: watch, initial sync, batches, flush on stop.

One thread owns all state (the batcher, counters, rules). The watcher thread
puts changes into ``self.inbox``, the signal handlers put signals into
``self._signals`` (and wake the inbox); this loop takes them out, signals
first, and inbox items for at most PUMP_SLICE at a time, so that a storm of
events never holds back a batch, a heartbeat or a stop. Order of a life:

1. check SOURCE, rules and handler (any problem: exit CONFIG, DEST untouched);
2. start the watcher (its events wait in the inbox);
3. wait while the standby file exists; initial full sync (unless skipped);
4. loop: take the batch that is due, run it (moves at DEST first), retry with
   backoff, hand failures back to the batcher;
5. on SIGTERM/SIGINT (or the parent gone): pre-exit hook, flush everything
   within ``stop_timeout``, exit hook, exit 0.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, NoReturn

from workers import destpath, reconcile
from workers import rules as rules_mod
from workers.ancestor import Ancestor
from workers.ancestor import load as load_ancestor
from workers.batching import Batch, Batcher, Change, Kind, as_plain
from workers.links import HardLinks
from workers.pidfile import PidFile, PidFileBusy
from workers.proc import SpawnError, run
from workers.resolver import mirror_list, unlike
from workers.snapshot import Entry, ScanError, Tree, scan_local, under_real_dirs
from workers.spec import ExitCode, Status, WorkerSpec
from workers.splitbrain import is_backup, same
from workers.status import Reporter, lagging
from workers.transfer import ConfigError, Handler, Job, Outcome, Verdict, make_handler
from workers.watcher import Watcher

log = logging.getLogger("tandem.worker")

POLL = 0.25  # longest sleep of the loop: standby file, parent, source root checks
SETTLE_MAX = 2.0  # s: the longest wait for the events of a split-brain resolution (watchdog: 0.5)
MAX_BACKOFF = 30.0
EVENT_LAG = 5.0  # s: an event may reach the batcher this long after its change (watchdog pairs renames)
FLUSH_ROUNDS = 3  # runs the stop's flush may take: a full one, its pending paths, one more try
DEGRADED_RESCAN = 30.0  # periodic rescan when inotify cannot cover the tree
HOOK_TIMEOUT = 30.0
WALK_TIMEOUT = 60.0  # s: the walk of an ssh DEST's path on the peer
DRAIN_QUIET = 0.7  # longer than watchdog's rename-pairing delay (0.5 s)
PUMP_SLICE = 0.1  # s: the longest the loop takes inbox items before it looks at batches again
WAKE = ("wake", 0)  # put into the inbox by a signal: the loop's wait for an event ends


class Halt(Exception):
    """Stop the worker with this exit code (and say why)."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.source = os.path.abspath(spec.source)
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._signals: collections.deque[int] = collections.deque()  # ahead of the inbox
        self._inbox_empty_at = 0.0  # wall time the inbox was last seen empty
        self.batcher = Batcher(
            delay=spec.delay,
            sync_interval=spec.sync_interval,
            bigfile_threshold=spec.bigfile_threshold,
            bigfile_delay=spec.bigfile_delay,
            event_lag=EVENT_LAG,
        )
        self.reporter = Reporter(spec)
        self.rules = rules_mod.Rules()
        self.handler: Handler | None = None
        self.watcher: Watcher | None = None
        self.rescan_every = spec.rescan_interval
        self._stop_at: float | None = None  # monotonic deadline, set on a stop request
        self._stopping = False
        self._signalled = False  # a stop signal came (the next one cuts the flush short)
        self._hurried = False  # ... and the next one did
        self._initial_done = False
        self._cooldown_until = 0.0
        self._next_rescan = 0.0
        self._next_heartbeat = 0.0
        self._started = False
        self.pair = (self.source, spec.dest)
        self.ancestor = Ancestor(spec.snapshot_file, self.source, self.pair) if spec.snapshot_file else None
        self._scanned: Tree = {}  # SOURCE as the last full sync's scan saw it
        self._unwatched: set[str] = set()  # ... and what it found changed since synced_until
        self._root_stale = False  # the root's attributes may differ at DEST
        self._recheck: set[str] = set()  # pending files the full sync's quick check cannot tell changed
        self._agreed: list[str] = []  # below the folders the last plan renamed at DEST: equal there
        self._full_start: float | None = None  # wall time the last full sync in this process began
        self._watch_since: float | None = None  # wall time the watcher began
        self.links = HardLinks()  # names of multiply linked files, to send together
        self._pid_file: PidFile | None = None

    # -- entry -------------------------------------------------------------

    def run(self) -> int:
        code = ExitCode.INTERNAL
        try:
            code = self._run()
        except Halt as halt:
            log.error("%s", halt)
            self.reporter.counters.last_error = str(halt)
            code = halt.code
        except Exception:
            log.exception("unexpected error")
        finally:
            self._save_ancestor(force=True)  # it only ever holds what both sides agreed on
            if self.watcher is not None:
                self.watcher.stop()
            if self._started:
                self._hook(self.spec.exit_hook, "exit hook")
            self.reporter.emit("exit", pending=self.batcher.pending, exit_code=int(code))
            self.reporter.cleanup()
            if self._pid_file is not None:
                self._pid_file.release()
        return int(code)

    def _run(self) -> ExitCode:
        self._check_config()
        self._install_signals()
        self._started = True
        self.reporter.phase(Status.STARTING)
        if not self.spec.only_initial_sync:
            self._start_watcher()
        self._wait_standby()
        if self._stopping and self.spec.standby_file and os.path.exists(self.spec.standby_file):
            return ExitCode.OK  # stopped in standby: nothing is sent (the next start's sync is)
        # A stop asked for from here on is a flush: the check and the initial sync
        # still run, within the stop's deadline (the container's data as it stopped).
        self._secure_dest()
        if not self.spec.skip_initial_sync:
            self.reporter.phase(Status.INITIAL_SYNC)
            if self.spec.split_brain and not self._split_brain():
                return ExitCode.OK  # stopped before a decision: nothing may be sent
            # What changed before now (while in standby, during the check) is in
            # the initial sync: its compare sends what differs, in the same run.
            self._pump(0)
            self.batcher.request_full(time.monotonic())
            initial = self.batcher.take(time.monotonic(), flush=True)
            assert initial is not None and initial.full
            self._execute(initial, initial=True)
        self._initial_done = True
        self._save_ancestor(force=True)
        self._next_rescan = time.monotonic() + self.rescan_every
        if self.spec.only_initial_sync:
            self._flush()  # what the initial sync handed back to be sent as changed
            return ExitCode.OK
        self._phase(Status.RUNNING)
        self._loop()
        return self._stop()

    def _secure_dest(self) -> None:
        """Before anything is written: no symlink on DEST's path (rsync, the scans
        and the pulls would follow it); its missing directories are made, 0700. A
        peer that cannot be asked is retried like a failed sync: with backoff, as
        often as a batch (for ever with --ignore-failures), then SYNC_FAILED."""
        dest = self.spec.destination
        attempt = 0
        while True:
            try:
                walk = destpath.walk(dest, self.spec.rsh, WALK_TIMEOUT, self._deadline)
            except destpath.Refused as err:
                raise Halt(ExitCode.CONFIG, str(err)) from None
            except ScanError as err:
                attempt += 1
                self.reporter.counters.last_error = f"DEST check: {err}"
                stopped = self._stop_at is not None and time.monotonic() >= self._stop_at
                if stopped or (attempt > self.spec.retries and not self.spec.ignore_failures):
                    raise Halt(ExitCode.SYNC_FAILED, f"sync failed after {attempt} tries: {err}") from None
                log.warning("DEST check failed (try %d), nothing sent until it passes: %s", attempt, err)
                self._backoff(attempt)
                continue
            if walk is None:
                log.info("DEST %s is an rsync daemon's: its path is resolved by the daemon", dest)
                return
            if walk.made:
                log.info("made %s on the way to DEST (mode 0700)", "/".join(walk.made))
            why = destpath.warning(str(dest), walk)
            if why:
                log.warning("%s", why)
            return

    def _split_brain(self) -> bool:
        """Before the first sync: resolve DEST's own changes by the pair's policy.
        A side that cannot be listed is retried with backoff (until a stop: then
        False, nothing decided)."""
        assert self.handler is not None
        ancestor = load_ancestor(self.spec.snapshot_file, self.pair)
        if ancestor is not None and self.ancestor is not None:
            self.ancestor.tree = dict(ancestor)  # later updates refine it, never start from nothing
        attempt = 0
        while True:
            try:
                with self._progress("split-brain scan") as advance:
                    summary = reconcile.resolve(
                        self.spec,
                        self.handler,
                        self.source,
                        self.rules,
                        ancestor,
                        self._deadline,
                        time.time(),
                        progress=self._ticking(advance),
                    )
            except ScanError as err:
                attempt += 1
                self.reporter.counters.last_error = f"split-brain check: {err}"
                log.warning("split-brain check failed (try %d): %s", attempt, err)
                if self._stopping:
                    return False
                self._backoff(attempt)
                continue
            except reconcile.Unresolved as err:
                raise Halt(err.code, str(err)) from None
            # Our own renames and pulls are in the inbox as events, beside the
            # container's changes made during the check: a rename repeated at DEST
            # would undo the decision, so renames go as plain changes of both ends.
            self._defuse_moves()
            log.info(
                "split-brain check (%s, ancestor %s): %s",
                self.spec.split_brain,
                "yes" if ancestor is not None else "none",
                summary,
            )
            return True

    def _defuse_moves(self) -> None:
        """Take in the events of what was just done (until the inbox stays quiet
        for DRAIN_QUIET, at most SETTLE_MAX: a busy container is never quiet),
        renames as plain changes."""
        quiet_since = start = time.monotonic()
        while (now := time.monotonic()) - quiet_since < DRAIN_QUIET and now - start < SETTLE_MAX:
            self._heartbeat()
            self._take_signals()
            try:
                item = self.inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            quiet_since = time.monotonic()
            if isinstance(item, Change) and item.kind is Kind.MOVED:
                for change in as_plain(item.path, item.dest_path, item.is_dir):
                    self._apply(change)
            else:
                self._apply(item)

    def _save_ancestor(self, *, force: bool = False) -> None:
        if self.ancestor is not None:
            self.ancestor.maybe_save(time.monotonic(), force=force)

    def _check_config(self) -> None:
        spec = self.spec
        if not os.path.isdir(self.source):
            raise Halt(ExitCode.CONFIG, f"SOURCE {spec.source!r} is not a directory")
        try:
            self.rules = rules_mod.load(spec.rules, spec.include, spec.exclude)
            self.handler = make_handler(spec)
        except (rules_mod.RulesError, ConfigError) as err:
            raise Halt(ExitCode.CONFIG, str(err)) from None
        dest = spec.destination
        if dest.kind == "local":
            real_dest = os.path.realpath(dest.path)
            real_src = os.path.realpath(self.source)
            if (
                real_dest == real_src
                or real_dest.startswith(real_src + "/")
                or real_src.startswith(real_dest + "/")
            ):
                raise Halt(ExitCode.CONFIG, f"DEST {dest.path!r} and SOURCE {spec.source!r} overlap")
        if spec.pid_file:
            try:
                self._pid_file = PidFile.acquire(spec.pid_file)
            except (PidFileBusy, OSError) as err:
                raise Halt(ExitCode.CONFIG, str(err)) from None

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded (tests): the caller owns signals and calls request_*
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signal(signum)

    def signal(self, signum: int) -> None:
        """Queue SIGNUM for the loop, ahead of the events waiting in the inbox
        (safe from a signal handler or another thread). A stop signal sets the
        flush's deadline; a second one makes it now (a second Ctrl-C does not
        wait for the flush)."""
        if signum in (signal.SIGTERM, signal.SIGINT):
            now = time.monotonic()
            if self._signalled:
                self._stop_at, self._hurried = now, True
            self._signalled = True
            deadline = now + self.spec.stop_timeout
            self._stop_at = deadline if self._stop_at is None else min(self._stop_at, deadline)
        self._signals.append(signum)
        self.inbox.put(WAKE)  # SimpleQueue.put is reentrant

    def request_stop(self) -> None:
        """Flush and stop (the parent is gone, another pair ended): not a signal,
        so the first real stop signal after it is not taken for a second."""
        if self._stop_at is None:
            self._stop_at = time.monotonic() + self.spec.stop_timeout
        self._signals.append(signal.SIGTERM)
        self.inbox.put(WAKE)

    def _start_watcher(self) -> None:
        watcher = Watcher(
            self.source,
            lambda: self.rules,
            lambda change: self.inbox.put(replace(change, seen=time.monotonic())),
            on_degraded=lambda why: self.inbox.put(("degraded", why)),
            sizes=self.spec.bigfile_threshold > 0,
            max_watches=self.spec.max_watches,
        )
        self._watch_since = time.time()
        try:
            watcher.start()
        except OSError as err:
            self._watch_since = None
            self._degrade(f"cannot watch {self.source}: {err}")
            return
        self.watcher = watcher
        log.info(
            "watching %s (%d inotify watches) -> %s", self.source, watcher.watches, self.spec.destination
        )

    # -- the loop -----------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            ready = self.batcher.ready_at()
            wait = POLL if ready is None else min(POLL, max(0.0, ready - now))
            self._pump(wait)
            if self._stopping:
                break
            now = time.monotonic()
            self._check_source()
            if self._in_standby():
                self._heartbeat()  # paused, not hung: the supervisor must keep hearing from it
                continue
            if self.rescan_every and now >= self._next_rescan:
                self._next_rescan = now + self.rescan_every
                self.batcher.request_full(now)
            if now >= self._cooldown_until:
                batch = self.batcher.take(now)
                if batch is not None:
                    self._execute(batch)
                elif self._root_stale and not self.batcher.pending:
                    self._carry_root()
            self._heartbeat()

    def _pump(self, timeout: float) -> None:
        """Take the signals, then inbox items (waiting up to TIMEOUT for the first)
        for at most PUMP_SLICE, or until a stop request comes."""
        stopping = self._stopping
        self._take_signals()
        end = time.monotonic() + PUMP_SLICE
        while self._stopping == stopping:
            try:
                item = self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait()
            except queue.Empty:
                self._inbox_empty_at = time.time()
                return
            timeout = 0
            self._apply(item)
            self._take_signals()
            if time.monotonic() >= end:
                return

    def _take_signals(self) -> None:
        while self._signals:
            self._on_signal_taken(self._signals.popleft())

    def _apply(self, item: Any) -> None:
        now = time.monotonic()
        if isinstance(item, Change):
            if item.kind is Kind.DELETED and item.path == "":
                self._source_gone()
            if not is_backup(item.path):  # split-brain backups stay on their side
                self.batcher.add(item, now)
            return
        kind, value = item
        if kind == "degraded":
            self._degrade(value)

    def _on_signal_taken(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
        elif signum == signal.SIGHUP:
            self._reload_rules()
        elif signum == signal.SIGUSR2:
            log.info("full resync requested")
            self.batcher.request_full(time.monotonic())

    def _degrade(self, why: str) -> None:
        self.reporter.degraded = why
        self.batcher.request_full(time.monotonic())
        if not self.rescan_every:
            self.rescan_every = DEGRADED_RESCAN
            self._next_rescan = time.monotonic() + DEGRADED_RESCAN
        log.warning("%s: full rescan now and every %.0fs", why, self.rescan_every)

    def _reload_rules(self) -> None:
        try:
            self.rules = rules_mod.load(self.spec.rules, self.spec.include, self.spec.exclude)
        except rules_mod.RulesError as err:
            log.error("rules not reloaded, keeping the old ones: %s", err)
            return
        if self.watcher is not None:
            self.watcher.rewatch()
        log.info("rules reloaded (%d rules): full resync", len(self.rules.rules))
        self.batcher.request_full(time.monotonic())  # paths the new rules include must go now

    def _source_gone(self) -> NoReturn:
        raise Halt(
            ExitCode.SAFETY_HALT, f"SOURCE {self.source} vanished; stopping, nothing more sent to DEST"
        )

    def _check_source(self) -> None:
        if not os.path.isdir(self.source):
            self._source_gone()
        if self.spec.parent_pid and os.getppid() != self.spec.parent_pid and not self._stopping:
            log.warning("parent %d is gone: flushing and stopping", self.spec.parent_pid)
            self.request_stop()

    def _in_standby(self) -> bool:
        path = self.spec.standby_file
        if not path or not os.path.exists(path):
            if self.reporter.status is Status.STANDBY:
                log.info("standby file removed: sending everything pending")
                self._phase(Status.RUNNING if self._initial_done else Status.INITIAL_SYNC)
                if self._initial_done:  # else the initial sync, next, takes it all in one run
                    batch = self.batcher.take(time.monotonic(), flush=True)
                    if batch is not None:
                        self._execute(batch)
            return False
        self._phase(Status.STANDBY)
        return True

    def _wait_standby(self) -> None:
        while not self._stopping and self._in_standby():
            self._pump(POLL)
            self._heartbeat()

    # -- running batches --------------------------------------------------

    def _execute(self, batch: Batch, *, initial: bool = False) -> None:
        """Run BATCH to success; retry with backoff; never drop a path."""
        start = time.monotonic()
        start_wall = time.time()
        counters = self.reporter.counters
        if batch.full and not initial:
            counters.resyncs += 1
        paths: list[str] | None = None
        verify: frozenset[str] = frozenset()
        recursive = False
        covered = 0  # how many paths the run stands for (a recursive root covers the tree)
        attempt = 0
        failed: tuple[str, ...] = ()  # paths the run could not send while the rest went through
        while True:
            try:
                if paths is None:
                    paths, recursive, covered, verify = self._plan(
                        batch, ignore_rules=initial and self.spec.full_initial_sync
                    )
                    self.batcher.reading(paths, everything=batch.full)
                outcome = self._send(paths, batch.full, recursive=recursive, progress=initial, verify=verify)
            except ScanError as err:
                outcome = Outcome(Verdict.RETRY, message=str(err))
            if outcome.verdict is Verdict.OK:
                break
            counters.failures += 1
            counters.last_error = outcome.message
            if outcome.verdict is Verdict.PARTIAL and outcome.failed:
                failed = outcome.failed
                log.warning(
                    "%d paths not sent (%s), each retried after its own backoff: %s",
                    len(failed),
                    _some(failed),
                    outcome.message,
                )
                break
            log.warning("sync failed (try %d of %d): %s", attempt + 1, self.spec.retries + 1, outcome.message)
            if outcome.verdict is Verdict.FATAL:
                raise Halt(ExitCode.CONFIG, f"handler cannot work: {outcome.message}")
            attempt += 1
            if attempt > self.spec.retries:
                self._give_up(batch, paths, outcome)
                return
            self._backoff(attempt)
        end = time.monotonic()
        # The root's mtime moves with every entry made or removed in it: carried
        # once the worker is idle (a recursive run lists the root itself).
        if self.handler is not None and self.handler.root_attrs and not recursive:
            self._root_stale = self._root_stale or batch.full or "" in batch.paths
        self.batcher.ran(end)
        self.batcher.settled(None if batch.full else [p for p in paths or () if p not in failed])
        if batch.full:
            # What was pending when the full sync was asked for (an overflow, a rescan,
            # held at the start): its compare misses an edit that kept size and mtime,
            # so the files it found equal at DEST go again as changed. And what changed
            # since the last moment all was sent while no event could tell (stopped,
            # overflowed: ctime says so) is compared by content now (a chown -R
            # changes every ctime, not the content).
            again = sorted(self._recheck)
            unwatched = sorted(self._unwatched.difference(again))
            self._unwatched, self._recheck = set(), set()
            if unwatched:
                log.info("%d paths changed while not watched: compared by content", len(unwatched))
                self.batcher.reading(unwatched)
                if self._send(unwatched, False, recursive=False, checksum=True).verdict is not Verdict.OK:
                    again += unwatched  # as changed, with the retries of any batch
                self.batcher.ran(time.monotonic())
            if again:
                self.batcher.requeue(Batch(paths=tuple(again), oldest=batch.oldest), end)
        if failed:
            self._park(failed, batch.oldest, end)
        if self.ancestor is not None:
            if batch.full:
                self.ancestor.replace(self._scanned)
            else:
                for move in batch.moves:  # what both sides held below the old name is below the new one
                    self.ancestor.moved(move.old, move.new)
                moved = [p for m in batch.moves for p in (m.old, m.new)]
                sent = [*(p for p in paths or () if p not in failed), *moved, *self._agreed]
                changed = self.ancestor.update(sent, since=start_wall)
                if changed and not self._stopping:  # sent again until they rest (the stop: unknown)
                    self.batcher.requeue(Batch(paths=tuple(changed), oldest=batch.oldest), end)
            self.ancestor.forget(failed)
            if batch.full:
                self._full_start = start_wall
            self._advance_synced(start_wall)
            self._save_ancestor()
        counters.syncs += 1
        counters.files += covered - len(failed)
        counters.last_sync_duration = round(end - start, 3)
        if not failed:
            counters.last_error = ""
        kind = "initial sync" if initial else "full resync" if batch.full else "sync"
        log.info("%s: %d paths in %.2fs (%d pending)", kind, covered, end - start, self.batcher.pending)
        self._report("sync")

    def _carry_root(self) -> None:
        """Make the root's own attributes (mode, owner, mtime) equal at DEST: one
        handler run of the root alone, when nothing else is pending."""
        outcome = self._send([], False, recursive=False, root=True)
        if outcome.verdict is Verdict.OK:
            self._root_stale = False
        else:
            log.warning("the root's attributes were not carried (tried again later): %s", outcome.message)
            self._cooldown_until = time.monotonic() + self.spec.retry_delay

    def _park(self, failed: tuple[str, ...], since: float, now: float) -> None:
        """Keep FAILED for their own retries; a directory is walked again then (what
        it holds may not have been listed)."""
        walk = frozenset(p for p in failed if os.path.isdir(os.path.join(self.source, p)))
        self.batcher.park(
            failed, since, now, retry_delay=self.spec.retry_delay, max_delay=MAX_BACKOFF, walk=walk
        )

    def _advance_synced(self, start_wall: float) -> None:
        """Move the ancestor's ``synced_until`` after a run that started at wall time
        START_WALL: every change older than it, and than whatever is still pending,
        has reached DEST, if events were there to tell of every change since the
        last full sync (else the full sync's start is the limit); less EVENT_LAG
        for events still on their way. Never before a full sync in this process:
        what changed while the worker was not running is only known by one."""
        if self.ancestor is None or self._full_start is None:
            return
        self._pump(0)  # changes already reported are not sent yet
        until = start_wall
        oldest = self.batcher.oldest()
        if oldest is not None:
            until = min(until, time.time() - (time.monotonic() - oldest))
        if not self.inbox.empty():  # the changes still in it were reported after it was last empty
            until = min(until, self._inbox_empty_at)
        watched = self._watch_since is not None and self._watch_since <= self._full_start
        if not watched or self.reporter.degraded:
            until = min(until, self._full_start)
        self.ancestor.synced(until - EVENT_LAG)

    def _give_up(self, batch: Batch, paths: list[str] | None, outcome: Outcome) -> None:
        now = time.monotonic()
        if self._stop_at is not None and now >= self._stop_at:
            why = "second stop signal: flush cut short" if self._hurried else "stop timeout reached"
            raise Halt(ExitCode.SYNC_FAILED, f"{why}; undelivered: {outcome.message}")
        if not self.spec.ignore_failures:
            raise Halt(
                ExitCode.SYNC_FAILED, f"sync failed after {self.spec.retries + 1} tries: {outcome.message}"
            )
        requeued = batch if batch.full or paths is None else Batch(paths=tuple(paths), oldest=batch.oldest)
        self.batcher.requeue(requeued, now)
        self._cooldown_until = now + self._backoff_step(self.spec.retries + 1)
        log.warning("%d paths kept for a later batch", len(requeued.paths) or self.batcher.pending)

    def _backoff_step(self, attempt: int) -> float:
        return float(min(self.spec.retry_delay * 2 ** (attempt - 1), MAX_BACKOFF))

    def _backoff(self, attempt: int) -> None:
        end = time.monotonic() + self._backoff_step(attempt)
        if self._stop_at is not None:
            end = min(end, self._stop_at)
        while (left := end - time.monotonic()) > 0:
            self._pump(min(left, POLL))

    def _plan(self, batch: Batch, *, ignore_rules: bool) -> tuple[list[str], bool, int, frozenset[str]]:
        """The list for one batch (moves done at DEST, new trees walked), whether
        its directories may be sent as whole trees, how many paths it covers, and
        which of them must be compared by content."""
        assert self.handler is not None
        self._check_source()
        rules = None if ignore_rules else self.rules
        if batch.full:
            found: dict[tuple[int, int], list[str]] = {}
            since = self.ancestor.synced_until if self.ancestor is not None else None
            recent: set[str] = set()
            with self._progress("scanning") as advance:
                scanned = scan_local(
                    self.source,
                    rules,
                    on_entry=self._ticking(advance),
                    links=found,
                    changed=None if since is None else (since, recent),
                )
            self.links.rebuild(found)
            source = {p: e for p, e in scanned.items() if not is_backup(p)}
            self._scanned = source
            self._unwatched = {p for p in recent if p in source and self.rules.allows(p, source[p].is_dir)}
            dest = self.handler.scan_dest(self._deadline)
            if dest is None:
                self._recheck = set(batch.paths)
                return sorted(source), False, len(source), frozenset()
            dest = {p: e for p, e in dest.items() if not is_backup(p)}
            plan = mirror_list(source, dest, self.rules.allows)
            window = self.spec.modify_window  # what differs in size or mtime goes whole anyway

            def blind(path: str) -> bool:
                """A file the run's size+mtime quick check would skip."""
                entry = source.get(path)
                return entry is not None and entry.type == "f" and same(entry, dest.get(path), window)

            self._unwatched = {p for p in self._unwatched if blind(p)}
            self._recheck = {p for p in batch.paths if blind(p)}
            if self.handler.recursive and (rules is None or rules.empty):
                # Nothing can be excluded: the root (recursively) plus the deletions says the same.
                return ["", *(p for p in plan if p not in source)], True, len(plan), frozenset()
            return plan, False, len(plan), frozenset()
        self._agreed = []
        for move in batch.moves:
            self.links.moved(move.old, move.new)
        # With rules in force a directory is not renamed at DEST: rules are about
        # paths, so content excluded under the new name must not travel along.
        moved = {
            m.new
            for m in batch.moves
            if (self.rules.empty or not m.is_dir) and self.handler.move(m, self._deadline)
        }
        walk = set(batch.walk) | {m.new for m in batch.moves if m.is_dir and m.new not in moved}
        paths = {p for p in batch.paths if p not in moved or p not in batch.moved_only}
        # Never the root itself: rsync sends a listed "." with everything directly in it
        # (excluded files too); DEST's root is DEST, full syncs keep its attributes.
        paths.discard("")
        # A walked directory's subtree at DEST must end up equal to SOURCE's (it may
        # have been deleted or moved away and made again), and with rules a deletion
        # must spare what they exclude at DEST: both are planned from DEST's tree.
        walked: dict[str, Entry] = {}
        for directory in walk:
            if os.path.isdir(os.path.join(self.source, directory)):
                walked[directory] = Entry("d", 0, 0.0)
                walked.update(scan_local(self.source, self.rules, below=directory))
        paths.update(walked)
        # A rename done at DEST is only as complete as DEST's copy was (content on
        # its way when the directory was renamed, a run that failed): the renamed
        # tree is compared on both sides and what differs is sent.
        renamed = sorted(m.new for m in batch.moves if m.is_dir and m.new in moved)
        check: dict[str, Entry] = {}
        for directory in renamed:
            check.update(scan_local(self.source, self.rules, below=directory))
        gone = [p for p in paths if not os.path.lexists(os.path.join(self.source, p))]
        look = [*(d for d in walk if d in walked), *(gone if not self.rules.empty else ()), *renamed]
        below = self.handler.scan_dest_below(look, self._deadline) if look else None
        if below is not None:
            prefixes = tuple(f"{d}/" for d in renamed)
            theirs = {p: e for p, e in below.items() if prefixes and p.startswith(prefixes)}
            if not self.rules.empty:
                paths.difference_update(gone)
            rest = {p: e for p, e in below.items() if p not in theirs}
            paths.update(mirror_list(walked, rest, self.rules.allows))
            differ = unlike(check, theirs, self.spec.modify_window, self.rules.allows)
            paths.update(differ)
            # Equal at DEST already, so not sent: the ancestor learns them with the rest
            # (it may not know them under the old name: sent by a run that ended after
            # the rename, they were not found there).
            self._agreed = sorted(set(check).difference(differ))
        else:
            paths.update(check)  # DEST cannot be listed: send the renamed trees whole
        verify = self._suspects(batch.suspect, paths)
        if verify:
            log.info(
                "%d renamed paths a run may have read after the rename: compared by content", len(verify)
            )
        paths.update(verify)
        linked, unknown = self.links.others(self.source, paths, fresh=walk)
        paths.update(p for p in linked if self.rules.allows(p, False))
        if unknown:  # a link whose other names no scan has seen: the next batch compares all
            self.batcher.request_full(time.monotonic())
        kept = under_real_dirs(self.source, sorted(paths))
        return kept, False, len(kept), verify.intersection(kept)

    def _suspects(self, suspect: frozenset[str], listed: set[str]) -> frozenset[str]:
        """What of SUSPECT (renamed at DEST while a run may have read the file that
        took the old name's place: DEST's copy can hold other content under SOURCE's
        size and mtime) is not already LISTED to be sent whole; a directory stands
        for the files below it. Compared by content, not copied again."""
        found: set[str] = set()
        for path in suspect:
            full = os.path.join(self.source, path)
            if os.path.isdir(full) and not os.path.islink(full):
                below = scan_local(self.source, self.rules, below=path)
                found.update(p for p, e in below.items() if not e.is_dir)
            elif os.path.lexists(full) and self.rules.allows(path, False):
                found.add(path)
        return frozenset(found.difference(listed))

    def _send(
        self,
        paths: list[str],
        full: bool,
        *,
        recursive: bool,
        progress: bool = False,
        checksum: bool = False,
        root: bool = False,
        verify: frozenset[str] = frozenset(),
    ) -> Outcome:
        """Hand PATHS to the handler in runs of at most max_batch_paths/bytes;
        those in VERIFY in runs of their own that compare content (ROOT: the last
        run makes the root's attributes equal too)."""
        assert self.handler is not None
        failed: list[str] = []
        messages: list[str] = []
        sent = 0
        whole = False  # a run failed without naming its paths
        tty = progress and _tty()
        chunks = [(c, checksum) for c in self._chunks([p for p in paths if p not in verify], tty=tty)]
        chunks += [(c, True) for c in self._chunks([p for p in paths if p in verify], tty=tty)]
        if root and not chunks:
            chunks = [([], checksum)]
        with self._progress("syncing", total=len(paths), enabled=progress) as advance:
            for index, (chunk, by_content) in enumerate(chunks):
                self._check_source()
                last = index == len(chunks) - 1
                job = Job(
                    tuple(chunk),
                    full,
                    self.spec.name,
                    self.source,
                    self.spec.dest,
                    recursive,
                    by_content,
                    root=root and last,
                )
                outcome = self.handler.send(job, self._deadline)
                if outcome.verdict is Verdict.FATAL:
                    return outcome
                sent += outcome.bytes
                if outcome.verdict is not Verdict.OK:
                    failed += outcome.failed or chunk
                    whole = whole or not outcome.failed
                    messages.append(outcome.message)
                advance(len(chunk))
        self.reporter.counters.bytes += sent  # what went, even in a run that must be retried
        if not failed:
            return Outcome(Verdict.OK, bytes=sent)
        # PARTIAL: the rest went through (rsync named what failed, or other runs succeeded).
        verdict = Verdict.PARTIAL if not whole or len(failed) < len(paths) else Verdict.RETRY
        return Outcome(verdict, tuple(failed), "; ".join(messages), sent)

    def _chunks(self, paths: list[str], *, tty: bool) -> Iterator[list[str]]:
        limit = self.spec.max_batch_paths
        if tty:  # smaller runs on a terminal so the progress bar moves
            limit = min(limit, max(500, len(paths) // 20 + 1))
        max_bytes = self.spec.max_batch_bytes
        chunk: list[str] = []
        size = 0
        for path in paths:
            if max_bytes:
                with contextlib.suppress(OSError):
                    size += os.lstat(os.path.join(self.source, path)).st_size
            chunk.append(path)
            if len(chunk) >= limit or (max_bytes and size >= max_bytes):
                yield chunk
                chunk, size = [], 0
        if chunk:
            yield chunk

    def _deadline(self) -> float | None:
        # Read every 0.2 s while a handler runs: the loop is alive, so heartbeat.
        self._heartbeat()
        return self._stop_at

    # -- stop ---------------------------------------------------------------

    def _stop(self) -> ExitCode:
        self._phase(Status.STOPPING)
        if self.spec.standby_file and os.path.exists(self.spec.standby_file):
            log.warning(
                "stopping in standby: %d pending paths not sent (the next initial sync sends them)",
                self.batcher.pending,
            )
            return ExitCode.OK
        if self._initial_done:
            self._hook(self.spec.pre_exit_hook, "pre-exit hook")
        self._drain()
        if self.reporter.degraded:  # changes where no watch is are found by a scan only
            self.batcher.request_full(time.monotonic())
        self._flush()
        return ExitCode.OK

    def _flush(self) -> None:
        """Run everything pending now; SYNC_FAILED if something stays undelivered."""
        for _ in range(FLUSH_ROUNDS):  # a full batch hands its pending paths back for a run of their own
            batch = self.batcher.take(time.monotonic(), flush=True)
            if batch is None:
                break
            self._execute(batch)
        if self._root_stale:
            self._carry_root()
        if self.batcher.pending:
            raise Halt(
                ExitCode.SYNC_FAILED,
                f"stopped with {self.batcher.pending} paths undelivered ({_some(self.batcher.parked)})",
            )

    def _drain(self) -> None:
        """Take in every change still on its way (kernel queue, watchdog's 0.5 s
        rename pairing): until the inbox stays quiet for DRAIN_QUIET, within the
        stop deadline; changes it could not take in are left to a full sync."""
        end = self._stop_at if self._stop_at is not None else time.monotonic() + DRAIN_QUIET
        quiet_since = time.monotonic()
        while (now := time.monotonic()) - quiet_since < DRAIN_QUIET and now < end:
            if not self.inbox.empty():
                quiet_since = now
            self._pump(0.05)
            self._heartbeat()
        if not self.inbox.empty():
            log.warning("stop deadline reached with changes still to take in: full sync")
            self.batcher.request_full(time.monotonic())

    def _hook(self, command: str | None, what: str) -> None:
        if not command:
            return
        try:
            result = run([*shlex.split(command), self.spec.name], timeout=HOOK_TIMEOUT)
        except SpawnError as err:
            log.error("%s failed: %s", what, err)
            return
        if result.returncode != 0:
            log.error("%s exited %d: %s", what, result.returncode, result.stderr_tail())

    # -- reporting ------------------------------------------------------------

    def _phase(self, status: Status) -> None:
        self.reporter.phase(status, pending=self.batcher.pending, lag=self._lag(), watches=self._watches())

    def _report(self, event: str) -> None:
        lag = self._lag()
        self.reporter.lagging = lagging(lag, self.batcher.pending, self._window())
        self.reporter.emit(event, pending=self.batcher.pending, lag=lag, watches=self._watches())

    def _window(self) -> float:
        """The longest a change may wait by the worker's own settings."""
        big = self.spec.bigfile_delay if self.spec.bigfile_threshold > 0 else 0.0
        return max(self.spec.delay, big) + self.spec.sync_interval

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.spec.heartbeat
            self._report("heartbeat")

    def _ticking(self, advance: Callable[[int], None]) -> Callable[[int], None]:
        """ADVANCE, plus heartbeats when due (a long scan is not a hang)."""

        def tick(n: int) -> None:
            advance(n)
            self._heartbeat()

        return tick

    def _lag(self) -> float:
        oldest = self.batcher.oldest()
        return 0.0 if oldest is None else time.monotonic() - oldest

    def _watches(self) -> int:
        return self.watcher.watches if self.watcher is not None else 0

    @contextlib.contextmanager
    def _progress(
        self, what: str, total: int | None = None, enabled: bool = True
    ) -> Iterator[Callable[[int], None]]:
        """A rich progress bar on a terminal; a no-op elsewhere."""
        if not (enabled and _tty() and not self.spec.json_status):
            yield lambda _n: None
            return
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"{self.spec.name}: {what}", total=total)
            yield lambda n: bar.advance(task, n)


def _tty() -> bool:
    return sys.stderr.isatty()


def _some(paths: tuple[str, ...], shown: int = 5) -> str:
    """A few of PATHS for a log line."""
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(repr(p) for p in paths[:shown]) + more
