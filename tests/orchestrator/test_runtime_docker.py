"""The Docker runtime adapter: its pure half as tables, the rest against a real dockerd."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runtimes import (
    Action,
    Container,
    ContainerEvent,
    Listing,
    Message,
    Mount,
    Runtime,
    RuntimeState,
)
from orchestrator.runtimes.docker import (
    DockerRuntime,
    container_from_inspect,
    parse_event,
    since_value,
    unix_path,
)
from tests.dockerd import DockerDaemon, dockerd_fixture, fresh_docker_fixture  # noqa: F401

# --- pure ---------------------------------------------------------------------


def _event(action: str, **attributes: str) -> dict[str, Any]:
    return {"Type": "container", "Action": action, "Actor": {"ID": "abc", "Attributes": attributes}}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (_event("start", name="web"), (Action.STARTED, "abc", "web", "")),
        (_event("die", name="web", exitCode="143"), (Action.STOPPED, "abc", "web", "")),
        (_event("destroy", name="web"), (Action.DESTROYED, "abc", "web", "")),
        (_event("rename", name="new", oldName="/old"), (Action.RENAMED, "abc", "new", "old")),
        (_event("stop", name="web"), None),
        (_event("exec_start: sh -c ls", name="web"), None),
        ({"Type": "network", "Action": "start", "Actor": {"ID": "n"}}, None),
    ],
)
def test_parse_event(raw: dict[str, Any], expected: tuple[str, ...] | None) -> None:
    event = parse_event(raw)
    assert (tuple(event) if event else None) == expected


def test_container_from_inspect_keeps_directories_and_the_layer() -> None:
    info = {
        "Id": "abc",
        "Name": "/web",
        "Config": {"Labels": {"tandem.sync": "peer", "other": "x"}},
        "Mounts": [
            {"Type": "volume", "Source": "/r/volumes/v/_data", "Destination": "/data"},
            {"Type": "bind", "Source": "/srv/db", "Destination": "/var/lib/db"},
            {"Type": "bind", "Source": "/etc/hosts.file", "Destination": "/etc/hosts"},  # a file
            {"Type": "tmpfs", "Source": "", "Destination": "/run"},
        ],
        "GraphDriver": {"Data": {"UpperDir": "/r/overlay2/x/diff", "MergedDir": "/r/overlay2/x/merged"}},
    }
    dirs = {"/r/volumes/v/_data", "/srv/db", "/r/overlay2/x/diff"}
    assert container_from_inspect(info, isdir=dirs.__contains__) == Container(
        runtime="docker",
        name="web",
        id="abc",
        labels={"tandem.sync": "peer"},
        mounts=(
            Mount("data", "/r/volumes/v/_data", "/data", "volume"),
            Mount("var-lib-db", "/srv/db", "/var/lib/db", "bind"),
        ),
        extra=(Mount("rootfs", "/r/overlay2/x/diff", "/", "layer"),),
    )
    bare = container_from_inspect(
        {"Id": "i", "Name": "/n", "Config": {"Labels": None}}, isdir=dirs.__contains__
    )
    assert (bare.labels, bare.mounts, bare.extra) == ({}, (), ())


def test_is_a_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    runtime: Runtime = DockerRuntime()
    assert runtime.name == "docker"
    assert DockerRuntime().url == "unix:///var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "unix:///x.sock")
    assert DockerRuntime().url == "unix:///x.sock"
    assert DockerRuntime("tcp://h:2375").url == "tcp://h:2375"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("unix:///var/run/docker.sock", "/var/run/docker.sock"),
        ("http+unix:///tmp/d.sock", "/tmp/d.sock"),
        ("tcp://10.0.0.1:2375", None),
    ],
)
def test_unix_path(url: str, path: str | None) -> None:
    assert unix_path(url) == path


@pytest.mark.parametrize(
    ("ns", "value"),
    [(1795547662_713022705, "1795547662.713022705"), (5_000000001, "5.000000001"), (0, "0.000000000")],
)
def test_since_value_is_exact(ns: int, value: str) -> None:
    assert since_value(ns) == value


# --- against the test dockerd -------------------------------------------------


class Follower:
    """DockerRuntime.run in a thread, its messages in a queue."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.messages: queue.Queue[Message] = queue.Queue()
        self.seen: list[Message] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=runtime.run, args=(self.messages.put, self.stop), daemon=True)
        self.thread.start()

    def next(self, match: Callable[[Message], bool], timeout: float = 10.0, what: str = "") -> Message:
        """The next message that MATCHes (the ones before it are kept in .seen)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                message = self.messages.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"no {what or 'matching message'} in {timeout}s; saw {self.seen}"
                ) from None
            self.seen.append(message)
            if match(message):
                return message

    def event(self, action: Action, name: str, timeout: float = 10.0) -> ContainerEvent:
        message = self.next(
            lambda m: isinstance(m, ContainerEvent) and m.action is action and m.name == name,
            timeout,
            f"{action} of {name}",
        )
        assert isinstance(message, ContainerEvent)
        return message

    def state(self, connected: bool, timeout: float = 10.0) -> RuntimeState:
        message = self.next(
            lambda m: isinstance(m, RuntimeState) and m.connected is connected,
            timeout,
            f"connected={connected}",
        )
        assert isinstance(message, RuntimeState)
        return message

    def listing(self, timeout: float = 10.0) -> Listing:
        message = self.next(lambda m: isinstance(m, Listing), timeout, "a listing")
        assert isinstance(message, Listing)
        return message

    def close(self, timeout: float = 2.0) -> float:
        """Set stop; returns how long run() took to return."""
        start = time.monotonic()
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"run() still running {timeout}s after stop"
        return time.monotonic() - start


@pytest.fixture
def follow(fresh_docker: DockerDaemon) -> Iterator[Callable[..., Follower]]:
    started: list[Follower] = []

    def start(base_url: str | None = fresh_docker.host) -> Follower:
        follower = Follower(DockerRuntime(base_url))
        started.append(follower)
        return follower

    yield start
    for follower in started:
        follower.close(timeout=5)


def _names(listing: Listing) -> dict[str, Container]:
    return {c.name: c for c in listing.containers}


@pytest.mark.docker
@pytest.mark.real
def test_listing_describes_running_containers(
    fresh_docker: DockerDaemon, follow: Callable[..., Follower], tmp_path: Path
) -> None:
    fresh_docker.run(
        "app",
        volumes=["vol1:/data", f"{tmp_path}:/var/lib/db"],
        labels={"tandem.sync": "peer", "com.example": "x"},
    )
    fresh_docker.client.containers.create("tiny:latest", ["/bin/sleep", "1"], name="idle")  # never started
    follower = follow()
    assert follower.state(True).message == ""
    listing = follower.listing()
    assert set(_names(listing)) == {"app"}
    app = _names(listing)["app"]
    assert app.runtime == "docker" and len(app.id) == 64
    assert app.labels == {"tandem.sync": "peer"}
    mounts = {m.name: m for m in app.mounts}
    assert set(mounts) == {"data", "var-lib-db"}
    assert mounts["data"] == Mount("data", f"{fresh_docker.root}/volumes/vol1/_data", "/data", "volume")
    assert Path(mounts["data"].source).is_dir()
    assert mounts["var-lib-db"] == Mount("var-lib-db", str(tmp_path), "/var/lib/db", "bind")
    (layer,) = app.extra
    assert (layer.name, layer.target, layer.kind) == ("rootfs", "/", "layer")
    assert layer.source.startswith(f"{fresh_docker.root}/overlay2/") and Path(layer.source).is_dir()


@pytest.mark.docker
@pytest.mark.real
def test_start_stop_rename_destroy(
    fresh_docker: DockerDaemon, follow: Callable[..., Follower], tmp_path: Path
) -> None:
    follower = follow()
    follower.state(True)
    assert follower.listing().containers == ()

    web = fresh_docker.run("web", volumes=["webdata:/data"], labels={"tandem.sync": "b"})
    started = follower.event(Action.STARTED, "web").container
    assert started is not None and started.id == web.id
    assert started.labels == {"tandem.sync": "b"}
    assert [(m.name, m.kind, m.target) for m in started.mounts] == [("data", "volume", "/data")]
    assert started.mounts[0].source == f"{fresh_docker.root}/volumes/webdata/_data"
    assert [m.kind for m in started.extra] == ["layer"]
    fresh_docker.exec(web, "sh -c 'echo hello > /data/f'")
    assert Path(started.mounts[0].source, "f").read_text() == "hello\n"

    web.rename("web2")
    renamed = follower.event(Action.RENAMED, "web2")
    assert renamed.old_name == "web" and renamed.container is None

    web.stop(timeout=5)
    follower.event(Action.STOPPED, "web2")
    web.remove()
    follower.event(Action.DESTROYED, "web2")
    # exec, kill, stop and create are not passed on
    assert [m.action for m in follower.seen if isinstance(m, ContainerEvent)] == [
        Action.STARTED,
        Action.RENAMED,
        Action.STOPPED,
        Action.DESTROYED,
    ]


@pytest.mark.docker
@pytest.mark.real
def test_container_that_exits_by_itself_is_stopped(
    fresh_docker: DockerDaemon, follow: Callable[..., Follower]
) -> None:
    follower = follow()
    follower.listing()
    fresh_docker.run("brief", command=("/bin/sh", "-c", "sleep 0.3"))
    follower.event(Action.STARTED, "brief")
    follower.event(Action.STOPPED, "brief")


@pytest.mark.docker
@pytest.mark.real
def test_daemon_restart_reconnects_and_lists_again(
    fresh_docker: DockerDaemon, follow: Callable[..., Follower]
) -> None:
    fresh_docker.run("before", labels={"tandem.sync": "b"})
    follower = follow()
    follower.state(True)
    assert set(_names(follower.listing())) == {"before"}

    fresh_docker.restart()  # its containers stop with it and stay stopped
    down = follower.state(False, timeout=15)
    assert fresh_docker.host in down.message
    follower.state(True, timeout=15)
    assert follower.listing().containers == ()
    # and it follows the new daemon's events
    fresh_docker.run("after")
    follower.event(Action.STARTED, "after")
    downs = [m for m in follower.seen if isinstance(m, RuntimeState) and not m.connected]
    assert len(downs) == 1


@pytest.mark.docker
@pytest.mark.real
def test_default_url_comes_from_docker_host(
    fresh_docker: DockerDaemon, follow: Callable[..., Follower], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", fresh_docker.host)
    follower = follow(None)
    follower.state(True)
    follower.listing()


@pytest.mark.docker
@pytest.mark.real
def test_missing_daemon_is_reported_once_and_stop_is_prompt(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/nothing.sock"
    follower = Follower(DockerRuntime(url))
    down = follower.state(False, timeout=5)
    assert url in down.message and "no socket" in down.message and "DOCKER_HOST" in down.message
    time.sleep(1.8)  # three retries (0.5 s, 1 s, ...): still one report
    assert follower.messages.empty() and len(follower.seen) == 1
    assert follower.close(timeout=2) < 2


@pytest.mark.docker
@pytest.mark.real
def test_stop_is_prompt_while_following_events(
    fresh_docker: DockerDaemon, follow: Callable[..., Follower]
) -> None:
    fresh_docker.run("idle")
    follower = follow()
    follower.listing()
    time.sleep(0.3)  # blocked reading the event stream
    assert follower.close(timeout=2) < 1.0
    assert follower.messages.empty()
