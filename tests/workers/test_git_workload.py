"""Issue 14, item 2, CI-sized: a git session under a live worker (``bench.git_workload``).

A git repository of 1 500 files copied from the Python standard library and
Debian's Python packages; with ``tandem sync --delay 1`` running: add and
commit, renames, half the files deleted, edits and additions on branches, quick
checkouts, ``git gc --aggressive``, ``git repack -ad``; SIGTERM as soon as the
last command ends. The scanning batcher and the loop that drained its whole
inbox first went silent here for tens of seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.git_workload import TREES, run

pytestmark = pytest.mark.real


@pytest.mark.timeout(240)
def test_a_git_session_keeps_the_worker_heartbeating_and_ends_identical(tmp_path: Path) -> None:
    figures = run(list(TREES), tmp_path, limit=1_500, scale=0.3, stop_at_once=True, stop_timeout=30.0)
    assert figures.files == 1_500
    assert figures.exit_code == 0, figures
    assert figures.equal, figures  # content, modes and links
    assert figures.max_line_gap < 4.0, figures  # heartbeats every 1 s, batches or not
    assert figures.max_sync_gap < 10.0, figures
    assert figures.max_lag < 15.0, figures
    assert figures.stop < 30.0, figures
