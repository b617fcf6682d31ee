"""A real ``tandem serve`` process for tests, and the LXC hook as LXC calls it.

``Serve`` starts the supervisor with its own state directory and config file,
reads the ``state.json`` it publishes, and at the end kills it and every worker
named in its pid files (workers of a supervisor killed with SIGKILL are not
children of pytest), by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, wait_until


class Serve:
    def __init__(self, state_dir: Path, config: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.config = state_dir.parent / f"{state_dir.name}.toml"
        self.config.write_text(config)
        self.args = args
        self.env = {**os.environ, "TANDEM_API_PORT": "0", **(env or {})}
        self.log = state_dir.parent / f"{state_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen_pids: set[int] = set()

    def start(self) -> Serve:
        argv = [sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(self.config)]
        argv += ["--state-dir", str(self.state_dir), *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=log, cwd=ROOT, env=self.env, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}
        if data.get("pid") != self.pid:
            return {}  # an earlier supervisor's picture
        for worker in data.get("workers", []):
            if worker.get("pid"):
                self.seen_pids.add(worker["pid"])
        return data

    def url(self, timeout: float = 20.0) -> str:
        """The REST API's URL, once this supervisor listens."""
        found = wait_until(lambda: self.state().get("api"), timeout, "the API listens")
        return str(found)

    def worker(self, name: str) -> dict[str, Any]:
        for worker in self.state().get("workers", []):
            if worker["container"] == name:
                return dict(worker)
        return {}

    def wait_state(self, name: str, *states: str, timeout: float = 20.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            self.alive()
            worker = self.worker(name)
            return worker if worker.get("state") in states else None

        try:
            return wait_until(check, timeout, f"{name} in {states}")  # type: ignore[return-value]
        except AssertionError:
            raise AssertionError(f"{name} not in {states}: {self.worker(name)}\n{self.log_tail()}") from None

    def wait_gone(self, name: str, timeout: float = 20.0) -> None:
        wait_until(lambda: self.state() and not self.worker(name), timeout, f"{name} forgotten")

    def wait_runtime(self, runtime: str, timeout: float = 30.0) -> None:
        wait_until(
            lambda: self.state().get("runtimes", {}).get(runtime, {}).get("connected"),
            timeout,
            f"runtime {runtime} connected",
        )

    def alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"tandem serve exited {self.proc.returncode}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def worker_log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.state_dir / "logs" / f"{name}.log").read_text(errors="replace")
        return ""

    def stop(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the supervisor only (its workers notice and flush)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def worker_pids(self) -> set[int]:
        """Live tandem worker processes for this state directory, by pid file."""
        pids = set()
        for path in (self.state_dir / "workers").glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(path.read_text().strip())
                if b"workers" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.add(pid)
        return pids

    def cleanup(self) -> None:
        self.kill()
        for pid in self.worker_pids() | self.seen_pids:
            with contextlib.suppress(ProcessLookupError, OSError):
                if b"workers" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.worker_pids() and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture(name="serve")
def serve_fixture(tmp_path: Path) -> Iterator[Any]:
    """Start supervisors: ``serve(config_text, *args)``; all cleaned up by PID."""
    made: list[Serve] = []

    def start(
        config: str, *args: str, state_dir: Path | None = None, env: dict[str, str] | None = None
    ) -> Serve:
        s = Serve(state_dir or tmp_path / f"state{len(made)}", config, *args, env=env)
        made.append(s)
        return s.start()

    yield start
    for s in made:
        s.cleanup()


def lxc_hook(state_dir: Path, name: str, kind: str, rootfs: Path | None = None, *labels: str) -> None:
    """Run ``tandem lxc-hook`` the way LXC does (NAME lxc TYPE, LXC_* environment)."""
    env = {**os.environ, "LXC_NAME": name, "LXC_HOOK_TYPE": kind}
    if rootfs is not None:
        env["LXC_ROOTFS_PATH"] = str(rootfs)
    argv = [sys.executable, "-m", "orchestrator.cli", "lxc-hook", "--state-dir", str(state_dir)]
    for label in labels:
        argv += ["--label", label]
    result = subprocess.run(
        [*argv, name, "lxc", kind], env=env, cwd=ROOT, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
