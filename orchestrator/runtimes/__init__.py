"""Container runtimes: what each one tells the supervisor.

A runtime adapter (``docker``, ``lxd``, ``lxc``) runs in a thread of its own:
it lists the running containers, then follows the runtime's event stream, and
reconnects with backoff (then lists again) when the daemon goes away. It only
ever calls ``emit`` with the messages below; the supervisor is their one reader.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True)
class Mount:
    """One host directory of a container that may be synced."""

    name: str  # the {mount} of the destination template: "rootfs", "data", "var-lib-mysql"
    source: str  # the directory on the host
    target: str  # where the container sees it ("/" for a root filesystem or writable layer)
    kind: str  # "volume", "bind", "layer" (Docker writable layer), "rootfs", "custom" (LXD volume)


@dataclass(frozen=True)
class Container:
    """A running container as its runtime describes it."""

    runtime: str  # "docker", "lxd" or "lxc"
    name: str
    id: str
    labels: Mapping[str, str] = field(default_factory=dict)  # tandem.* keys, prefix kept
    mounts: tuple[Mount, ...] = ()  # the default sources (volumes and binds; rootfs and custom volumes)
    extra: tuple[Mount, ...] = ()  # offered only when asked for by path (the Docker writable layer)


class Action(StrEnum):
    STARTED = "started"
    STOPPED = "stopped"
    DESTROYED = "destroyed"
    RENAMED = "renamed"


@dataclass(frozen=True)
class ContainerEvent:
    runtime: str
    action: Action
    name: str
    container: Container | None = None  # set for STARTED
    old_name: str = ""  # set for RENAMED


@dataclass(frozen=True)
class Listing:
    """Every running container of one runtime, sent after each (re)connect:
    the supervisor reconciles its workers against it."""

    runtime: str
    containers: tuple[Container, ...]


@dataclass(frozen=True)
class RuntimeState:
    """A runtime connected, went away, or is not installed."""

    runtime: str
    connected: bool
    message: str = ""


Message = ContainerEvent | Listing | RuntimeState


class Runtime(Protocol):
    name: str

    def run(self, emit: Callable[[Message], None], stop: threading.Event) -> None:
        """List, then follow events until STOP is set (return within about a
        second of it). Reconnect with backoff, listing again, whenever the
        daemon goes away; report it with RuntimeState. Never raise."""
        ...


def probe_socket(path: str, timeout: float) -> None:
    """Connect to the unix socket PATH once and close it; ConnectionError with a
    plain reason if that fails. Both SDKs leak the socket of a failed connect
    (a ResourceWarning) and say less about why."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ConnectionError(f"no socket at {path}") from None
        except ConnectionRefusedError:
            raise ConnectionError(f"nothing listens on {path}") from None
        except OSError as err:
            raise ConnectionError(f"cannot connect to {path}: {err.strerror or err}") from None
