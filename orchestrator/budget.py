"""The host-wide inotify budget: how much of the kernel's limits the workers use.

Every worker process (one per synced container) holds one inotify instance,
shared by its pairs, and each pair one watch per monitored directory, up to its
cap (``max_watches``, a quarter of max_user_watches by default).
The limits are per user (``fs.inotify.max_user_watches`` and
``max_user_instances``), shared with everything else running as that user. A
worker that cannot add a watch does not fail: it reports itself degraded and
rescans periodically; this module only warns before that happens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SYSCTL = Path("/proc/sys/fs/inotify")


@dataclass(frozen=True)
class Limits:
    max_user_watches: int
    max_user_instances: int


@dataclass(frozen=True)
class Budget:
    watches: int
    instances: int
    limits: Limits
    warnings: tuple[tuple[str, str], ...]  # (what it is about, text)

    def as_dict(self) -> dict[str, object]:
        return {
            "watches": self.watches,
            "max_user_watches": self.limits.max_user_watches,
            "instances": self.instances,
            "max_user_instances": self.limits.max_user_instances,
            "warnings": [text for _, text in self.warnings],
        }


def read_limits(root: Path = SYSCTL) -> Limits:
    def one(name: str, fallback: int) -> int:
        try:
            return int((root / name).read_text().strip())
        except (OSError, ValueError):
            return fallback

    return Limits(one("max_user_watches", 8192), one("max_user_instances", 128))


def assess(
    limits: Limits, watches: Mapping[str, int], instances: int, warn: float, degraded: Mapping[str, str]
) -> Budget:
    """The budget for WATCHES per worker and INSTANCES in use; a warning above
    the WARN share of a limit, and one per degraded worker."""
    used = sum(watches.values())
    warnings: list[tuple[str, str]] = []
    if limits.max_user_watches and used >= warn * limits.max_user_watches:
        top = ", ".join(f"{k} {v}" for k, v in sorted(watches.items(), key=lambda kv: -kv[1])[:3])
        warnings.append(
            (
                "watches",
                f"inotify watches {used} of fs.inotify.max_user_watches={limits.max_user_watches} "
                f"(most: {top}); raise it with sysctl -w fs.inotify.max_user_watches=N",
            )
        )
    if limits.max_user_instances and instances >= warn * limits.max_user_instances:
        warnings.append(
            (
                "instances",
                f"inotify instances {instances} of fs.inotify.max_user_instances={limits.max_user_instances} "
                "(one per worker: per synced container); "
                "raise it with sysctl -w fs.inotify.max_user_instances=N",
            )
        )
    for name, why in sorted(degraded.items()):
        warnings.append((f"degraded:{name}", f"{name}: {why}; periodic rescans instead"))
    return Budget(used, instances, limits, tuple(warnings))
