"""``python -m workers`` fed a spec (as the supervisor will), and the terminal UI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, tree, wait_until

pytestmark = pytest.mark.real


def test_spec_on_stdin_and_parent_death_flushes_and_exits(dirs, tmp_path: Path) -> None:
    src, dst = dirs
    status = tmp_path / "status"
    spec = {"source": str(src), "dest": str(dst), "delay": 60, "status_file": str(status), "parent_pid": 0}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec).replace('"parent_pid": 0', '"parent_pid": PARENT'))
    # sh is the worker's parent (it fills in its own pid); the worker must notice when sh dies.
    parent = subprocess.Popen(
        ["sh", "-c", f'sed "s/PARENT/$$/" {spec_file} | {sys.executable} -m workers & wait'],
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        wait_until(lambda: status.exists() and status.read_text().strip() == "running", 15, "worker running")
        (src / "pending").write_text("flushed when the parent dies")
        time.sleep(0.3)
        assert not (dst / "pending").exists()  # the 60 s window is far away
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=5)
        wait_until(lambda: not status.exists(), 15, "worker exited after its parent died")
        assert tree(src) == tree(dst)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.wait(timeout=5)


def test_bad_spec_is_a_config_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workers"],
        input=b'{"source": "/tmp", "bogus": 1}',
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"bogus" in result.stderr and b"dest" in result.stderr


def test_progress_bar_on_a_terminal(dirs, tmp_path: Path) -> None:
    src, dst = dirs
    for i in range(50):
        (src / f"f{i}").write_text("x")
    typescript = tmp_path / "typescript"
    command = f"{sys.executable} -m orchestrator.cli sync {src} {dst} --only-initial-sync"
    result = subprocess.run(
        [shutil.which("script") or "script", "-qec", command, str(typescript)],
        cwd=ROOT, capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0
    assert b"syncing" in typescript.read_bytes()
    assert tree(src) == tree(dst)
