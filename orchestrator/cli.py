"""The ``tandem`` command line.

``tandem sync SOURCE DEST [options]`` runs one sync worker in the foreground: the
options become a ``WorkerSpec`` (validated here, so a bad option is reported
before anything starts) and the process execs ``python -m workers`` with the
spec on a memfd, so the worker keeps this PID, terminal and signals.
``tandem serve`` runs the supervisor; the operator commands (``status``,
``workers show``, ``resync``, ``pause``, ``resume``, ``policy``, ``events``)
live in ``commands`` and talk to its REST API.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from workers import __version__
from workers.spec import ExitCode, Mode, WorkerSpec

app = typer.Typer(
    name="tandem",
    help="Keep the data of containers in sync with a peer host.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_B = "Batching"
_R = "Rules"
_I = "Initial sync"
_H = "Handler"
_F = "Failures"
_L = "Lifecycle"
_S = "Split-brain"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tandem {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """tandem: live sync of container data to a peer, container by container."""


@app.command(no_args_is_help=True)
def sync(
    source: Annotated[str, typer.Argument(help="The directory to watch and send.")],
    dest: Annotated[
        str, typer.Argument(help="A local directory, \\[user@]host:/path, or rsync://host/module/path.")
    ],
    label: Annotated[
        str, typer.Option(help="Name in logs, hooks and status (default: SOURCE).", rich_help_panel=_L)
    ] = "",
    delay: Annotated[
        float,
        typer.Option(
            help="Collect window in seconds, counted from the first event of a batch.", rich_help_panel=_B
        ),
    ] = 1.0,
    sync_interval: Annotated[
        float,
        typer.Option(
            help="Minimum seconds between the end of one handler run and the start of the next.",
            rich_help_panel=_B,
        ),
    ] = 0.0,
    bigfile_threshold: Annotated[
        int,
        typer.Option(
            help="Files strictly larger than this many bytes use --bigfile-delay; 0 = off.",
            rich_help_panel=_B,
        ),
    ] = 0,
    bigfile_delay: Annotated[
        float, typer.Option(help="Collect window in seconds for big files.", rich_help_panel=_B)
    ] = 30.0,
    max_batch_paths: Annotated[
        int,
        typer.Option(
            help="Split a batch into several handler runs above this many paths.", rich_help_panel=_B
        ),
    ] = 20000,
    max_batch_bytes: Annotated[
        int, typer.Option(help="Split a batch above this many bytes of files; 0 = off.", rich_help_panel=_B)
    ] = 0,
    rescan_interval: Annotated[
        float,
        typer.Option(
            help="Full rescan every this many seconds; 0 = off (on when inotify cannot cover the tree).",
            rich_help_panel=_B,
        ),
    ] = 0.0,
    max_watches: Annotated[
        int,
        typer.Option(
            help="inotify watches this worker may hold (then it degrades to periodic rescans); "
            "0 = a quarter of fs.inotify.max_user_watches.",
            rich_help_panel=_B,
        ),
    ] = 0,
    rules: Annotated[
        Path | None,
        typer.Option(
            help="clsync rules file: \\[+-]\\[fdWwms*]REGEX per line, first match wins.", rich_help_panel=_R
        ),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            help="Regex of paths to sync (same as a +* rule, checked first). Repeatable.", rich_help_panel=_R
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help="Regex of paths never to sync (same as a -* rule). Repeatable.", rich_help_panel=_R
        ),
    ] = None,
    skip_initial_sync: Annotated[
        bool, typer.Option(help="Do not sync the whole tree at start.", rich_help_panel=_I)
    ] = False,
    only_initial_sync: Annotated[
        bool, typer.Option(help="Sync the whole tree once and exit 0.", rich_help_panel=_I)
    ] = False,
    full_initial_sync: Annotated[
        bool, typer.Option(help="Ignore the rules for the initial sync.", rich_help_panel=_I)
    ] = False,
    mode: Annotated[
        Mode,
        typer.Option(
            help="Handler: rsync, direct (copy in Python, local DEST), shell or python.", rich_help_panel=_H
        ),
    ] = Mode.RSYNC,
    handler: Annotated[
        str | None,
        typer.Option(
            help="shell: command called as CMD LABEL LISTFILE; python: module:function.", rich_help_panel=_H
        ),
    ] = None,
    rsync_binary: Annotated[str, typer.Option(help="The rsync program.", rich_help_panel=_H)] = "rsync",
    rsync_arg: Annotated[
        list[str] | None,
        typer.Option(
            help="Extra rsync argument, e.g. --rsync-arg=--bwlimit=10m. Repeatable.", rich_help_panel=_H
        ),
    ] = None,
    rsh: Annotated[
        str | None,
        typer.Option(help="Remote shell for an ssh DEST, e.g. 'ssh -i KEY -p 2222'.", rich_help_panel=_H),
    ] = None,
    retries: Annotated[
        int, typer.Option(help="Retries of a failed run (with backoff) before giving up.", rich_help_panel=_F)
    ] = 3,
    retry_delay: Annotated[
        float,
        typer.Option(
            help="First backoff step in seconds; doubled per retry, at most 30.", rich_help_panel=_F
        ),
    ] = 0.5,
    ignore_exit_code: Annotated[
        list[int] | None,
        typer.Option(help="Handler exit code to treat as success. Repeatable.", rich_help_panel=_F),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            help="Kill a handler run after this many seconds (a failure); 0 = never.", rich_help_panel=_F
        ),
    ] = 0.0,
    io_timeout: Annotated[
        int,
        typer.Option(
            help="rsync --timeout: a transfer that stalls this many seconds fails and is retried; 0 = off.",
            rich_help_panel=_F,
        ),
    ] = 30,
    ignore_failures: Annotated[
        bool,
        typer.Option(
            help="Keep running when retries are exhausted; failed paths go into a later batch.",
            rich_help_panel=_F,
        ),
    ] = False,
    stop_timeout: Annotated[
        float, typer.Option(help="Seconds allowed for the final flush on SIGTERM/SIGINT.", rich_help_panel=_L)
    ] = 30.0,
    pre_exit_hook: Annotated[
        str | None, typer.Option(help="Command run with LABEL before the final flush.", rich_help_panel=_L)
    ] = None,
    exit_hook: Annotated[
        str | None, typer.Option(help="Command run with LABEL when the worker exits.", rich_help_panel=_L)
    ] = None,
    pid_file: Annotated[
        Path | None,
        typer.Option(
            help="Hold this pid file (an flock) while running; refused while another process holds it.",
            rich_help_panel=_L,
        ),
    ] = None,
    status_file: Annotated[
        Path | None,
        typer.Option(
            help="Keep one status word here: starting, initial-sync, running, standby, stopping.",
            rich_help_panel=_L,
        ),
    ] = None,
    standby_file: Annotated[
        Path | None, typer.Option(help="While this file exists nothing is synced.", rich_help_panel=_L)
    ] = None,
    json_status: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Write one JSON status line per phase change, sync run and heartbeat on stdout.",
            rich_help_panel=_L,
        ),
    ] = False,
    heartbeat: Annotated[
        float, typer.Option(help="Seconds between heartbeat lines (with --json).", rich_help_panel=_L)
    ] = 5.0,
    log_level: Annotated[
        str, typer.Option(help="debug, info, warning or error.", rich_help_panel=_L)
    ] = "info",
    split_brain: Annotated[
        str | None,
        typer.Option(
            help="When DEST already holds data: newest, local, remote, keep-both or manual.",
            rich_help_panel=_S,
        ),
    ] = None,
    snapshot_file: Annotated[
        Path | None,
        typer.Option(help="Keep what both sides agreed on here (the ancestor).", rich_help_panel=_S),
    ] = None,
    split_brain_report: Annotated[
        Path | None,
        typer.Option(help="Write the per-path diff here when it halts.", rich_help_panel=_S),
    ] = None,
    allow_empty: Annotated[
        bool, typer.Option(help="Go on although one side is empty.", rich_help_panel=_S)
    ] = False,
    host_name: Annotated[
        str, typer.Option(help="This side's name (default: the host name).", rich_help_panel=_S)
    ] = "",
    peer_name: Annotated[
        str, typer.Option(help="DEST's side's name (default: its host).", rich_help_panel=_S)
    ] = "",
    modify_window: Annotated[
        float,
        typer.Option(
            help="Mtimes this close (s) count as equal (split-brain, and rsync runs: "
            "below 1, rsync compares to the nanosecond).",
            rich_help_panel=_S,
        ),
    ] = 0.001,
    backup_dir: Annotated[
        str | None,
        typer.Option(
            help="Where a losing side's files go, on that side (absolute; default ROOT/.tandem-backup).",
            rich_help_panel=_S,
        ),
    ] = None,
) -> None:
    """Run one sync worker in the foreground: watch SOURCE, send changes to DEST."""
    options = dict(locals())
    options["json"] = options.pop("json_status")
    for name in ("include", "exclude", "rsync_arg", "ignore_exit_code"):
        options[name] = tuple(options[name] or ())
    for name in ("rules", "pid_file", "status_file", "standby_file", "snapshot_file", "split_brain_report"):
        if options[name] is not None:
            options[name] = str(options[name])
    try:
        spec = WorkerSpec(**options)
    except ValidationError as err:
        for problem in err.errors():
            where = ".".join(str(p) for p in problem["loc"]) or "options"
            typer.echo(f"tandem sync: {where.replace('_', '-')}: {problem['msg']}", err=True)
        raise typer.Exit(ExitCode.CONFIG) from None
    _exec_worker(spec)


def _exec_worker(spec: WorkerSpec) -> None:
    """Replace this process with ``python -m workers`` reading SPEC from a memfd."""
    fd = os.memfd_create("tandem-spec", 0)
    os.write(fd, spec.model_dump_json(by_alias=True).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "workers", "--spec-fd", str(fd)])


def _serve_epilog() -> str:
    """Every setting and policy key, for ``tandem serve --help`` (no brackets:
    they would be taken for rich markup)."""
    from orchestrator.settings import ContainerPolicy, reference

    lines = [
        "Settings, strongest first: the flags above, TANDEM_* environment variables, the TOML "
        "file, the default. In the environment nested keys use __ (TANDEM_DEFAULTS__DELAY=2) "
        "and lists or tables are JSON.\n",
    ]
    for key, env, default, meaning in reference():
        shown = f" (default {default})" if default else ""
        lines.append(f"- {key} / {env}{shown}: {meaning}")
    lines.append(
        "\nPer-container keys: Docker label tandem.KEY, LXD config user.tandem.KEY, or KEY in the "
        "TOML file's defaults table and rules entries:\n"
    )
    for name, field in ContainerPolicy.model_fields.items():
        lines.append(f"- {field.alias or name}: {field.description or ''}")
    text = "\n".join(lines)
    assert "[" not in text, "a bracket in a setting's description"
    return text


@app.command(epilog=_serve_epilog())
def serve(
    config: Annotated[
        Path | None,
        typer.Option(help="TOML settings file (default: /etc/tandem/tandem.toml when it exists)."),
    ] = None,
    dest: Annotated[
        str | None,
        typer.Option(help="Destination template, e.g. 'peer:/srv/tandem/{host}/{container}/{mount}'."),
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Worker logs, pid files, state.json, the LXC hook socket.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="This host's name in destination templates.")] = None,
    docker: Annotated[bool | None, typer.Option("--docker/--no-docker", help="Follow Docker.")] = None,
    lxd: Annotated[bool | None, typer.Option("--lxd/--no-lxd", help="Follow LXD.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    api_host: Annotated[
        str | None, typer.Option(help="REST API address (not loopback: TANDEM_API_TOKEN is required).")
    ] = None,
    api_port: Annotated[int | None, typer.Option(help="REST API port (0: any free port).")] = None,
) -> None:
    """Run the supervisor: one sync worker per opted-in container, and the REST API.

    The API listens on 127.0.0.1:8765 unless --api-host/--api-port say otherwise."""
    from orchestrator.serve import run_serve
    from orchestrator.settings import ConfigError, load

    defaults = {"dest": dest} if dest else None
    try:
        settings = load(
            str(config) if config else None,
            state_dir=state_dir,
            host=host,
            docker=docker,
            lxd=lxd,
            log_level=log_level,
            defaults=defaults,
            api_host=api_host,
            api_port=api_port,
        )
    except ConfigError as err:
        typer.echo(f"tandem serve: {err}", err=True)
        raise typer.Exit(ExitCode.CONFIG) from None
    raise typer.Exit(run_serve(settings))


@app.command(
    "lxc-hook",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def lxc_hook(
    ctx: typer.Context,
    label: Annotated[
        list[str] | None,
        typer.Option(help="tandem.KEY=VALUE for this container (as Docker labels). Repeatable."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="The supervisor's state directory (default: from TANDEM_STATE_DIR or --config)."),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="The supervisor's TOML settings file.")] = None,
) -> None:
    """Tell the supervisor that a plain LXC container started or stopped
    (lxc.hook.start-host / lxc.hook.post-stop). LXC appends NAME lxc TYPE.
    Always exits 0: a sync problem must not keep the container from starting;
    problems are printed (LXC logs a hook's output at debug level)."""
    from orchestrator.runtimes.lxc import HookError, hook
    from orchestrator.settings import ConfigError, load

    def problem(message: str) -> None:
        typer.echo(f"tandem lxc-hook: {message}")
        typer.echo(f"tandem lxc-hook: {message}", err=True)

    labels = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("tandem."):
            problem(f"--label {item!r} must be tandem.KEY=VALUE: ignored")
            continue
        labels[key] = value
    if state_dir is None:
        try:
            state_dir = load(str(config) if config else None).state_dir
        except ConfigError as err:
            problem(f"{err}: using /var/lib/tandem")
            state_dir = Path("/var/lib/tandem")
    try:
        kind, name = hook(state_dir, list(ctx.args), os.environ, labels)
    except (HookError, OSError) as err:
        problem(f"not recorded: {err}")
        return
    typer.echo(f"tandem lxc-hook: {name}: {kind} recorded")


from orchestrator import commands  # noqa: E402 (the operator commands, after the worker's own)

commands.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
