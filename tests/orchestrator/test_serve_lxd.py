"""``tandem serve`` against a real LXD: a container with ``user.tandem.*`` keys is
synced (root filesystem and custom volume, uids kept by number) for as long as
it runs; stop flushes; supervisor SIGKILL and LXD restarts never duplicate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import tree, wait_until
from tests.lxd import LxdDaemon, fresh_lxd_fixture, lxd_fixture  # noqa: F401
from tests.serve import Serve, serve_fixture  # noqa: F401

pytestmark = [pytest.mark.real, pytest.mark.lxd]


def start(tmp_path: Path, serve) -> Serve:
    conf = f"""
heartbeat = 0.5
heartbeat_timeout = 5
restart_delay = 0.2
[defaults]
dest = "{tmp_path}/dest/{{host}}/{{container}}/{{mount}}"
"""
    s = serve(conf, "--no-docker", "--host", "h1")
    s.wait_runtime("lxd")
    return s


def dest(tmp_path: Path, container: str, mount: str) -> Path:
    return tmp_path / "dest" / "h1" / container / mount


def test_rootfs_and_volume_synced_stop_flushes(tmp_path: Path, serve, fresh_lxd: LxdDaemon) -> None:
    s = start(tmp_path, serve)
    fresh_lxd.create_volume("tt-vol")
    fresh_lxd.launch("tt-db", {"user.tandem.enable": "true", "user.tandem.delay": "60"}, {"tt-vol": "/data"})
    worker = s.wait_state("tt-db", "running")
    assert sorted(p["label"] for p in worker["pairs"]) == ["tt-db/data", "tt-db/rootfs"]
    wait_until(
        lambda: tree(dest(tmp_path, "tt-db", "rootfs")) == tree(fresh_lxd.rootfs("tt-db")), 15, "rootfs"
    )
    fresh_lxd.exec("tt-db", "echo row > /data/table; echo conf > /etc/app.conf")
    time.sleep(0.5)
    assert not (dest(tmp_path, "tt-db", "data") / "table").exists()  # 60 s window
    fresh_lxd.stop("tt-db")
    s.wait_state("tt-db", "stopped")
    table = dest(tmp_path, "tt-db", "data") / "table"
    assert table.read_text() == "row\n"
    assert table.stat().st_uid == (fresh_lxd.volume_path("tt-vol") / "table").stat().st_uid >= 100000
    assert (dest(tmp_path, "tt-db", "rootfs") / "etc" / "app.conf").read_text() == "conf\n"
    assert tree(dest(tmp_path, "tt-db", "data")) == tree(fresh_lxd.volume_path("tt-vol"))


def test_changes_synced_and_delete_keeps_destination(tmp_path: Path, serve, fresh_lxd: LxdDaemon) -> None:
    s = start(tmp_path, serve)
    fresh_lxd.launch("tt-web", {"user.tandem.enable": "true", "user.tandem.delay": "0.1"})
    s.wait_state("tt-web", "running")
    fresh_lxd.exec("tt-web", "mkdir -p /srv && echo page > /srv/index.html")
    wait_until(lambda: (dest(tmp_path, "tt-web", "rootfs") / "srv" / "index.html").exists(), 10, "synced")
    fresh_lxd.delete("tt-web")
    s.wait_gone("tt-web")
    assert (dest(tmp_path, "tt-web", "rootfs") / "srv" / "index.html").read_text() == "page\n"


def test_bad_key_fails_that_container(tmp_path: Path, serve, fresh_lxd: LxdDaemon) -> None:
    s = start(tmp_path, serve)
    fresh_lxd.launch("tt-bad", {"user.tandem.enable": "true", "user.tandem.paths": "/nowhere"})
    assert "/nowhere not a mount of tt-bad" in s.wait_state("tt-bad", "failed")["reason"]


def test_supervisor_sigkill_and_lxd_restart_never_duplicate(
    tmp_path: Path, serve, fresh_lxd: LxdDaemon
) -> None:
    s = start(tmp_path, serve)
    fresh_lxd.launch("tt-a", {"user.tandem.enable": "true", "user.tandem.delay": "0.1"})
    first = s.wait_state("tt-a", "running")["pid"]
    s.kill()
    wait_until(lambda: first not in s.worker_pids(), 20, "orphaned worker gone")
    s.start()
    s.wait_runtime("lxd")
    second = s.wait_state("tt-a", "running")["pid"]
    assert second != first and s.worker_pids() == {second}
    # LXD restarted under a running container: the worker goes on, no second one.
    fresh_lxd.restart(keep_containers=True)
    time.sleep(1.0)
    s.wait_runtime("lxd")
    assert s.worker("tt-a")["pid"] == second and s.worker_pids() == {second}
    fresh_lxd.exec("tt-a", "echo after > /root/after")
    wait_until(lambda: (dest(tmp_path, "tt-a", "rootfs") / "root" / "after").exists(), 10, "synced")


def test_halt_survives_a_reconnect_listing(tmp_path: Path, serve, fresh_lxd: LxdDaemon) -> None:
    s = start(tmp_path, serve)
    volume = fresh_lxd.create_volume("tt-hv")
    fresh_lxd.launch("tt-h", {"user.tandem.enable": "true"}, {"tt-hv": "/data"})
    s.wait_state("tt-h", "running")
    aside = volume.with_name(volume.name + "-aside")
    volume.rename(aside)  # the source vanishes under the worker: a safety halt
    try:
        assert "safety halt" in s.wait_state("tt-h", "halted")["reason"]
        fresh_lxd.restart(keep_containers=True)  # the reconnect lists tt-h as running
        time.sleep(3)
        s.wait_runtime("lxd")
        time.sleep(1)
        assert s.worker("tt-h")["state"] == "halted" and s.worker_pids() == set()
    finally:
        aside.rename(volume)
