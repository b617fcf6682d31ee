"""Transfer handlers: one interface, four variants (rsync, direct, shell, python).

A handler makes DEST equal to SOURCE for an explicit list of paths (a listed
path missing at SOURCE is deleted at DEST), may repeat a rename at DEST, and can
list DEST for a full sync. Each variant is a module of this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from workers.batching import Move
    from workers.snapshot import Tree
    from workers.spec import WorkerSpec


class Verdict(Enum):
    OK = "ok"
    PARTIAL = "partial"  # some paths failed: retry those
    RETRY = "retry"  # transient: retry the whole run
    FATAL = "fatal"  # retrying cannot help (usage, protocol, missing program)


@dataclass(frozen=True)
class Job:
    """One handler run: the paths (relative to SOURCE) and what kind of run it is.

    ``full``: a full sync (compare, copy what differs); otherwise every listed
    path is known to have changed and is sent whatever its size and mtime.
    ``recursive``: a listed directory stands for its whole tree (only used when
    no rule can exclude anything, and only by handlers with ``recursive``).
    ``checksum``: the paths may have changed (found by ctime, not by an event;
    or renamed at DEST after a run may have read another file under the old
    name): a handler that can compare content skips those that are equal.
    ``root``: make the root's own attributes (mode, owner, times) equal too,
    after the paths (a created or deleted entry changes its mtime); the root is
    never in ``paths`` unless ``recursive``.
    """

    paths: tuple[str, ...]
    full: bool
    label: str
    source: str
    dest: str
    recursive: bool = False
    checksum: bool = False
    root: bool = False


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    failed: tuple[str, ...] = ()
    message: str = ""
    bytes: int = 0  # content bytes the run transferred, when the handler knows


Deadline = Callable[[], float | None]


class ConfigError(ValueError):
    """The handler cannot work with this configuration (exit code CONFIG)."""


class Handler(Protocol):
    recursive: bool  # can send a listed directory as a whole tree
    root_attrs: bool  # carries the root's own attributes (``Job.root``)

    def move(self, move: Move, deadline: Deadline) -> bool:
        """Repeat a rename at DEST; False when it could not be done (then the
        new path is sent in full). DEADLINE as for ``scan_dest``."""

    def send(self, job: Job, deadline: Deadline) -> Outcome:
        """Make DEST equal to SOURCE for ``job.paths``."""

    def scan_dest(self, deadline: Deadline) -> Tree | None:
        """DEST's tree for a full sync, or None when this handler cannot know it.
        DEADLINE is called now and then (it also tells the worker it is alive)."""

    def scan_dest_below(self, paths: list[str], deadline: Deadline) -> Tree | None:
        """PATHS at DEST and everything below them, or None when unknown."""


def make_handler(spec: WorkerSpec) -> Handler:
    """Build and check the handler named by ``spec.mode`` (raises ConfigError)."""
    from workers.spec import Mode

    if spec.mode is Mode.RSYNC:
        from workers.transfer.rsync import RsyncHandler

        return RsyncHandler(spec)
    if spec.mode is Mode.DIRECT:
        from workers.transfer.direct import DirectHandler

        return DirectHandler(spec)
    if spec.mode is Mode.SHELL:
        from workers.transfer.shell import ShellHandler

        return ShellHandler(spec)
    from workers.transfer.pycall import PythonHandler

    return PythonHandler(spec)
