"""Which container syncs what, and where: the pure decision.

A container's policy is built in layers, each setting only what it names:
built-in defaults < ``[defaults]`` of the settings < matching ``[[rules]]`` (in
file order) < the container's labels (Docker ``tandem.*``, LXD
``user.tandem.*``) < the override stored through the API. ``plan`` turns the
result into the ``ContainerSpec`` the worker runs, or None when the container
is not to be synced, or raises ``PolicyError`` saying what is wrong.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import stat
import string
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from pydantic import ValidationError

from orchestrator.runtimes import Container, Mount
from orchestrator.settings import BUILTIN, ContainerPolicy, Settings, SplitBrain, shown
from workers.spec import ContainerSpec, Destination, WorkerSpec

BUILTIN_DELAY = BUILTIN.delay or 1.0
BUILTIN_SPLIT_BRAIN = BUILTIN.split_brain or SplitBrain.NEWEST

LABEL_KEYS = ("enable", "dest", "paths", "exclude", "delay", "split-brain", "max-lag")
PLACEHOLDERS = ("host", "container", "mount", "runtime")
# Container names tandem syncs and accepts from the API: they end up in paths and URLs.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_NAME = re.compile(NAME_PATTERN)


class PolicyError(ValueError):
    """A container's configuration cannot be used; the message says why."""


def from_labels(labels: Mapping[str, str]) -> ContainerPolicy:
    """The policy layer of a container's ``tandem.*`` labels."""
    values: dict[str, object] = {}
    problems = []
    for key, raw in sorted(labels.items()):
        name = key.removeprefix("tandem.")
        if name not in LABEL_KEYS:
            problems.append(
                f"unknown label {shown(key)} (known: {', '.join('tandem.' + k for k in LABEL_KEYS)})"
            )
            continue
        values[name] = _list(raw) if name in ("paths", "exclude") else raw.strip()
    if problems:
        raise PolicyError("; ".join(problems))
    try:
        return ContainerPolicy.model_validate(values)
    except ValidationError as err:
        raise PolicyError(describe(err, prefix="tandem.")) from None


def _list(raw: str) -> list[str]:
    """'a, b' -> ['a', 'b']; a JSON list for values with commas in them."""
    text = raw.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise PolicyError(f"bad JSON list {shown(text)}: {err}") from None
        except RecursionError:  # json gives up on deep nesting with this, not a ValueError
            raise PolicyError(f"bad JSON list {shown(text)}: nested too deeply") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise PolicyError(f"{shown(text)} must be a JSON list of strings")
        return items
    return [part.strip() for part in text.split(",") if part.strip()]


def describe(err: ValidationError, prefix: str = "") -> str:
    parts = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]).replace("_", "-")
        parts.append(f"{prefix}{where}: {problem['msg']}")
    return "; ".join(parts)


def effective(container: Container, settings: Settings, override: ContainerPolicy | None) -> ContainerPolicy:
    """The merged policy of CONTAINER (raises PolicyError on bad labels)."""
    policy = settings.defaults.over(BUILTIN)
    for rule in settings.rules:
        if rule.runtime in ("*", container.runtime) and fnmatch.fnmatchcase(container.name, rule.match):
            layer = ContainerPolicy.model_validate(rule.model_dump(exclude={"match", "runtime"}))
            policy = layer.over(policy)
    policy = from_labels(container.labels).over(policy)
    if override is not None:
        policy = override.over(policy)
    return policy


def render_dest(template: str, *, host: str, container: str, mount: str, runtime: str) -> str:
    """TEMPLATE with its placeholders filled in; plain names only, no format specs."""
    values = {"host": host, "container": container, "mount": mount, "runtime": runtime}
    out = []
    for literal, name, spec, conversion in _parse(template):
        out.append(literal)
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            raise PolicyError(
                f"destination template {template!r}: {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not one of "
                f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
        out.append(values[name])
    return "".join(out)


def _parse(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(string.Formatter().parse(template))
    except ValueError as err:
        raise PolicyError(f"destination template {template!r}: {err}") from None


def check_dest(
    dest: str, roots: tuple[str, ...], *, lstat: Callable[[str], os.stat_result] = os.lstat
) -> Destination:
    """DEST parsed; refused when it climbs with '..', names an odd ssh peer,
    (with ROOTS set) lies outside every allowed root, or (local) has a symlink
    on its path as it is now (LSTAT; the worker walks it again before writing)."""
    try:
        parsed = Destination.parse(dest)
    except ValueError as err:
        raise PolicyError(str(err)) from None
    if parsed.kind == "local" and not os.path.isabs(dest):
        raise PolicyError(f"destination {dest!r} must be an absolute path, host:/path or rsync://")
    if ".." in parsed.path.split("/"):
        raise PolicyError(f"destination {dest!r} may not contain '..'")
    if roots and not any(_under(str(parsed), root) for root in roots):
        raise PolicyError(f"destination {dest!r} is outside the allowed dest_roots: {', '.join(roots)}")
    link = _link_on_the_way(parsed.path, lstat) if parsed.kind == "local" else None
    if link is not None:
        raise PolicyError(
            f"destination {dest!r}: {link!r} on its path is a symbolic link (name the real path)"
        )
    return parsed


def _link_on_the_way(path: str, lstat: Callable[[str], os.stat_result]) -> str | None:
    """The first existing component of PATH that is a symlink, else None (a
    missing one ends the walk: the worker makes the rest, 0700)."""
    at = ""
    for name in (n for n in path.split("/") if n not in ("", ".")):
        at = f"{at}/{name}"
        try:
            mode = lstat(at).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            return name
    return None


def own_place(template: str, dest: str, roots: tuple[str, ...], **values: str) -> None:
    """A destination a label or the API set under ROOTS must keep ``{container}``
    as a whole path component below the root, so that it names this container's
    own place and never another's (or the root holding them all)."""
    marked = render_dest(template, **{**values, "container": "{container}"})
    try:
        text = str(Destination.parse(marked))
    except ValueError:
        text = ""
    rendered = str(Destination.parse(dest))  # the root it is under counts, not the marked text
    depth = max((len(r.rstrip("/").split("/")) for r in roots if _under(rendered, r)), default=0)
    if "{container}" not in text.split("/")[depth:]:
        raise PolicyError(
            f"destination {dest!r} (from a label or the API) must keep {{container}} as a whole "
            f"path component below the dest_roots, e.g. {roots[0].rstrip('/')}/{{container}}/{{mount}}"
        )


def _key(dest: str) -> tuple[str, str, tuple[str, ...]]:
    """What two destinations are compared by: kind, host, normalised path parts."""
    parsed = Destination.parse(dest)
    path = posixpath.normpath("/" + parsed.path)
    return parsed.kind, parsed.host.lower(), tuple(p for p in path.split("/") if p)


def clash(dests: Iterable[str], others: Mapping[str, Iterable[str]]) -> str | None:
    """Why one of DESTS cannot be used beside the destinations of OTHERS (container
    -> its destinations): the same place, or one inside the other. None: apart."""
    for dest in dests:
        mine = _key(dest)
        for name, theirs in sorted(others.items()):
            for other in theirs:
                kind, host, parts = _key(other)
                if (kind, host) != mine[:2]:
                    continue
                shorter = min(len(parts), len(mine[2]))
                if parts[:shorter] == mine[2][:shorter]:
                    how = "is" if len(parts) == len(mine[2]) else "overlaps"
                    return f"destination {dest!r} {how} {name}'s destination {other!r}"
    return None


def _under(dest: str, root: str) -> bool:
    root = root.rstrip("/")
    return dest == root or dest.startswith(root + "/")


def select_mounts(container: Container, paths: tuple[str, ...] | None) -> tuple[Mount, ...]:
    """The mounts to sync: every default one, or those at PATHS ('/' = root fs)."""
    if paths is None:
        chosen = container.mounts
    else:
        offered = {os.path.normpath(m.target): m for m in (*container.mounts, *container.extra)}
        missing = [p for p in paths if os.path.normpath(p) not in offered]
        if missing:
            known = ", ".join(sorted(offered)) or "none"
            raise PolicyError(
                f"tandem.paths: {', '.join(missing)} not a mount of {container.name} (mounts: {known})"
            )
        chosen = tuple(offered[os.path.normpath(p)] for p in dict.fromkeys(paths))
    if not chosen:
        raise PolicyError(
            f"{container.name} has no volume or bind mount to sync; "
            "set tandem.paths (e.g. '/' for the writable layer or root filesystem)"
        )
    return chosen


def pair_file(settings: Settings, kind: str, name: str, mount: str, suffix: str) -> Path:
    """STATE_DIR/KIND/NAME/MOUNT+SUFFIX: a file of one pair (ancestor snapshot, split-brain report)."""
    return settings.state_dir / kind / name / f"{mount}{suffix}"


def standby_file(settings: Settings, name: str) -> Path:
    """While this file exists the container's worker sends nothing (``tandem pause``)."""
    return settings.state_dir / "standby" / name


def plan(
    container: Container,
    settings: Settings,
    override: ContainerPolicy | None = None,
    *,
    parent_pid: int | None = None,
) -> ContainerSpec | None:
    """The worker CONTAINER needs, or None when it is not to be synced."""
    policy = effective(container, settings, override)
    if not policy.enable:
        return None
    if not _NAME.match(container.name):
        raise PolicyError(f"container name {container.name!r} cannot be used in a path")
    if not policy.dest:
        raise PolicyError("no destination: set tandem.dest or dest in [defaults] of the config file")
    untrusted = (override is not None and override.dest is not None) or from_labels(
        container.labels
    ).dest is not None
    mounts = select_mounts(container, policy.paths)
    if len(mounts) > 1 and "{mount}" not in policy.dest:
        raise PolicyError(
            f"{len(mounts)} mounts but the destination template {policy.dest!r} has no {{mount}}"
        )
    pairs = []
    for mount in mounts:
        dest = render_dest(
            policy.dest,
            host=settings.host,
            container=container.name,
            mount=mount.name,
            runtime=container.runtime,
        )
        parsed = check_dest(dest, settings.dest_roots)
        if untrusted and settings.dest_roots:
            own_place(
                policy.dest,
                dest,
                settings.dest_roots,
                host=settings.host,
                container=container.name,
                mount=mount.name,
                runtime=container.runtime,
            )
        # The worker makes a local or ssh DEST's missing directories itself (0700, never
        # through a symlink); rsync's --mkpath, which follows links, only for a daemon.
        mkpath = ("--mkpath",) if parsed.kind == "rsyncd" else ()
        try:
            pairs.append(
                WorkerSpec(
                    source=mount.source,
                    dest=dest,
                    label=f"{container.name}/{mount.name}",
                    delay=policy.delay if policy.delay is not None else BUILTIN_DELAY,
                    exclude=policy.exclude or (),
                    rsh=settings.rsh,
                    rsync_arg=(*mkpath, *settings.rsync_args),
                    json=True,
                    heartbeat=settings.heartbeat,
                    stop_timeout=settings.stop_timeout,
                    parent_pid=parent_pid,
                    log_level=settings.log_level,
                    standby_file=str(standby_file(settings, container.name)),
                    split_brain=(policy.split_brain or BUILTIN_SPLIT_BRAIN).value,
                    snapshot_file=str(
                        pair_file(settings, "snapshots", container.name, mount.name, ".json.gz")
                    ),
                    split_brain_report=str(
                        pair_file(settings, "split-brain", container.name, mount.name, ".json")
                    ),
                    host_name=settings.host,
                    peer_name=settings.peer_name,
                    modify_window=settings.modify_window,
                    backup_dir=settings.backup_dir,
                )
            )
        except ValidationError as err:
            raise PolicyError(describe(err)) from None
    dests = [p.dest for p in pairs]
    if len(set(dests)) != len(dests):
        raise PolicyError(f"two mounts of {container.name} map to one destination: {sorted(dests)}")
    try:
        return ContainerSpec(
            name=container.name,
            pairs=tuple(pairs),
            pid_file=str(settings.state_dir / "workers" / f"{container.name}.pid"),
        )
    except ValidationError as err:
        raise PolicyError(describe(err)) from None
