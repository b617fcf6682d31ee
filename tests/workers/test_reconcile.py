"""reconcile.resolve on real trees with real rsync: a change the container makes
while the check runs is never undone by the pull that follows."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from workers import reconcile
from workers import rules as rules_mod
from workers.snapshot import scan_local
from workers.spec import WorkerSpec
from workers.transfer import make_handler

pytestmark = pytest.mark.real

T0 = 1_700_000_000.0


def write(path: Path, text: str, mtime: float) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def backups(root: Path) -> dict[str, str]:
    """What ROOT/.tandem-backup/STAMP/ holds: path below STAMP -> text."""
    return {
        "/".join(p.relative_to(root / ".tandem-backup").parts[1:]): p.read_text()
        for p in (root / ".tandem-backup").rglob("*")
        if p.is_file()
    }


def test_changes_during_the_check_are_neither_pulled_over_nor_lost(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    dst.mkdir()
    for name in ("doc", "other"):
        write(src / name, "SOURCE's old", T0)
    write(src / "d" / "x", "SOURCE's", T0)
    ancestor = reconcile.without_backups(scan_local(str(src)), lambda _p, _d: True)  # both had this
    for name in ("doc", "other"):
        write(dst / name, "DEST's newer", T0 + 100)  # since then DEST changed these and deleted d
    spec = WorkerSpec(source=str(src), dest=str(dst), split_brain="newest")
    calls = []

    def deadline() -> None:  # called per entry of DEST's scan, after SOURCE's
        if not calls:  # the container, during the check:
            (src / "doc").write_text("the container's, during the check")
            (src / "d" / "new").write_text("made during the check")
        calls.append(1)

    summary = reconcile.resolve(
        spec, make_handler(spec), str(src), rules_mod.load(None, (), ()), ancestor, deadline, time.time()
    )
    assert calls, "DEST's scan ran"
    assert "0 paths to DEST" in summary  # by the decision only DEST changed
    assert (src / "doc").read_text() == "the container's, during the check"  # not undone,
    assert (dst / "doc").read_text() == "the container's, during the check"  # sent at once,
    assert backups(dst) == {"doc": "DEST's newer"}  # and what it overwrote at DEST is kept
    assert (src / "other").read_text() == "DEST's newer"  # the rest of the decision holds
    assert (src / "d" / "new").read_text() == "made during the check"  # d is kept for it
    assert not (src / "d" / "x").exists()  # while DEST's deletion of x holds
    assert backups(src) == {"other": "SOURCE's old", "d/x": "SOURCE's"}
