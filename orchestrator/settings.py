"""The supervisor's settings: read once, typed, validated, unknown keys rejected.

Sources, strongest first: ``tandem serve`` flags, ``TANDEM_*`` environment
variables (nested keys with ``__``: ``TANDEM_DEFAULTS__DELAY=2``), the TOML
file (``--config``, default ``/etc/tandem/tandem.toml`` when it exists), then
the defaults written here. The same names are used everywhere.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG = "/etc/tandem/tandem.toml"

# Bounds on what labels, the config file and the API may set: values come from
# whoever runs a container (labels) or calls the API, and end up in paths, argv,
# the store and every state update.
MAX_TEXT = 4096  # a destination template, a container path, a regex (PATH_MAX)
MAX_ITEMS = 1024  # paths or excludes of one policy
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]


def shown(value: str, limit: int = 120) -> str:
    """VALUE quoted for a message, cut to about LIMIT characters (a label may
    hold megabytes)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


class SplitBrain(StrEnum):
    NEWEST = "newest"
    LOCAL = "local"
    REMOTE = "remote"
    KEEP_BOTH = "keep-both"
    MANUAL = "manual"


class ContainerPolicy(BaseModel):
    """What a container syncs and how. Every field is optional: a layer
    (defaults, config rule, labels, API override) sets only what it names."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    enable: bool | None = Field(None, description="sync this container (true/false)")
    dest: Text | None = Field(None, description="destination template: {host} {container} {mount} {runtime}")
    paths: tuple[Text, ...] | None = Field(
        None, max_length=MAX_ITEMS, description="container paths to sync ('/' = root fs)"
    )
    exclude: tuple[Text, ...] | None = Field(
        None, max_length=MAX_ITEMS, description="regexes of paths never synced"
    )
    delay: float | None = Field(None, ge=0, le=86400, description="collect window (s)")
    split_brain: SplitBrain | None = Field(
        None, alias="split-brain", description="newest, local, remote, keep-both or manual"
    )
    max_lag: float | None = Field(None, alias="max-lag", gt=0, description="lag SLO (s) for health")

    @field_validator("enable", mode="before")
    @classmethod
    def _bool_or_word(cls, value: object) -> object:
        if value is None or isinstance(value, bool | str):  # a word: labels are strings
            return value
        raise ValueError("must be true or false")

    @field_validator("delay", "max_lag", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("must be a number of seconds")
        return value

    @field_validator("paths")
    @classmethod
    def _absolute(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for path in value or ():
            if not path.startswith("/") or "\0" in path:
                raise ValueError(f"{shown(path)} is not an absolute container path")
            if ".." in path.split("/"):
                raise ValueError(f"{shown(path)}: '..' is not allowed in a container path")
        return value

    @field_validator("exclude")
    @classmethod
    def _regexes(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for pattern in value or ():
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as err:  # a{4294967296}, (((...)))
                raise ValueError(f"bad regex {shown(pattern)}: {err}") from None
        return value

    def over(self, base: ContainerPolicy) -> ContainerPolicy:
        """This layer on top of BASE: the fields set here win."""
        return base.model_copy(update=self.model_dump(exclude_none=True))


BUILTIN = ContainerPolicy.model_validate({"enable": False, "delay": 1.0, "split-brain": "newest"})


class Rule(ContainerPolicy):
    """A [[rules]] entry: a policy for the containers whose name matches."""

    match: Text = Field(description="glob on the container name, e.g. 'db-*'")
    runtime: Literal["docker", "lxd", "lxc", "*"] = "*"


class Settings(BaseSettings):
    """``tandem serve`` settings (TOML keys, TANDEM_* variables and flags)."""

    model_config = SettingsConfigDict(
        env_prefix="TANDEM_", env_nested_delimiter="__", extra="forbid", frozen=True, allow_inf_nan=False
    )

    host: str = Field(
        default_factory=socket.gethostname,
        max_length=255,
        description="{host} in destination templates",
    )
    state_dir: Path = Field(Path("/var/lib/tandem"), description="worker logs, pid files, LXC hook socket")
    defaults: ContainerPolicy = Field(
        ContainerPolicy(), description="policy for every container, below rules, labels and API overrides"
    )
    rules: tuple[Rule, ...] = Field((), description="policies by container name, applied in order")
    docker: bool = Field(True, description="follow the Docker daemon")
    docker_host: str | None = Field(None, description="Docker API URL (default: DOCKER_HOST or the socket)")
    lxd: bool = Field(True, description="follow the LXD daemon")
    lxd_socket: str | None = Field(None, description="LXD unix socket (default: LXD's own)")
    lxd_dir: str = Field("/var/lib/lxd", description="LXD's directory (storage pools under it)")
    dest_roots: tuple[str, ...] = Field(
        (),
        description="if set, every destination (local path, host:/path) must lie under one of these",
    )
    rsh: str | None = Field(None, description="remote shell for ssh destinations, e.g. 'ssh -i KEY'")
    rsync_args: tuple[str, ...] = Field((), description="extra rsync arguments for every worker")
    heartbeat: float = Field(5.0, gt=0, description="seconds between worker heartbeats")
    heartbeat_timeout: float = Field(60.0, gt=0, description="kill and restart a worker this long silent")
    stop_timeout: float = Field(30.0, gt=0, description="time for a worker's final flush on stop")
    restart_delay: float = Field(1.0, gt=0, description="first restart backoff (s), doubled per crash")
    restart_delay_max: float = Field(60.0, gt=0, description="longest restart backoff (s)")
    healthy_after: float = Field(60.0, gt=0, description="a worker up this long resets its backoff")
    inotify_warn: float = Field(0.8, gt=0, le=1, description="warn above this share of the inotify limits")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug, info, warning or error (supervisor and workers)"
    )
    peer_name: str = Field(
        "",
        max_length=255,
        description="the peer's name for split-brain tie-breaks and conflict copies (default: DEST's host)",
    )
    backup_dir: str | None = Field(
        None,
        description="split-brain: where a losing side's files go (absolute; default ROOT/.tandem-backup)",
    )
    modify_window: float = Field(
        0.001,
        ge=0,
        description="mtimes this close (s) are equal, for split-brain and rsync runs (1 or 2 for "
        "coarse filesystems; below 1 rsync compares to the nanosecond)",
    )
    api_host: str = Field("127.0.0.1", description="address the REST API listens on")
    api_port: int = Field(8765, ge=0, le=65535, description="REST API port (0: any free port)")
    api_token: SecretStr | None = Field(
        None, description="bearer token the API requires (needed unless api_host is loopback)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.heartbeat * 2 > self.heartbeat_timeout:
            raise ValueError(
                f"heartbeat_timeout ({self.heartbeat_timeout}) must be at least "
                f"twice heartbeat ({self.heartbeat})"
            )
        if self.restart_delay_max < self.restart_delay:
            raise ValueError("restart_delay_max must not be below restart_delay")
        if self.api_token is not None and not self.api_token.get_secret_value().strip():
            raise ValueError("api_token is empty")
        if self.api_token is None and not loopback(self.api_host):
            raise ValueError(f"api_host {self.api_host!r} is not loopback: set api_token")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def reference() -> list[tuple[str, str, str, str]]:
    """Every setting as (TOML key, environment variable, default, meaning): the
    source of the README table and of ``tandem serve --help``."""
    shown = {"host": "the host name", "defaults": "", "rules": ""}
    rows = []
    for name, field in Settings.model_fields.items():
        if name in shown:
            default = shown[name]
        elif field.default in (None, (), ""):
            default = ""
        else:
            default = str(getattr(field.default, "value", field.default))
        rows.append((name, f"TANDEM_{name.upper()}", default, field.description or ""))
    return rows


def loopback(host: str) -> bool:
    """HOST only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name could resolve anywhere


class ConfigError(ValueError):
    pass


def load(config: str | None = None, **flags: Any) -> Settings:
    """Read the settings: FLAGS (None = not given), the environment, CONFIG (a
    TOML file that must exist; default /etc/tandem/tandem.toml if present).
    A ConfigError names the file and every bad key."""
    if config is not None and not os.path.isfile(config):
        raise ConfigError(f"config file {config} does not exist")
    path = config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)

    class FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        return FromFile(**{k: v for k, v in flags.items() if v is not None})
    except Exception as err:  # pydantic ValidationError, tomllib.TOMLDecodeError
        raise ConfigError(f"{path or 'settings'}: {_describe(err)}") from None


def _describe(err: Exception) -> str:
    errors = getattr(err, "errors", None)
    if not callable(errors):
        return str(err)
    parts = []
    for problem in errors():
        where = ".".join(str(p) for p in problem["loc"]) or "settings"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)
