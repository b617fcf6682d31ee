"""Shared fixtures: real worker processes, cleaned up by PID; leak checks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The image tests last: scripts/test makes the image's Debian base in the
    background meanwhile (a minute or two on a machine without the cache)."""
    items.sort(key=lambda item: item.path.name == "test_compose.py")


def wait_until(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll CHECK until it returns something truthy; fail with WHAT after TIMEOUT."""
    end = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(0.02)


def tree(root: Path, *, content: bool = True) -> dict[str, object]:
    """path -> (type, sha256 or link target, mode) for a whole tree (no symlink follow)."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            try:
                out[rel] = _describe(path, content)
            except FileNotFoundError:
                out[rel] = ("vanished",)  # e.g. an rsync temp file: not equal yet
    return out


def _describe(path: Path, content: bool) -> tuple[object, ...]:
    st = path.lstat()
    if path.is_symlink():
        return ("l", os.readlink(path))
    if path.is_dir():
        return ("d", st.st_mode & 0o7777)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if content else st.st_size
    return ("f", digest, st.st_mode & 0o7777)


class WorkerProc:
    """A ``tandem sync`` process with JSON status lines collected from stdout."""

    def __init__(
        self,
        source: Path,
        dest: str,
        args: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        wrap: tuple[str, ...] = (),
    ) -> None:
        argv = [
            *wrap,
            sys.executable,
            "-m",
            "orchestrator.cli",
            "sync",
            str(source),
            dest,
            "--json",
            "--heartbeat",
            "0.5",
            *args,
        ]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self.lines: list[dict[str, object]] = []
        self.stderr = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.lines.append(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr += line

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> str:
        return str(self.lines[-1]["status"]) if self.lines else ""

    def syncs(self) -> int:
        return max((int(line["syncs"]) for line in self.lines), default=0)  # type: ignore[call-overload]

    def wait_running(self, timeout: float = 15.0) -> None:
        wait_until(
            lambda: self.status() == "running" or self.proc.poll() is not None, timeout, "worker running"
        )
        assert self.proc.poll() is None, f"worker exited {self.proc.returncode}: {self.err()}"

    def wait_synced(self, after: int, timeout: float = 15.0) -> None:
        """Wait until at least one sync finished after the count AFTER."""
        wait_until(lambda: self.syncs() > after, timeout, f"a sync after #{after}")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(5)
        self._err_reader.join(5)
        return code

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(5)
        self._err_reader.join(5)
        return code

    def err(self) -> str:
        return self.stderr.decode(errors="replace")

    def kill(self) -> None:
        """Kill the worker's whole process group if still there, reap it, close pipes."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._reader.join(5)
        self._err_reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    return src, dst


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    """Start ``tandem sync`` processes; every one is killed and reaped at the end."""
    started: list[WorkerProc] = []

    def start(
        source: Path,
        dest: str | Path,
        *args: str,
        env: dict[str, str] | None = None,
        wrap: tuple[str, ...] = (),
    ) -> WorkerProc:
        """WRAP: a command the worker runs under (e.g. setpriv)."""
        worker = WorkerProc(source, str(dest), list(args), cwd=ROOT, env=env, wrap=wrap)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture(autouse=True)
def _no_leaked_children() -> Iterator[None]:
    """Fail a test that leaves a child process of this pytest behind."""
    before = _children()
    yield
    deadline = time.monotonic() + 5
    while (leaked := _children() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leaked, f"test leaked child processes: {sorted(leaked)}"


def _children() -> set[int]:
    me = os.getpid()
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            kids.add(int(entry))
    return kids
