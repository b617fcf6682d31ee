"""The example systemd unit: systemd's own checker accepts it without a warning,
and it gives the workers' final flush the time and the signal it needs."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.lifecycle import Timing
from orchestrator.settings import Settings

pytestmark = pytest.mark.deploy

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "tandem.service"
INSTALLED = "/opt/tandem/bin/tandem"


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze verify, with ExecStart pointed at this venv's tandem (it
    checks that the program exists); any message at all fails the test."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: apt-get install -y systemd")
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} serve" in text
    unit = tmp_path / "tandem.service"
    unit.write_text(text.replace(INSTALLED, str(Path(sys.executable).parent / "tandem")))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr


def test_stop_signals_only_the_supervisor_and_waits_for_the_flush() -> None:
    unit = service()
    # control-group would SIGTERM the workers' rsync runs along with tandem serve.
    assert unit["KillMode"] == "mixed"
    flush = Settings.model_fields["stop_timeout"].default + Timing().kill_grace
    assert float(unit["TimeoutStopSec"]) >= flush + 5
    assert unit["RestartPreventExitStatus"] == "2"  # a bad config is not retried
