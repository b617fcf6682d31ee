"""``tandem serve`` against a real dockerd: labelled containers are synced for as
long as they run; stop flushes; the supervisor survives SIGKILL without
duplicating a worker; a killed worker comes back; dockerd restarts are followed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import tree, wait_until
from tests.dockerd import DockerDaemon, dockerd_fixture, fresh_docker_fixture  # noqa: F401
from tests.serve import Serve, serve_fixture  # noqa: F401

pytestmark = [pytest.mark.real, pytest.mark.docker]

ON = {"tandem.enable": "true"}


def start(tmp_path: Path, serve, daemon: DockerDaemon) -> Serve:
    conf = f"""
heartbeat = 0.5
heartbeat_timeout = 5
restart_delay = 0.2
[defaults]
dest = "{tmp_path}/dest/{{host}}/{{container}}/{{mount}}"
"""
    s = serve(conf, "--no-lxd", "--host", "h1", env={"DOCKER_HOST": daemon.host})
    s.wait_runtime("docker")
    return s


def dest(tmp_path: Path, container: str, mount: str = "data") -> Path:
    return tmp_path / "dest" / "h1" / container / mount


def test_volume_synced_and_stop_flushes(tmp_path: Path, serve, fresh_docker: DockerDaemon) -> None:
    s = start(tmp_path, serve, fresh_docker)
    bind = tmp_path / "bind"
    bind.mkdir()
    (bind / "conf").write_text("bound")
    web = fresh_docker.run(
        "web", volumes=["webdata:/data", f"{bind}:/etc/app"], labels={**ON, "tandem.delay": "60"}
    )
    worker = s.wait_state("web", "running")
    assert sorted(p["label"] for p in worker["pairs"]) == ["web/data", "web/etc-app"]
    assert tree(dest(tmp_path, "web", "etc-app")) == tree(bind)
    fresh_docker.exec(web, "sh -c 'echo hello > /data/greeting'")
    time.sleep(0.5)
    assert not (dest(tmp_path, "web") / "greeting").exists()  # a 60 s window: only the stop flush sends it
    web.stop(timeout=10)
    s.wait_state("web", "stopped")
    assert (dest(tmp_path, "web") / "greeting").read_text() == "hello\n"
    assert tree(dest(tmp_path, "web")) == tree(fresh_docker.volume("webdata"))


def test_start_to_first_byte_and_destroy_keeps_data(
    tmp_path: Path, serve, fresh_docker: DockerDaemon
) -> None:
    s = start(tmp_path, serve, fresh_docker)
    app = fresh_docker.run(
        "app",
        volumes=["appdata:/data"],
        labels={**ON, "tandem.delay": "0.1"},
        command=("sh", "-c", "echo first > /data/f; sleep 3600"),
    )
    wait_until(lambda: (dest(tmp_path, "app") / "f").exists(), 10, "first byte at DEST")
    fresh_docker.exec(app, "sh -c 'echo more > /data/g'")
    wait_until(lambda: (dest(tmp_path, "app") / "g").exists(), 5, "a change synced")
    app.remove(force=True)
    s.wait_gone("app")
    assert (dest(tmp_path, "app") / "f").read_text() == "first\n"  # destination data kept


def test_not_labelled_and_bad_labels(tmp_path: Path, serve, fresh_docker: DockerDaemon) -> None:
    s = start(tmp_path, serve, fresh_docker)
    fresh_docker.run("plain", volumes=["plaindata:/data"])
    fresh_docker.run("typo", volumes=["typodata:/data"], labels={**ON, "tandem.dets": "/x"})
    fresh_docker.run("good", volumes=["gooddata:/data"], labels=ON)
    assert "unknown label 'tandem.dets'" in s.wait_state("typo", "failed")["reason"]
    s.wait_state("good", "running")
    assert s.worker("plain") == {}


def test_supervisor_sigkill_then_restart_adopts_without_duplicates(
    tmp_path: Path,
    serve,
    fresh_docker: DockerDaemon,
) -> None:
    s = start(tmp_path, serve, fresh_docker)
    c1 = fresh_docker.run("c1", volumes=["c1data:/data"], labels={**ON, "tandem.delay": "60"})
    fresh_docker.run("c2", volumes=["c2data:/data"], labels=ON)
    first = {s.wait_state(n, "running")["pid"] for n in ("c1", "c2")}
    fresh_docker.exec(c1, "sh -c 'echo pending > /data/p'")
    time.sleep(0.3)
    s.kill()
    # The orphaned workers flush (their parent is gone) and exit: none is left behind.
    wait_until(lambda: not (first & s.worker_pids()), 20, "orphaned workers gone")
    assert (dest(tmp_path, "c1") / "p").read_text() == "pending\n"
    s.start()
    s.wait_runtime("docker")
    second = {s.wait_state(n, "running")["pid"] for n in ("c1", "c2")}
    assert not (second & first) and s.worker_pids() == second
    time.sleep(1.5)  # a later listing or event must not add a second worker
    assert s.worker_pids() == second


def test_killed_worker_restarts_and_converges(tmp_path: Path, serve, fresh_docker: DockerDaemon) -> None:
    s = start(tmp_path, serve, fresh_docker)
    c = fresh_docker.run("cc", volumes=["cdata:/data"], labels={**ON, "tandem.delay": "0.1"})
    pid = s.wait_state("cc", "running")["pid"]
    os.kill(pid, signal.SIGKILL)
    fresh_docker.exec(c, "sh -c 'echo while-down > /data/w'")
    wait_until(lambda: s.worker("cc").get("pid") not in (None, pid), 15, "a new worker")
    s.wait_state("cc", "running")
    wait_until(lambda: tree(dest(tmp_path, "cc")) == tree(fresh_docker.volume("cdata")), 10, "converged")
    assert s.worker("cc")["restarts"] == 1


def test_dockerd_restart_is_followed(tmp_path: Path, serve, fresh_docker: DockerDaemon) -> None:
    s = start(tmp_path, serve, fresh_docker)
    c = fresh_docker.run("cc", volumes=["cdata:/data"], labels=ON)
    s.wait_state("cc", "running")
    fresh_docker.restart()  # stops its containers: the worker flushes and stops
    s.wait_state("cc", "stopped", timeout=30)
    s.wait_runtime("docker")
    c.reload()
    c.start()
    s.wait_state("cc", "running", timeout=30)
    fresh_docker.exec(c, "sh -c 'echo after > /data/after'")
    wait_until(lambda: (dest(tmp_path, "cc") / "after").exists(), 10, "synced after the reconnect")


def test_sigterm_stops_all_workers_with_a_flush(tmp_path: Path, serve, fresh_docker: DockerDaemon) -> None:
    s = start(tmp_path, serve, fresh_docker)
    c = fresh_docker.run("cc", volumes=["cdata:/data"], labels={**ON, "tandem.delay": "60"})
    s.wait_state("cc", "running")
    fresh_docker.exec(c, "sh -c 'echo last > /data/last'")
    time.sleep(0.3)
    assert s.stop() == 0
    assert (dest(tmp_path, "cc") / "last").read_text() == "last\n"
    assert s.worker_pids() == set()


def test_container_that_exits_at_once_leaves_no_worker(
    tmp_path: Path, serve, fresh_docker: DockerDaemon
) -> None:
    s = start(tmp_path, serve, fresh_docker)
    fresh_docker.run(
        "brief", volumes=["briefdata:/data"], labels=ON, command=("sh", "-c", "echo x > /data/x")
    )
    wait_until(lambda: s.worker("brief").get("state") == "stopped", 15, "stopped soon, not after a kill")
    assert s.worker("brief")["reason"] == ""
    assert s.worker_pids() == set()


def test_rename_moves_the_worker_without_two_at_once(
    tmp_path: Path, serve, fresh_docker: DockerDaemon
) -> None:
    s = start(tmp_path, serve, fresh_docker)
    old = fresh_docker.run("old", volumes=["olddata:/data"], labels={**ON, "tandem.delay": "0.1"})
    first = s.wait_state("old", "running")["pid"]
    old.rename("new")
    second = s.wait_state("new", "running")["pid"]
    assert second != first and s.worker("old") == {}
    assert s.worker_pids() == {second}
    fresh_docker.exec(old, "sh -c 'echo renamed > /data/r'")
    wait_until(lambda: (dest(tmp_path, "new") / "r").exists(), 10, "synced under the new name")


def test_api_steers_real_docker_containers(tmp_path: Path, serve, fresh_docker: DockerDaemon) -> None:
    """The REST API and the CLI over real Docker containers: a policy enables an
    unlabelled one, pause holds a write made inside it, the stop flush sends it."""
    import httpx

    from tests.orchestrator.test_commands import ok

    s = start(tmp_path, serve, fresh_docker)
    url = s.url()
    web = fresh_docker.run("web", volumes=["webdata:/data"], labels={**ON, "tandem.delay": "0.2"})
    plain = fresh_docker.run("plain", volumes=["plaindata:/data"])
    fresh_docker.exec(plain, "sh -c 'echo before > /data/before'")
    with httpx.Client(base_url=url, timeout=10) as client:
        wait_until(lambda: client.get("/workers/web").json().get("state") == "running", 20, "web running")
        worker = client.get("/workers/web").json()
        assert worker["runtime"] == "docker" and worker["sources"] == [str(fresh_docker.volume("webdata"))]
        assert client.get("/workers/plain").status_code == 404
        put = client.put("/containers/plain/policy", json={"enable": True, "delay": 0.2})
        assert put.status_code == 200, put.text
        wait_until(lambda: (dest(tmp_path, "plain") / "before").exists(), 20, "plain enabled by policy")
        assert ok("pause", "web", url=url).strip() == "web: paused"
        s.wait_state("web", "standby")
        fresh_docker.exec(web, "sh -c 'echo held > /data/held'")
        time.sleep(1)
        assert not (dest(tmp_path, "web") / "held").exists()
        ok("resume", "web", url=url)
        wait_until(lambda: (dest(tmp_path, "web") / "held").exists(), 10, "sent on resume")
        assert "web" in ok("status", url=url) and "plain" in ok("status", url=url)
        fresh_docker.exec(plain, "sh -c 'echo last > /data/last'")
        plain.stop(timeout=10)
        s.wait_state("plain", "stopped")
        assert (dest(tmp_path, "plain") / "last").read_text() == "last\n"
        metrics = client.get("/metrics").text
        assert 'tandem_worker_state{container="web",state="running"} 1.0' in metrics
        assert 'tandem_runtime_connected{runtime="docker"} 1.0' in metrics
