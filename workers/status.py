"""What a worker tells the world: status file, JSON status lines.

The runner is the only writer; it passes the pending count and lag in.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass

from workers.spec import Status, StatusReport, WorkerSpec

LAGGING_AFTER = 60.0  # s of lag past the worker's own collect windows: behind, not batching


def lagging(lag: float, pending: int, window: float) -> str:
    """Why a worker whose oldest pending change is LAG seconds old is not keeping
    up ('' while it is): a busy worker still heartbeats, so its status alone
    says ``running``; the supervisor's health check reads this."""
    if lag <= window + LAGGING_AFTER:
        return ""
    return f"behind: oldest change {lag:.0f}s old, {pending} paths pending"


@dataclass
class Counters:
    syncs: int = 0
    files: int = 0
    bytes: int = 0  # content bytes rsync transferred (its --stats); 0 for other handlers
    failures: int = 0
    resyncs: int = 0
    last_sync_duration: float = 0.0
    last_error: str = ""


def write_atomic(path: str, text: str) -> None:
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temp, path)


def remove_quietly(path: str | None) -> None:
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


_stdout_lock = threading.Lock()  # the pairs of one container share stdout


class Reporter:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.status = Status.STARTING
        self.counters = Counters()
        self.degraded = ""
        self.lagging = ""
        self._silent = not spec.json_status

    def phase(self, status: Status, *, pending: int = 0, lag: float = 0.0, watches: int = 0) -> None:
        if status is self.status and status is not Status.STARTING:
            return
        self.status = status
        if self.spec.status_file:
            write_atomic(self.spec.status_file, f"{status.value}\n")
        self.emit("phase", pending=pending, lag=lag, watches=watches)

    def emit(
        self,
        event: str,
        *,
        pending: int = 0,
        lag: float = 0.0,
        watches: int = 0,
        exit_code: int | None = None,
    ) -> None:
        if self._silent:
            return
        report = StatusReport(
            event=event,
            label=self.spec.name,
            status=self.status,
            ts=time.time(),
            pending=pending,
            lag=round(lag, 3),
            watches=watches,
            exit_code=exit_code,
            degraded=self.degraded,
            lagging=self.lagging,
            **asdict(self.counters),
        )
        line = json.dumps(report.model_dump(mode="json"), separators=(",", ":")) + "\n"
        with _stdout_lock:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (BrokenPipeError, ValueError, OSError):
                # The reader (a supervisor killed with SIGKILL) is gone: the worker
                # notices its dead parent and stops; the reports have no one to go to.
                self._silent = True

    def cleanup(self) -> None:
        remove_quietly(self.spec.status_file)
