"""A real LXD daemon for tests, cleaned up by PID.

``LxdDaemon.start()`` adopts a running LXD or starts one with ``setsid -f`` (so
it is never a child of pytest), waits for it, gives it a ``dir`` pool named
``default`` and a default profile with only a root disk (a preseed WITHOUT a
network: ``lxd init --auto`` must never run here, it probes random private
addresses), and imports a busybox image as ``tiny``. Everything else goes
through the ``lxc`` CLI, always waited for.

Facts of Debian's LXD 5.0.2 the tests rely on:

* ``lxd shutdown`` stops every container cleanly first (``instance-shutdown``
  events; busybox init takes ~2.5 s) and then exits; containers that were
  running come back when the daemon starts again (unless
  ``boot.autostart=false``). SIGTERM to the daemon makes it exit in ~0.2 s and
  leaves containers running under their ``[lxc monitor]`` processes; the next
  daemon adopts them.
* ``[lxc monitor]`` processes are named ``lxd`` too (``pgrep -x lxd`` finds
  them): the daemon is the ``lxd`` process whose arguments are options only.
* No pid file is written (``/var/lib/lxd/lxd.pid`` does not exist).
* Containers are unprivileged: their files belong to uid/gid 100000 + n on
  the host. A custom volume lives in
  ``/var/lib/lxd/storage-pools/default/custom/default_<volume>``.

The session fixture ``lxd`` takes over whatever LXD runs on this machine and
shuts it down at the end (test machines only). It FAILS, never skips, when LXD
cannot start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

PREFIX = "tt-"  # every container and custom volume a test makes
IMAGE = "tiny"
LXD_DIR = Path("/var/lib/lxd")
SOCKET = LXD_DIR / "unix.socket"
CLI_TIMEOUT = 60.0

PRESEED = """\
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root: {path: /, pool: default, type: disk}
"""


class LxdError(RuntimeError):
    pass


def _run(*argv: str, input: str | None = None, check: bool = True, timeout: float = CLI_TIMEOUT) -> str:
    try:
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise LxdError(f"{shlex.join(argv)} did not finish in {timeout}s") from err
    if check and result.returncode != 0:
        raise LxdError(f"{shlex.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def _proc_args(pid: int) -> tuple[str, list[str]] | None:
    """(state, argv) of a live process, None when gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
    except (OSError, IndexError):
        return None
    return None if state == "Z" else (state, argv)


def daemon_pids() -> list[int]:
    """Live LXD daemons: ``lxd`` with options only (not ``[lxc monitor]``,
    ``lxd forkfile``, ``lxd waitready``...)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _proc_args(int(entry))):
            argv = info[1]
            if argv and os.path.basename(argv[0]) == "lxd" and all(a.startswith("-") for a in argv[1:2]):
                found.append(int(entry))
    return sorted(found)


def _children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with (
            contextlib.suppress(OSError, IndexError),
            open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle,
        ):
            if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _is_helper(pid: int) -> bool:
    """A daemon's own helper (``lxd forkfile``, dnsmasq), not a container's monitor."""
    info = _proc_args(pid)
    return bool(info and info[1] and not info[1][0].startswith("["))


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until every pid is gone (or a zombie); returns those still alive."""
    end = time.monotonic() + timeout
    alive = [p for p in pids if _proc_args(p)]
    while alive and time.monotonic() < end:
        time.sleep(0.05)
        alive = [p for p in alive if _proc_args(p)]
    return alive


class LxdDaemon:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "lxd.log"
        self.pid: int | None = None

    # --- the daemon ---------------------------------------------------------

    def start(self) -> None:
        """Adopt a running LXD or start one; then a pool, a profile and the image."""
        if shutil.which("lxd") is None or shutil.which("lxc") is None:
            raise LxdError("lxd/lxc not installed (apt-get install -y lxd lxc busybox-static)")
        pids = daemon_pids()
        if pids:
            self.pid = pids[0]
        else:
            self._spawn()
        _run("lxd", "waitready", "--timeout", "60", timeout=70)
        self._ensure_storage()
        self._ensure_image()

    def _spawn(self) -> None:
        with open(os.devnull, "rb") as null, open(self.log, "ab") as out:
            subprocess.run(
                ["setsid", "-f", "lxd", "--group", "root", "--logfile", str(self.log)],
                stdin=null,
                stdout=out,
                stderr=out,
                check=True,
                timeout=10,
            )
        end = time.monotonic() + 10
        while not (pids := daemon_pids()):
            if time.monotonic() > end:
                raise LxdError(f"lxd did not start; its log {self.log}:\n{self._log_tail()}")
            time.sleep(0.05)
        self.pid = pids[0]

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        return ""

    def _ensure_storage(self) -> None:
        if _run("lxc", "storage", "show", "default", check=False).strip() == "":
            _run("lxd", "init", "--preseed", input=PRESEED)
            return
        profile = self.query("/1.0/profiles/default")
        if "root" not in profile.get("devices", {}):
            _run("lxc", "profile", "device", "add", "default", "root", "disk", "path=/", "pool=default")

    def _ensure_image(self) -> None:
        if _run("lxc", "image", "info", IMAGE, check=False):
            return
        busybox = shutil.which("busybox")
        if busybox is None:
            raise LxdError("busybox not found (apt-get install -y busybox-static)")
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            root = Path(tmp) / "rootfs"
            for sub in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root"):
                (root / sub).mkdir(parents=True)
            shutil.copy2(busybox, root / "bin" / "busybox")
            applets = _run(busybox, "--list").split()
            for applet in applets:
                if applet != "busybox" and not (root / "bin" / applet).exists():
                    (root / "bin" / applet).symlink_to("busybox")
            (root / "sbin" / "init").symlink_to("../bin/busybox")
            meta = f"architecture: x86_64\ncreation_date: {int(time.time())}\nproperties:\n  os: busybox\n"
            (Path(tmp) / "metadata.yaml").write_text(meta)
            tarball = Path(tmp) / "tiny.tar.gz"
            _run("tar", "-C", tmp, "-czf", str(tarball), "metadata.yaml", "rootfs")
            _run("lxc", "image", "import", str(tarball), "--alias", IMAGE)

    def restart(self, keep_containers: bool = True) -> None:
        """Stop the daemon and start it again.

        keep_containers=True: SIGTERM by pid. The daemon exits in ~0.2 s, its
        containers keep running and the new daemon adopts them (no container
        events). False: ``lxd shutdown``, which first stops every container
        cleanly (instance-shutdown events); the new daemon starts again the
        ones that were running."""
        self.stop_daemon(keep_containers=keep_containers)
        self.start()

    def stop_daemon(self, keep_containers: bool = False) -> None:
        pids = daemon_pids()
        helpers = [kid for pid in pids for kid in _children_of(pid) if _is_helper(kid)]
        if pids and not keep_containers:
            _run("lxd", "shutdown", "--timeout", "60", check=False, timeout=90)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        left = _wait_gone(pids + helpers, 15)
        for pid in left:  # a daemon that hangs, a forkfile helper that lingers
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if _wait_gone(left, 5):
            raise LxdError(f"LXD processes {left} survive SIGKILL")
        self.pid = None

    def shutdown(self) -> None:
        """Delete the test containers and volumes, then ``lxd shutdown`` (which
        stops any other container) and make sure the daemon is gone."""
        if daemon_pids():
            with contextlib.suppress(LxdError):
                self.clean()
        self.stop_daemon(keep_containers=False)

    # --- containers and volumes ----------------------------------------------

    def query(self, path: str) -> dict[str, Any]:
        return dict(json.loads(_run("lxc", "query", path)))

    def launch(
        self, name: str, config: Mapping[str, str] | None = None, volumes: Mapping[str, str] | None = None
    ) -> None:
        """Create and start NAME from the busybox image; returns once it runs.
        VOLUMES (custom volume -> path) are attached before the start."""
        argv = ["lxc", "init", IMAGE, name]
        for key, value in (config or {}).items():
            argv += ["-c", f"{key}={value}"]
        _run(*argv)
        for volume, path in (volumes or {}).items():
            self.attach_volume(volume, name, path)
        _run("lxc", "start", name)

    def start_container(self, name: str) -> None:
        _run("lxc", "start", name)

    def stop(self, name: str, force: bool = True) -> None:
        """Stop NAME (force: instance-stopped in ~0.5 s; clean: instance-shutdown, ~2.5 s)."""
        _run("lxc", "stop", name, *(["--force"] if force else []))

    def delete(self, name: str) -> None:
        _run("lxc", "delete", "--force", name)

    def rename(self, old: str, new: str) -> None:
        """Only a stopped container can be renamed."""
        _run("lxc", "move", old, new)

    def exec(self, name: str, script: str) -> str:
        """Run ``sh -c SCRIPT`` inside NAME; returns its stdout."""
        return _run("lxc", "exec", name, "--", "sh", "-c", script)

    def state(self, name: str) -> str:
        return str(self.query(f"/1.0/instances/{name}/state")["status"])

    def rootfs(self, name: str) -> Path:
        return LXD_DIR / "storage-pools" / "default" / "containers" / name / "rootfs"

    def create_volume(self, volume: str) -> Path:
        _run("lxc", "storage", "volume", "create", "default", volume)
        return self.volume_path(volume)

    def attach_volume(self, volume: str, container: str, path: str) -> None:
        """Attach as a disk device named after the volume."""
        _run("lxc", "storage", "volume", "attach", "default", volume, container, path)

    def volume_path(self, volume: str) -> Path:
        return LXD_DIR / "storage-pools" / "default" / "custom" / f"default_{volume}"

    def containers(self) -> list[str]:
        urls = json.loads(_run("lxc", "query", "/1.0/instances"))
        return [str(url).rsplit("/", 1)[-1] for url in urls]

    def volumes(self) -> list[str]:
        urls = json.loads(_run("lxc", "query", "/1.0/storage-pools/default/volumes/custom"))
        return [str(url).rsplit("/", 1)[-1] for url in urls]

    def clean(self) -> None:
        """Delete every test container and custom volume (names starting with PREFIX)."""
        for name in self.containers():
            if name.startswith(PREFIX):
                self.delete(name)
        for volume in self.volumes():
            if volume.startswith(PREFIX):
                _run("lxc", "storage", "volume", "delete", "default", volume)


@pytest.fixture(scope="session", name="lxd")
def lxd_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LxdDaemon]:
    daemon = LxdDaemon(tmp_path_factory.mktemp("lxd"))
    try:
        daemon.start()
        error = None
    except (LxdError, OSError, subprocess.SubprocessError) as err:
        error = err
    if error is not None:
        with contextlib.suppress(Exception):
            daemon.stop_daemon()
        pytest.fail(f"the test LXD did not start: {error}", pytrace=False)
    try:
        yield daemon
    finally:
        daemon.shutdown()


@pytest.fixture(name="fresh_lxd")
def fresh_lxd_fixture(lxd: LxdDaemon) -> Iterator[LxdDaemon]:
    """The daemon with no test containers or volumes, before and after the test."""
    if not daemon_pids():  # a test left it stopped
        lxd.start()
    lxd.clean()
    yield lxd
    if not daemon_pids():
        lxd.start()
    lxd.clean()
