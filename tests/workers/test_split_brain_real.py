"""Split-brain on two real hosts: host A runs the worker, host B is an sshd in
a network namespace holding DEST (rsync over ssh, key auth). Each test first
lets A and B agree (a sync, then a stop that saves the ancestor), changes one
or both sides, and starts the worker again with a policy."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import WorkerProc, tree, wait_until
from tests.sshpeer import SshPeer, running_peer
from workers.spec import ExitCode

pytestmark = [pytest.mark.ssh, pytest.mark.real]

StartWorker = Callable[..., WorkerProc]
T0 = 1_700_000_000.0  # mtimes set by hand: "newer" must not depend on the clock


@pytest.fixture(scope="module")
def peer() -> Iterator[SshPeer]:
    with running_peer() as p:
        yield p


class Hosts:
    def __init__(self, tmp_path: Path, peer: SshPeer, start_worker: StartWorker) -> None:
        self.a = tmp_path / "a"  # SOURCE on host A
        self.b = tmp_path / "b"  # DEST on host B (the peer sees this filesystem)
        self.state = tmp_path / "state"
        self.peer = peer
        self.start_worker = start_worker
        self.a.mkdir()

    def start(self, policy: str, *args: str) -> WorkerProc:
        return self.start_worker(
            self.a,
            self.peer.dest(self.b),
            "--rsh",
            self.peer.rsh,
            "--delay",
            "0.2",
            "--split-brain",
            policy,
            "--snapshot-file",
            str(self.state / "snap.json.gz"),
            "--split-brain-report",
            str(self.state / "report.json"),
            "--host-name",
            "host-a",
            "--peer-name",
            "host-b",
            *args,
        )

    def agree(self, files: dict[str, str]) -> None:
        """A and B hold FILES (mtime T0) and the ancestor says so."""
        for name, text in files.items():
            write(self.a / name, text, T0)
        worker = self.start("newest")
        worker.wait_running()
        wait_until(lambda: visible(self.a) == visible(self.b), 15, "first sync")
        assert worker.stop() == 0
        assert (self.state / "snap.json.gz").exists()

    def run(self, policy: str, *args: str) -> WorkerProc:
        worker = self.start(policy, *args)
        worker.wait_running()
        wait_until(lambda: visible(self.a) == visible(self.b), 15, "sides equal")
        return worker

    def backups(self, side: Path) -> dict[str, str]:
        root = side / ".tandem-backup"
        return {
            str(p.relative_to(root).relative_to(p.relative_to(root).parts[0])): p.read_text()
            for p in root.rglob("*")
            if p.is_file()
        }

    def report(self) -> dict:
        return json.loads((self.state / "report.json").read_text())


def write(path: Path, text: str, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def visible(root: Path) -> dict[str, object]:
    return {k: v for k, v in tree(root).items() if not k.startswith(".tandem-backup")}


def texts(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in root.rglob("*")
        if p.is_file() and ".tandem-backup" not in p.parts
    }


@pytest.fixture
def hosts(tmp_path: Path, peer: SshPeer, start_worker: StartWorker) -> Hosts:
    return Hosts(tmp_path, peer, start_worker)


def test_changes_only_on_a_reach_b_and_b_keeps_what_they_replace(hosts: Hosts) -> None:
    hosts.agree({"x": "v1", "y": "v1"})
    write(hosts.a / "x", "A's edit", T0 + 100)
    write(hosts.a / "new", "made on A", T0 + 100)
    worker = hosts.run("newest")
    assert texts(hosts.b) == {"x": "A's edit", "y": "v1", "new": "made on A"}
    assert hosts.backups(hosts.b) == {"x": "v1"}  # what the push overwrote on B
    assert not (hosts.a / ".tandem-backup").exists()
    assert worker.stop() == 0


def test_changes_only_on_b_come_back_to_a(hosts: Hosts) -> None:
    hosts.agree({"x": "v1", "y": "v1", "w": "v1"})
    write(hosts.b / "y", "B's edit", T0 + 100)
    write(hosts.b / "z", "made on B", T0 + 100)
    (hosts.b / "w").unlink()  # deleted on B
    hosts.run("newest")
    assert texts(hosts.a) == {"x": "v1", "y": "B's edit", "z": "made on B"}
    assert hosts.backups(hosts.a) == {"y": "v1", "w": "v1"}  # A's losing side, kept


def test_keep_both_different_files_both_ways(hosts: Hosts) -> None:
    hosts.agree({"a1": "v1", "b1": "v1", "gone": "v1"})
    write(hosts.a / "a1", "A", T0 + 100)
    write(hosts.b / "b1", "B", T0 + 200)
    (hosts.a / "gone").unlink()
    hosts.run("keep-both")
    assert texts(hosts.a) == texts(hosts.b) == {"a1": "A", "b1": "B"}
    assert hosts.backups(hosts.b) == {"a1": "v1", "gone": "v1"}
    assert hosts.backups(hosts.a) == {"b1": "v1"}


def conflict(hosts: Hosts) -> None:
    hosts.agree({"same": "v1", "doc": "v1", "a-only": "v1"})
    write(hosts.a / "doc", "A's doc", T0 + 100)
    write(hosts.a / "a-only", "A", T0 + 100)
    write(hosts.b / "doc", "B's doc, later", T0 + 200)


def test_keep_both_same_file_keeps_a_conflict_copy_on_both_sides(hosts: Hosts) -> None:
    conflict(hosts)
    worker = hosts.run("keep-both")
    got = texts(hosts.a)
    assert got == texts(hosts.b)
    copies = [name for name in got if name.startswith("doc.tandem-conflict-host-a-")]
    assert len(copies) == 1, got
    assert got["doc"] == "B's doc, later" and got[copies[0]] == "A's doc"  # the newer wins the name
    assert got["a-only"] == "A" and got["same"] == "v1"
    time.sleep(1.5)  # the worker's own rename must not be replayed at DEST afterwards
    assert texts(hosts.a) == texts(hosts.b) == got
    assert worker.stop() == 0
    again = hosts.run("keep-both")  # and the next start finds nothing to decide
    assert texts(hosts.a) == texts(hosts.b) == got
    assert "both sides are the same" in again.err() or "no split-brain" in again.err() or again.stop() == 0


@pytest.mark.parametrize(
    ("policy", "expected", "lost_on", "lost"),
    [
        (
            "newest",
            {"same": "v1", "doc": "B's doc, later", "a-only": "v1"},
            "a",
            {"doc": "A's doc", "a-only": "A"},
        ),
        (
            "remote",
            {"same": "v1", "doc": "B's doc, later", "a-only": "v1"},
            "a",
            {"doc": "A's doc", "a-only": "A"},
        ),
        (
            "local",
            {"same": "v1", "doc": "A's doc", "a-only": "A"},
            "b",
            {"doc": "B's doc, later", "a-only": "v1"},  # everything the push overwrote on B
        ),
    ],
)
def test_whole_tree_policies_and_the_backup_restores_the_loser(
    hosts: Hosts, policy: str, expected: dict[str, str], lost_on: str, lost: dict[str, str]
) -> None:
    conflict(hosts)
    worker = hosts.run(policy)
    assert texts(hosts.a) == texts(hosts.b) == expected
    loser = hosts.a if lost_on == "a" else hosts.b
    assert hosts.backups(loser) == lost
    assert worker.stop() == 0
    # undo: the backup folder holds the losing side as it was
    backup = next((loser / ".tandem-backup").iterdir())
    for name in lost:
        shutil.copy2(backup / name, loser / name)
    assert {k: texts(loser)[k] for k in lost} == lost


def test_manual_halts_and_writes_the_diff(hosts: Hosts) -> None:
    conflict(hosts)
    before_a, before_b = texts(hosts.a), texts(hosts.b)
    worker = hosts.start("manual")
    assert worker.wait() == ExitCode.SAFETY_HALT
    assert "split-brain: 2 paths differ (1 conflicts)" in worker.err()
    assert texts(hosts.a) == before_a and texts(hosts.b) == before_b  # nothing touched
    report = hosts.report()
    assert report["ancestor"] is True and report["here"] == "host-a" and report["there"] == "host-b"
    assert {p["path"]: p["class"] for p in report["paths"]} == {"doc": "conflict", "a-only": "changed-here"}
    assert report["policies"]["newest"]["winner"] == "there"
    assert report["policies"]["keep-both"]["conflicts"][0]["path"] == "doc"
    hosts.run("keep-both")  # a decision applied later clears the report
    assert not (hosts.state / "report.json").exists()


def test_an_empty_side_halts_instead_of_wiping_the_other(hosts: Hosts) -> None:
    hosts.agree({"x": "v1", "d/y": "v1"})
    for child in hosts.a.iterdir():  # the volume is suddenly empty (not mounted)
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    worker = hosts.start("local")  # even the policy that would push the empty side
    assert worker.wait() == ExitCode.SAFETY_HALT
    assert "SOURCE is empty but DEST holds 3 entries" in worker.err()
    assert texts(hosts.b) == {"x": "v1", "d/y": "v1"}
    assert hosts.report()["halt"].startswith("split-brain safety halt")
    # the operator's override
    hosts.run("local", "--allow-empty")
    assert texts(hosts.b) == {}
    assert hosts.backups(hosts.b) == {"x": "v1", "d/y": "v1"}


def test_a_first_start_without_ancestor_uses_the_latest_mtime(hosts: Hosts) -> None:
    write(hosts.a / "old", "A", T0)
    hosts.b.mkdir()
    write(hosts.b / "new", "B", T0 + 500)  # B changed last: B wins the whole tree
    hosts.run("newest")
    assert texts(hosts.a) == texts(hosts.b) == {"new": "B"}
    assert hosts.backups(hosts.a) == {"old": "A"}


def test_a_configured_backup_folder(hosts: Hosts, tmp_path: Path) -> None:
    conflict(hosts)
    folder = tmp_path / "kept"  # the peer shares this filesystem: the same path on both sides
    hosts.run("remote", "--backup-dir", str(folder))
    assert texts(hosts.a) == texts(hosts.b) == {"same": "v1", "doc": "B's doc, later", "a-only": "v1"}
    assert not (hosts.a / ".tandem-backup").exists()
    (stamp,) = folder.iterdir()
    assert {p.name: p.read_text() for p in stamp.iterdir()} == {"doc": "A's doc", "a-only": "A"}
