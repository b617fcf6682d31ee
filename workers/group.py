"""One worker process for one container: a ``Worker`` loop per SOURCE/DEST pair.

Each pair runs in a thread of its own (its own watcher, batcher and handler);
the main thread owns the signals and forwards them to every pair. When one pair
ends (a halt, a failure, a clean stop), the others are asked to flush and stop,
so the process lives and dies as one; its exit code is the worst of the pairs'.
"""

from __future__ import annotations

import logging
import signal
import threading

from workers.pidfile import PidFile, PidFileBusy
from workers.runner import Worker
from workers.spec import ContainerSpec, ExitCode, worst_exit

log = logging.getLogger("tandem.worker")

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)


def run_group(spec: ContainerSpec) -> int:
    lock = None
    if spec.pid_file:
        try:
            lock = PidFile.acquire(spec.pid_file)
        except PidFileBusy as busy:
            # Another worker for this container is still flushing: a transient state.
            log.error("%s (another worker of %s)", busy, spec.name)
            return int(ExitCode.SYNC_FAILED)
        except OSError as err:
            log.error("cannot write the pid file: %s", err)
            return int(ExitCode.CONFIG)
    try:
        return _run(spec)
    finally:
        if lock is not None:
            lock.release()


def _run(spec: ContainerSpec) -> int:
    workers = [Worker(pair) for pair in spec.pairs]
    codes: dict[int, int] = {}
    ended = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            worker.signal(signum)  # only queues

    for sig in SIGNALS:
        signal.signal(sig, forward)

    def body(index: int) -> None:
        codes[index] = workers[index].run()
        ended.set()

    threads = [
        threading.Thread(target=body, args=(i,), name=w.spec.name, daemon=True) for i, w in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    stopping = False
    while any(t.is_alive() for t in threads):
        ended.wait(0.25)
        ended.clear()
        if codes and not stopping:
            stopping = True
            first = next(iter(codes.items()))
            if len(workers) > 1:
                log.info(
                    "pair %s ended (exit %d): stopping the others", workers[first[0]].spec.name, first[1]
                )
            for other, worker in enumerate(workers):
                if other not in codes:
                    worker.request_stop()
    for thread in threads:
        thread.join()
    return int(worst_exit(list(codes.values())))
