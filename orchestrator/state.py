"""What the supervisor knows, as frozen views for readers.

The supervisor is the only writer: it builds a new ``WorkerView`` whenever a
worker's life or reports change and publishes the whole picture at once.
Readers (``tandem status``, the API) get immutable snapshots, never the
supervisor's own objects. Each publish also writes ``state.json`` in the state
directory (atomically), so the picture can be read without the API.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from workers.spec import StatusReport


@dataclass(frozen=True)
class PairView:
    label: str
    source: str
    dest: str
    status: str = "starting"
    pending: int = 0
    lag: float = 0.0
    syncs: int = 0
    files: int = 0
    bytes: int = 0
    failures: int = 0
    resyncs: int = 0
    last_sync: float = 0.0  # wall clock of the last finished sync
    last_sync_duration: float = 0.0
    last_error: str = ""
    watches: int = 0
    degraded: str = ""
    lagging: str = ""  # the worker says it is behind (workers.status.lagging)
    reported: float = 0.0  # wall clock of the report these figures come from

    def lag_at(self, now: float) -> float:
        """The lag at wall-clock NOW: the reported lag, aged since the report, while
        anything is pending (a worker reports every heartbeat, not every second)."""
        return round(self.lag + max(0.0, now - self.reported), 3) if self.pending else 0.0

    def updated(self, report: StatusReport) -> PairView:
        last_sync = report.ts if report.event == "sync" else self.last_sync
        return PairView(
            label=self.label,
            source=self.source,
            dest=self.dest,
            status=report.status.value,
            pending=report.pending,
            lag=report.lag,
            syncs=report.syncs,
            files=report.files,
            bytes=report.bytes,
            failures=report.failures,
            resyncs=report.resyncs,
            last_sync=last_sync,
            last_sync_duration=report.last_sync_duration,
            last_error=report.last_error,
            watches=report.watches,
            degraded=report.degraded,
            lagging=report.lagging,
            reported=report.ts,
        )


# A running worker's state is the least advanced of its pairs'.
_ORDER = ("starting", "initial-sync", "standby", "stopping", "running")


@dataclass(frozen=True)
class WorkerView:
    container: str
    runtime: str
    phase: str  # lifecycle phase: stopped, running, stopping, backoff, halted, failed
    reason: str = ""
    pid: int | None = None
    restarts: int = 0
    started_at: float = 0.0  # wall clock
    pairs: tuple[PairView, ...] = ()
    paused: bool = False  # the standby file exists: nothing is sent until resume
    max_lag: float | None = None  # the lag SLO of its policy (health turns 503 above it)

    @property
    def state(self) -> str:
        """One word: the lifecycle phase, or while running the workers' own status."""
        if self.phase != "running":
            return self.phase
        statuses = [p.status for p in self.pairs] or ["starting"]
        return min(statuses, key=lambda s: _ORDER.index(s) if s in _ORDER else 0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state
        return data


@dataclass(frozen=True)
class Picture:
    workers: MappingProxyType[str, WorkerView] = field(default_factory=lambda: MappingProxyType({}))
    runtimes: MappingProxyType[str, dict[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    inotify: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))


class Registry:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "state.json"
        self.picture = Picture()
        self.api = ""  # the REST API's URL, once it listens

    def publish(
        self,
        workers: dict[str, WorkerView],
        runtimes: dict[str, dict[str, Any]],
        inotify: dict[str, Any],
    ) -> None:
        self.picture = Picture(
            MappingProxyType(dict(workers)), MappingProxyType(dict(runtimes)), MappingProxyType(dict(inotify))
        )
        data = {
            "updated": time.time(),
            "pid": os.getpid(),
            "api": self.api,
            "runtimes": dict(runtimes),
            "inotify": dict(inotify),
            "workers": [w.to_dict() for w in sorted(workers.values(), key=lambda w: w.container)],
        }
        temp = self.path.with_name(f"{self.path.name}.tmp")
        temp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(temp, self.path)
