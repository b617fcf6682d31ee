"""One worker process: spawn ``python -m workers``, read its status lines, stop it.

The spec goes in on stdin; ``StatusReport`` JSON lines come back on stdout;
stderr is appended to the container's log file in the state directory. The
worker runs in its own session, so a Ctrl-C on the supervisor's terminal reaches
it only through the supervisor. Stop is TERM (the worker flushes), then KILL at
a deadline the lifecycle sets; the exit is always awaited (reaped).

A pid file from an earlier supervisor (killed with SIGKILL) may name a worker
that is still flushing: a new worker for that container is started only once
the old one is gone, so there are never two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from workers.spec import ContainerSpec, StatusReport

log = logging.getLogger("tandem.process")

STALE_POLL = 0.1


class WorkerProcess:
    def __init__(
        self, spec: ContainerSpec, log_file: Path, on_report: Callable[[StatusReport], None]
    ) -> None:
        self.spec = spec
        self.log_file = log_file
        self.on_report = on_report
        self.proc: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def run(self, stale_timeout: float) -> int:
        """Start the worker (after any stale one has gone), read its reports until
        it exits; return its exit code (negative: killed by that signal)."""
        await wait_stale(self.spec.pid_file, stale_timeout)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "workers",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(self.spec.model_dump_json(by_alias=True).encode())
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.drain()
        self.proc.stdin.close()
        async for line in self.proc.stdout:
            self._report(line)
        self.returncode = await self.proc.wait()
        return self.returncode

    def _report(self, line: bytes) -> None:
        try:
            report = StatusReport.model_validate(json.loads(line))
        except (ValueError, ValidationError):
            log.warning("%s: not a status line: %r", self.spec.name, line[:200])
            return
        self.on_report(report)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the worker and whatever it started (its session)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def read_pid(pid_file: str | None) -> int | None:
    """The live tandem worker named by PID_FILE, if any (a reused pid is not one)."""
    if not pid_file:
        return None
    try:
        pid = int(Path(pid_file).read_text().strip() or "0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if b"workers" not in cmdline or _zombie(pid):
        return None
    return pid


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


async def wait_stale(pid_file: str | None, timeout: float) -> None:
    """Wait for a worker left by an earlier supervisor to finish its flush;
    KILL it when it takes longer than TIMEOUT."""
    pid = read_pid(pid_file)
    if pid is None:
        return
    log.info("a worker from an earlier supervisor (pid %d) is still flushing: waiting for it", pid)
    end = time.monotonic() + timeout
    while read_pid(pid_file) == pid:
        if time.monotonic() >= end:
            log.warning("killing the earlier worker %d: its flush outlived %.0fs", pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            end = time.monotonic() + 5
        await asyncio.sleep(STALE_POLL)
