"""Run one child process with a deadline: TERM -> grace -> KILL -> reap.

Every child runs in its own session (process group), so a timeout also ends
whatever it started (rsync's ssh, a shell handler's children). Input is given
through an unlinked temp file, not a pipe: ``communicate(input, timeout)`` stops
writing a large input after its first timeout, which leaves the child waiting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

KILL_GRACE = 2.0


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    duration: float = 0.0

    def stderr_tail(self, limit: int = 600) -> str:
        text = self.stderr.decode(errors="replace").strip()
        return text[-limit:] if text else "(no message)"


class SpawnError(OSError):
    """The program could not be started at all (missing binary, not executable)."""


def run(
    argv: list[str],
    *,
    stdin: bytes | None = None,
    timeout: float = 0.0,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    deadline: Callable[[], float | None] | None = None,
) -> Result:
    """Run ARGV to the end, or until ``timeout`` seconds (0 = none) or the
    monotonic time returned by ``deadline()`` (re-read while waiting, so a stop
    request can shorten it). Output is collected in memory."""
    start = time.monotonic()
    proc = _spawn(argv, stdin, cwd, env)
    limit = start + timeout if timeout > 0 else None
    while True:
        end = limit
        extra = deadline() if deadline is not None else None
        if extra is not None:
            end = extra if end is None else min(end, extra)
        step = 0.2 if end is None else max(0.0, min(0.2, end - time.monotonic()))
        try:
            out, err = proc.communicate(timeout=step)
            timed_out = False
            break
        except subprocess.TimeoutExpired:
            if end is not None and time.monotonic() >= end:
                out, err = _terminate(proc)
                timed_out = True
                break
    return Result(proc.returncode, out or b"", err or b"", timed_out, time.monotonic() - start)


def _spawn(
    argv: list[str], data: bytes | None, cwd: str | None, env: dict[str, str] | None
) -> subprocess.Popen[bytes]:
    with tempfile.TemporaryFile() as feed:  # the child keeps its own descriptor
        if data is not None:
            feed.write(data)
            feed.seek(0)
        try:
            return subprocess.Popen(
                argv,
                stdin=feed if data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as err:
            raise SpawnError(err.errno, f"cannot run {argv[0]!r}: {err.strerror}") from None


def _terminate(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """TERM the child's process group, KILL it after a grace period, reap."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            o, e = proc.communicate(timeout=grace)
            return o or b"", e or b""
        except subprocess.TimeoutExpired:
            continue
    return b"", b""
