"""The pure half of the runtime adapters, as tables."""

from __future__ import annotations

import pytest

from orchestrator.runtimes import Action
from orchestrator.runtimes.events import (
    RECONNECT_FIRST,
    RECONNECT_MAX,
    docker_action,
    lxd_action,
    lxd_instance_name,
    lxd_labels,
    mount_name,
    reconnect_delay,
    tandem_labels,
)


@pytest.mark.parametrize(
    ("raw", "action"),
    [
        ("start", Action.STARTED),
        ("die", Action.STOPPED),
        ("destroy", Action.DESTROYED),
        ("rename", Action.RENAMED),
        ("stop", None),  # follows die on a normal stop
        ("kill", None),
        ("create", None),
        ("restart", None),
        ("exec_start: sh -c ls", None),
        ("health_status: healthy", None),
        ("", None),
    ],
)
def test_docker_action(raw: str, action: Action | None) -> None:
    assert docker_action(raw) is action


@pytest.mark.parametrize(
    ("raw", "action"),
    [
        ("instance-started", Action.STARTED),
        ("instance-restarted", Action.STARTED),
        ("instance-stopped", Action.STOPPED),
        ("instance-shutdown", Action.STOPPED),
        ("instance-deleted", Action.DESTROYED),
        ("instance-renamed", Action.RENAMED),
        ("instance-created", None),
        ("instance-updated", None),
        ("start", None),
        ("", None),
    ],
)
def test_lxd_action(raw: str, action: Action | None) -> None:
    assert lxd_action(raw) is action


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("/1.0/instances/t1", "t1"),
        ("/1.0/containers/t1?project=x", "t1"),
        ("/1.0/instances/t1/", "t1"),
        ("/1.0/instances/web-2?project=default&x=y", "web-2"),
        ("t1", "t1"),
    ],
)
def test_lxd_instance_name(source: str, name: str) -> None:
    assert lxd_instance_name(source) == name


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({}, {}),
        ({"tandem.sync": "peer", "other": "x"}, {"tandem.sync": "peer"}),
        (
            {"tandem.mounts": "data,rootfs", "tandem.peer": "b"},
            {"tandem.mounts": "data,rootfs", "tandem.peer": "b"},
        ),
        ({"tandemx": "1", "com.tandem.a": "2", "TANDEM.a": "3"}, {}),
    ],
)
def test_tandem_labels(labels: dict[str, str], expected: dict[str, str]) -> None:
    assert tandem_labels(labels) == expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, {}),
        ({"user.tandem.sync": "peer", "limits.cpu": "2"}, {"tandem.sync": "peer"}),
        ({"user.other": "x", "tandem.sync": "y", "volatile.base_image": "z"}, {}),
        ({"user.tandem.a.b": "1"}, {"tandem.a.b": "1"}),
    ],
)
def test_lxd_labels(config: dict[str, str], expected: dict[str, str]) -> None:
    assert lxd_labels(config) == expected


@pytest.mark.parametrize(
    ("target", "name"),
    [
        ("/", "rootfs"),
        ("", "rootfs"),
        ("/data", "data"),
        ("/data/", "data"),
        ("/var/lib/db", "var-lib-db"),
        ("//x/../y", "x-y"),  # '..' and empty parts are dropped, not resolved
        ("/./a", "a"),
        ("/srv/my files", "srv-my_files"),
        ("/srv/a:b@c", "srv-a_b_c"),
        ("/opt/app-1.2_x", "opt-app-1.2_x"),
    ],
)
def test_mount_name(target: str, name: str) -> None:
    assert mount_name(target) == name


def test_reconnect_delay_doubles_then_caps() -> None:
    delays = [reconnect_delay(n) for n in range(1, 12)]
    assert delays[:4] == [RECONNECT_FIRST, RECONNECT_FIRST * 2, RECONNECT_FIRST * 4, RECONNECT_FIRST * 8]
    assert delays == sorted(delays)
    assert delays[-1] == RECONNECT_MAX
    assert max(delays) == RECONNECT_MAX
    assert reconnect_delay(1000) == RECONNECT_MAX


@pytest.mark.parametrize("attempt", [0, -3])
def test_reconnect_delay_before_the_first_attempt(attempt: int) -> None:
    assert reconnect_delay(attempt) == RECONNECT_FIRST
