"""The life of one container's worker: start, stop, restart after backoff, halt.

Pure: ``transition(life, event, now, timing)`` returns the next ``Life`` and the
actions the supervisor must carry out. Time is passed in. The supervisor keeps
one ``Life`` per container and is its only writer.

Exit codes decide what follows an exit the supervisor did not ask for:
CONFIG -> failed (not restarted), SAFETY_HALT -> halted (not restarted),
anything else (a bug, retries exhausted, a signal, a hung worker killed) ->
backoff, then a new worker, which starts with a full sync.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from workers.spec import ExitCode


class Phase(StrEnum):
    STOPPED = "stopped"  # no process; the container is not running (or not synced)
    RUNNING = "running"  # a worker process is up (its own status says more)
    STOPPING = "stopping"  # asked to flush and stop; waiting for its exit
    BACKOFF = "backoff"  # crashed; a new worker starts at retry_at
    HALTED = "halted"  # safety halt: not restarted until the container starts again or resume
    FAILED = "failed"  # configuration error: not restarted until the configuration changes


class Event(StrEnum):
    START = "start"  # the container runs and is to be synced (also: its configuration changed)
    STOP = "stop"  # the container stopped (or is no longer to be synced)
    EXITED = "exited"  # the worker process ended (code given)
    REPORT = "report"  # a status line arrived
    TICK = "tick"  # time passed
    INVALID = "invalid"  # the configuration for this container is invalid (reason given)
    HURRY = "hurry"  # a second stop signal: cut the flush short


class Act(StrEnum):
    SPAWN = "spawn"
    TERMINATE = "terminate"  # SIGTERM: flush and stop (a second one: flush cut short)
    ABORT = "abort"  # SIGABRT: hung, or the flush outlived its deadline: the worker dumps its stacks
    KILL = "kill"  # SIGKILL, abort_grace after ABORT


@dataclass(frozen=True)
class Timing:
    stop_timeout: float = 30.0  # the worker's own flush budget
    kill_grace: float = 5.0  # on top of stop_timeout before SIGABRT
    abort_grace: float = 1.0  # between SIGABRT (a stack trace in the worker's log) and SIGKILL
    heartbeat_timeout: float = 60.0
    restart_delay: float = 1.0
    restart_delay_max: float = 60.0
    healthy_after: float = 60.0


@dataclass(frozen=True)
class Life:
    phase: Phase = Phase.STOPPED
    want: bool = False  # the container runs and should have a worker
    crashes: int = 0  # consecutive; reset by a worker that stayed up healthy_after
    started_at: float = 0.0
    last_seen: float = 0.0  # last status line from the worker
    retry_at: float | None = None  # BACKOFF: when to spawn again
    kill_at: float | None = None  # STOPPING: when SIGTERM has had its chance; aborted: when to KILL
    aborted: bool = False  # SIGABRT sent: SIGKILL at kill_at
    reason: str = ""  # why the phase is what it is (exit code, error)
    invalid: str = ""  # STOPPING because the configuration became invalid: FAILED with this after
    restarts: int = 0

    @property
    def process(self) -> bool:
        """Whether a worker process exists for this life."""
        return self.phase in (Phase.RUNNING, Phase.STOPPING)


def backoff(crashes: int, timing: Timing) -> float:
    """Seconds before restart number CRASHES (1, 2, ...): doubling, capped."""
    return float(min(timing.restart_delay * 2 ** max(0, crashes - 1), timing.restart_delay_max))


def transition(
    life: Life, event: Event, now: float, timing: Timing, *, code: int = 0, reason: str = ""
) -> tuple[Life, tuple[Act, ...]]:
    if event is Event.START:
        return _start(life, now)
    if event is Event.STOP:
        return _stop(life, now, timing)
    if event is Event.EXITED:
        return _exited(life, now, timing, code, reason)
    if event is Event.REPORT:
        return (replace(life, last_seen=now) if life.process else life), ()
    if event is Event.HURRY:
        return _hurry(life, now, timing)
    if event is Event.INVALID:
        if life.process:  # stop the old worker first; FAILED once it is gone
            stopped, acts = _stop(life, now, timing)
            return replace(stopped, invalid=reason), acts
        return Life(phase=Phase.FAILED, reason=reason, restarts=life.restarts), ()
    return _tick(life, now, timing)


def _spawned(life: Life, now: float) -> tuple[Life, tuple[Act, ...]]:
    new = replace(
        life,
        phase=Phase.RUNNING,
        want=True,
        started_at=now,
        last_seen=now,
        retry_at=None,
        kill_at=None,
        aborted=False,
        reason="",
        invalid="",
    )
    return new, (Act.SPAWN,)


def _start(life: Life, now: float) -> tuple[Life, tuple[Act, ...]]:
    if life.phase is Phase.RUNNING:
        return replace(life, want=True), ()
    if life.phase is Phase.STOPPING:
        # Never two workers for one container: the new one starts when the old one is gone.
        return replace(life, want=True), ()
    if life.phase is Phase.BACKOFF:
        return replace(life, want=True), ()
    # STOPPED, HALTED, FAILED: a (re)started container gets a fresh chance.
    return _spawned(replace(life, crashes=0), now)


def _stop(life: Life, now: float, timing: Timing) -> tuple[Life, tuple[Act, ...]]:
    if life.phase is Phase.RUNNING and life.aborted:  # hung: its KILL is already due
        return replace(life, phase=Phase.STOPPING, want=False), ()
    if life.phase is Phase.RUNNING:
        kill_at = now + timing.stop_timeout + timing.kill_grace
        return replace(life, phase=Phase.STOPPING, want=False, kill_at=kill_at), (Act.TERMINATE,)
    if life.phase is Phase.STOPPING:
        return replace(life, want=False), ()
    if life.phase is Phase.BACKOFF:
        return replace(life, phase=Phase.STOPPED, want=False, retry_at=None), ()
    return replace(life, want=False), ()  # STOPPED, HALTED, FAILED keep their reason


def _hurry(life: Life, now: float, timing: Timing) -> tuple[Life, tuple[Act, ...]]:
    """A second stop signal: the worker gets a second SIGTERM (it cuts its flush
    short) and kill_grace to exit."""
    if life.phase is not Phase.STOPPING or life.aborted:
        return life, ()
    kill_at = now + timing.kill_grace if life.kill_at is None else min(life.kill_at, now + timing.kill_grace)
    return replace(life, kill_at=kill_at), (Act.TERMINATE,)


def _exited(life: Life, now: float, timing: Timing, code: int, detail: str) -> tuple[Life, tuple[Act, ...]]:
    """The worker exited with CODE; DETAIL is what it said last (its last error)."""
    life = replace(life, kill_at=None, aborted=False)
    why = _describe_exit(code) + (f": {detail}" if detail and code else "")
    if life.phase is Phase.STOPPING:
        if life.want:
            return _spawned(life, now)
        if life.invalid:
            return replace(life, phase=Phase.FAILED, reason=life.invalid, invalid=""), ()
        # -SIGTERM: stopped before it had set up its handlers (nothing was sent yet).
        reason = "" if code in (0, -15) else life.reason or why
        return replace(life, phase=Phase.STOPPED, reason=reason), ()
    if life.phase is not Phase.RUNNING:
        return life, ()
    why = life.reason or why  # a hung worker we killed says so
    if code == ExitCode.CONFIG:
        return replace(life, phase=Phase.FAILED, reason=why), ()
    if code == ExitCode.SAFETY_HALT:
        return replace(life, phase=Phase.HALTED, reason=why), ()
    crashes = 1 if now - life.started_at >= timing.healthy_after else life.crashes + 1
    retry_at = now + backoff(crashes, timing)
    return replace(life, phase=Phase.BACKOFF, crashes=crashes, retry_at=retry_at, reason=why), ()


def _tick(life: Life, now: float, timing: Timing) -> tuple[Life, tuple[Act, ...]]:
    if life.phase is Phase.BACKOFF and life.want and life.retry_at is not None and now >= life.retry_at:
        spawned, acts = _spawned(life, now)
        return replace(spawned, restarts=life.restarts + 1), acts
    if life.process and life.kill_at is not None and now >= life.kill_at:
        if life.aborted:
            return replace(life, kill_at=None), (Act.KILL,)
        why = life.reason or "flush outlived the stop timeout: killed"
        return _abort(life, now, timing, why)
    if life.phase is Phase.RUNNING and not life.reason and now - life.last_seen > timing.heartbeat_timeout:
        return _abort(life, now, timing, f"hung: no heartbeat for {now - life.last_seen:.0f}s: killed")
    return life, ()


def _abort(life: Life, now: float, timing: Timing, why: str) -> tuple[Life, tuple[Act, ...]]:
    """SIGABRT first, so the worker's log shows where it was stuck; SIGKILL after abort_grace."""
    return replace(life, reason=why, aborted=True, kill_at=now + timing.abort_grace), (Act.ABORT,)


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by signal {-code}"
    names = {
        ExitCode.OK: "exited 0 unasked",
        ExitCode.INTERNAL: "internal error (exit 1)",
        ExitCode.CONFIG: "configuration error (exit 2)",
        ExitCode.SAFETY_HALT: "safety halt (exit 3)",
        ExitCode.SYNC_FAILED: "sync failed after retries (exit 4)",
    }
    return (
        names.get(ExitCode(code), f"exit {code}") if code in ExitCode._value2member_map_ else f"exit {code}"
    )
