"""The child-process runner: big inputs, timeouts, deadlines, reaping."""

from __future__ import annotations

import os
import time

import pytest

from workers.proc import SpawnError, run


def test_large_input_reaches_the_child_whole() -> None:
    # Regression: a pipe-fed input larger than the pipe buffer stopped after the
    # first 0.2 s wait, and the child (rsync reading --files-from) waited forever.
    data = os.urandom(8 << 20)
    result = run(["sh", "-c", "sleep 0.5; cat"], stdin=data, timeout=30)
    assert result.returncode == 0 and result.stdout == data


def test_timeout_kills_the_whole_process_group() -> None:
    start = time.monotonic()
    result = run(["sh", "-c", "sleep 30 & sleep 30; wait"], timeout=0.3)
    assert result.timed_out and time.monotonic() - start < 5


def test_deadline_is_reread_while_waiting() -> None:
    stop_at: list[float] = []
    start = time.monotonic()

    def deadline() -> float | None:
        if time.monotonic() - start > 0.2 and not stop_at:
            stop_at.append(time.monotonic() + 0.2)  # a stop request arrives late
        return stop_at[0] if stop_at else None

    result = run(["sleep", "30"], deadline=deadline)
    assert result.timed_out and time.monotonic() - start < 5


def test_missing_program_is_a_spawn_error() -> None:
    with pytest.raises(SpawnError, match="cannot run"):
        run(["/nonexistent/program"])


def test_output_and_exit_code() -> None:
    result = run(["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=10)
    assert (result.returncode, result.stdout, result.stderr_tail()) == (7, b"out\n", "err")
