"""The flock pid file: held for a process's life, removed only by its holder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workers.pidfile import PidFile, PidFileBusy

HOLD = """
import sys, time
from workers.pidfile import PidFile
PidFile.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def test_acquire_writes_our_pid_and_release_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "w.pid"
    held = PidFile.acquire(str(path))
    assert path.read_text() == f"{os.getpid()}\n"
    held.release()
    assert not path.exists()
    held.release()  # twice is harmless


def test_a_busy_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "w.pid"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(PidFileBusy, match=f"running process {holder.pid}"):
            PidFile.acquire(str(path))
        assert path.read_text() == f"{holder.pid}\n"
    finally:
        holder.kill()
        holder.wait(10)
        assert holder.stdout is not None
        holder.stdout.close()
    taken = PidFile.acquire(str(path))  # the lock died with its process
    assert path.read_text() == f"{os.getpid()}\n"
    taken.release()


def test_release_spares_a_file_that_is_no_longer_ours(tmp_path: Path) -> None:
    path = tmp_path / "w.pid"
    held = PidFile.acquire(str(path))
    path.unlink()
    path.write_text("12345\n")  # somebody else's now
    held.release()
    assert path.read_text() == "12345\n"


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("keep\n")
    (tmp_path / "w.pid").symlink_to(target)
    with pytest.raises(OSError):
        PidFile.acquire(str(tmp_path / "w.pid"))
    assert target.read_text() == "keep\n"
