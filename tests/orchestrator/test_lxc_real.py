"""Plain LXC for real: a busybox container whose hooks call ``tandem lxc-hook``."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, tree, wait_until
from tests.serve import serve_fixture  # noqa: F401

pytestmark = [pytest.mark.real, pytest.mark.lxd]

TANDEM = ROOT / ".venv" / "bin" / "tandem"


def lxc(*argv: str, timeout: float = 60) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"
    return result.stdout


class Plain:
    def __init__(self, lxcpath: Path, name: str, state_dir: Path) -> None:
        self.p, self.name = str(lxcpath), name
        if shutil.which("lxc-create") is None:
            pytest.fail("lxc-create not found (apt-get install -y lxc)")
        lxc("lxc-create", "-P", self.p, "-n", name, "-t", "busybox")
        config = lxcpath / name / "config"
        kept = [
            line
            for line in config.read_text().splitlines()
            if not line.startswith(("lxc.net.", "lxc.apparmor."))
        ]
        kept += [
            "lxc.net.0.type = empty",
            "lxc.apparmor.profile = unconfined",
            f"lxc.hook.start-host = {TANDEM} lxc-hook --state-dir {state_dir} --label tandem.enable=true",
            f"lxc.hook.post-stop = {TANDEM} lxc-hook --state-dir {state_dir}",
        ]
        config.write_text("\n".join(kept) + "\n")
        self.rootfs = lxcpath / name / "rootfs"

    def start(self) -> None:
        lxc("lxc-start", "-P", self.p, "-n", self.name)

    def stop(self) -> None:
        lxc("lxc-stop", "-P", self.p, "-n", self.name)

    def sh(self, script: str) -> None:
        lxc("lxc-attach", "-P", self.p, "-n", self.name, "--", "sh", "-c", script)

    def destroy(self) -> None:
        subprocess.run(
            ["lxc-stop", "-P", self.p, "-n", self.name, "-k"], capture_output=True, timeout=30, check=False
        )
        subprocess.run(
            ["lxc-destroy", "-P", self.p, "-n", self.name], capture_output=True, timeout=30, check=False
        )


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Plain]:
    container = Plain(tmp_path / "lxc", "tplain", tmp_path / "state0")
    yield container
    container.destroy()


def test_plain_lxc_start_sync_adopt_stop(tmp_path: Path, plain: Plain, serve) -> None:
    conf = f'heartbeat = 0.5\n[defaults]\ndest = "{tmp_path}/dest/{{container}}"\ndelay = 0.2\n'
    s = serve(conf, "--no-docker", "--no-lxd")
    s.wait_runtime("lxc")
    dest = tmp_path / "dest" / "tplain"
    plain.start()
    first = s.wait_state("tplain", "running")["pid"]
    plain.sh("echo hello > /root/greeting")
    wait_until(lambda: (dest / "root" / "greeting").exists(), 10, "file written inside reached DEST")

    # A supervisor killed and started again adopts the running container: one worker.
    s.kill()
    wait_until(lambda: first not in s.worker_pids(), 20, "orphaned worker flushed and exited")
    s.start()
    second = s.wait_state("tplain", "running")["pid"]
    assert second != first and s.worker_pids() == {second}
    plain.sh("echo more > /root/more")
    wait_until(lambda: (dest / "root" / "more").exists(), 10, "synced after adoption")

    plain.stop()
    s.wait_state("tplain", "stopped")
    assert tree(dest) == tree(plain.rootfs)
