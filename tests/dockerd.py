"""A private, real Docker daemon for tests, cleaned up by PID.

dockerd is started from a short-lived ``sh`` in a session of its own, so it is
not a child of pytest (the leak check of tests/conftest.py ignores it, even
after a restart() inside a test); it is stopped by the pid in its pid file, and
every process it left (containerd, shims, the containers' processes) is found
by the private folder it runs in and killed by pid.

The fixtures are ``dockerd`` (session) and ``fresh_docker`` (no container and
no volume before and after the test); import them into a conftest or a test
module as ``from tests.dockerd import dockerd_fixture, fresh_docker_fixture``
(the ``_fixture`` names keep ruff's F811 quiet where a test takes ``dockerd``).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import Container

IMAGE = "tiny:latest"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "sleep", "ls", "cat", "echo", "touch", "mkdir", "rm", "mv")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


class DockerDaemon:
    def __init__(self) -> None:
        # Short: the socket path must fit in 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="tandem-dockerd-", dir="/tmp"))
        self.root = self.dir / "root"
        self.exec_root = self.dir / "exec"
        self.sock = self.dir / "docker.sock"
        self.pidfile = self.dir / "docker.pid"
        self.log = self.dir / "log"
        self.host = f"unix://{self.sock}"
        self.pid = 0
        self._client: docker.DockerClient | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        argv = [
            "dockerd",
            f"--data-root={self.root}",
            f"--exec-root={self.exec_root}",
            f"-H={self.host}",
            f"--pidfile={self.pidfile}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
        ]
        script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
        out = subprocess.run(
            ["sh", "-c", script, "sh", str(self.log), *argv],
            stdout=subprocess.PIPE,
            check=True,
            start_new_session=True,
            timeout=10,
        ).stdout
        self.pid = int(out.decode().strip())
        self._wait_ready()
        self._ensure_image()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        error: Exception | None = None
        while time.monotonic() < deadline:
            if not _alive(self.pid):
                raise RuntimeError(f"dockerd exited during start-up:\n{self.log_tail()}")
            try:
                self._client = _connect(self.host, self.sock)
                return
            except Exception as exc:
                error = exc
                time.sleep(0.1)
        raise RuntimeError(f"dockerd not ready after {READY_TIMEOUT}s ({error}):\n{self.log_tail()}")

    def _ensure_image(self) -> None:
        try:
            self.client.images.get(IMAGE)
        except docker.errors.ImageNotFound:
            repository, tag = IMAGE.split(":")
            self.client.api.import_image_from_data(_busybox_tar(), repository=repository, tag=tag)

    def restart(self) -> None:
        """Stop dockerd (its containers stop with it) and start it on the same folders."""
        self._halt()
        self.start()

    def stop(self) -> None:
        """Remove every container, stop the daemon, leave no process, mount or file."""
        if self._client is not None and _alive(self._pidfile_pid() or self.pid):
            with contextlib.suppress(Exception):
                self.reset()
        self._halt()
        self._unmount()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _halt(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        pid = self._pidfile_pid() or self.pid
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, STOP_TIMEOUT):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 5)
        self._kill_leftovers()
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()

    def _pidfile_pid(self) -> int:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return 0

    def _kill_leftovers(self) -> None:
        """containerd, shims and container processes this daemon left: found by our folder."""
        for _ in range(50):
            pids = [pid for pid in _processes() if _belongs_to(pid, str(self.dir))]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        raise RuntimeError(f"processes of dockerd in {self.dir} survive SIGKILL: {pids}")

    def _unmount(self) -> None:
        for point in sorted(_mounts_under(self.dir), key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)

    # -- helpers for tests -----------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            raise RuntimeError("dockerd is not running")
        return self._client

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def reset(self) -> None:
        """Force-remove every container and volume."""
        for container in self.client.containers.list(all=True):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        for volume in self.client.volumes.list():
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)

    def run(
        self,
        name: str,
        *,
        volumes: Mapping[str, Any] | list[str] | None = None,
        labels: Mapping[str, str] | None = None,
        command: tuple[str, ...] | list[str] = ("/bin/sleep", "3600"),
    ) -> Container:
        """A detached container of the tiny image; --init so that a stop is fast.
        VOLUMES as the SDK takes them: ["vol1:/data", "/host/dir:/mnt"] or a dict."""
        container: Container = self.client.containers.run(
            IMAGE,
            list(command),
            name=name,
            detach=True,
            init=True,
            volumes=volumes or [],
            labels=dict(labels or {}),
        )
        return container

    def volume(self, name: str) -> Path:
        """Where the named volume NAME lives on the host (a mount's SOURCE)."""
        return self.root / "volumes" / name / "_data"

    def exec(self, container: Container, command: str) -> str:
        """Run COMMAND (split like a shell line) in CONTAINER; fail unless it exits 0."""
        code, output = container.exec_run(command)
        text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
        assert code == 0, f"{command!r} in {container.name} exited {code}: {text}"
        return text


def _connect(host: str, sock: Path) -> docker.DockerClient:
    """A client that answers a ping. The socket is tried first: the SDK leaks the
    socket of a failed connect (a ResourceWarning, an error under our filters)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        probe.connect(str(sock))
    client = docker.DockerClient(base_url=host, timeout=10)
    try:
        client.ping()
    except Exception:
        client.close()
        raise
    return client


def _busybox_tar() -> bytes:
    """/bin/busybox (static) with its applet links and an empty /data, as a tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in ("bin", "data", "tmp"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buf.getvalue()


def _processes() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            yield int(entry)


def _belongs_to(pid: int, folder: str) -> bool:
    """PID runs with FOLDER on its command line (dockerd, containerd, a shim) or on
    a root filesystem from FOLDER (a container process: its own mount namespace,
    where "/" is an overlay whose layers are under FOLDER)."""
    try:
        if _state(pid) == "Z":
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        if folder in cmdline:
            return True
        with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="replace") as handle:
            return any(line.split()[4] == "/" and folder + "/" in line for line in handle)
    except (OSError, IndexError):
        return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _alive(pid: int) -> bool:
    """Running and not a zombie (dockerd is reparented to PID 1, which reaps lazily)."""
    return _state(pid) not in ("", "Z")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder)
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return points


@pytest.fixture(scope="session", name="dockerd")
def dockerd_fixture() -> Iterator[DockerDaemon]:
    """The test dockerd, started once; a daemon that cannot start fails the tests."""
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed: apt-get install -y docker.io busybox-static")
    daemon = DockerDaemon()
    try:
        daemon.start()
    except Exception as exc:
        daemon.stop()
        pytest.fail(f"cannot start the test dockerd: {exc}")
    yield daemon
    daemon.stop()


@pytest.fixture(name="fresh_docker")
def fresh_docker_fixture(dockerd: DockerDaemon) -> Iterator[DockerDaemon]:
    """The test dockerd with no container and no volume before and after the test."""
    dockerd.reset()
    yield dockerd
    dockerd.reset()
