"""The image and docker-compose.yml, for real: scripts/build-image builds the image
into the test dockerd (a debootstrap base, no registry), Debian's docker-compose
runs it against that dockerd with the ssh key and known_hosts of a real ssh peer
as secrets; a labelled container's files reach the peer, the healthcheck turns
healthy, `docker-compose stop` flushes a pending batch, and the store survives
on its named volume."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from docker.models.containers import Container

from orchestrator.lifecycle import Timing
from orchestrator.settings import Settings
from tests.conftest import wait_until
from tests.dockerd import DockerDaemon, dockerd_fixture, fresh_docker_fixture  # noqa: F401
from tests.sshpeer import SshPeer, running_peer

pytestmark = [pytest.mark.real, pytest.mark.docker, pytest.mark.ssh, pytest.mark.deploy]

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 600.0
GRACE = 45.0  # docker-compose.yml's stop_grace_period


def test_stop_grace_covers_the_flush_and_the_kill_grace() -> None:
    """The grace period docker-compose.yml gives is what the test expects, and it
    covers the workers' flush (stop_timeout) and the supervisor's kill grace."""
    text = (ROOT / "docker-compose.yml").read_text()
    assert f"stop_grace_period: ${{TANDEM_STOP_GRACE:-{GRACE:.0f}s}}" in text
    flush = Settings.model_fields["stop_timeout"].default + Timing().kill_grace
    assert flush + 5 <= GRACE


def answer(url: str) -> dict:
    """The JSON at URL; {} while nothing answers there or it is not 200."""
    try:
        response = httpx.get(url, timeout=5)
    except httpx.TransportError:
        return {}
    return response.json() if response.status_code == 200 else {}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def image(dockerd: DockerDaemon) -> str:
    """tandem:latest in the test dockerd, built by the operator's own script (in a
    session of its own, so that a timeout kills debootstrap too)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "build-image")],
        env={**os.environ, "DOCKER_HOST": dockerd.host, "PYTHON": sys.executable},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # its trap unmounts and removes what it made
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, f"build-image failed:\n{out}"
    print(f"build-image: {time.monotonic() - started:.1f} s")
    return "tandem:latest"


class Compose:
    """docker-compose on the repository's file, one project of its own."""

    def __init__(self, daemon: DockerDaemon, env: dict[str, str]) -> None:
        self.project = f"tandemtest{secrets.token_hex(3)}"
        self.env = {**os.environ, "DOCKER_HOST": daemon.host, **env}
        self.daemon = daemon

    def __call__(self, *args: str, timeout: float = 120.0) -> str:
        result = subprocess.run(
            ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "-p", self.project, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"docker-compose {' '.join(args)}: {result.stderr}"
        return result.stdout

    def container(self) -> dict:
        return self._container().attrs

    def exec(self, command: str) -> str:
        return self.daemon.exec(self._container(), command)

    def _container(self) -> Container:
        (found,) = self.daemon.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.project}"}
        )
        return found


@pytest.fixture
def peer() -> Iterator[SshPeer]:
    with running_peer() as started:
        yield started


@pytest.mark.timeout(BUILD_TIMEOUT + 300)  # the module's image is built inside the first test
def test_compose_syncs_to_the_peer_and_stop_flushes(
    image: str, fresh_docker: DockerDaemon, peer: SshPeer, tmp_path: Path
) -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: apt-get install -y docker-compose")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{peer.peer_ip} {(peer.dir / 'host_key.pub').read_text()}")
    dest = tmp_path / "dest"
    port = free_port()
    # Settings from the optional config directory too (here: a rule), beside the variables.
    config = tmp_path / "config"
    config.mkdir()
    (config / "tandem.toml").write_text('[[rules]]\nmatch = "web"\nexclude = ["\\\\.tmp$"]\n')
    compose = Compose(
        fresh_docker,
        {
            "TANDEM_IMAGE": image,
            "TANDEM_DEFAULTS__DEST": peer.dest(f"{dest}/{{host}}/{{container}}/{{mount}}"),
            "TANDEM_SSH_KEY": str(peer.key),
            "TANDEM_KNOWN_HOSTS": str(known_hosts),
            "TANDEM_HOST": "node-a",
            "TANDEM_API_PORT": str(port),
            "TANDEM_HEALTH_INTERVAL": "1s",
            "DOCKER_SOCKET": str(fresh_docker.sock),
            "DOCKER_VOLUMES": str(fresh_docker.root / "volumes"),
            "TANDEM_CONFIG_DIR": str(config),
        },
    )
    api = f"http://127.0.0.1:{port}"
    try:
        compose("up", "-d")
        wait_until(
            lambda: compose.container()["State"].get("Health", {}).get("Status") == "healthy",
            timeout=60,
            what="the compose healthcheck to pass",
        )
        env = compose.exec("env").splitlines()
        assert "TANDEM_HOST=node-a" in env
        # Settings not given in the shell are not passed on, not even as empty values.
        assert not [e for e in env if e.startswith(("TANDEM_PEER_NAME", "TANDEM_API_TOKEN"))]
        assert httpx.get(f"{api}/readyz", timeout=5).status_code == 200

        # A labelled container's file reaches the peer, over ssh with the secrets.
        web = fresh_docker.run("web", volumes=["webdata:/data"], labels={"tandem.enable": "true"})
        fresh_docker.exec(web, "sh -c 'echo skip > /data/scratch.tmp; echo hello > /data/greeting'")
        synced = dest / "node-a" / "web" / "data" / "greeting"
        wait_until(lambda: synced.exists(), timeout=30, what="the file at the peer")
        assert synced.read_text() == "hello\n"
        assert not (synced.parent / "scratch.tmp").exists()  # the rule from config/tandem.toml
        assert compose.exec("tandem status").count("web") == 1  # TANDEM_API_URL follows the port
        # The supervisor's own container (not labelled, labels of its image) is only seen.
        workers = {w["container"]: w["state"] for w in httpx.get(f"{api}/workers", timeout=5).json()}
        assert workers == {"web": "running"}, workers

        # A 60 s window: only the flush at `docker-compose stop` sends the file in time.
        slow = fresh_docker.run(
            "slow", volumes=["slowdata:/data"], labels={"tandem.enable": "true", "tandem.delay": "60"}
        )
        wait_until(
            lambda: answer(f"{api}/workers/slow").get("state") == "running",
            timeout=30,
            what="the slow worker to run",
        )
        fresh_docker.exec(slow, "sh -c 'echo late > /data/pending'")
        time.sleep(1)  # the event is collected, its batch waits for the window
        pending = dest / "node-a" / "slow" / "data" / "pending"
        assert not pending.exists()
        started = time.monotonic()
        compose("stop", timeout=90)
        assert time.monotonic() - started < GRACE, "stop took the whole grace period"
        assert pending.read_text() == "late\n"
        state = compose.container()["State"]
        assert state["ExitCode"] == 0, state

        # The store lives on the named volume: the history is still there after a start.
        compose("start")
        wait_until(
            lambda: answer(f"{api}/healthz"),
            timeout=30,
            what="the API after a start",
        )
        history = httpx.get(f"{api}/workers/slow/history", timeout=5).json()
        assert any(row["event"] in ("stop", "exit") for row in history), json.dumps(history)[:500]
    finally:
        logs = subprocess.run(
            ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "-p", compose.project, "logs"],
            env=compose.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
        print(logs[-4000:])
        compose("down", "-v", "--timeout", "45", timeout=120)


@pytest.mark.timeout(BUILD_TIMEOUT + 60)
def test_image_runs_the_installed_command_at_the_one_version(image: str, dockerd: DockerDaemon) -> None:
    """`pip install` of the wheel built from this tree gives the `tandem` command,
    and the image carries the version of workers.__version__ (its one source)."""
    from workers import __version__

    out = dockerd.client.containers.run(image, ["--version"], remove=True)
    assert out.decode().strip() == f"tandem {__version__}"
    labels = dockerd.client.images.get(image).labels
    assert labels["org.opencontainers.image.version"] == __version__
    assert dockerd.client.images.get(f"tandem:{__version__}").id == dockerd.client.images.get(image).id
