"""The operator commands of ``tandem``: each one a call to the REST API.

``status``, ``workers show``, ``resync``, ``pause``, ``resume``, ``policy
get|set|reset`` and ``events``. The API's URL and token come from ``--url`` /
``--token`` or ``TANDEM_API_URL`` / ``TANDEM_API_TOKEN``. Exit codes: 0 done,
1 the supervisor cannot be reached or failed, 2 it refused the request (the
message says why: unknown container, bad policy value, wrong token).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.client import DEFAULT_URL, ApiError, Client
from orchestrator.policy import LABEL_KEYS, NAME_PATTERN, PolicyError, from_labels

Url = Annotated[
    str, typer.Option("--url", envvar="TANDEM_API_URL", help="The tandem API.", show_default=True)
]
Token = Annotated[
    str | None,
    typer.Option("--token", envvar="TANDEM_API_TOKEN", help="Bearer token (when the API requires one)."),
]


def _valid_name(name: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise typer.BadParameter(
            f"{name!r} is not a container name (letters, digits, '_', '.', '-'; at most 128)"
        )
    return name


Name = Annotated[str, typer.Argument(help="Container name.", callback=_valid_name)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]

workers_app = typer.Typer(help="Look at one worker.", no_args_is_help=True)
policy_app = typer.Typer(
    help="A container's policy override, stored by the supervisor.", no_args_is_help=True
)

STATE_STYLE = {
    "running": "green",
    "initial-sync": "cyan",
    "starting": "cyan",
    "standby": "yellow",
    "stopping": "yellow",
    "backoff": "yellow",
    "stopped": "dim",
    "halted": "bold red",
    "failed": "bold red",
}


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(resync)
    app.command()(pause)
    app.command()(resume)
    app.command()(events)
    app.command("split-brain")(split_brain)
    app.command()(resolve)
    app.add_typer(workers_app, name="workers")
    app.add_typer(policy_app, name="policy")


def _call(url: str, token: str | None, job: Callable[[Client], Any]) -> Any:
    try:
        with Client(url, token) as client:
            return job(client)
    except ApiError as err:
        typer.echo(f"tandem: {_clean(err.message, markup=False)}", err=True)
        raise typer.Exit(err.code) from None


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _clean(data: Any, *, markup: bool) -> Any:
    """DATA from the server with every string made safe to print: control
    characters shown as escapes (a file name may hold a terminal's), and with
    MARKUP rich's brackets escaped (a label key may look like a tag)."""
    if isinstance(data, str):
        text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], data)
        return escape(text) if markup else text
    if isinstance(data, dict):
        return {_clean(k, markup=markup): _clean(v, markup=markup) for k, v in data.items()}
    if isinstance(data, list):
        return [_clean(v, markup=markup) for v in data]
    return data


def ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    return f"{span(now - ts)} ago"


def span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds / 3600:.0f}h{seconds % 3600 / 60:02.0f}m"


def _state(worker: dict[str, Any]) -> str:
    state = str(worker["state"])
    text = f"[{STATE_STYLE.get(state, '')}]{state}[/]" if state in STATE_STYLE else state
    return text + (" (paused)" if worker.get("paused") and state != "standby" else "")


def status(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """A table of every worker: state, lag, pending paths, last sync."""
    workers = _call(url, token, lambda c: c.request("GET", "/workers"))
    if as_json:
        typer.echo(json.dumps(workers, indent=1))
        return
    if not workers:
        typer.echo("no workers (no container is enabled, or none runs)")
        return
    workers = _clean(workers, markup=True)
    now = time.time()
    table = Table(box=None, pad_edge=False)
    for column in ("CONTAINER", "RUNTIME", "STATE", "LAG", "PENDING", "LAST SYNC", "SYNCS", "FAILURES"):
        table.add_column(
            column, justify="right" if column in ("LAG", "PENDING", "SYNCS", "FAILURES") else "left"
        )
    table.add_column("REASON", overflow="fold")
    for w in workers:
        counters = w["counters"]
        table.add_row(
            w["container"],
            w["runtime"],
            _state(w),
            span(w["lag"]),
            str(w["pending"]),
            ago(w["last_sync"], now),
            str(counters["syncs"]),
            str(counters["failures"]),
            w["reason"] or w["last_error"],
        )
    _console().print(table)


@workers_app.command("show")
def show(name: Name, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """One worker: its state, every mount, and its recent history."""

    def job(client: Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return client.request("GET", f"/workers/{name}"), client.request(
            "GET", f"/workers/{name}/history?limit=10"
        )

    worker, history = _call(url, token, job)
    if as_json:
        typer.echo(json.dumps({**worker, "history": history}, indent=1))
        return
    worker, history = _clean(worker, markup=True), _clean(history, markup=True)
    now = time.time()
    console = _console()
    c = worker["counters"]
    console.print(f"[bold]{worker['container']}[/] ({worker['runtime']}): {_state(worker)}")
    for key, value in (
        ("reason", worker["reason"]),
        ("pid", worker["pid"] or "-"),
        ("restarts", worker["restarts"]),
        ("lag", span(worker["lag"])),
        ("pending", worker["pending"]),
        ("last sync", f"{ago(worker['last_sync'], now)} ({worker['last_sync_duration']:.3f}s)"),
        (
            "counters",
            f"{c['syncs']} syncs, {c['files']} files, {c['bytes']} bytes, "
            f"{c['failures']} failures, {c['resyncs']} resyncs",
        ),
        ("last error", worker["last_error"]),
    ):
        if value != "":
            console.print(f"  {key:<11}{value}")
    for p in worker["pairs"]:  # paths are long: one block per mount, not a wide table
        console.print(
            f"  mount [bold]{p['label']}[/]: {p['status']}, lag {span(p['lag'])}, "
            f"{p['pending']} pending, {p['watches']} watches"
        )
        console.print(f"    source {p['source']}", soft_wrap=True)
        console.print(f"    dest   {p['dest']}", soft_wrap=True)
        if p["degraded"]:
            console.print(f"    degraded: {p['degraded']}", soft_wrap=True)
        if p.get("lagging"):
            console.print(f"    lagging: {p['lagging']}", soft_wrap=True)
    if history:
        table = Table(box=None, pad_edge=False, title="history", title_justify="left")
        for column in ("WHEN", "EVENT", "CODE", "DETAIL"):
            table.add_column(column, overflow="fold")
        for h in history:
            code = "" if h["code"] is None else str(h["code"])
            table.add_row(ago(h["ts"], now), h["event"], code, h["detail"])
        console.print(table)


def _act(verb: str, name: str, url: str, token: str | None) -> None:
    _call(url, token, lambda c: c.request("POST", f"/workers/{name}/{verb}"))


def resync(name: Name, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """A full resync of every mount of NAME now."""
    _act("resync", name, url, token)
    typer.echo(f"{name}: full resync started")


def pause(name: Name, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Stop sending NAME's changes; they are collected and sent on resume.

    A container that stops while paused is not flushed: its next start's initial
    sync sends what changed."""
    _act("pause", name, url, token)
    typer.echo(f"{name}: paused")


def resume(name: Name, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Send NAME's changes again; a halted or failed worker restarts."""
    _act("resume", name, url, token)
    typer.echo(f"{name}: resumed")


def _print_policy(policy: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(policy, indent=1))
        return
    policy = _clean(policy, markup=False)
    override = policy["override"]
    table = Table(box=None, pad_edge=False)
    for column in ("KEY", "IN FORCE", "OVERRIDE"):
        table.add_column(column, overflow="fold")
    for key in LABEL_KEYS:
        shown = policy["effective"].get(key)
        table.add_row(
            key,
            "" if shown is None else escape(json.dumps(shown)),
            escape(json.dumps(override[key])) if key in override else "",
        )
    console = _console()
    console.print(f"[bold]{escape(policy['container'])}[/]")
    console.print(table)
    if policy["error"]:
        console.print(f"[bold red]error:[/] {escape(policy['error'])}")
    console.print(f"applies: {escape(str(policy['applies']))}")


@policy_app.command("get")
def policy_get(name: Name, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """The policy in force for NAME and the override set through the API."""
    _print_policy(_call(url, token, lambda c: c.request("GET", f"/containers/{name}/policy")), as_json)


@policy_app.command("set")
def policy_set(
    name: Name,
    values: Annotated[
        list[str],
        typer.Argument(
            help=f"KEY=VALUE, KEY one of {', '.join(LABEL_KEYS)} (values as in labels); KEY= drops the key."
        ),
    ],
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Set keys of NAME's override (the other keys of the override stay)."""
    given: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or key not in LABEL_KEYS:
            typer.echo(f"tandem: {item!r} is not KEY=VALUE with KEY one of {', '.join(LABEL_KEYS)}", err=True)
            raise typer.Exit(2)
        given[key] = value
    try:
        parsed = from_labels({f"tandem.{k}": v for k, v in given.items() if v != ""})
    except PolicyError as err:
        typer.echo(f"tandem: {err}", err=True)
        raise typer.Exit(2) from None
    chosen = parsed.model_dump(mode="json", exclude_none=True, by_alias=True)

    def job(client: Client) -> Any:
        current = client.request("GET", f"/containers/{name}/policy")["override"]
        merged = {k: v for k, v in {**current, **chosen}.items() if given.get(k) != ""}
        return client.request("PUT", f"/containers/{name}/policy", merged)

    _print_policy(_call(url, token, job), as_json)


@policy_app.command("reset")
def policy_reset(name: Name, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Drop NAME's override: back to labels and the config file."""
    _print_policy(_call(url, token, lambda c: c.request("DELETE", f"/containers/{name}/policy")), as_json)


def events(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Follow worker state changes as they happen (Ctrl-C to stop)."""

    def job(client: Client) -> None:
        for kind, worker in client.events():
            if as_json:
                typer.echo(json.dumps({"event": kind, **worker}), nl=True)
                continue
            worker = _clean(worker, markup=False)
            when = time.strftime("%H:%M:%S")
            state = "removed" if kind == "removed" else worker["state"]
            why = f" ({worker['reason']})" if worker.get("reason") else ""
            paused = " paused" if worker.get("paused") else ""
            typer.echo(f"{when} {worker['container']} {state}{paused}{why}")

    try:
        _call(url, token, job)
    except KeyboardInterrupt:
        return


def split_brain(name: Name, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """What differs between SOURCE and DEST of a worker halted on a split-brain."""
    found = _call(url, token, lambda c: c.request("GET", f"/containers/{name}/split-brain"))
    if as_json:
        typer.echo(json.dumps(found, indent=1))
        return
    found = _clean(found, markup=True)
    console = _console()
    console.print(f"[bold]{name}[/]: {found['state']} ({found['reason']})")
    for mount in found["mounts"]:
        counts = ", ".join(f"{v} {k}" for k, v in mount["counts"].items() if v)
        console.print(
            f"  mount [bold]{mount['label']}[/]: {mount['total']} paths differ ({counts}); "
            f"here = {mount['here']}, there = {mount['there']}, "
            f"ancestor: {'yes' if mount['ancestor'] else 'none'}"
        )
        table = Table(box=None, pad_edge=False)
        for column in ("PATH", "CLASS", "HERE", "THERE"):
            table.add_column(column, overflow="fold")
        for item in mount["paths"][:50]:
            table.add_row(item["path"], item["class"], _meta(item["here"]), _meta(item["there"]))
        console.print(table)
        for policy, preview in mount["policies"].items():
            console.print(f"  {policy:<10} {preview['summary']}")


def _meta(value: list[Any] | None) -> str:
    if value is None:
        return "-"
    kind, size, mtime = value
    return f"{kind} {size}B {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(mtime))}"


def resolve(
    name: Name,
    policy: Annotated[str, typer.Option("--policy", help="newest, local, remote or keep-both.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what the policy would do.")] = False,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Go on although a side is empty (the safety halt).")
    ] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Resolve a worker halted on a split-brain with a policy (what loses goes to .tandem-backup)."""
    body = {"policy": policy, "dry_run": dry_run, "allow_empty": allow_empty}
    done = _call(url, token, lambda c: c.request("POST", f"/containers/{name}/resolve", body))
    if as_json:
        typer.echo(json.dumps(done, indent=1))
        return
    done = _clean(done, markup=False)
    for mount in done["mounts"]:
        typer.echo(f"{mount['label']}: {mount['summary']}")
        if dry_run:
            for path in mount["push"][:20]:
                typer.echo(f"  -> DEST  {path}")
            for path in mount["pull"][:20]:
                typer.echo(f"  <- DEST  {path}")
            for c in mount["conflicts"][:20]:
                typer.echo(f"  both    {c['path']} ({c['winner']} wins; the other kept as {c['copy']})")
    typer.echo(f"{name}: {done['done']}")
