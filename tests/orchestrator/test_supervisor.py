"""``tandem serve`` as a process, driven through the LXC hook (no daemon needed):
start, stop with flush, crash and restart, hang, halt, bad labels, shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, tree, wait_until
from tests.serve import lxc_hook, serve_fixture  # noqa: F401
from tests.sshpeer import SshPeer, running_peer

pytestmark = pytest.mark.real

ON = "tandem.enable=true"


def config(tmp_path: Path, extra: str = "") -> str:
    return f"""
heartbeat = 0.5
heartbeat_timeout = 4
restart_delay = 0.2
stop_timeout = 20
{extra}
[defaults]
dest = "{tmp_path}/dest/{{host}}/{{container}}/{{mount}}"
"""


def peer_config(peer: SshPeer, remote: Path, extra: str = "") -> str:
    """Settings that send every container to REMOTE on the ssh PEER."""
    return (
        f"heartbeat = 0.5\n{extra}rsh = {json.dumps(peer.rsh)}\n[defaults]\n"
        f"dest = {json.dumps(peer.dest(remote) + '/{host}/{container}/{mount}')}\ndelay = 0.2\n"
    )


def rootfs(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "lxc" / name / "rootfs"
    path.mkdir(parents=True)
    (path / "etc").mkdir()
    (path / "etc" / "hostname").write_text(name)
    return path


def dest(tmp_path: Path, name: str) -> Path:
    return tmp_path / "dest" / "h1" / name / "rootfs"


def args() -> tuple[str, ...]:
    return ("--no-docker", "--no-lxd", "--host", "h1")


def test_start_syncs_stop_flushes(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path), *args())
    s.wait_runtime("lxc")
    root = rootfs(tmp_path, "c1")
    lxc_hook(s.state_dir, "c1", "start-host", root, ON, "tandem.delay=60")
    s.wait_state("c1", "running")
    wait_until(lambda: tree(dest(tmp_path, "c1")) == tree(root), 10, "initial sync")
    (root / "late").write_text("pending in a 60 s window")
    time.sleep(0.3)
    assert not (dest(tmp_path, "c1") / "late").exists()
    lxc_hook(s.state_dir, "c1", "post-stop")
    worker = s.wait_state("c1", "stopped")
    assert worker["reason"] == "" and worker["pid"] is None
    assert tree(dest(tmp_path, "c1")) == tree(root)  # the final flush happened before "stopped"


def test_changes_arrive_within_a_second(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path), *args())
    s.wait_runtime("lxc")
    root = rootfs(tmp_path, "c1")
    lxc_hook(s.state_dir, "c1", "start-host", root, ON, "tandem.delay=0.2")
    s.wait_state("c1", "running")
    start = time.monotonic()
    (root / "new").write_text("x")
    wait_until(lambda: (dest(tmp_path, "c1") / "new").exists(), 5, "change synced")
    assert time.monotonic() - start < 2


def test_killed_worker_is_restarted_and_converges(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path), *args())
    s.wait_runtime("lxc")
    root = rootfs(tmp_path, "c1")
    lxc_hook(s.state_dir, "c1", "start-host", root, ON)
    first = s.wait_state("c1", "running")["pid"]
    os.kill(first, signal.SIGKILL)
    (root / "while-down").write_text("sent by the restarted worker's full sync")
    worker = wait_until(lambda: (w := s.worker("c1")).get("pid") not in (None, first) and w, 15, "restart")
    assert worker["restarts"] >= 1
    s.wait_state("c1", "running")
    wait_until(lambda: tree(dest(tmp_path, "c1")) == tree(root), 10, "converged")


def test_hung_worker_is_killed_and_restarted(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path), *args())
    s.wait_runtime("lxc")
    root = rootfs(tmp_path, "c1")
    lxc_hook(s.state_dir, "c1", "start-host", root, ON)
    first = s.wait_state("c1", "running")["pid"]
    os.kill(first, signal.SIGSTOP)
    try:
        wait_until(lambda: s.worker("c1").get("pid") not in (None, first), 20, "hung worker replaced")
    finally:
        with pytest.raises(ProcessLookupError):
            os.kill(first, signal.SIGCONT)  # it was killed
    s.wait_state("c1", "running")
    assert "hung" in s.log_tail(200)
    # SIGABRT (and SIGCONT) came before the KILL: where it hung is in its log
    assert "most recent call first" in s.worker_log("c1")


def test_a_second_stop_signal_cuts_the_flushes_short(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path, 'rsync_args = ["--bwlimit=200"]'), *args())
    s.wait_runtime("lxc")
    root = rootfs(tmp_path, "c1")
    lxc_hook(s.state_dir, "c1", "start-host", root, ON, "tandem.delay=60")
    s.wait_state("c1", "running")
    (root / "big").write_bytes(os.urandom(4 << 20))  # a 20 s flush at 200 KB/s
    time.sleep(0.3)
    assert s.proc is not None
    s.proc.send_signal(signal.SIGINT)
    s.wait_state("c1", "stopping")
    time.sleep(1.0)
    assert s.proc.poll() is None, "the first signal waits for the flush"
    start = time.monotonic()
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(15) == 0
    assert time.monotonic() - start < 5
    assert "second stop signal" in s.log_tail(50)
    assert "second stop signal: flush cut short" in s.worker_log("c1")


def test_safety_halt_is_not_restarted(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path), *args())
    s.wait_runtime("lxc")
    root = rootfs(tmp_path, "c1")
    lxc_hook(s.state_dir, "c1", "start-host", root, ON)
    s.wait_state("c1", "running")
    root.rename(tmp_path / "moved-away")
    worker = s.wait_state("c1", "halted")
    assert "safety halt" in worker["reason"]
    time.sleep(1.0)
    assert s.worker("c1")["state"] == "halted" and s.worker("c1")["restarts"] == 0


def test_bad_labels_fail_that_container_only(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path), *args())
    s.wait_runtime("lxc")
    good, bad = rootfs(tmp_path, "good"), rootfs(tmp_path, "bad")
    lxc_hook(s.state_dir, "bad", "start-host", bad, ON, "tandem.delay=soon")
    lxc_hook(s.state_dir, "good", "start-host", good, ON)
    worker = s.wait_state("bad", "failed")
    assert "tandem.delay" in worker["reason"]
    s.wait_state("good", "running")
    wait_until(lambda: tree(dest(tmp_path, "good")) == tree(good), 10, "good synced")
    assert not dest(tmp_path, "bad").exists()


def test_not_opted_in_is_not_synced(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path), *args())
    s.wait_runtime("lxc")
    lxc_hook(s.state_dir, "quiet", "start-host", rootfs(tmp_path, "quiet"))
    lxc_hook(s.state_dir, "on", "start-host", rootfs(tmp_path, "on"), ON)
    s.wait_state("on", "running")
    assert s.worker("quiet") == {}


def test_sigterm_flushes_every_worker_and_exits_0(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path), *args())
    s.wait_runtime("lxc")
    roots = {n: rootfs(tmp_path, n) for n in ("a", "b")}
    for name, root in roots.items():
        lxc_hook(s.state_dir, name, "start-host", root, ON, "tandem.delay=60")
    for name in roots:
        s.wait_state(name, "running")
    pids = s.worker_pids()
    assert len(pids) == 2
    for root in roots.values():
        (root / "pending").write_text("only the stop flush sends this")
    time.sleep(0.3)
    assert s.stop() == 0
    for name, root in roots.items():
        assert tree(dest(tmp_path, name)) == tree(root)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_config_rules_enable_by_name(tmp_path: Path, serve) -> None:
    rules = '[[rules]]\nmatch = "db-*"\nenable = true\ndelay = 0.1\n'
    s = serve(config(tmp_path) + rules, *args())
    s.wait_runtime("lxc")
    lxc_hook(s.state_dir, "db-1", "start-host", rootfs(tmp_path, "db-1"))
    lxc_hook(s.state_dir, "web-1", "start-host", rootfs(tmp_path, "web-1"))
    s.wait_state("db-1", "running")
    assert s.worker("web-1") == {}


def test_second_supervisor_on_one_state_dir_is_refused(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path), *args())
    s.wait_runtime("lxc")
    other = serve(config(tmp_path), *args(), state_dir=s.state_dir)
    assert other.proc.wait(20) == 2
    assert "another tandem serve" in other.log_tail()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("heartbeat = -1\n", "heartbeat"),
        ("nonsense = 1\n", "nonsense"),
        ("[defaults]\ndelay = 'x'\n", "defaults.delay"),
        ("[[rules]]\nenable = true\n", "rules.0.match"),
        ("this is not toml", "tandem.toml"),
    ],
)
def test_bad_config_is_refused_clearly(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tandem.toml"
    path.write_text(text)
    argv = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "serve",
        "--config",
        str(path),
        "--state-dir",
        str(tmp_path / "s"),
    ]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "s").exists()


def test_inotify_budget_warns_and_a_degraded_worker_is_reported(tmp_path: Path, serve) -> None:
    from tests.workers.test_inotify_limits import sysctl

    s = serve(config(tmp_path, "inotify_warn = 0.00001"), *args())
    s.wait_runtime("lxc")
    root = rootfs(tmp_path, "c1")
    lxc_hook(s.state_dir, "c1", "start-host", root, ON)
    s.wait_state("c1", "running")

    def warnings() -> list[str]:
        return list(s.state().get("inotify", {}).get("warnings", []))

    wait_until(lambda: any("max_user_watches" in w for w in warnings()), 15, "budget warning")
    assert s.state()["inotify"]["watches"] >= 2  # rootfs and rootfs/etc
    with sysctl("max_user_watches", 1):
        lxc_hook(s.state_dir, "c2", "start-host", rootfs(tmp_path, "c2"), ON)
        s.wait_state("c2", "running")
    pair = s.worker("c2")["pairs"][0]
    assert "periodic" in pair["degraded"] or "watch" in pair["degraded"], pair
    wait_until(lambda: any(w.startswith("c2/rootfs:") for w in warnings()), 15, "degraded warning")
    wait_until(
        lambda: tree(dest(tmp_path, "c2")) == tree(tmp_path / "lxc" / "c2" / "rootfs"), 10, "synced anyway"
    )


@pytest.mark.ssh
def test_ssh_peer_destination(tmp_path: Path, serve) -> None:
    with running_peer() as peer:
        remote = tmp_path / "peer"
        s = serve(peer_config(peer, remote), *args())
        s.wait_runtime("lxc")
        root = rootfs(tmp_path, "c1")
        lxc_hook(s.state_dir, "c1", "start-host", root, ON)
        s.wait_state("c1", "running")
        (root / "etc" / "new.conf").write_text("to the peer")
        target = remote / "h1" / "c1" / "rootfs"  # the peer shares our filesystem, not our network
        wait_until(lambda: tree(target) == tree(root), 15, "synced to the ssh peer")
        (root / "etc" / "hostname").unlink()
        lxc_hook(s.state_dir, "c1", "post-stop")
        s.wait_state("c1", "stopped")
        assert tree(target) == tree(root)
        assert s.stop() == 0
