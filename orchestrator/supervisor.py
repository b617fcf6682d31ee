"""The per-host supervisor: runtime events in, one worker process per container out.

Runtime adapters run in threads and put their messages into one bounded
asyncio queue (a full queue makes them wait). This loop is the only reader of
that queue and the only writer of every container's ``Entry``:

- ``policy.plan`` turns a container (labels, config rules, API override) into
  the ``ContainerSpec`` its worker runs, or an error kept on its state;
- ``lifecycle.transition`` decides start / stop / restart after backoff / halt;
- ``process.WorkerProcess`` runs the worker and feeds its status lines back.

A ``Listing`` (sent by a runtime at every (re)connect) is reconciled: workers
start for running containers that lack one, and stop for containers that are
gone. Stop (SIGTERM on ``tandem serve``) stops every worker, waits for their
flush, and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator import budget, lifecycle
from orchestrator.api import ControlError, PolicyOut, ResolvedMount, ResolveIn, ResolveOut, SplitBrainOut
from orchestrator.lifecycle import Act, Event, Life, Phase
from orchestrator.metrics import Metrics
from orchestrator.policy import PolicyError, clash, effective, plan, standby_file
from orchestrator.process import WorkerProcess
from orchestrator.runtimes import Action, Container, ContainerEvent, Listing, Message, Runtime, RuntimeState
from orchestrator.settings import ContainerPolicy, Settings
from orchestrator.state import PairView, Picture, Registry, WorkerView
from orchestrator.store import HistoryRow, Store
from workers.spec import ContainerSpec, StatusReport

log = logging.getLogger("tandem.supervisor")

QUEUE_SIZE = 1024
TICK = 0.25
BUDGET_EVERY = 5.0
SUBSCRIBER_QUEUE = 1000  # events a slow /events reader may lag behind before it is dropped


@dataclass
class Entry:
    """One container the supervisor syncs (or tried to)."""

    container: Container
    spec: ContainerSpec | None = None
    life: Life = field(default_factory=Life)
    process: WorkerProcess | None = None
    pairs: dict[str, PairView] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)  # pair label -> last report (monotonic)
    destroyed: bool = False
    started_wall: float = 0.0
    max_lag: float | None = None
    resolve: tuple[str, bool] | None = None  # the next worker's split-brain policy, allow_empty


@dataclass(frozen=True)
class _Exited:
    entry: Entry
    process: WorkerProcess
    code: int


@dataclass(frozen=True)
class _Report:
    entry: Entry
    process: WorkerProcess
    report: StatusReport


class Supervisor:
    def __init__(self, settings: Settings, runtimes: list[Runtime], store: Store) -> None:
        self.settings = settings
        self.runtimes = runtimes
        self.store = store
        self.overrides = store.policies()
        self.timing = lifecycle.Timing(
            stop_timeout=settings.stop_timeout,
            heartbeat_timeout=settings.heartbeat_timeout,
            restart_delay=settings.restart_delay,
            restart_delay_max=settings.restart_delay_max,
            healthy_after=settings.healthy_after,
        )
        self.entries: dict[str, Entry] = {}
        # Every container seen (opted in or not) until destroyed, and which of them run:
        # the API accepts policies for these names only.
        self.containers: dict[str, Container] = {}
        self.running: set[str] = set()
        self.metrics = Metrics(lambda: self.registry.picture)
        self._subscribers: set[asyncio.Queue[tuple[str, WorkerView] | None]] = set()
        self.runtime_states: dict[str, dict[str, Any]] = {}
        self.registry = Registry(settings.state_dir)
        self.limits = budget.read_limits()
        self._inotify: dict[str, Any] = {}
        self._warned: set[str] = set()
        # Unbounded, so the loop's own messages never fail; runtime threads wait
        # while it holds QUEUE_SIZE items (they are the ones that can flood it).
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closing = False
        self._hurry: asyncio.Event | None = None  # set by a second stop signal
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_runtimes = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dirty = True

    # -- entry ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event, hurry: asyncio.Event | None = None) -> int:
        """Supervise until STOP is set; then stop every worker (they flush) and return 0.
        HURRY set during that stop cuts the flushes short (a second Ctrl-C)."""
        self._hurry = hurry
        self._loop = asyncio.get_running_loop()
        for directory in ("workers", "logs", "standby"):
            (self.settings.state_dir / directory).mkdir(parents=True, exist_ok=True)
        threads = [self._start_runtime(r) for r in self.runtimes]
        next_budget = 0.0
        try:
            while not stop.is_set():
                await self._pump(TICK)
                now = time.monotonic()
                self._tick(now)
                if now >= next_budget:
                    next_budget = now + BUDGET_EVERY
                    self._check_budget()
                self._publish()
        finally:
            self._stop_runtimes.set()
            await self._shutdown()
            for thread in threads:
                await asyncio.to_thread(thread.join, 5)
        return 0

    def _start_runtime(self, runtime: Runtime) -> threading.Thread:
        def emit(message: Message) -> None:
            assert self._loop is not None
            while self._queue.qsize() >= QUEUE_SIZE and not self._stop_runtimes.is_set():
                time.sleep(0.05)
            with contextlib.suppress(RuntimeError):  # the loop is closed: we are done
                self._loop.call_soon_threadsafe(self._queue.put_nowait, message)

        def body() -> None:
            try:
                runtime.run(emit, self._stop_runtimes)
            except Exception:
                log.exception("runtime %s crashed", runtime.name)

        self.runtime_states[runtime.name] = {"connected": False, "message": "connecting"}
        thread = threading.Thread(target=body, name=f"runtime-{runtime.name}", daemon=True)
        thread.start()
        return thread

    async def _pump(self, timeout: float) -> None:
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return
        while True:
            self._handle(item)
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return

    # -- messages -------------------------------------------------------------

    def _handle(self, item: Any) -> None:
        self._dirty = True
        try:
            self._dispatch(item)
        except Exception:  # one bad message must not end supervision of the others
            log.exception("error while handling a %s", type(item).__name__)  # not its (maybe huge) labels

    def _dispatch(self, item: Any) -> None:
        if isinstance(item, _Report):
            self._on_report(item)
        elif isinstance(item, _Exited):
            self._on_exit(item)
        elif isinstance(item, Listing):
            self._reconcile(item)
        elif isinstance(item, ContainerEvent):
            self._on_event(item)
        elif isinstance(item, RuntimeState):
            self._on_runtime(item)

    def _on_runtime(self, state: RuntimeState) -> None:
        self.runtime_states[state.runtime] = {"connected": state.connected, "message": state.message}
        if state.connected:
            log.info("runtime %s connected", state.runtime)
        else:
            log.warning("runtime %s not available: %s", state.runtime, state.message)

    def _reconcile(self, listing: Listing) -> None:
        running = {c.name for c in listing.containers}
        log.info("runtime %s lists %d running containers", listing.runtime, len(running))
        for name, container in list(self.containers.items()):
            if container.runtime == listing.runtime and name not in running:
                self.running.discard(name)
        for container in listing.containers:
            self._started(container, fresh=False)
        for name, entry in list(self.entries.items()):
            if entry.container.runtime == listing.runtime and name not in running:
                self._stopped(name, listing.runtime)

    def _on_event(self, event: ContainerEvent) -> None:
        log.debug("%s: %s %s", event.runtime, event.action, event.name)
        if event.action is Action.STARTED and event.container is not None:
            self._started(event.container, fresh=True)
        elif event.action is Action.STOPPED:
            self._stopped(event.name, event.runtime)
        elif event.action is Action.DESTROYED:
            if self._known(event.name, event.runtime):
                del self.containers[event.name]
            entry = self._entry(event.name, event.runtime)
            if entry is not None:
                entry.destroyed = True
                self._stopped(event.name, event.runtime)
        elif event.action is Action.RENAMED:
            self._renamed(event.old_name, event.name, event.runtime)

    def _entry(self, name: str, runtime: str) -> Entry | None:
        entry = self.entries.get(name)
        return entry if entry is not None and entry.container.runtime == runtime else None

    def _known(self, name: str, runtime: str) -> bool:
        known = self.containers.get(name)
        return known is not None and known.runtime == runtime

    def _started(self, container: Container, *, fresh: bool) -> None:
        """CONTAINER runs: plan its worker and start it. FRESH: a start event (a
        halted or failed worker gets a new chance); else seen in a listing."""
        if self._closing:
            return
        name = container.name
        known = self.containers.get(name)
        if known is not None and known.runtime != container.runtime:
            log.error("%s: name used by both %s and %s", name, known.runtime, container.runtime)
            return
        self.containers[name] = container
        self.running.add(name)
        entry = self.entries.get(name)
        try:
            spec = plan(container, self.settings, self.overrides.get(name), parent_pid=os.getpid())
            self._check_apart(name, spec)
        except Exception as err:  # a label no check foresaw fails this container, never the rest
            why = str(err) if isinstance(err, PolicyError) else f"cannot plan: {type(err).__name__}: {err}"
            why = why if len(why) <= 400 else why[:400] + "..."
            log.error("%s: %s", name, why)
            entry = self.entries.setdefault(name, Entry(container))
            entry.container = container
            self.store.record(name, "error", None, why)
            self._transition(entry, Event.INVALID, reason=why)
            return
        if spec is None:
            if entry is not None:  # no longer to be synced
                entry.destroyed = True  # forgotten once its worker is gone
                self._transition(entry, Event.STOP)
            return
        if entry is None:
            entry = self.entries[name] = Entry(container)
        entry.max_lag = effective(container, self.settings, self.overrides.get(name)).max_lag
        changed = entry.spec is not None and entry.spec != spec
        if not fresh and not changed and entry.life.phase in (Phase.HALTED, Phase.FAILED):
            return  # a listing does not undo a halt
        entry.container, entry.spec, entry.destroyed = container, spec, False
        if changed and entry.life.process:
            log.info("%s: configuration changed: restarting its worker", name)
            self._transition(entry, Event.STOP)
        self._transition(entry, Event.START)

    def _check_apart(self, name: str, spec: ContainerSpec | None) -> None:
        """SPEC's destinations are neither those of another known container nor
        inside or around them (a new pair has no ancestor: it would pull the other's
        data in, or overwrite it). Raises PolicyError."""
        if spec is None:
            return
        others = {
            other: [pair.dest for pair in entry.spec.pairs]
            for other, entry in self.entries.items()
            if other != name and entry.spec is not None
        }
        why = clash([pair.dest for pair in spec.pairs], others)
        if why is not None:
            raise PolicyError(why)

    def _stopped(self, name: str, runtime: str) -> None:
        if self._known(name, runtime):
            self.running.discard(name)
        entry = self._entry(name, runtime)
        if entry is not None:
            self._transition(entry, Event.STOP)

    def _renamed(self, old: str, new: str, runtime: str) -> None:
        """The entry moves to the new name. Its destination and pid file carry the
        name, so the spec changes: the old worker flushes and stops, then the new
        one starts (never both at once)."""
        if self._known(old, runtime) and new not in self.containers:
            self.containers[new] = replace(self.containers.pop(old), name=new)
            if old in self.running:
                self.running.discard(old)
                self.running.add(new)
        entry = self._entry(old, runtime)
        if entry is None or new in self.entries:
            return
        del self.entries[old]
        self.entries[new] = entry
        entry.container = replace(entry.container, name=new)
        paused = standby_file(self.settings, old)
        if paused.exists():  # a paused container stays paused under its new name
            paused.rename(standby_file(self.settings, new))
        if entry.life.want:
            self._started(entry.container, fresh=True)

    # -- workers --------------------------------------------------------------

    def _on_report(self, item: _Report) -> None:
        entry = item.entry  # by identity: a rename moves the entry to another key
        if entry.process is not item.process:
            return
        report = item.report
        pair = entry.pairs.get(report.label)
        if pair is None:
            return
        entry.pairs[report.label] = pair.updated(report)
        entry.seen[report.label] = time.monotonic()
        if report.event == "sync":
            self.metrics.observe_sync(entry.container.name, report.last_sync_duration)
            self.store.set_snapshot(
                entry.container.name,
                report.label,
                {
                    "source": pair.source,
                    "dest": pair.dest,
                    "synced": report.ts,
                    "duration": report.last_sync_duration,
                    "syncs": report.syncs,
                    "files": report.files,
                },
            )
        # The worker is as alive as its quietest pair: one busy mount must not hide a hung one.
        self._transition(entry, Event.REPORT, now=min(entry.seen.values()))

    def _on_exit(self, item: _Exited) -> None:
        entry = item.entry
        if entry.process is not item.process:
            return
        entry.process = None
        level = logging.INFO if item.code == 0 else logging.WARNING
        log.log(level, "%s: worker %s exited %d", entry.container.name, item.process.pid, item.code)
        said = "; ".join(dict.fromkeys(p.last_error for p in entry.pairs.values() if p.last_error))
        self.store.record(entry.container.name, "exit", item.code, said or f"pid {item.process.pid}")
        self._transition(entry, Event.EXITED, code=item.code, reason=said)

    def _tick(self, now: float) -> None:
        for entry in list(self.entries.values()):
            self._transition(entry, Event.TICK, now=now)

    def _transition(
        self, entry: Entry, event: Event, *, code: int = 0, reason: str = "", now: float | None = None
    ) -> None:
        before = entry.life
        life, acts = lifecycle.transition(
            entry.life, event, time.monotonic() if now is None else now, self.timing, code=code, reason=reason
        )
        entry.life = life
        if life != before:
            self._dirty = True
            if life.phase is not before.phase:
                why = f" ({life.reason})" if life.reason else ""
                log.info("%s: %s -> %s%s", entry.container.name, before.phase, life.phase, why)
        for act in acts:
            self._act(entry, act)
        if not life.process and entry.destroyed and life.phase in (Phase.STOPPED, Phase.FAILED, Phase.HALTED):
            self._forget(entry)

    def _forget(self, entry: Entry) -> None:
        for key, value in list(self.entries.items()):
            if value is entry:
                del self.entries[key]
                self.metrics.forget(key)

    def _act(self, entry: Entry, act: Act) -> None:
        if act is Act.SPAWN:
            self._spawn(entry)
        elif entry.process is not None:
            if act is Act.TERMINATE:
                self.store.record(entry.container.name, "stop")
                entry.process.terminate()
            elif act is Act.ABORT:
                entry.process.abort()
            else:
                entry.process.kill()

    def _spawn(self, entry: Entry) -> None:
        assert entry.spec is not None and entry.process is None
        spec = entry.spec
        name = entry.container.name
        if entry.resolve is not None:  # an operator's decision, for this one start
            chosen, allow_empty = entry.resolve
            entry.resolve = None
            pairs = tuple(
                p.model_copy(update={"split_brain": chosen, "allow_empty": allow_empty}) for p in spec.pairs
            )
            spec = spec.model_copy(update={"pairs": pairs})
        entry.pairs = {p.name: PairView(p.name, p.source, p.dest) for p in spec.pairs}
        entry.seen = dict.fromkeys(entry.pairs, time.monotonic())
        entry.started_wall = time.time()

        def on_report(report: StatusReport) -> None:
            self._queue.put_nowait(_Report(entry, process, report))

        process = WorkerProcess(spec, self.settings.state_dir / "logs" / f"{name}.log", on_report)
        entry.process = process
        log.info("%s: starting a worker for %d mounts", name, len(spec.pairs))
        self.store.record(name, "start", None, f"{len(spec.pairs)} mounts")

        async def body() -> None:
            try:
                code = await process.run(self.timing.stop_timeout + self.timing.kill_grace)
            except Exception as err:
                log.error("%s: cannot start a worker: %s", name, err)
                code = 1
            await self._queue.put(_Exited(entry, process, code))

        task = asyncio.get_running_loop().create_task(body())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- shutdown ----------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop every worker (they flush), wait for them all, KILL at the deadline."""
        self._closing = True
        for entry in self.entries.values():
            self._transition(entry, Event.STOP)
        hurried = False
        while any(e.process is not None for e in self.entries.values()):
            if not hurried and self._hurry is not None and self._hurry.is_set():
                hurried = True
                log.warning("second stop signal: cutting the workers' flushes short")
                for entry in self.entries.values():
                    self._transition(entry, Event.HURRY)
            await self._pump(TICK)
            self._tick(time.monotonic())
            self._publish()
        self._dirty = True
        self._publish()
        for queue in list(self._subscribers):  # end every /events stream
            self._end_stream(queue)

    # -- reporting ---------------------------------------------------------------

    def _check_budget(self) -> None:
        self.limits = budget.read_limits()  # an operator may have raised them
        watches = {
            label: pair.watches
            for e in self.entries.values()
            if e.process is not None
            for label, pair in e.pairs.items()
        }
        degraded = {
            label: pair.degraded
            for e in self.entries.values()
            if e.process is not None
            for label, pair in e.pairs.items()
            if pair.degraded
        }
        processes = sum(1 for e in self.entries.values() if e.process is not None)
        result = budget.assess(self.limits, watches, processes, self.settings.inotify_warn, degraded)
        for key, warning in result.warnings:
            if key not in self._warned:
                log.warning("%s", warning)
        self._warned = {key for key, _ in result.warnings}  # warned again if it comes back
        inotify = result.as_dict()
        if inotify != self._inotify:
            self._inotify = inotify
            self._dirty = True

    def _publish(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        try:
            self._write_picture()
        except OSError as err:  # a full disk must not end supervision
            log.error("cannot write %s: %s", self.registry.path, err)

    def _write_picture(self) -> None:
        before = self.registry.picture.workers
        views = {}
        for key, entry in self.entries.items():
            views[key] = WorkerView(
                container=key,
                runtime=entry.container.runtime,
                phase=entry.life.phase.value,
                reason=entry.life.reason,
                pid=entry.process.pid if entry.process is not None else None,
                restarts=entry.life.restarts,
                started_at=entry.started_wall,
                pairs=tuple(entry.pairs.values()),
                paused=standby_file(self.settings, key).exists(),
                max_lag=entry.max_lag,
            )
        try:
            self.registry.publish(views, self.runtime_states, self._inotify)
        finally:
            self._notify(before, views)

    def _notify(self, before: Mapping[str, WorkerView], after: Mapping[str, WorkerView]) -> None:
        """Tell /events readers about every worker whose state, reason, pid or pause changed."""
        if not self._subscribers:
            return
        events: list[tuple[str, WorkerView]] = []
        for name, view in after.items():
            old = before.get(name)
            if old is None or _headline(old) != _headline(view):
                events.append(("state", view))
        events += [("removed", view) for name, view in before.items() if name not in after]
        for queue in list(self._subscribers):
            for event in events:
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:  # too slow: its stream ends, it may reconnect
                    self._end_stream(queue)
                    break

    def _end_stream(self, queue: asyncio.Queue[tuple[str, WorkerView] | None]) -> None:
        self._subscribers.discard(queue)
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(None)

    # -- control (the REST API calls these on the loop) ---------------------------------

    @property
    def picture(self) -> Picture:
        return self.registry.picture

    def _synced(self, name: str) -> Entry:
        """The entry of NAME, or why there is none (404 unknown, 409 not synced)."""
        entry = self.entries.get(name)
        if entry is not None:
            return entry
        if name in self.containers:
            raise ControlError(
                409, f"container {name!r} is not synced (not enabled by labels, config or policy)"
            )
        raise ControlError(404, f"no container {name!r} known to this supervisor")

    def resync(self, name: str) -> None:
        entry = self._synced(name)
        if entry.process is None or not entry.process.signal(signal.SIGUSR2):
            raise ControlError(409, f"{name}: no worker runs (state {entry.life.phase}); nothing to resync")
        log.info("%s: full resync asked through the API", name)
        self.store.record(name, "resync")

    def pause(self, name: str) -> None:
        self._synced(name)
        path = standby_file(self.settings, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        log.info("%s: paused through the API (changes are collected, not sent)", name)
        self.store.record(name, "pause")
        self._dirty = True

    def resume(self, name: str) -> None:
        entry = self._synced(name)
        standby_file(self.settings, name).unlink(missing_ok=True)
        log.info("%s: resumed through the API", name)
        self.store.record(name, "resume")
        self._dirty = True
        if entry.life.phase in (Phase.HALTED, Phase.FAILED) and name in self.running:
            self._started(self.containers[name], fresh=True)  # the operator gives it a new chance

    def _reports(self, name: str) -> list[dict[str, Any]]:
        found = []
        for path in sorted((self.settings.state_dir / "split-brain" / name).glob("*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError) as err:
                log.warning("%s: unreadable split-brain report %s: %s", name, path, err)
        return found

    def split_brain(self, name: str) -> SplitBrainOut:
        entry = self._synced(name)
        reports = self._reports(name)
        if not reports:
            raise ControlError(404, f"{name}: no split-brain report (its worker is not halted on one)")
        return SplitBrainOut(
            container=name, state=entry.life.phase.value, reason=entry.life.reason, mounts=reports
        )

    def resolve(self, name: str, request: ResolveIn) -> ResolveOut:
        entry = self._synced(name)
        reports = self._reports(name)
        previews = [
            ResolvedMount(label=r["label"], **r["policies"][request.policy])
            for r in reports
            if request.policy in r.get("policies", {})
        ]
        if request.dry_run:
            if not reports:
                raise ControlError(409, f"{name}: nothing to resolve (no split-brain report)")
            return ResolveOut(
                container=name, policy=request.policy, dry_run=True, done="nothing changed", mounts=previews
            )
        if entry.life.phase is not Phase.HALTED:
            raise ControlError(409, f"{name}: not halted (state {entry.life.phase}): nothing to resolve")
        if name not in self.running:
            raise ControlError(409, f"{name}: the container is not running")
        entry.resolve = (request.policy, request.allow_empty)
        self._started(self.containers[name], fresh=True)
        if entry.resolve is not None:  # no worker started (its configuration fails now)
            entry.resolve = None
            raise ControlError(
                409, f"{name}: no worker could start ({entry.life.reason or entry.life.phase})"
            )
        detail = f"policy {request.policy}" + (", allow empty" if request.allow_empty else "")
        log.warning("%s: split-brain resolved through the API: %s", name, detail)
        self.store.record(name, "resolve", None, detail)
        return ResolveOut(
            container=name,
            policy=request.policy,
            dry_run=False,
            done=f"worker restarted with {detail}; what loses is kept under .tandem-backup on its side",
            mounts=previews,
        )

    def history(self, name: str, limit: int) -> list[HistoryRow]:
        rows = self.store.history(name, limit)
        if not rows and name not in self.containers and name not in self.entries:
            raise ControlError(404, f"no container {name!r} known to this supervisor")
        return rows

    def policy(self, name: str) -> PolicyOut:
        override = self.overrides.get(name)
        container = self.containers.get(name)
        if container is None and override is None:
            raise ControlError(404, f"no container {name!r} known to this supervisor")
        out: dict[str, Any] = {}
        problem = ""
        if container is not None:
            try:
                out = _dump(effective(container, self.settings, override))
            except PolicyError as err:
                problem = str(err)
        return PolicyOut(
            container=name,
            override=_dump(override) if override is not None else {},
            effective=out,
            error=problem,
            applies=self._applies(name),
        )

    def set_policy(self, name: str, policy: ContainerPolicy) -> PolicyOut:
        container = self.containers.get(name)
        if container is None:
            raise ControlError(
                404, f"no container {name!r} known to this supervisor (it must have run since tandem started)"
            )
        if policy.dest is not None and not self.settings.dest_roots:
            raise ControlError(
                422,
                f"{name}: dest can be set through the API only under dest_roots, and none is configured "
                "(set dest_roots in the settings, or use a label or the config file)",
            )
        try:
            self._check_apart(name, plan(container, self.settings, policy, parent_pid=os.getpid()))
        except PolicyError as err:
            raise ControlError(422, f"{name}: {err}") from None
        self.store.set_policy(name, policy)
        self.overrides[name] = policy
        log.info("%s: policy override set through the API", name)
        self._replan(name)
        return self.policy(name)

    def reset_policy(self, name: str) -> PolicyOut:
        if name not in self.containers and name not in self.overrides:
            raise ControlError(404, f"no container {name!r} known to this supervisor")
        if self.store.delete_policy(name):
            log.info("%s: policy override removed through the API", name)
        self.overrides.pop(name, None)
        self._replan(name)
        return self.policy(name)

    def _replan(self, name: str) -> None:
        """A policy changed: a running container's worker follows now (restarted
        when its spec changed; a failed one gets a new chance). A safety halt is
        lifted only by resume or a new start, which then use the new policy."""
        self._dirty = True
        entry = self.entries.get(name)
        if entry is not None and entry.life.phase is Phase.HALTED:
            return
        if name in self.running and name in self.containers:
            self._started(self.containers[name], fresh=True)

    def _applies(self, name: str) -> str:
        if name in self.running:
            return (
                "now: a changed destination, paths, excludes or delay restart the worker (after its "
                "flush); max-lag counts at once; split-brain at the worker's next start"
            )
        return "at the container's next start"

    def subscribe(self) -> asyncio.Queue[tuple[str, WorkerView] | None]:
        queue: asyncio.Queue[tuple[str, WorkerView] | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[tuple[str, WorkerView] | None]) -> None:
        self._subscribers.discard(queue)

    def render_metrics(self) -> bytes:
        return self.metrics.render()


def _headline(view: WorkerView) -> tuple[Any, ...]:
    return (view.state, view.reason, view.pid, view.paused, view.restarts)


def _dump(policy: ContainerPolicy) -> dict[str, Any]:
    return policy.model_dump(mode="json", exclude_none=True, by_alias=True)


def install_signals(stop: asyncio.Event, hurry: asyncio.Event) -> None:
    """SIGTERM/SIGINT only set STOP, a second one HURRY (the loop does the rest)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: (hurry if stop.is_set() else stop).set())
    # Settings are read once; a SIGHUP must not kill the supervisor (its default action).
    loop.add_signal_handler(
        signal.SIGHUP, lambda: log.warning("SIGHUP ignored: restart tandem serve to reload")
    )
