"""reconcile.resolve on real trees with real rsync: a change the container makes
while the check runs is never undone by the pull that follows."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from workers import reconcile
from workers import rules as rules_mod
from workers.spec import WorkerSpec
from workers.transfer import make_handler

pytestmark = pytest.mark.real

T0 = 1_700_000_000.0


def write(path: Path, text: str, mtime: float) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_a_write_during_the_check_is_not_pulled_over(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for name in ("doc", "other"):
        write(src / name, "SOURCE's old", T0)
        write(dst / name, "DEST's newer", T0 + 100)  # newest: DEST wins both
    spec = WorkerSpec(source=str(src), dest=str(dst), split_brain="newest")
    calls = []

    def deadline() -> None:  # called per entry of DEST's scan, after SOURCE's
        if not calls:
            (src / "doc").write_text("the container's, during the check")
        calls.append(1)

    summary = reconcile.resolve(
        spec, make_handler(spec), str(src), rules_mod.load(None, (), ()), None, deadline, time.time()
    )
    assert calls, "DEST's scan ran"
    assert "there wins" in summary
    assert (src / "doc").read_text() == "the container's, during the check"  # not undone
    assert (src / "other").read_text() == "DEST's newer"  # the rest of the decision holds
    backups = [p.name for p in (src / ".tandem-backup").rglob("*") if p.is_file()]
    assert backups == ["other"]
