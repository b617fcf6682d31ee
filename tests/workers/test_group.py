"""One worker process for a container: several SOURCE/DEST pairs (``ContainerSpec``)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, tree, wait_until
from workers.spec import ContainerSpec, ExitCode, worst_exit

pytestmark = pytest.mark.real


def pair(src: Path, dst: Path, label: str, **kw: object) -> dict[str, object]:
    return {"source": str(src), "dest": str(dst), "label": label, "json": True, "heartbeat": 0.3, **kw}


class Group:
    def __init__(self, spec: dict[str, object]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            start_new_session=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(spec).encode())
        self.proc.stdin.close()
        self.lines: list[dict[str, object]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # the test may close the pipe
            for line in self.proc.stdout:
                self.lines.append(json.loads(line))

    def status(self, label: str) -> str:
        mine = [line for line in self.lines if line["label"] == label]
        return str(mine[-1]["status"]) if mine else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.reader.join(5)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def group() -> Iterator[list[Group]]:
    made: list[Group] = []
    yield made
    for g in made:
        g.close()


def test_two_pairs_sync_and_flush_on_sigterm(tmp_path: Path, group: list[Group]) -> None:
    a, b, da, db = (tmp_path / n for n in ("a", "b", "da", "db"))
    for d in (a, b):
        d.mkdir()
    (a / "one").write_text("1")
    (b / "two").write_text("2")
    pid_file = tmp_path / "c.pid"
    spec = {
        "name": "c",
        "pid_file": str(pid_file),
        "pairs": [pair(a, da, "c/a"), pair(b, db, "c/b", delay=60)],
    }
    g = Group(spec)
    group.append(g)
    wait_until(
        lambda: g.status("c/a") == "running" and g.status("c/b") == "running", 15, "both pairs running"
    )
    assert pid_file.read_text().strip() == str(g.proc.pid)
    assert tree(da) == tree(a) and tree(db) == tree(b)
    (a / "late").write_text("x")
    (b / "late").write_text("y")  # 60 s window: only the stop flush sends it
    time.sleep(0.2)
    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(20) == 0
    assert tree(da) == tree(a) and tree(db) == tree(b)
    assert not pid_file.exists()
    g.reader.join(5)
    exits = {line["label"]: line["exit_code"] for line in g.lines if line["event"] == "exit"}
    assert exits == {"c/a": 0, "c/b": 0}


def test_one_bad_pair_stops_the_others_with_its_code(tmp_path: Path, group: list[Group]) -> None:
    a = tmp_path / "a"
    a.mkdir()
    spec = {
        "name": "c",
        "pairs": [pair(a, tmp_path / "da", "c/a"), pair(tmp_path / "missing", tmp_path / "x", "c/x")],
    }
    g = Group(spec)
    group.append(g)
    assert g.proc.wait(20) == ExitCode.CONFIG
    assert g.proc.stderr is not None
    assert b"is not a directory" in g.proc.stderr.read()


def test_reader_gone_does_not_crash_the_worker(tmp_path: Path, group: list[Group]) -> None:
    a = tmp_path / "a"
    a.mkdir()
    g = Group({"name": "c", "pairs": [pair(a, tmp_path / "da", "c/a")]})
    group.append(g)
    wait_until(lambda: g.status("c/a") == "running", 15, "running")
    assert g.proc.stdout is not None
    g.proc.stdout.close()  # like a supervisor killed with SIGKILL
    time.sleep(1.0)  # several heartbeats into a closed pipe
    assert g.proc.poll() is None
    (a / "f").write_text("still synced")
    wait_until(lambda: (tmp_path / "da" / "f").exists(), 10, "sync after the reader left")
    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(20) == 0


def test_spec_rejects_duplicate_labels(tmp_path: Path) -> None:
    p = pair(tmp_path, tmp_path / "d", "same")
    with pytest.raises(ValueError, match="must differ"):
        ContainerSpec.model_validate({"name": "c", "pairs": [p, p]})


@pytest.mark.parametrize(
    ("codes", "worst"),
    [([], 0), ([0, 0], 0), ([0, 1], 1), ([4, 1], 4), ([4, 2], 2), ([2, 3, 4], 3), ([0, -9], 1)],
)
def test_worst_exit(codes: list[int], worst: int) -> None:
    assert worst_exit(codes) == worst
