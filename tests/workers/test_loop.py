"""The worker's loop in-process, its inbox filled by hand (the watcher is the
boundary): a storm of queued events never holds back a stop, a batch or a
heartbeat."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from workers.batching import Change, Kind
from workers.runner import PUMP_SLICE, Worker
from workers.spec import WorkerSpec

STORM = 300_000


def storm(worker: Worker) -> None:
    for i in range(STORM):
        worker.inbox.put(Change(Kind.CONTENT, f"d{i % 100}/f{i}"))


def test_a_stop_is_taken_ahead_of_queued_events(tmp_path: Path) -> None:
    worker = Worker(WorkerSpec(source=str(tmp_path), dest=str(tmp_path / "dst")))
    storm(worker)
    worker.signal(signal.SIGTERM)
    start = time.monotonic()
    worker._pump(0)
    assert worker._stopping
    assert time.monotonic() - start < 1.0
    assert worker.inbox.qsize() > STORM // 2, "the stop waited for the events"


def test_the_loop_takes_events_in_slices(tmp_path: Path) -> None:
    """Between two slices the loop runs batches and heartbeats: one pump never
    takes the whole storm."""
    worker = Worker(WorkerSpec(source=str(tmp_path), dest=str(tmp_path / "dst")))
    storm(worker)
    start = time.monotonic()
    worker._pump(0)
    assert time.monotonic() - start < PUMP_SLICE + 0.5
    assert worker.batcher.pending > 0 and worker.inbox.qsize() > 0
    assert not worker._stopping
