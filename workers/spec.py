"""The contract between the supervisor (or the CLI) and a sync worker.

A worker is started as ``python -m workers`` and reads one ``WorkerSpec`` as JSON
(from stdin, or from the file descriptor named by ``--spec-fd``). It reports
``StatusReport`` JSON lines on stdout when ``json`` is set, and exits with one of
the ``ExitCode`` values. This module is the only one the orchestrator imports.
"""

from __future__ import annotations

import re
from enum import IntEnum, StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ExitCode(IntEnum):
    """What a worker's exit status means; the supervisor acts on it."""

    OK = 0  # clean stop, everything pending was delivered
    INTERNAL = 1  # unexpected error (a bug): restart with backoff
    CONFIG = 2  # bad options, rules, regex, handler: do not restart
    SAFETY_HALT = 3  # source root vanished (or a side is unsafe): do not restart
    SYNC_FAILED = 4  # retries exhausted / stop flush incomplete: restart with a full resync


class Status(StrEnum):
    """The one word a worker writes to its status file."""

    STARTING = "starting"
    INITIAL_SYNC = "initial-sync"
    RUNNING = "running"
    STANDBY = "standby"
    STOPPING = "stopping"


class Mode(StrEnum):
    RSYNC = "rsync"
    DIRECT = "direct"
    SHELL = "shell"
    PYTHON = "python"


_SSH_DEST = re.compile(r"^(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[^\]]+\]|[^@/:\s]+):(?P<path>.*)$")
# What ssh and rsync take for a peer: a name or IPv4 address, or an IPv6 address
# in brackets (with a zone). Nothing that ssh could read as an option.
_HOST = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._-]+)?\])$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_RSYNCD_PEER = re.compile(r"^(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:]+)(?::\d+)?$")


def _check_peer(text: str, host: str, user: str | None) -> None:
    if not _HOST.match(host):
        raise ValueError(f"DEST {text!r}: {host!r} is not a host name or address")
    if user is not None and not _USER.match(user):
        raise ValueError(f"DEST {text!r}: {user!r} is not a user name")


class Destination(BaseModel):
    """Where a worker sends: a local directory, an ssh peer or an rsync daemon."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["local", "ssh", "rsyncd"]
    path: str  # the directory (local, ssh) or the module/path part (rsyncd)
    host: str = ""
    user: str = ""

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse DEST the way rsync does: ``rsync://``, ``[user@]host:/path``, else local."""
        if not text:
            raise ValueError("DEST is empty")
        if text.startswith("rsync://"):
            rest = text[len("rsync://") :]
            host, _, path = rest.partition("/")
            if not host or not path:
                raise ValueError(f"rsync DEST {text!r} must look like rsync://host/module/path")
            peer = _RSYNCD_PEER.match(host)
            _check_peer(text, peer["host"] if peer else host, peer["user"] if peer else None)
            return cls(kind="rsyncd", host=host, path=path.rstrip("/"))
        match = _SSH_DEST.match(text)
        if match and not text.startswith(("/", "./")):
            _check_peer(text, match["host"], match["user"])
            path = match["path"] or "."
            return cls(kind="ssh", host=match["host"], user=match["user"] or "", path=path)
        return cls(kind="local", path=text)

    @property
    def remote_prefix(self) -> str:
        """The rsync argument prefix that names the peer ('' for a local DEST)."""
        if self.kind == "ssh":
            return f"{self.user + '@' if self.user else ''}{self.host}:"
        if self.kind == "rsyncd":
            return f"rsync://{self.host}/"
        return ""

    def rsync_root(self) -> str:
        """DEST as rsync's last argument, with the trailing slash that means 'into'."""
        return f"{self.remote_prefix}{self.path.rstrip('/')}/"

    def __str__(self) -> str:
        return self.rsync_root().rstrip("/") or "/"


_SKIPPING_RSYNC_ARGS = frozenset(
    {
        "--max-size",
        "--min-size",
        "-u",
        "--update",
        "--existing",
        "--ignore-existing",
        "--exclude",
        "--exclude-from",
        "--include",
        "--include-from",
        "--filter",
        "-f",
        "-F",
        "-C",
        "--cvs-exclude",
    }
)


class WorkerSpec(BaseModel):
    """Everything one worker needs. Field names are the CLI option names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    dest: str
    label: str = ""

    # batching
    delay: float = Field(1.0, ge=0, description="collect window from the first event (s)")
    sync_interval: float = Field(0.0, ge=0, description="minimum gap between two runs (s)")
    bigfile_threshold: int = Field(0, ge=0, description="files strictly larger are big; 0 = off")
    bigfile_delay: float = Field(30.0, ge=0, description="collect window for big files (s)")
    max_batch_paths: int = Field(20000, ge=1, description="split a run above this many paths")
    max_batch_bytes: int = Field(0, ge=0, description="split a run above this many bytes; 0 = off")
    rescan_interval: float = Field(0.0, ge=0, description="periodic full rescan (s); 0 = off")
    max_watches: int = Field(
        0, ge=0, description="inotify watches this pair may hold; 0 = a quarter of max_user_watches"
    )

    # rules
    rules: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    # initial sync
    skip_initial_sync: bool = False
    only_initial_sync: bool = False
    full_initial_sync: bool = False

    # split-brain (before the first sync, when DEST already holds data)
    split_brain: Literal["newest", "local", "remote", "keep-both", "manual"] | None = Field(
        None, description="resolve a DEST that already holds data (off: SOURCE wins, no backups)"
    )
    snapshot_file: str | None = Field(None, description="what both sides agreed on (the ancestor)")
    split_brain_report: str | None = Field(None, description="write the per-path diff here on a halt")
    allow_empty: bool = Field(False, description="sync although one side is empty (a halt otherwise)")
    host_name: str = Field("", description="this side's name (tie-breaks, conflict copies)")
    peer_name: str = Field("", description="DEST's side's name (default: its host)")
    modify_window: float = Field(0.001, ge=0, description="mtimes this close are equal (s)")
    backup_dir: str | None = Field(
        None,
        description="where a losing side's files go, on that side (default: its ROOT/.tandem-backup)",
    )

    # handler
    mode: Mode = Mode.RSYNC
    handler: str | None = None
    rsync_binary: str = "rsync"
    rsync_arg: tuple[str, ...] = ()
    rsh: str | None = None

    # failures
    retries: int = Field(3, ge=0)
    retry_delay: float = Field(0.5, ge=0, description="first backoff step (s), doubled per try")
    ignore_exit_code: tuple[int, ...] = ()
    timeout: float = Field(0.0, ge=0, description="kill a handler run after this long; 0 = never")
    io_timeout: int = Field(30, ge=0, description="rsync --timeout: fail a stalled transfer; 0 = off")
    ignore_failures: bool = False

    # lifecycle
    stop_timeout: float = Field(30.0, gt=0)
    pre_exit_hook: str | None = None
    exit_hook: str | None = None
    pid_file: str | None = None
    status_file: str | None = None
    standby_file: str | None = None
    json_status: bool = Field(False, alias="json")
    heartbeat: float = Field(5.0, gt=0)
    parent_pid: int | None = None  # exit (after a flush) when this process goes away
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("SOURCE is empty")
        return value

    @field_validator("dest")
    @classmethod
    def _dest_parses(cls, value: str) -> str:
        Destination.parse(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WorkerSpec:
        if self.skip_initial_sync and self.only_initial_sync:
            raise ValueError("--skip-initial-sync and --only-initial-sync exclude each other")
        if self.mode in (Mode.SHELL, Mode.PYTHON) and not self.handler:
            raise ValueError(f"--mode {self.mode} needs --handler")
        if self.mode is Mode.PYTHON and self.handler and ":" not in self.handler:
            raise ValueError("--handler for --mode python must be module:function")
        if self.mode is Mode.DIRECT and self.destination.kind != "local":
            raise ValueError("--mode direct needs a local DEST")
        if self.backup_dir is not None and (
            not self.backup_dir.startswith("/") or ".." in self.backup_dir.split("/")
        ):
            raise ValueError("--backup-dir must be an absolute path without '..'")
        if self.split_brain:
            # The ancestor records what a run sent; these make rsync skip files silently.
            skipping = [a for a in self.rsync_arg if a.split("=")[0] in _SKIPPING_RSYNC_ARGS]
            if skipping:
                raise ValueError(
                    f"--split-brain cannot be used with rsync arguments that skip files: {skipping}"
                )
            if self.ignore_exit_code:
                raise ValueError("--split-brain cannot be used with --ignore-exit-code")
        return self

    @property
    def destination(self) -> Destination:
        return Destination.parse(self.dest)

    @property
    def name(self) -> str:
        """The label, or SOURCE when no label was given (as clsync does)."""
        return self.label or self.source


_EXIT_WEIGHT = {
    ExitCode.SAFETY_HALT: 4,
    ExitCode.CONFIG: 3,
    ExitCode.SYNC_FAILED: 2,
    ExitCode.INTERNAL: 1,
    ExitCode.OK: 0,
}


def worst_exit(codes: list[int]) -> ExitCode:
    """The exit code of a worker made of several pairs: a halt outweighs a
    configuration error, which outweighs a failure, which outweighs a bug."""
    known = [ExitCode(c) if c in ExitCode._value2member_map_ else ExitCode.INTERNAL for c in codes]
    return max(known, key=_EXIT_WEIGHT.__getitem__, default=ExitCode.OK)


class ContainerSpec(BaseModel):
    """One worker process for one container: several SOURCE/DEST pairs, each
    synced by its own loop. The process exits when every pair has stopped; when
    one pair ends for any reason, the others flush and stop too, and the exit
    code is the ``worst_exit`` of all of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    pairs: tuple[WorkerSpec, ...] = Field(min_length=1)
    pid_file: str | None = None

    @model_validator(mode="after")
    def _distinct(self) -> ContainerSpec:
        labels = [p.name for p in self.pairs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"pair labels must differ: {labels}")
        return self


class StatusReport(BaseModel):
    """One JSON line a worker writes on stdout (with ``json``)."""

    event: Literal["phase", "sync", "heartbeat", "exit"]
    label: str
    status: Status
    ts: float
    pending: int = 0
    lag: float = 0.0  # age of the oldest unsynced change (s)
    syncs: int = 0
    files: int = 0
    bytes: int = 0  # content bytes transferred (rsync handler)
    failures: int = 0
    resyncs: int = 0
    last_sync_duration: float = 0.0
    last_error: str = ""
    watches: int = 0
    degraded: str = ""  # why inotify cannot cover the tree (periodic rescans instead)
    lagging: str = ""  # why the worker is behind: its lag went LAGGING_AFTER past its collect window
    exit_code: int | None = None
