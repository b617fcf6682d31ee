"""The LXD runtime adapter: pure helpers from plain dicts, then the real daemon."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runtimes import Action, Container, ContainerEvent, Listing, Message, Mount, RuntimeState
from orchestrator.runtimes.lxd import (
    Lifecycle,
    LxdRuntime,
    container_from_instance,
    missing_socket_message,
    parse_lifecycle,
    volume_project,
)
from tests.lxd import LxdDaemon, fresh_lxd_fixture, lxd_fixture  # noqa: F401

WAIT = 15.0
STOP_WITHIN = 1.5

# --- pure ------------------------------------------------------------------


def _instance(**over: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "web",
        "type": "container",
        "project": "default",
        "status": "Running",
        "expanded_config": {
            "user.tandem.enable": "true",
            "user.other": "x",
            "volatile.uuid": "u-1",
            "image.os": "busybox",
        },
        "expanded_devices": {
            "root": {"path": "/", "pool": "default", "type": "disk"},
            "db": {"path": "/var/lib/db", "pool": "fast", "source": "dbvol", "type": "disk"},
            "logs": {"path": "/logs", "source": "/srv/logs", "type": "disk"},  # a host path: not ours
            "eth0": {"type": "nic", "nictype": "bridged", "parent": "br0"},
        },
    }
    data.update(over)
    return data


def test_container_from_instance() -> None:
    assert container_from_instance(_instance(), "/x/lxd") == Container(
        runtime="lxd",
        name="web",
        id="u-1",
        labels={"tandem.enable": "true"},
        mounts=(
            Mount("rootfs", "/x/lxd/storage-pools/default/containers/web/rootfs", "/", "rootfs"),
            Mount("var-lib-db", "/x/lxd/storage-pools/fast/custom/default_dbvol", "/var/lib/db", "custom"),
        ),
    )


def test_container_in_another_project_without_uuid() -> None:
    data = _instance(project="shop", expanded_config={})
    container = container_from_instance(data)
    assert container is not None
    assert container.id == "web"
    assert container.labels == {}
    assert [m.source for m in container.mounts] == [
        "/var/lib/lxd/storage-pools/default/containers/shop_web/rootfs",
        "/var/lib/lxd/storage-pools/fast/custom/shop_dbvol",
    ]


def test_custom_volume_of_a_project_sharing_default_volumes() -> None:
    container = container_from_instance(_instance(project="shop"), volumes="default")
    assert container is not None
    assert container.mounts[1].source == "/var/lib/lxd/storage-pools/fast/custom/default_dbvol"


@pytest.mark.parametrize(
    ("project", "config", "expected"),
    [
        ("default", {}, "default"),
        ("shop", {"features.storage.volumes": "true"}, "shop"),
        ("shop", {"features.storage.volumes": "false"}, "default"),
        ("shop", {}, "default"),
    ],
)
def test_volume_project(project: str, config: dict[str, str], expected: str) -> None:
    assert volume_project(project, config) == expected


def test_virtual_machine_is_not_a_container() -> None:
    assert container_from_instance(_instance(type="virtual-machine")) is None


def test_custom_volumes_sorted_by_target() -> None:
    devices = {
        "root": {"path": "/", "pool": "p", "type": "disk"},
        "b": {"path": "/srv/b", "pool": "p", "source": "vb", "type": "disk"},
        "a": {"path": "/data", "pool": "p", "source": "va", "type": "disk"},
    }
    container = container_from_instance(_instance(expanded_devices=devices))
    assert container is not None
    assert [(m.name, m.kind) for m in container.mounts] == [
        ("rootfs", "rootfs"),
        ("data", "custom"),
        ("srv-b", "custom"),
    ]


def _event(
    action: str, source: str, context: dict[str, str] | None = None, project: str = "default"
) -> dict[str, Any]:
    meta: dict[str, object] = {"action": action, "source": source}
    if context is not None:
        meta["context"] = context
    return {"type": "lifecycle", "project": project, "metadata": meta}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (_event("instance-started", "/1.0/instances/a"), Lifecycle(Action.STARTED, "a", "default")),
        (_event("instance-stopped", "/1.0/instances/a"), Lifecycle(Action.STOPPED, "a", "default")),
        (_event("instance-shutdown", "/1.0/instances/a"), Lifecycle(Action.STOPPED, "a", "default")),
        (
            _event("instance-deleted", "/1.0/instances/a?project=p", project="p"),
            Lifecycle(Action.DESTROYED, "a", "p"),
        ),
        # LXD 5.0: the source is the NEW name, the old one is in the context
        (
            _event("instance-renamed", "/1.0/instances/b", {"old_name": "a"}),
            Lifecycle(Action.RENAMED, "b", "default", old_name="a"),
        ),
        (_event("instance-exec", "/1.0/instances/a", {"command": "sh"}), None),
        (_event("instance-updated", "/1.0/instances/a"), None),
        (_event("instance-started", "/1.0/storage-pools/default/volumes/custom/v"), None),
        ({"type": "logging", "metadata": {"action": "instance-started"}}, None),
        ({"type": "lifecycle"}, None),
    ],
)
def test_parse_lifecycle(event: dict[str, Any], expected: Lifecycle | None) -> None:
    assert parse_lifecycle(event) == expected


def test_missing_socket_message_says_what_to_do() -> None:
    assert "not installed" in missing_socket_message("/s", lxd_installed=False)
    assert "lxd waitready" in missing_socket_message("/s", lxd_installed=True)


# --- the adapter in a thread ---------------------------------------------------


class Follower:
    """A runtime's run() in a thread; its messages in a queue."""

    def __init__(self, runtime: LxdRuntime) -> None:
        self.messages: queue.Queue[Message] = queue.Queue()
        self.seen: list[Message] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=runtime.run, args=(self.messages.put, self.stop))
        self.thread.start()

    def next(self, match: Callable[[Message], bool], what: str, timeout: float = WAIT) -> Message:
        """The next message matching MATCH (earlier ones are skipped, kept in seen)."""
        end = time.monotonic() + timeout
        while True:
            try:
                message = self.messages.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {what} within {timeout}s; got {self.seen}") from None
            self.seen.append(message)
            if match(message):
                return message

    def event(self, action: Action, name: str) -> ContainerEvent:
        message = self.next(
            lambda m: isinstance(m, ContainerEvent) and m.action is action and m.name == name,
            f"{action} of {name}",
        )
        assert isinstance(message, ContainerEvent)
        return message

    def listing(self) -> Listing:
        message = self.next(lambda m: isinstance(m, Listing), "Listing")
        assert isinstance(message, Listing)
        return message

    def state(self, connected: bool) -> RuntimeState:
        message = self.next(
            lambda m: isinstance(m, RuntimeState) and m.connected is connected, f"RuntimeState({connected})"
        )
        assert isinstance(message, RuntimeState)
        return message

    def quiet(self, seconds: float) -> list[Message]:
        """Whatever arrives within SECONDS."""
        time.sleep(seconds)
        got = []
        while not self.messages.empty():
            got.append(self.messages.get_nowait())
        self.seen += got
        return got

    def close(self) -> float:
        start = time.monotonic()
        self.stop.set()
        self.thread.join(10)
        took = time.monotonic() - start
        assert not self.thread.is_alive(), "run() did not return after stop"
        return took


@contextmanager
def following(runtime: LxdRuntime | None = None) -> Iterator[Follower]:
    follower = Follower(runtime or LxdRuntime())
    try:
        yield follower
    finally:
        took = follower.close()
    assert took < STOP_WITHIN, f"run() took {took:.2f}s to return after stop"


def _by_name(listing: Listing) -> dict[str, Container]:
    return {c.name: c for c in listing.containers}


# --- against the real LXD ------------------------------------------------------


@pytest.mark.lxd
@pytest.mark.real
def test_listing_has_labels_rootfs_and_custom_volume(fresh_lxd: LxdDaemon) -> None:
    volume = fresh_lxd.create_volume("tt-vol")
    config = {"user.tandem.enable": "true", "user.tandem.dest": "peer:/backup", "user.note": "x"}
    fresh_lxd.launch("tt-list", config, volumes={"tt-vol": "/data"})
    fresh_lxd.launch("tt-off")
    fresh_lxd.stop("tt-off")
    fresh_lxd.exec("tt-list", "echo in-root > /hello; echo in-vol > /data/hello")
    uuid = fresh_lxd.query("/1.0/instances/tt-list")["config"]["volatile.uuid"]

    with following() as follower:
        assert follower.state(True).message == ""
        found = _by_name(follower.listing())

    assert "tt-off" not in found
    container = found["tt-list"]
    assert container.id == uuid
    assert container.labels == {"tandem.enable": "true", "tandem.dest": "peer:/backup"}
    rootfs, data = container.mounts
    assert rootfs == Mount("rootfs", str(fresh_lxd.rootfs("tt-list")), "/", "rootfs")
    assert data == Mount("data", str(volume), "/data", "custom")
    assert (Path(rootfs.source) / "hello").read_text() == "in-root\n"
    assert (Path(data.source) / "hello").read_text() == "in-vol\n"
    # unprivileged: root inside is uid 100000 on the host
    assert os.stat(Path(data.source) / "hello").st_uid == 100000
    assert os.stat(Path(rootfs.source) / "hello").st_uid == 100000


@pytest.mark.lxd
@pytest.mark.real
def test_start_stop_rename_delete(fresh_lxd: LxdDaemon) -> None:
    with following() as follower:
        follower.listing()
        fresh_lxd.launch("tt-a", {"user.tandem.enable": "true"})
        started = follower.event(Action.STARTED, "tt-a")
        assert started.container is not None
        assert started.container.labels == {"tandem.enable": "true"}
        assert started.container.mounts == (Mount("rootfs", str(fresh_lxd.rootfs("tt-a")), "/", "rootfs"),)
        assert os.path.isdir(started.container.mounts[0].source)

        fresh_lxd.exec("tt-a", "true")  # instance-exec: not a message
        fresh_lxd.stop("tt-a")
        assert follower.event(Action.STOPPED, "tt-a").container is None
        fresh_lxd.rename("tt-a", "tt-b")
        renamed = follower.event(Action.RENAMED, "tt-b")
        assert renamed.old_name == "tt-a"
        fresh_lxd.start_container("tt-b")
        restarted = follower.event(Action.STARTED, "tt-b").container
        assert restarted is not None
        assert restarted.id == started.container.id  # volatile.uuid survives a rename
        fresh_lxd.delete("tt-b")  # --force on a running one: stopped, then deleted
        follower.event(Action.DESTROYED, "tt-b")

    actions = [(m.action, m.name) for m in follower.seen if isinstance(m, ContainerEvent)]
    assert actions == [
        (Action.STARTED, "tt-a"),
        (Action.STOPPED, "tt-a"),
        (Action.RENAMED, "tt-b"),
        (Action.STARTED, "tt-b"),
        (Action.STOPPED, "tt-b"),
        (Action.DESTROYED, "tt-b"),
    ]


@pytest.mark.lxd
@pytest.mark.real
def test_daemon_restart_reconnects_and_lists_again(fresh_lxd: LxdDaemon) -> None:
    fresh_lxd.launch("tt-r", {"user.tandem.enable": "true"})
    with following() as follower:
        assert "tt-r" in _by_name(follower.listing())
        fresh_lxd.restart(keep_containers=True)  # SIGTERM: the container keeps running
        lost = follower.state(False)
        assert "went away" in lost.message
        follower.state(True)
        assert "tt-r" in _by_name(follower.listing())
        fresh_lxd.stop("tt-r")  # events flow again on the new connection
        follower.event(Action.STOPPED, "tt-r")


@pytest.mark.lxd
@pytest.mark.real
def test_lxd_shutdown_stops_containers_and_they_come_back(fresh_lxd: LxdDaemon) -> None:
    fresh_lxd.launch("tt-s")
    with following() as follower:
        follower.listing()
        fresh_lxd.restart(keep_containers=False)  # lxd shutdown: a clean stop of every container
        follower.event(Action.STOPPED, "tt-s")
        follower.state(False)
        follower.state(True)
        # the new daemon starts it again, possibly after it is ready (and listed)
        if "tt-s" not in _by_name(follower.listing()):
            follower.event(Action.STARTED, "tt-s")
    assert fresh_lxd.state("tt-s") == "Running"


def _dead_socket(path: Path) -> Path:
    """A unix socket file nobody listens on (a daemon killed with SIGKILL)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    return path


@pytest.mark.parametrize(("make", "says"), [(lambda p: p, "no socket at"), (_dead_socket, "nothing listens")])
def test_unreachable_endpoint_is_reported_once(
    tmp_path: Path, make: Callable[[Path], Path], says: str
) -> None:
    endpoint = make(tmp_path / "lxd.socket")
    with following(LxdRuntime(endpoint=str(endpoint))) as follower:
        state = follower.state(False)
        assert says in state.message
        assert str(endpoint) in state.message
        assert follower.quiet(1.2) == []  # retries (0.5 s, 1 s) do not repeat it
