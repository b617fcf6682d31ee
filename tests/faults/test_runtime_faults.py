"""Faults of processes and daemons while files keep changing, each ending with
DEST equal to SOURCE by content hash and nothing lost: a worker SIGKILLed in the
middle of an rsync run, the supervisor SIGKILLed while its workers run, dockerd
and LXD restarted, 30 000 files created at once in one container (an inotify
queue overflow) while another keeps syncing, and a container stopped while its
worker is in the initial sync. Real tandem serve, real dockerd and LXD."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from docker.models.containers import Container

from tests.conftest import wait_until
from tests.dockerd import IMAGE, DockerDaemon, dockerd_fixture, fresh_docker_fixture  # noqa: F401
from tests.faults.churn import Churn
from tests.faults.compare import compare, wait_equal
from tests.lxd import LxdDaemon, fresh_lxd_fixture, lxd_fixture  # noqa: F401
from tests.serve import Serve, serve_fixture  # noqa: F401
from tests.workers.test_inotify_limits import sysctl

pytestmark = [pytest.mark.faults, pytest.mark.real]

ON = {"tandem.enable": "true", "tandem.delay": "0.2"}


def config(tmp_path: Path, extra: str = "") -> str:
    dest = json.dumps(f"{tmp_path}/dest/{{host}}/{{container}}/{{mount}}")
    return f"heartbeat = 0.5\nheartbeat_timeout = 10\nrestart_delay = 0.2\n{extra}[defaults]\ndest = {dest}\n"


def dest(tmp_path: Path, container: str, mount: str = "data") -> Path:
    return tmp_path / "dest" / "h1" / container / mount


def serve_docker(tmp_path: Path, serve, daemon: DockerDaemon, extra: str = "", **kw) -> Serve:
    s = serve(config(tmp_path, extra), "--no-lxd", "--host", "h1", env={"DOCKER_HOST": daemon.host}, **kw)
    s.wait_runtime("docker")
    return s


def run(daemon: DockerDaemon, name: str, labels: dict[str, str] = ON, **kw) -> Container:
    """A container of the tiny image with a volume NAMEdata at /data."""
    container: Container = daemon.client.containers.run(
        IMAGE,
        ["/bin/sleep", "3600"],
        name=name,
        detach=True,
        init=True,
        volumes=[f"{name}data:/data"],
        labels=labels,
        **kw,
    )
    return container


def api(s: Serve, name: str) -> dict:
    worker: dict = httpx.get(f"{s.url()}/workers/{name}", timeout=10).json()
    return worker


def rsync_children(pid: int) -> list[int]:
    """rsync processes started by worker PID (in sessions of their own: by ppid)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid == pid and name == "rsync":
                found.append(int(entry))
    return found


def report(what: str, churn: Churn | None, loss: object, **facts: object) -> None:
    ops = f"{churn.total} operations" if churn else "no churn"
    print(f"{what}: {ops}; {facts}; {loss}")


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_worker_sigkilled_in_the_middle_of_an_rsync_run(
    tmp_path: Path, serve, fresh_docker: DockerDaemon
) -> None:
    s = serve_docker(tmp_path, serve, fresh_docker, 'rsync_args = ["--bwlimit=4m"]\n')
    run(fresh_docker, "web")
    worker = s.wait_state("web", "running")
    src = fresh_docker.volume("webdata")
    with Churn(src, seed=3) as churn:
        (src / "big").write_bytes(os.urandom(24 << 20))  # ~6 s at 4 MB/s
        wait_until(lambda: rsync_children(worker["pid"]), timeout=20, what="an rsync run")
        time.sleep(1)  # in the middle of it
        os.kill(worker["pid"], signal.SIGKILL)
        again = wait_until(
            lambda: (w := s.worker("web")).get("state") == "running" and w.get("pid") != worker["pid"] and w,
            timeout=30,
            what="the restarted worker",
        )
        time.sleep(2)
    loss = wait_equal(src, dest(tmp_path, "web"), timeout=90)
    report("worker SIGKILL", churn, loss, old_pid=worker["pid"], new_pid=again["pid"])  # type: ignore[index]
    assert loss.lost == 0


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_supervisor_sigkilled_while_workers_run(tmp_path: Path, serve, fresh_docker: DockerDaemon) -> None:
    s = serve_docker(tmp_path, serve, fresh_docker)
    names = ("web", "db")
    for name in names:
        run(fresh_docker, name)
        s.wait_state(name, "running")
    sources = {name: fresh_docker.volume(f"{name}data") for name in names}
    churns = [Churn(src, seed=i) for i, src in enumerate(sources.values())]
    for churn in churns:
        churn.__enter__()
    try:
        time.sleep(2)
        s.kill()
        time.sleep(3)  # files keep changing with no supervisor
        again = serve_docker(tmp_path, serve, fresh_docker, state_dir=s.state_dir)
        for name in names:
            again.wait_state(name, "running", timeout=30)
        time.sleep(2)
    finally:
        for churn in churns:
            churn.stop()
    for name, src in sources.items():
        loss = wait_equal(src, dest(tmp_path, name), timeout=60)
        report(f"supervisor SIGKILL ({name})", churns[names.index(name)], loss)
        assert loss.lost == 0
    pids = [w["pid"] for w in again.state()["workers"]]
    assert len(pids) == len(set(pids)) == len(names)  # one worker per container, none twice


@pytest.mark.docker
@pytest.mark.timeout(240)
def test_dockerd_restarted_while_files_change(tmp_path: Path, serve, fresh_docker: DockerDaemon) -> None:
    s = serve_docker(tmp_path, serve, fresh_docker)
    run(fresh_docker, "web", restart_policy={"Name": "always"})
    first = s.wait_state("web", "running")
    src = fresh_docker.volume("webdata")
    with Churn(src, seed=5) as churn:
        time.sleep(2)
        fresh_docker.restart()  # stops the container (its worker flushes), starts it again
        wait_until(
            lambda: (w := s.worker("web")).get("state") == "running" and w.get("pid") != first["pid"],
            timeout=60,
            what="web synced again after the restart",
        )
        time.sleep(2)
    loss = wait_equal(src, dest(tmp_path, "web"), timeout=60)
    report("dockerd restart", churn, loss)
    assert loss.lost == 0


@pytest.mark.lxd
@pytest.mark.timeout(240)
def test_lxd_restarted_while_files_change(tmp_path: Path, serve, fresh_lxd: LxdDaemon) -> None:
    s = serve(config(tmp_path), "--no-docker", "--host", "h1")
    s.wait_runtime("lxd")
    src = fresh_lxd.create_volume("tt-faults")
    fresh_lxd.launch(
        "tt-f", {"user.tandem.enable": "true", "user.tandem.delay": "0.2"}, {"tt-faults": "/data"}
    )
    first = s.wait_state("tt-f", "running")
    with Churn(src, seed=9) as churn:
        time.sleep(2)
        fresh_lxd.restart(keep_containers=True)  # the daemon goes, its containers run on
        s.wait_runtime("lxd", timeout=60)
        time.sleep(3)
    loss = wait_equal(src, dest(tmp_path, "tt-f"), timeout=60)
    worker = s.worker("tt-f")
    report("LXD restart", churn, loss, state=worker.get("state"))
    assert loss.lost == 0
    assert worker["pid"] == first["pid"]  # the worker was not restarted: nothing stopped


@pytest.mark.docker
@pytest.mark.timeout(240)
def test_thirty_thousand_files_overflow_one_container_while_another_syncs(
    tmp_path: Path, serve, fresh_docker: DockerDaemon
) -> None:
    s = serve_docker(tmp_path, serve, fresh_docker)
    run(fresh_docker, "steady")
    s.wait_state("steady", "running")
    # The storm's worker gets a small kernel queue, so that the burst surely overflows it
    # (the queue size is fixed when the worker's inotify instance is made).
    with sysctl("max_queued_events", 4096):
        run(fresh_docker, "storm")
        s.wait_state("storm", "running")
    steady = fresh_docker.volume("steadydata")
    lags = []
    (steady / "churn").mkdir()
    with Churn(steady / "churn", seed=13) as churn:  # beside the markers, not over them
        # Made on the host side of the volume by touch in bulk, in a few seconds (the
        # busybox shell inside makes ~1000 files/s); inotify sees them like the
        # container's own writes.
        storm_src = fresh_docker.volume("stormdata")
        script = "for d in 0 1 2; do mkdir $d && (cd $d && seq -f f%g 10000 | xargs touch); done"
        started = time.monotonic()
        took: float | None = None
        writer = subprocess.Popen(["sh", "-c", script], cwd=storm_src, start_new_session=True)
        # While the storm is handled, the other container's changes keep flowing.
        for i in range(20):
            marker = steady / f"marker{i}"
            marker.write_text(str(i))
            made = time.monotonic()
            wait_until(lambda m=marker: (dest(tmp_path, "steady") / m.name).exists(), 30, marker.name)
            lags.append(time.monotonic() - made)
            if writer.poll() is not None and took is None:
                took = time.monotonic() - started
            time.sleep(0.3)
        assert writer.wait(120) == 0
        took = took or time.monotonic() - started
    loss = wait_equal(storm_src, dest(tmp_path, "storm"), timeout=120)
    steady_loss = wait_equal(steady, dest(tmp_path, "steady"), timeout=60)
    counters = api(s, "storm")["counters"]
    report(
        "30 000 files",
        churn,
        loss,
        burst_s=round(took, 1),
        steady_lag_max=round(max(lags), 2),
        storm_resyncs=counters["resyncs"],
    )
    assert loss.lost == 0 and loss.files == 30_003
    assert steady_loss.lost == 0
    assert counters["resyncs"] >= 1, "no overflow was seen: the scenario did not happen"
    assert max(lags) < 10, lags


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_container_stopped_during_its_initial_sync(tmp_path: Path, serve, fresh_docker: DockerDaemon) -> None:
    s = serve_docker(tmp_path, serve, fresh_docker, 'rsync_args = ["--bwlimit=8m"]\n')
    fresh_docker.client.volumes.create("webdata")
    src = fresh_docker.volume("webdata")
    for d in range(4):
        (src / f"d{d}").mkdir()
        for f in range(200):
            (src / f"d{d}" / f"f{f}").write_bytes(os.urandom(50_000))  # 40 MB: ~5 s at 8 MB/s
    web = run(fresh_docker, "web")
    s.wait_state("web", "initial-sync", "starting")
    wait_until(lambda: (dest(tmp_path, "web")).exists(), 20, "the initial sync to begin")
    web.stop(timeout=30)
    s.wait_state("web", "stopped", timeout=60)
    loss = compare(src, dest(tmp_path, "web"))
    report("stop in the initial sync", None, loss, reason=s.worker("web").get("reason"))
    assert loss.equal, loss
