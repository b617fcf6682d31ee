"""One worker process for one container: a ``Worker`` loop per SOURCE/DEST pair.

Each pair runs in a thread of its own (its own watcher, batcher and handler);
the main thread owns the signals and forwards them to every pair. When one pair
ends (a halt, a failure, a clean stop), the others are asked to flush and stop,
so the process lives and dies as one; its exit code is the worst of the pairs'.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading

from workers.runner import Worker
from workers.spec import ContainerSpec, ExitCode, worst_exit

log = logging.getLogger("tandem.worker")

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)


def run_group(spec: ContainerSpec) -> int:
    lock = None
    if spec.pid_file:
        try:
            lock = hold_pid_file(spec.pid_file)
        except BlockingIOError:
            # Another worker for this container is still flushing: a transient state.
            log.error("pid file %s is locked by another worker of %s", spec.pid_file, spec.name)
            return int(ExitCode.SYNC_FAILED)
        except OSError as err:
            log.error("cannot write the pid file: %s", err)
            return int(ExitCode.CONFIG)
    try:
        return _run(spec)
    finally:
        if lock is not None and spec.pid_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spec.pid_file)
            os.close(lock)


def hold_pid_file(path: str) -> int:
    """Lock PATH for this process's life and write our pid into it. The lock,
    not the pid, is the proof of life: pids are reused (after a reboot, in
    another pid namespace), locks die with their process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


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
