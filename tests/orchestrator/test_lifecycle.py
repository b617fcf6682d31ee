"""The lifecycle decisions as tables, time passed in."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.lifecycle import Act, Event, Life, Phase, Timing, backoff, transition

T = Timing(
    stop_timeout=30,
    kill_grace=5,
    heartbeat_timeout=60,
    restart_delay=1,
    restart_delay_max=8,
    healthy_after=60,
)
RUNNING = Life(phase=Phase.RUNNING, want=True, started_at=100, last_seen=100)


def step(life: Life, event: Event, now: float, **kw: object) -> tuple[Life, tuple[Act, ...]]:
    return transition(life, event, now, T, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("life", "event", "kw", "phase", "acts"),
    [
        # a container starts: a worker is spawned
        (Life(), Event.START, {}, Phase.RUNNING, (Act.SPAWN,)),
        # started again while running: nothing (never a second worker)
        (RUNNING, Event.START, {}, Phase.RUNNING, ()),
        # the container stops: flush and stop
        (RUNNING, Event.STOP, {}, Phase.STOPPING, (Act.TERMINATE,)),
        # stop while stopped: nothing
        (Life(), Event.STOP, {}, Phase.STOPPED, ()),
        # crash: backoff, no spawn yet
        (RUNNING, Event.EXITED, {"code": 1}, Phase.BACKOFF, ()),
        (RUNNING, Event.EXITED, {"code": 4}, Phase.BACKOFF, ()),
        (RUNNING, Event.EXITED, {"code": -9}, Phase.BACKOFF, ()),
        (RUNNING, Event.EXITED, {"code": 0}, Phase.BACKOFF, ()),
        # configuration error and safety halt: never restarted
        (RUNNING, Event.EXITED, {"code": 2}, Phase.FAILED, ()),
        (RUNNING, Event.EXITED, {"code": 3}, Phase.HALTED, ()),
        # bad configuration for a container without a worker
        (Life(), Event.INVALID, {"reason": "bad label"}, Phase.FAILED, ()),
        # bad configuration for a running one: stop it first
        (RUNNING, Event.INVALID, {"reason": "bad label"}, Phase.STOPPING, (Act.TERMINATE,)),
        # a halted or failed container that starts again gets a fresh chance
        (Life(phase=Phase.HALTED, reason="x"), Event.START, {}, Phase.RUNNING, (Act.SPAWN,)),
        (Life(phase=Phase.FAILED, reason="x"), Event.START, {}, Phase.RUNNING, (Act.SPAWN,)),
        # a stop during backoff cancels the restart
        (Life(phase=Phase.BACKOFF, want=True, retry_at=200), Event.STOP, {}, Phase.STOPPED, ()),
        # a report from a worker that is gone changes nothing
        (Life(), Event.REPORT, {}, Phase.STOPPED, ()),
    ],
)
def test_transitions(
    life: Life, event: Event, kw: dict[str, object], phase: Phase, acts: tuple[Act, ...]
) -> None:
    new, got = step(life, event, 110, **kw)
    assert new.phase is phase
    assert got == acts


def test_stop_then_exit_is_stopped_and_not_restarted() -> None:
    life, _ = step(RUNNING, Event.STOP, 110)
    life, acts = step(life, Event.EXITED, 111, code=0)
    assert (life.phase, acts, life.reason) == (Phase.STOPPED, (), "")
    life, acts = step(life, Event.TICK, 1000)
    assert acts == ()


def test_flush_failure_on_stop_is_recorded() -> None:
    life, _ = step(RUNNING, Event.STOP, 110)
    life, _ = step(life, Event.EXITED, 111, code=4)
    assert life.phase is Phase.STOPPED and "exit 4" in life.reason


def test_restart_while_stopping_waits_for_the_old_worker() -> None:
    life, _ = step(RUNNING, Event.STOP, 110)
    life, acts = step(life, Event.START, 111)
    assert (life.phase, acts) == (Phase.STOPPING, ())  # not two workers at once
    life, acts = step(life, Event.EXITED, 112, code=0)
    assert (life.phase, acts) == (Phase.RUNNING, (Act.SPAWN,))


def test_stop_deadline_aborts_then_kills() -> None:
    life, _ = step(RUNNING, Event.STOP, 110)
    assert step(life, Event.TICK, 144.9)[1] == ()
    life, acts = step(life, Event.TICK, 145)
    assert acts == (Act.ABORT,) and "killed" in life.reason  # a stack trace in its log first
    assert step(life, Event.TICK, 145.9)[1] == ()
    life, acts = step(life, Event.TICK, 146)
    assert acts == (Act.KILL,)
    assert step(life, Event.TICK, 147)[1] == ()  # once
    life, _ = step(life, Event.EXITED, 147, code=-9)
    assert life.phase is Phase.STOPPED and (life.kill_at, life.aborted) == (None, False)


def test_a_second_stop_signal_hurries_the_flush() -> None:
    life, _ = step(RUNNING, Event.STOP, 110)
    life, acts = step(life, Event.HURRY, 112)
    assert acts == (Act.TERMINATE,) and life.kill_at == 117  # a second TERM, kill_grace to go
    assert step(life, Event.TICK, 116.9)[1] == ()
    assert step(life, Event.TICK, 117)[1] == (Act.ABORT,)
    late, _ = step(RUNNING, Event.STOP, 110)
    assert step(late, Event.HURRY, 144)[0].kill_at == 145  # never later than it was
    for other in (RUNNING, Life(), replace(RUNNING, phase=Phase.BACKOFF)):
        assert step(other, Event.HURRY, 112) == (other, ())


def test_a_hung_worker_stopped_meanwhile_is_still_killed_at_once() -> None:
    life, _ = step(RUNNING, Event.TICK, 161)
    assert life.aborted
    life, acts = step(life, Event.STOP, 161.5)
    assert (life.phase, acts) == (Phase.STOPPING, ())  # no new 35 s deadline for a hung worker
    assert step(life, Event.TICK, 162)[1] == (Act.KILL,)


def test_backoff_doubles_is_capped_and_spawns_when_due() -> None:
    assert [backoff(n, T) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 8, 8]
    life = RUNNING
    now = 110.0
    for crash, delay in ((1, 1), (2, 2), (3, 4), (4, 8), (5, 8)):
        life, _ = step(life, Event.EXITED, now, code=1)
        assert (life.phase, life.crashes, life.retry_at) == (Phase.BACKOFF, crash, now + delay)
        assert step(life, Event.TICK, now + delay - 0.01)[1] == ()
        life, acts = step(life, Event.TICK, now + delay)
        assert (life.phase, acts, life.restarts) == (Phase.RUNNING, (Act.SPAWN,), crash)
        now += delay + 1  # crashes again a second later


def test_a_healthy_run_resets_the_backoff() -> None:
    life = replace(RUNNING, crashes=4)
    life, _ = step(life, Event.EXITED, 100 + 60, code=1)
    assert (life.crashes, life.retry_at) == (1, 161)


def test_no_restart_when_container_stopped_during_backoff() -> None:
    life, _ = step(RUNNING, Event.EXITED, 110, code=1)
    life, _ = step(life, Event.STOP, 110.5)
    assert step(life, Event.TICK, 500)[1] == ()


def test_hung_worker_is_killed_once_and_restarted() -> None:
    life, acts = step(RUNNING, Event.TICK, 160)
    assert acts == ()
    life, _ = step(RUNNING, Event.REPORT, 150)
    assert step(life, Event.TICK, 209)[1] == ()
    life, acts = step(life, Event.TICK, 211)
    assert acts == (Act.ABORT,) and life.reason.startswith("hung")
    life, acts = step(life, Event.TICK, 212)
    assert acts == (Act.KILL,)
    assert step(life, Event.TICK, 213)[1] == ()  # not killed twice
    life, _ = step(life, Event.EXITED, 213, code=-9)
    assert life.phase is Phase.BACKOFF and life.reason.startswith("hung")
    assert (life.kill_at, life.aborted) == (None, False)


def test_invalid_while_running_ends_failed() -> None:
    life, _ = step(RUNNING, Event.INVALID, 110, reason="tandem.delay: bad")
    life, _ = step(life, Event.EXITED, 111, code=0)
    assert (life.phase, life.reason) == (Phase.FAILED, "tandem.delay: bad")


def test_term_before_the_worker_set_up_its_handlers_is_a_clean_stop() -> None:
    life, _ = step(RUNNING, Event.STOP, 110)
    life, _ = step(life, Event.EXITED, 110.1, code=-15)
    assert (life.phase, life.reason) == (Phase.STOPPED, "")
