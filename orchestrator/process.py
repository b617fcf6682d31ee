"""One worker process: spawn ``python -m workers``, read its status lines, stop it.

The spec goes in on stdin; ``StatusReport`` JSON lines come back on stdout;
stderr is appended to the container's log file in the state directory. The
worker runs in its own session, so a Ctrl-C on the supervisor's terminal reaches
it only through the supervisor. Stop is TERM (the worker flushes), then ABORT (a
stack trace in its log) and KILL at deadlines the lifecycle sets; the exit is
always awaited (reaped).

A worker holds a lock on its pid file for its whole life. A locked pid file
left by an earlier supervisor (killed with SIGKILL) means its worker is still
flushing: a new worker for that container starts only once the lock is free,
so there are never two.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
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
LINE_LIMIT = 1 << 20  # status lines are small; a longer one is dropped


class WorkerProcess:
    def __init__(
        self, spec: ContainerSpec, log_file: Path, on_report: Callable[[StatusReport], None]
    ) -> None:
        self.spec = spec
        self.log_file = log_file
        self.on_report = on_report
        self.proc: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None
        self._asked: int | None = None  # a signal asked for before the process existed
        self._orphans: list[int] = []  # what an aborted worker had started

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def run(self, stale_timeout: float) -> int:
        """Start the worker (after any stale one has gone), read its reports until
        it exits; return its exit code (negative: killed by that signal). A stop
        asked for before the start means no start at all (returns 0)."""
        await wait_stale(self.spec.pid_file, stale_timeout)
        if self._asked is not None:
            return 0
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
                limit=LINE_LIMIT,
            )
        if self._asked is not None:  # asked while the process was being made
            (self.kill if self._asked == signal.SIGKILL else self.terminate)()
        try:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(self.spec.model_dump_json(by_alias=True).encode())
            with contextlib.suppress(ConnectionError):
                await self.proc.stdin.drain()
            self.proc.stdin.close()
            while line := await self._line():
                self._report(line)
        finally:
            if self.proc.returncode is None and self._asked is None:
                self.kill()  # we stopped reading: it must not run unsupervised
            self.returncode = await self.proc.wait()
            kill_pids(self._orphans)
        return self.returncode

    async def _line(self) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            return await self.proc.stdout.readline()
        except ValueError:  # a line longer than LINE_LIMIT: skip it, keep reading
            log.warning("%s: an overlong status line was dropped", self.spec.name)
            return b"\n"

    def _report(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            report = StatusReport.model_validate(json.loads(line))
        except (ValueError, ValidationError):
            log.warning("%s: not a status line: %r", self.spec.name, line[:200])
            return
        self.on_report(report)

    def terminate(self) -> None:
        """SIGTERM: flush and stop (remembered if the process is not there yet)."""
        if self.proc is None:
            self._asked = signal.SIGTERM
        elif self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)

    def abort(self) -> None:
        """SIGABRT: the worker writes every thread's stack to its log (faulthandler)
        and dies, or is KILLed after abort_grace; SIGCONT lets a stopped one do it.
        What it started is KILLed once it is gone (they would be orphans)."""
        if self.proc is not None and self.proc.returncode is None:
            self._orphans = descendants(self.proc.pid)
            for sig in (signal.SIGABRT, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the worker and everything it started (its handlers run in
        sessions of their own, so they are found by parentage first)."""
        if self.proc is None:
            self._asked = signal.SIGKILL
        elif self.proc.returncode is None:
            kill_tree(self.proc.pid)

    def signal(self, sig: int) -> bool:
        """Send SIG to a running worker (SIGUSR2: full resync); False if none runs."""
        if self.proc is None or self.proc.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
            return True
        return False


def descendants(pid: int) -> list[int]:
    """Every process below PID, from /proc (children before grandchildren)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    kill_pids([pid, *descendants(pid)])


def kill_pids(pids: list[int]) -> None:
    """SIGKILL each of PIDS and its process group (handlers run in sessions of their own)."""
    for target in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(target, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)


def holder(pid_file: str | None) -> int | None:
    """The pid of the live worker holding PID_FILE's lock, if one does."""
    if not pid_file:
        return None
    try:
        fd = os.open(pid_file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


async def wait_stale(pid_file: str | None, timeout: float) -> None:
    """Wait for a worker left by an earlier supervisor to finish its flush;
    KILL it (and what it started) when it takes longer than TIMEOUT."""
    pid = holder(pid_file)
    if pid is None:
        return
    log.info("a worker from an earlier supervisor (pid %d) is still flushing: waiting for it", pid)
    end = time.monotonic() + timeout
    while holder(pid_file) is not None:
        if time.monotonic() >= end:
            if pid <= 0:
                log.error("%s stays locked by an unknown process: starting anyway", pid_file)
                return
            log.warning("killing the earlier worker %d: its flush outlived %.0fs", pid, timeout)
            kill_tree(pid)
            end = time.monotonic() + 5
        await asyncio.sleep(STALE_POLL)
