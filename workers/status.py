"""What a worker tells the world: status file, pid file, JSON status lines.

The runner is the only writer; it passes the pending count and lag in.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

from workers.spec import Status, StatusReport, WorkerSpec


@dataclass
class Counters:
    syncs: int = 0
    files: int = 0
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


class PidFileBusy(RuntimeError):
    pass


def claim_pid_file(path: str) -> None:
    """Write our pid; refuse when the file names another live process."""
    try:
        with open(path, encoding="utf-8") as handle:
            other = int(handle.read().strip() or "0")
    except (FileNotFoundError, ValueError):
        other = 0
    if other and other != os.getpid():
        try:
            os.kill(other, 0)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise PidFileBusy(f"pid file {path} names running process {other}") from None
        else:
            raise PidFileBusy(f"pid file {path} names running process {other}")
    write_atomic(path, f"{os.getpid()}\n")


class Reporter:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.status = Status.STARTING
        self.counters = Counters()

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
        if not self.spec.json_status:
            return
        report = StatusReport(
            event=event,  # type: ignore[arg-type]
            label=self.spec.name,
            status=self.status,
            ts=time.time(),
            pending=pending,
            lag=round(lag, 3),
            watches=watches,
            exit_code=exit_code,
            **asdict(self.counters),
        )
        sys.stdout.write(json.dumps(report.model_dump(mode="json"), separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def cleanup(self) -> None:
        remove_quietly(self.spec.status_file)
        remove_quietly(self.spec.pid_file)
