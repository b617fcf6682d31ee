"""Plain LXC (no LXD): ``tandem lxc-hook`` tells the supervisor.

Configure a container with::

    lxc.hook.start-host = tandem lxc-hook --label tandem.enable=true
    lxc.hook.post-stop = tandem lxc-hook

LXC calls the hook with ``NAME lxc TYPE`` (or LXC_NAME / LXC_HOOK_TYPE in the
environment with ``lxc.hook.version = 1``). The hook records a started
container in ``STATE_DIR/lxc/NAME.json`` (removes it after a stop) and then
tells a running supervisor through ``STATE_DIR/lxc.sock``. The record is what a
supervisor started later lists, so LXC containers are adopted like the others;
records whose container no longer runs (``lxc-info``) are dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from orchestrator.runtimes import Action, Container, ContainerEvent, Listing, Message, Mount, RuntimeState

log = logging.getLogger("tandem.runtime.lxc")

HOOK_TIMEOUT = 5.0
INFO_TIMEOUT = 10.0
STARTS = ("start-host", "start", "pre-start")
STOPS = ("post-stop", "stop")


class HookError(ValueError):
    pass


def socket_path(state_dir: Path) -> Path:
    return state_dir / "lxc.sock"


def record_path(state_dir: Path, name: str) -> Path:
    if not name or "/" in name or name in (".", ".."):
        raise HookError(f"bad container name {name!r}")
    return state_dir / "lxc" / f"{name}.json"


def container_from(record: Mapping[str, object]) -> Container:
    """The Container of a hook record (pure)."""
    name = str(record["name"])
    rootfs = str(record["rootfs"])
    labels = record.get("labels") or {}
    if not isinstance(labels, dict):
        raise ValueError(f"labels of {name} must be an object")
    return Container(
        runtime="lxc",
        name=name,
        id=name,
        labels={str(k): str(v) for k, v in labels.items()},
        mounts=(Mount(name="rootfs", source=rootfs, target="/", kind="rootfs"),),
    )


def rootfs_dir(value: str) -> str:
    """LXC_ROOTFS_PATH ('dir:/var/lib/lxc/c1/rootfs' or a plain path) -> the directory."""
    kind, sep, rest = value.partition(":")
    if sep and kind in ("dir", "btrfs", "zfs", "lvm", "overlay", "overlayfs"):
        value = rest.split(":")[-1] if kind.startswith("overlay") else rest
    return value


def hook(
    state_dir: Path, args: list[str], env: Mapping[str, str], labels: Mapping[str, str]
) -> tuple[str, str]:
    """Record what LXC says (ARGS as LXC passes them, ENV) and tell the supervisor.
    Returns (hook type, name). Raises HookError on input it cannot use."""
    name = env.get("LXC_NAME") or (args[0] if args else "")
    kind = env.get("LXC_HOOK_TYPE") or (args[2] if len(args) >= 3 else "")
    path = record_path(state_dir, name)
    if kind in STARTS:
        rootfs = rootfs_dir(env.get("LXC_ROOTFS_PATH", ""))
        if not rootfs or not os.path.isdir(rootfs):
            raise HookError(f"{name}: LXC_ROOTFS_PATH {rootfs!r} is not a directory")
        record = {
            "name": name,
            "rootfs": rootfs,
            "config": env.get("LXC_CONFIG_FILE", ""),
            "labels": dict(labels),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(path.name + ".tmp")
        temp.write_text(json.dumps(record))
        os.replace(temp, path)
        _notify(state_dir, {"action": "started", **record})
    elif kind in STOPS:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        _notify(state_dir, {"action": "stopped", "name": name})
    else:
        raise HookError(f"hook type {kind!r} is not one tandem handles (start-host, post-stop)")
    return kind, name


def _notify(state_dir: Path, message: dict[str, object]) -> None:
    """Tell a running supervisor; none running is fine (it lists the records at start)."""
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
    ):
        sock.settimeout(HOOK_TIMEOUT)
        sock.connect(str(socket_path(state_dir)))
        sock.sendall(json.dumps(message).encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        sock.recv(16)


class LxcRuntime:
    name = "lxc"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def run(self, emit: Callable[[Message], None], stop: threading.Event) -> None:
        path = socket_path(self.state_dir)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            os.chmod(path, 0o600)
            server.listen(16)
            server.settimeout(0.5)
        except OSError as err:
            emit(RuntimeState(self.name, False, f"cannot listen on {path}: {err}"))
            return
        with server:
            emit(RuntimeState(self.name, True))
            emit(Listing(self.name, tuple(self._running())))
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError as err:
                    log.error("lxc hook socket: %s", err)
                    break
                with conn:
                    self._serve(conn, emit)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def _serve(self, conn: socket.socket, emit: Callable[[Message], None]) -> None:
        conn.settimeout(HOOK_TIMEOUT)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := conn.recv(65536):
                data += chunk
        try:
            message = json.loads(data)
            name = str(message["name"])
            if message["action"] == "started":
                emit(ContainerEvent(self.name, Action.STARTED, name, container_from(message)))
            else:
                emit(ContainerEvent(self.name, Action.STOPPED, name))
            reply = b"ok\n"
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            log.error("bad message on the lxc hook socket: %s", err)
            reply = b"error\n"
        with contextlib.suppress(OSError):
            conn.sendall(reply)

    def _running(self) -> list[Container]:
        found = []
        for path in sorted((self.state_dir / "lxc").glob("*.json")):
            try:
                record = json.loads(path.read_text())
                container = container_from(record)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                log.warning("ignoring %s: %s", path, err)
                continue
            if _still_running(container.name, str(record.get("config", ""))):
                found.append(container)
            else:
                log.info("lxc container %s no longer runs: forgetting it", container.name)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return found


def _still_running(name: str, config: str) -> bool:
    argv = ["lxc-info", "-s", "-n", name]
    if config:
        argv[1:1] = ["-P", os.path.dirname(os.path.dirname(config))]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=INFO_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: keep it (a stop hook will come)
    return "RUNNING" in result.stdout
