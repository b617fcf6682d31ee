"""The pure half of the runtime adapters: raw runtime events -> actions,
LXD config keys -> labels, mount names, reconnect backoff."""

from __future__ import annotations

import re
from collections.abc import Mapping

from orchestrator.runtimes import Action

# Docker: a normal stop gives die then stop; a container that exits by itself
# only die. So a worker starts on start and stops on die.
DOCKER_ACTIONS: Mapping[str, Action] = {
    "start": Action.STARTED,
    "die": Action.STOPPED,
    "destroy": Action.DESTROYED,
    "rename": Action.RENAMED,
}

# LXD: a stop through the API gives instance-stopped, a poweroff inside or a
# daemon shutdown instance-shutdown: both mean stopped. A restart (lxc restart,
# a reboot inside) ends with instance-restarted, not instance-started.
LXD_ACTIONS: Mapping[str, Action] = {
    "instance-started": Action.STARTED,
    "instance-restarted": Action.STARTED,
    "instance-stopped": Action.STOPPED,
    "instance-shutdown": Action.STOPPED,
    "instance-deleted": Action.DESTROYED,
    "instance-renamed": Action.RENAMED,
}

LABEL_PREFIX = "tandem."
LXD_PREFIX = "user.tandem."

RECONNECT_FIRST = 0.5
RECONNECT_MAX = 30.0


def docker_action(action: str) -> Action | None:
    """The action of a Docker container event ('exec_start: sh' and others: None)."""
    return DOCKER_ACTIONS.get(action)


def lxd_action(action: str) -> Action | None:
    return LXD_ACTIONS.get(action)


def lxd_instance_name(source: str) -> str:
    """'/1.0/instances/t1' (or '/1.0/containers/t1?project=x') -> 't1'."""
    path = source.split("?", 1)[0].rstrip("/")
    return path.rsplit("/", 1)[-1]


def tandem_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The tandem.* labels of a Docker container, prefix kept."""
    return {k: v for k, v in labels.items() if k.startswith(LABEL_PREFIX)}


def lxd_labels(config: Mapping[str, str]) -> dict[str, str]:
    """LXD ``user.tandem.X`` config keys as ``tandem.X`` labels."""
    return {k[len("user.") :]: v for k, v in config.items() if k.startswith(LXD_PREFIX)}


_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def mount_name(target: str) -> str:
    """The {mount} name of a container path: '/' -> 'rootfs', '/var/lib/db' -> 'var-lib-db'."""
    parts = [_SLUG.sub("_", p) for p in target.split("/") if p and p not in (".", "..")]
    return "-".join(parts) if parts else "rootfs"


def reconnect_delay(attempt: int) -> float:
    """Seconds to wait before reconnect ATTEMPT (1, 2, ...): doubling, capped."""
    return float(min(RECONNECT_FIRST * 2 ** max(0, attempt - 1), RECONNECT_MAX))
