"""LXD: list the running containers, then follow the lifecycle events.

The events websocket is opened before the listing, so nothing that happens in
between is lost (an event for a container already in the listing may come
twice: the supervisor treats a repeated STARTED as a no-op). When the daemon
goes away the websocket closes: report it, wait with backoff, reconnect and
list again. A daemon stopped with ``lxd shutdown`` stops its containers first
(``instance-shutdown`` events); one stopped with SIGTERM leaves them running
and the next daemon adopts them.

Facts of LXD 5.0 used here: a rename event names the NEW instance in
``metadata.source`` and the old one in ``metadata.context.old_name``; the
rootfs of a container is ``{lxd_dir}/storage-pools/{pool}/containers/{name}/rootfs``
(``{project}_{name}`` outside the default project) and a custom volume
``.../custom/{project}_{volume}``, where project is "default" unless the
instance's project has ``features.storage.volumes=true``; files there belong to
the shifted uids (100000 and up) of an unprivileged container.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import queue
import shutil
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib import parse

import pylxd
from pylxd import exceptions as lxd_errors
from pylxd.client import EventType
from pylxd.client import _WebsocketClient as _PylxdSocket

from orchestrator.runtimes import (
    Action,
    Container,
    ContainerEvent,
    Listing,
    Message,
    Mount,
    RuntimeState,
    probe_socket,
)
from orchestrator.runtimes.events import (
    lxd_action,
    lxd_instance_name,
    lxd_labels,
    mount_name,
    reconnect_delay,
)

log = logging.getLogger("tandem.runtime.lxd")

NAME = "lxd"
DEFAULT_PROJECT = "default"
API_TIMEOUT = 10.0  # seconds for one REST call
POLL = 0.2  # how often the event loop looks at STOP
JOIN_TIMEOUT = 2.0
LISTED_STATUSES = ("Running", "Frozen")  # a frozen container has no resume event we follow

_CLOSED = None  # queued by the websocket thread when the stream ends

Builder = Callable[[Mapping[str, Any]], Container | None]


# --- the pure half ---------------------------------------------------------


@dataclass(frozen=True)
class Lifecycle:
    """The part of an LXD lifecycle event the supervisor cares about."""

    action: Action
    name: str
    project: str
    old_name: str = ""


def parse_lifecycle(event: Mapping[str, Any]) -> Lifecycle | None:
    """A raw lifecycle event (the websocket's JSON) -> Lifecycle, or None for the
    actions we ignore (instance-exec, storage-volume-created, ...)."""
    meta = event.get("metadata")
    if event.get("type") != "lifecycle" or not isinstance(meta, Mapping):
        return None
    action = lxd_action(str(meta.get("action", "")))
    source = str(meta.get("source", ""))
    if action is None or not source.split("?", 1)[0].startswith(("/1.0/instances/", "/1.0/containers/")):
        return None
    context = meta.get("context")
    old = str(context.get("old_name", "")) if isinstance(context, Mapping) else ""
    project = str(event.get("project") or DEFAULT_PROJECT)
    return Lifecycle(action, lxd_instance_name(source), project, old if action is Action.RENAMED else "")


def storage_dir(lxd_dir: str, pool: str, kind: str, project: str, name: str) -> str:
    """Where a dir-backed volume of KIND ("containers", "custom") lives on the host."""
    volume = name if kind == "containers" and project == DEFAULT_PROJECT else f"{project}_{name}"
    return f"{lxd_dir}/storage-pools/{pool}/{kind}/{volume}"


def volume_project(project: str, project_config: Mapping[str, str]) -> str:
    """The project whose custom volumes PROJECT's instances use: its own, unless
    it was made with ``features.storage.volumes=false`` (then "default")."""
    own = project == DEFAULT_PROJECT or project_config.get("features.storage.volumes") == "true"
    return project if own else DEFAULT_PROJECT


def instance_mounts(
    devices: Mapping[str, Mapping[str, str]], name: str, project: str, lxd_dir: str, volumes: str
) -> tuple[Mount, ...]:
    """The rootfs mount, then one mount per attached custom volume (sorted by path;
    VOLUMES is the project holding them). Host-path disks (no pool) and other
    devices are not ours to sync."""
    mounts: list[Mount] = []
    custom: list[Mount] = []
    for device in devices.values():
        if device.get("type") != "disk" or not device.get("pool"):
            continue
        pool, path = device["pool"], device.get("path", "")
        if path == "/" and not device.get("source"):
            rootfs = storage_dir(lxd_dir, pool, "containers", project, name) + "/rootfs"
            mounts.append(Mount(name="rootfs", source=rootfs, target="/", kind="rootfs"))
        elif device.get("source") and path.startswith("/"):
            source = storage_dir(lxd_dir, pool, "custom", volumes, device["source"])
            custom.append(Mount(name=mount_name(path), source=source, target=path, kind="custom"))
    return (*mounts, *sorted(custom, key=lambda m: m.target))


def container_from_instance(
    data: Mapping[str, Any], lxd_dir: str = "/var/lib/lxd", volumes: str | None = None
) -> Container | None:
    """The Container of an instance as ``GET /1.0/instances/NAME`` returns it
    (None for a virtual machine). VOLUMES: the project holding its custom
    volumes (see volume_project; default: the instance's own)."""
    if data.get("type", "container") != "container":
        return None
    name = str(data["name"])
    project = str(data.get("project") or DEFAULT_PROJECT)
    config: Mapping[str, str] = data.get("expanded_config") or {}
    devices: Mapping[str, Mapping[str, str]] = data.get("expanded_devices") or {}
    return Container(
        runtime=NAME,
        name=name,
        id=config.get("volatile.uuid") or name,
        labels=lxd_labels(config),
        mounts=instance_mounts(devices, name, project, lxd_dir, volumes or project),
    )


def default_socket() -> str:
    """The unix socket pylxd uses when given no endpoint."""
    if "LXD_DIR" in os.environ:
        return os.path.join(os.environ["LXD_DIR"], "unix.socket")
    if os.path.exists("/var/snap/lxd/common/lxd/unix.socket"):
        return "/var/snap/lxd/common/lxd/unix.socket"
    return "/var/lib/lxd/unix.socket"


def missing_socket_message(path: str, lxd_installed: bool) -> str:
    if not lxd_installed:
        return f"LXD is not installed (no lxd command, no socket at {path})"
    return f"LXD is not running: no socket at {path} (start it, then `lxd waitready`)"


# --- the I/O half ----------------------------------------------------------


class LxdUnavailable(Exception):
    """Cannot talk to LXD right now; the message says why."""


class _EventSocket(_PylxdSocket):  # type: ignore[misc]
    """The events websocket: every JSON message goes to QUEUE, then _CLOSED."""

    queue: queue.Queue[dict[str, Any] | None]

    def received_message(self, message: Any) -> None:
        try:
            event = json.loads(message.data.decode("utf-8"))
        except ValueError as err:
            log.warning("unreadable LXD event: %s", err)
            return
        if isinstance(event, dict):
            self.queue.put(event)

    def closed(self, code: int, reason: str | None = None) -> None:
        log.debug("LXD events websocket closed (%s %s)", code, reason)
        self.queue.put(_CLOSED)

    def unhandled_error(self, error: BaseException) -> None:
        log.debug("LXD events websocket: %s", error)


class LxdRuntime:
    name = NAME

    def __init__(
        self, endpoint: str | None = None, lxd_dir: str = "/var/lib/lxd", *, project: str = DEFAULT_PROJECT
    ) -> None:
        self.endpoint = endpoint
        self.lxd_dir = lxd_dir
        self.project = project

    def where(self) -> str:
        return self.endpoint or default_socket()

    def run(self, emit: Callable[[Message], None], stop: threading.Event) -> None:
        attempt = 0
        down = False  # this outage has been reported
        while not stop.is_set():
            try:
                client = self._connect()
            except LxdUnavailable as err:
                reason = str(err)
            else:
                down, attempt = False, 0
                reason = self._session(client, emit, stop)
            if stop.is_set():
                break
            if not down:
                log.warning("%s", reason)
                emit(RuntimeState(NAME, False, reason))
                down = True
            attempt += 1
            stop.wait(reconnect_delay(attempt))

    def _connect(self) -> Any:
        if self.endpoint is None:
            path: str | None = default_socket()
        else:
            path = self.endpoint if self.endpoint.startswith("/") else None  # else an https:// URL
        try:
            if path is not None:
                _probe(path)
            return pylxd.Client(endpoint=self.endpoint, timeout=API_TIMEOUT, project=self.project)
        except LxdUnavailable:
            raise
        except Exception as err:  # pylxd raises requests' and its own errors alike
            why = str(err) or type(err).__name__
            raise LxdUnavailable(f"cannot connect to LXD at {self.where()}: {why}") from err

    def _session(self, client: Any, emit: Callable[[Message], None], stop: threading.Event) -> str:
        """One connection: connected, then follow. Returns why it ended."""
        try:
            emit(RuntimeState(NAME, True))
            return self._follow(client, emit, stop)
        except Exception as err:  # ours or pylxd's bug: log it, reconnect, never raise
            log.exception("the LXD runtime failed")
            return f"LXD runtime error: {err}"
        finally:
            client.api.session.close()

    def _follow(self, client: Any, emit: Callable[[Message], None], stop: threading.Event) -> str:
        """Open the events websocket, list, then deliver events until the stream
        ends (returns why) or STOP is set."""
        events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        try:
            ws = self._open_events(client, events)
        except Exception as err:
            return f"cannot follow LXD events at {self.where()}: {err}"
        reader = threading.Thread(target=ws.run, name="tandem-lxd-events", daemon=True)
        reader.start()
        try:
            build = self._builder(client)
            emit(Listing(NAME, self._list(client, build)))
            while not stop.is_set():
                try:
                    event = events.get(timeout=POLL)
                except queue.Empty:
                    continue
                if event is _CLOSED:
                    return f"LXD at {self.where()} went away (its event stream closed)"
                self._deliver(client, event, emit, build)
            return "stopped"
        except Exception as err:  # the daemon died mid-call, or answered nonsense
            return f"lost LXD at {self.where()}: {err}"
        finally:
            _close(ws)
            reader.join(JOIN_TIMEOUT)
            if reader.is_alive():
                log.error("the LXD events thread did not end within %ss", JOIN_TIMEOUT)

    def _open_events(self, client: Any, events: queue.Queue[dict[str, Any] | None]) -> _EventSocket:
        ws: _EventSocket = client.events(websocket_client=_EventSocket, event_types={EventType.Lifecycle})
        ws.queue = events
        if self.project != DEFAULT_PROJECT:
            ws.resource += "&" + parse.urlencode({"project": self.project})
        ws.sock.settimeout(API_TIMEOUT)  # the handshake; run() makes it blocking again
        try:
            ws.connect()
        except BaseException:
            with contextlib.suppress(Exception):
                ws.close_connection()
            raise
        return ws

    def _builder(self, client: Any) -> Builder:
        """Instance data -> Container, knowing where this project keeps custom volumes."""
        volumes = DEFAULT_PROJECT
        if self.project != DEFAULT_PROJECT:
            config = client.api.projects[self.project].get().json()["metadata"].get("config") or {}
            volumes = volume_project(self.project, config)
        return functools.partial(container_from_instance, lxd_dir=self.lxd_dir, volumes=volumes)

    def _list(self, client: Any, build: Builder) -> tuple[Container, ...]:
        response = client.api.instances.get(params={"recursion": "1"})
        found = []
        for data in response.json()["metadata"]:
            if data.get("status") in LISTED_STATUSES and (container := build(data)):
                found.append(container)
        log.info("LXD lists %d running container(s)", len(found))
        return tuple(found)

    def _deliver(
        self, client: Any, event: Mapping[str, Any], emit: Callable[[Message], None], build: Builder
    ) -> None:
        change = parse_lifecycle(event)
        if change is None or change.project != self.project:
            return
        if change.action is not Action.STARTED:
            emit(ContainerEvent(NAME, change.action, change.name, old_name=change.old_name))
            return
        try:
            data = client.api.instances[change.name].get().json()["metadata"]
        except lxd_errors.NotFound:
            log.info("LXD instance %s started and vanished before we looked", change.name)
            return
        container = build(data)
        if container is not None:  # a virtual machine otherwise
            emit(ContainerEvent(NAME, Action.STARTED, change.name, container=container))


def _probe(path: str) -> None:
    """Connect to the unix socket once ourselves: pylxd leaks its socket when
    the connect fails (a stale socket of a killed daemon), and we can say why."""
    if not os.path.exists(path):
        raise LxdUnavailable(missing_socket_message(path, shutil.which("lxd") is not None))
    try:
        probe_socket(path, API_TIMEOUT)
    except ConnectionError as err:
        raise LxdUnavailable(f"LXD: {err} (is the daemon running?)") from None


def _close(ws: Any) -> None:
    """End the websocket now: a close frame if we can, then shut the socket so
    the reader's recv() returns."""
    with contextlib.suppress(Exception):
        ws.close()
    sock = ws.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
