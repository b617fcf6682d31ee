"""The soak for CI: 20 containers on the real dockerd and LXD started and stopped
at random for 2 minutes under random file operations; at every stop DEST equals
SOURCE (``bench.soak``, the same code as ``python -m bench.soak``).

Every operation kind is on, also in a container's first moments, before its
worker watches and while its split-brain check runs. Besides nothing lost, the
split-brain checks must take nothing from DEST (nothing but tandem writes DEST
here), DEST's mtimes must equal SOURCE's, and the ancestor saved at each stop
must hold DEST as it is (a gap is what a later check takes for a change there).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench import soak
from tests.dockerd import DockerDaemon, dockerd_fixture, fresh_docker_fixture  # noqa: F401
from tests.lxd import LxdDaemon, fresh_lxd_fixture, lxd_fixture  # noqa: F401

pytestmark = [pytest.mark.faults, pytest.mark.real, pytest.mark.docker, pytest.mark.lxd]

DURATION = 120.0  # CI's two minutes
CONTAINERS = 20


@pytest.mark.timeout(900)
def test_soak_nothing_lost(tmp_path: Path, fresh_docker: DockerDaemon, fresh_lxd: LxdDaemon) -> None:
    seed = int(os.environ.get("TANDEM_SOAK_SEED") or time.time() % 100000)
    config = soak.Config(
        containers=CONTAINERS,
        duration=DURATION,
        seed=seed,
        progress=print,
    )
    result = soak.run(fresh_docker, fresh_lxd, tmp_path, config)
    report = soak.summary(result)
    print(report)
    assert result.lost == 0 and result.stale == 0 and result.reverted == 0, report
    assert result.pulled == 0 and result.drift == 0 and result.ancestor_gaps == 0, report
    assert not result.anomalies and result.supervisor_exit == 0, report
    assert (result.docker, result.lxd) == (CONTAINERS // 2, CONTAINERS // 2)
    assert result.stops >= 2 * CONTAINERS, report  # each container cycled twice on average
    assert result.comparisons >= result.stops, report
    assert result.ops_total >= 10 * DURATION, report  # the rate is 20/s; exec calls take time
    kinds = (
        "rename-file",
        "rename-dir",
        "delete-tree",
        "symlink",
        "hardlink",
        "write-linked",
        "same-second",
        "overwrite-same-mtime",
        "exec-rename",
        "log-rotate",
        "save-atomic",
        "save-vim",
        "save-emacs",
    )
    assert all(result.ops[kind] for kind in kinds), report
    assert result.syncs > result.stops, report
    assert result.rss_supervisor_kb > 0 and result.rss_workers_kb > 0 and result.cpu_seconds > 0, report
