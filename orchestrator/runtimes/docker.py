"""The Docker runtime: list the running containers, follow container events,
reconnect with backoff when dockerd goes away.

The pure half (an inspect document -> Container, a raw event -> its fields,
an error -> a message) is at the top; ``DockerRuntime`` does the I/O.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import docker
import docker.errors

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
from orchestrator.runtimes.events import docker_action, mount_name, reconnect_delay, tandem_labels

log = logging.getLogger("tandem.runtime.docker")

RUNTIME = "docker"
DEFAULT_HOST = "unix:///var/run/docker.sock"
REQUEST_TIMEOUT = 15  # seconds, for ping, list and inspect (the event stream has none)
MOUNT_KINDS: Mapping[str, str] = {"volume": "volume", "bind": "bind"}


# --- pure -------------------------------------------------------------------


class DockerEvent(NamedTuple):
    action: Action
    id: str
    name: str
    old_name: str = ""


def parse_event(event: Mapping[str, Any]) -> DockerEvent | None:
    """The fields of a raw container event that matter, or None for other actions.

    Docker names the new name in ``Actor.Attributes.name`` (no slash) and the old
    one of a rename in ``oldName`` with a leading slash."""
    if event.get("Type", "container") != "container":
        return None
    action = docker_action(str(event.get("Action", "")))
    if action is None:
        return None
    actor = event.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    cid = str(actor.get("ID") or event.get("id") or "")
    name = str(attributes.get("name", "")).lstrip("/")
    old_name = str(attributes.get("oldName", "")).lstrip("/") if action is Action.RENAMED else ""
    return DockerEvent(action, cid, name, old_name)


def container_from_inspect(
    info: Mapping[str, Any], isdir: Callable[[str], bool] = os.path.isdir
) -> Container:
    """A Container from ``docker inspect``: volumes and bind-mounted directories
    as mounts, the writable layer (overlay2 UpperDir) as the one extra."""
    config = info.get("Config") or {}
    return Container(
        runtime=RUNTIME,
        name=str(info.get("Name", "")).lstrip("/"),
        id=str(info.get("Id", "")),
        labels=tandem_labels(config.get("Labels") or {}),
        mounts=tuple(_mounts(info.get("Mounts") or [], isdir)),
        extra=tuple(_layer(info, isdir)),
    )


def _mounts(entries: list[Mapping[str, Any]], isdir: Callable[[str], bool]) -> Iterator[Mount]:
    for entry in entries:
        kind = MOUNT_KINDS.get(str(entry.get("Type", "")))
        source, target = str(entry.get("Source") or ""), str(entry.get("Destination") or "")
        if kind and source and target and isdir(source):
            yield Mount(name=mount_name(target), source=source, target=target, kind=kind)


def _layer(info: Mapping[str, Any], isdir: Callable[[str], bool]) -> Iterator[Mount]:
    data = (info.get("GraphDriver") or {}).get("Data") or {}
    upper = str(data.get("UpperDir") or "")
    if upper and isdir(upper):
        yield Mount(name="rootfs", source=upper, target="/", kind="layer")


def unreachable(url: str, error: BaseException) -> str:
    return f"cannot reach the Docker daemon at {url} ({error}); start dockerd or point DOCKER_HOST at it"


def since_value(ns: int) -> str:
    """A ``since=`` value for a time in nanoseconds, never later than it."""
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def unix_path(url: str) -> str | None:
    """The socket path of a unix:// (or http+unix://) URL; None for other schemes."""
    for scheme in ("unix://", "http+unix://"):
        if url.startswith(scheme):
            return url[len(scheme) :]
    return None


# --- I/O --------------------------------------------------------------------


class _Cancel:
    """Closes the current event stream once STOP is set (from a thread of its own),
    so that run() returns promptly even while blocked reading events."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._lock = threading.Lock()
        self._stream: Any = None
        self._finished = False
        self._thread = threading.Thread(target=self._watch, name="tandem-docker-stop", daemon=True)
        self._thread.start()

    def hold(self, stream: Any) -> None:
        """Make STREAM the one to close on stop (closed at once if stop is already set)."""
        with self._lock:
            self._stream = stream
        if self._stop.is_set():
            _close(stream)

    def release(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        _close(stream)

    def finish(self) -> None:
        self._finished = True
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            if self._finished:
                return
        with self._lock:
            _close(self._stream)


def _probe(url: str) -> None:
    """Fail with a plain reason when a unix socket is missing or refuses: clearer than
    the SDK's error, and the SDK leaks the socket of a failed connect."""
    path = unix_path(url)
    if path is not None:
        probe_socket(path, REQUEST_TIMEOUT)


def _close(stream: Any) -> None:
    if stream is not None:
        with contextlib.suppress(Exception):  # a socket the daemon or the other thread closed
            stream.close()


class DockerRuntime:
    name = "docker"

    def __init__(self, base_url: str | None = None) -> None:
        self.base_url = base_url

    @property
    def url(self) -> str:
        return self.base_url or os.environ.get("DOCKER_HOST") or DEFAULT_HOST

    def run(self, emit: Callable[[Message], None], stop: threading.Event) -> None:
        cancel = _Cancel(stop)
        try:
            self._loop(emit, stop, cancel)
        finally:
            cancel.finish()

    def _loop(self, emit: Callable[[Message], None], stop: threading.Event, cancel: _Cancel) -> None:
        attempt, down = 0, False
        while not stop.is_set():
            try:
                client = self._connect()
            except Exception as exc:
                attempt += 1
                if not down:
                    down = self._report_down(emit, unreachable(self.url, exc))
                log.debug("docker: connect attempt %d failed: %s", attempt, exc)
                stop.wait(reconnect_delay(attempt))
                continue
            attempt, down = 0, False
            reason = self._session(client, emit, cancel)
            if not stop.is_set():
                down = self._report_down(emit, reason)
                attempt = 1
                stop.wait(reconnect_delay(attempt))

    def _report_down(self, emit: Callable[[Message], None], message: str) -> bool:
        log.warning("docker: %s", message)
        with contextlib.suppress(Exception):
            emit(RuntimeState(RUNTIME, False, message))
        return True

    def _connect(self) -> docker.DockerClient:
        _probe(self.url)
        if self.base_url is None:
            client = docker.from_env(timeout=REQUEST_TIMEOUT)
        else:
            client = docker.DockerClient(base_url=self.base_url, timeout=REQUEST_TIMEOUT)
        try:
            client.ping()
        except Exception:
            client.close()
            raise
        return client

    def _session(
        self,
        client: docker.DockerClient,
        emit: Callable[[Message], None],
        cancel: _Cancel,
    ) -> str:
        """List, then follow events until the stream ends; returns why it ended."""
        try:
            # The stream opens before the listing, so nothing falls between them; since=
            # covers the moment dockerd answers the request but has not subscribed yet.
            since = since_value(time.time_ns())
            stream = client.api.events(decode=True, filters={"type": "container"}, since=since)
            cancel.hold(stream)
            log.info("docker: connected to %s", self.url)
            emit(RuntimeState(RUNTIME, True))
            emit(Listing(RUNTIME, tuple(self._running(client))))
            for event in stream:
                message = self._message(client, event)
                if message is not None:
                    emit(message)
            return f"the Docker daemon at {self.url} went away (event stream ended); reconnecting"
        except Exception as exc:
            log.debug("docker: session ended", exc_info=True)
            return f"lost the Docker daemon at {self.url} ({exc}); reconnecting"
        finally:
            cancel.release()
            client.close()

    def _running(self, client: docker.DockerClient) -> Iterator[Container]:
        for summary in client.api.containers(filters={"status": "running"}):
            info = self._inspect(client, str(summary["Id"]))
            if info is not None and (info.get("State") or {}).get("Running"):
                yield container_from_inspect(info)

    def _inspect(self, client: docker.DockerClient, cid: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = client.api.inspect_container(cid)
        except docker.errors.NotFound:
            log.debug("docker: container %s vanished before inspect", cid)
            return None
        return info

    def _message(self, client: docker.DockerClient, raw: Mapping[str, Any]) -> ContainerEvent | None:
        event = parse_event(raw)
        if event is None:
            return None
        if event.action is Action.STARTED:
            info = self._inspect(client, event.id)
            if info is None:
                return None
            container = container_from_inspect(info)
            return ContainerEvent(RUNTIME, event.action, container.name, container=container)
        return ContainerEvent(RUNTIME, event.action, event.name, old_name=event.old_name)
