"""The python handler: ``module:function`` called with the Job (clsync's .so handler).

The function returns None or True for success; False or an exception is a
failure. It runs in a thread so ``--timeout`` and the stop deadline are kept: a
call that overruns counts as failed, and no new call starts until it returns.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from typing import Any

from workers.batching import Move
from workers.snapshot import Tree
from workers.spec import WorkerSpec
from workers.transfer import ConfigError, Deadline, Job, Outcome, Verdict


class PythonHandler:
    recursive = False
    root_attrs = False  # a callable gets paths only

    def __init__(self, spec: WorkerSpec) -> None:
        assert spec.handler is not None
        module_name, _, func_name = spec.handler.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as err:
            raise ConfigError(f"--handler {spec.handler!r}: cannot import {module_name!r}: {err}") from None
        func = getattr(module, func_name, None)
        if not callable(func):
            raise ConfigError(
                f"--handler {spec.handler!r}: {func_name!r} is not a callable in {module_name!r}"
            )
        self.func: Callable[[Job], Any] = func
        self.timeout = spec.timeout
        self._running: threading.Thread | None = None

    def move(self, move: Move, deadline: Deadline) -> bool:
        return False

    def scan_dest(self, deadline: Deadline) -> Tree | None:
        return None

    def scan_dest_below(self, paths: list[str], deadline: Deadline) -> Tree | None:
        return None

    def send(self, job: Job, deadline: Deadline) -> Outcome:
        if self._running is not None and self._running.is_alive():
            return Outcome(Verdict.RETRY, message="the previous handler call is still running")
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["result"] = self.func(job)
            except Exception as err:  # the handler's own failure
                box["error"] = f"{type(err).__name__}: {err}"

        thread = threading.Thread(target=call, name="tandem-python-handler", daemon=True)
        self._running = thread
        start = time.monotonic()
        thread.start()
        while thread.is_alive():
            end = deadline()
            if self.timeout > 0:
                end = min(end or float("inf"), start + self.timeout)
            if end is not None and time.monotonic() >= end:
                return Outcome(
                    Verdict.RETRY, message=f"handler still running after {time.monotonic() - start:.1f}s"
                )
            thread.join(0.05)
        if "error" in box:
            return Outcome(Verdict.RETRY, message=box["error"])
        if box.get("result") is False:
            return Outcome(Verdict.RETRY, message="handler returned False")
        return Outcome(Verdict.OK)
