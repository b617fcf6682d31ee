"""Prometheus metrics of one supervisor, from its published picture.

Worker figures (lag, pending, syncs, files, failures, resyncs, watches) are
read from the picture at scrape time by a custom collector, so they are never
out of step with ``GET /workers``. The workers' counters restart from zero
with each new worker process; Prometheus' ``rate()`` treats that as a counter
reset. Sync durations are observed into a histogram as the reports arrive.
Each supervisor has a registry of its own (no process-global state).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.state import Picture

STATES = (
    "starting",
    "initial-sync",
    "running",
    "standby",
    "stopping",
    "stopped",
    "backoff",
    "halted",
    "failed",
)
# Per container and mount: PairView field, family, name (tandem_worker_NAME), help.
PAIR_METRICS: tuple[tuple[str, type[GaugeMetricFamily | CounterMetricFamily], str, str], ...] = (
    ("lag", GaugeMetricFamily, "lag_seconds", "age of the oldest unsynced change"),
    ("pending", GaugeMetricFamily, "pending_paths", "paths waiting to be sent"),
    ("watches", GaugeMetricFamily, "inotify_watches", "inotify watches the worker holds"),
    ("syncs", CounterMetricFamily, "syncs", "sync runs of the current worker process"),
    ("files", CounterMetricFamily, "files", "paths sent by the current worker process"),
    ("bytes", CounterMetricFamily, "bytes", "content bytes sent by the current worker process"),
    ("failures", CounterMetricFamily, "failures", "failed sync runs (each retried)"),
    ("resyncs", CounterMetricFamily, "resyncs", "full resyncs (asked, overflow, rules reload)"),
)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class PictureCollector(Collector):
    def __init__(self, picture: Callable[[], Picture]) -> None:
        self.picture = picture

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        picture = self.picture()
        now = time.time()
        pairs = {
            key: kind(f"tandem_worker_{name}", help_text, labels=["container", "mount"])
            for key, kind, name, help_text in PAIR_METRICS
        }
        state = GaugeMetricFamily(
            "tandem_worker_state", "1 for the worker's current state", labels=["container", "state"]
        )
        restarts = CounterMetricFamily(
            "tandem_worker_restarts", "workers restarted after a crash", labels=["container"]
        )
        for name, view in sorted(picture.workers.items()):
            current = view.state
            for word in STATES:
                state.add_metric([name, word], 1.0 if word == current else 0.0)
            restarts.add_metric([name], float(view.restarts))
            for pair in view.pairs:
                labels = [name, pair.label.partition("/")[2] or pair.label]
                for key, family in pairs.items():
                    value = pair.lag_at(now) if key == "lag" else getattr(pair, key)
                    family.add_metric(labels, float(value))
        yield from pairs.values()
        yield state
        yield restarts
        inotify = picture.inotify
        for key, help_text in (
            ("watches", "inotify watches held by all workers"),
            ("max_user_watches", "fs.inotify.max_user_watches"),
            ("instances", "inotify instances held by all workers"),
            ("max_user_instances", "fs.inotify.max_user_instances"),
        ):
            if isinstance(inotify.get(key), int | float):
                yield GaugeMetricFamily(f"tandem_inotify_{key}", help_text, value=float(inotify[key]))
        connected = GaugeMetricFamily(
            "tandem_runtime_connected", "1 while the runtime is connected", labels=["runtime"]
        )
        for runtime, status in sorted(picture.runtimes.items()):
            connected.add_metric([runtime], 1.0 if status.get("connected") else 0.0)
        yield connected


class Metrics:
    def __init__(self, picture: Callable[[], Picture]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PictureCollector(picture))
        self.durations = Histogram(
            "tandem_sync_duration_seconds",
            "duration of sync runs",
            ["container"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

    def observe_sync(self, container: str, seconds: float) -> None:
        self.durations.labels(container).observe(seconds)

    def forget(self, container: str) -> None:
        """Drop the histogram of a container that is gone for good."""
        with contextlib.suppress(KeyError):
            self.durations.remove(container)

    def render(self) -> bytes:
        return generate_latest(self.registry)
