"""The REST API (FastAPI), served by uvicorn inside ``tandem serve``.

Handlers read the supervisor's frozen picture and ask the supervisor to act
(resync, pause, resume, policy changes); they never reach into its entries.
All responses are typed models, so the OpenAPI document describes them.
Bound to 127.0.0.1 by default; with a token every request but /healthz and
/readyz needs ``Authorization: Bearer TOKEN``.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Literal, Protocol

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.policy import NAME_PATTERN
from orchestrator.settings import ContainerPolicy
from orchestrator.state import Picture, WorkerView
from orchestrator.store import HistoryRow

Stream = asyncio.Queue[tuple[str, WorkerView] | None]

PING_EVERY = 15.0

ContainerName = Annotated[
    str,
    Path(
        pattern=NAME_PATTERN,
        description="container name (letters, digits, '_', '.', '-'; at most 128)",
        examples=["web"],
    ),
]


class ControlError(Exception):
    """A request the supervisor refuses: HTTP STATUS with MESSAGE."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Control(Protocol):
    """What the API may ask of the supervisor (all called on its event loop)."""

    @property
    def picture(self) -> Picture: ...

    def resync(self, name: str) -> None: ...

    def pause(self, name: str) -> None: ...

    def resume(self, name: str) -> None: ...

    def history(self, name: str, limit: int) -> list[HistoryRow]: ...

    def split_brain(self, name: str) -> SplitBrainOut: ...

    def resolve(self, name: str, request: ResolveIn) -> ResolveOut: ...

    def policy(self, name: str) -> PolicyOut: ...

    def set_policy(self, name: str, policy: ContainerPolicy) -> PolicyOut: ...

    def reset_policy(self, name: str) -> PolicyOut: ...

    def subscribe(self) -> Stream: ...

    def unsubscribe(self, queue: Stream) -> None: ...

    def render_metrics(self) -> bytes: ...


# -- response models ---------------------------------------------------------------


class Counters(BaseModel):
    syncs: int
    files: int
    bytes: int = Field(description="content bytes transferred (rsync)")
    failures: int
    resyncs: int


class PairOut(BaseModel):
    label: str
    source: str
    dest: str
    status: str
    pending: int
    lag: float = Field(description="age of the oldest unsynced change (s)")
    last_sync: float | None = Field(description="wall-clock time of the last finished sync")
    last_sync_duration: float
    last_error: str
    watches: int
    degraded: str
    lagging: str = Field("", description="why the worker says it is behind (its health is then 503)")
    counters: Counters


State = Literal[
    "starting", "initial-sync", "running", "standby", "stopping", "stopped", "backoff", "halted", "failed"
]


class WorkerOut(BaseModel):
    container: str
    runtime: str
    state: State
    reason: str = Field(description="why the state is what it is (exit code, error)")
    pid: int | None
    restarts: int
    paused: bool
    sources: list[str]
    destinations: list[str]
    pending: int
    lag: float
    last_sync: float | None
    last_sync_duration: float
    last_error: str
    counters: Counters
    pairs: list[PairOut]


class PolicyOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    container: str
    override: dict[str, Any] = Field(description="what the API set (empty: none)")
    effective: dict[str, Any] = Field(
        description="defaults < config rules < labels < override, merged (empty: container not seen)"
    )
    error: str = Field("", description="why the merged policy is not usable (bad labels), if it is not")
    applies: str = Field(description="when a change takes effect")


class Health(BaseModel):
    status: Literal["ok", "unhealthy"]
    detail: str = ""


class RuntimeOut(BaseModel):
    connected: bool
    message: str


class Ready(BaseModel):
    ready: bool
    runtimes: dict[str, RuntimeOut]


class WorkerHealth(BaseModel):
    container: str
    healthy: bool
    state: str
    lag: float
    max_lag: float | None
    detail: str


class Done(BaseModel):
    container: str
    done: str


class SplitBrainOut(BaseModel):
    container: str
    state: str
    reason: str
    mounts: list[dict[str, Any]] = Field(
        description="per mount: the paths that differ (class: changed-here, changed-there, conflict; "
        "here/there: [type, size, mtime] or null), counts, and what each policy would do"
    )


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # 0 is not false

    policy: Literal["newest", "local", "remote", "keep-both"]
    dry_run: bool = Field(False, description="only say what the policy would do")
    allow_empty: bool = Field(False, description="go on although a side is empty (the safety halt)")


class ResolvedMount(BaseModel):
    label: str
    summary: str
    winner: str | None
    push: list[str] = Field(description="paths SOURCE -> DEST (at most 5000 listed)")
    pull: list[str] = Field(description="paths DEST -> SOURCE (at most 5000 listed)")
    conflicts: list[dict[str, Any]] = Field(description="path, winner side, the loser's copy name")


class ResolveOut(BaseModel):
    container: str
    policy: str
    dry_run: bool
    done: str
    mounts: list[ResolvedMount]


class HistoryOut(BaseModel):
    ts: float = Field(description="wall-clock time")
    event: str = Field(description="start, stop, exit, resync, pause, resume, resolve, policy or error")
    code: int | None = Field(description="the exit code (exit events)")
    detail: str


class Problem(BaseModel):
    detail: str


# -- views -> responses -----------------------------------------------------------------


def worker_out(view: WorkerView, now: float) -> WorkerOut:
    pairs = [
        PairOut(
            label=p.label,
            source=p.source,
            dest=p.dest,
            status=p.status,
            pending=p.pending,
            lag=p.lag_at(now),
            last_sync=p.last_sync or None,
            last_sync_duration=p.last_sync_duration,
            last_error=p.last_error,
            watches=p.watches,
            degraded=p.degraded,
            lagging=p.lagging,
            counters=Counters(
                syncs=p.syncs, files=p.files, bytes=p.bytes, failures=p.failures, resyncs=p.resyncs
            ),
        )
        for p in view.pairs
    ]
    last = max(pairs, key=lambda p: p.last_sync or 0.0, default=None)
    errors = [p.last_error for p in pairs if p.last_error]
    return WorkerOut(
        container=view.container,
        runtime=view.runtime,
        state=view.state,
        reason=view.reason,
        pid=view.pid,
        restarts=view.restarts,
        paused=view.paused,
        sources=[p.source for p in pairs],
        destinations=[p.dest for p in pairs],
        pending=sum(p.pending for p in pairs),
        lag=max((p.lag for p in pairs), default=0.0),
        last_sync=last.last_sync if last else None,
        last_sync_duration=last.last_sync_duration if last else 0.0,
        last_error=errors[0] if errors else "",
        counters=Counters(
            syncs=sum(p.counters.syncs for p in pairs),
            files=sum(p.counters.files for p in pairs),
            bytes=sum(p.counters.bytes for p in pairs),
            failures=sum(p.counters.failures for p in pairs),
            resyncs=sum(p.counters.resyncs for p in pairs),
        ),
        pairs=pairs,
    )


HEALTHY_STATES = {"starting", "initial-sync", "running"}


def worker_health(view: WorkerView, now: float) -> WorkerHealth:
    out = worker_out(view, now)
    problems = []
    if out.state not in HEALTHY_STATES:
        problems.append(f"state {out.state}" + (f": {out.reason}" if out.reason else ""))
    if view.max_lag is not None and out.lag > view.max_lag:
        problems.append(f"lag {out.lag:.1f}s over its SLO of {view.max_lag:g}s")
    problems += [f"{p.label} {p.lagging}" for p in out.pairs if p.lagging]
    return WorkerHealth(
        container=out.container,
        healthy=not problems,
        state=out.state,
        lag=out.lag,
        max_lag=view.max_lag,
        detail="; ".join(problems),
    )


def describe_invalid(errors: Sequence[Any]) -> str:
    """FastAPI's validation errors as one line: 'body.delay: Input should be ...; ...'."""
    parts = []
    for problem in errors:
        where = ".".join(str(p) for p in problem.get("loc", ()))
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


# -- the app -------------------------------------------------------------------------------

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or wrong bearer token"},
    404: {"model": Problem, "description": "unknown container"},
    409: {"model": Problem, "description": "not possible in the container's current state"},
    413: {"model": Problem, "description": "request body larger than 1 MiB"},
    422: {"model": Problem, "description": "invalid request"},
}
MAX_BODY = 1 << 20  # no valid request comes near it; a huge one is refused before it is parsed


class _BodyLimit:
    """Refuse a body over MAX_BODY (413) or without a length (411) before it is read."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
            if chunked or (length is not None and (not length.isdigit() or int(length) > MAX_BODY)):
                detail = "send a Content-Length" if chunked else "request body larger than 1 MiB"
                response = JSONResponse({"detail": detail}, status_code=411 if chunked else 413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(control: Control, token: str | None, version: str) -> FastAPI:
    app = FastAPI(
        title="tandem",
        version=version,
        description="Live sync of container data to a peer host: workers, policies, health.",
    )

    async def authorized(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(authorized)]

    app.add_middleware(_BodyLimit)  # plain ASGI: it must not wrap the /events stream

    @app.exception_handler(ControlError)
    async def _refused(_request: Request, err: ControlError) -> JSONResponse:
        return JSONResponse({"detail": err.message}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_invalid(err.errors())}, status_code=422)

    def view(name: str) -> WorkerView:
        found = control.picture.workers.get(name)
        if found is None:
            raise ControlError(404, f"no worker for container {name!r}")
        return found

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """The supervisor process is alive and its loop answers."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Ready, responses={503: {"model": Ready}}, tags=["health"])
    async def readyz() -> Any:
        """Every runtime tandem follows is connected (503 otherwise)."""
        runtimes = {
            name: RuntimeOut(connected=bool(s.get("connected")), message=str(s.get("message", "")))
            for name, s in control.picture.runtimes.items()
        }
        ready = bool(runtimes) and all(r.connected for r in runtimes.values())
        body = Ready(ready=ready, runtimes=runtimes)
        return body if ready else JSONResponse(body.model_dump(), status_code=503)

    @app.get(
        "/workers", response_model=list[WorkerOut], dependencies=guarded, responses=ERRORS, tags=["workers"]
    )
    async def workers() -> list[WorkerOut]:
        now = time.time()
        return [worker_out(v, now) for _, v in sorted(control.picture.workers.items())]

    @app.get(
        "/workers/{container}",
        response_model=WorkerOut,
        dependencies=guarded,
        responses=ERRORS,
        tags=["workers"],
    )
    async def worker(container: ContainerName) -> WorkerOut:
        return worker_out(view(container), time.time())

    @app.get(
        "/workers/{container}/health",
        response_model=WorkerHealth,
        responses={**ERRORS, 503: {"model": WorkerHealth, "description": "lag over its SLO, or not syncing"}},
        dependencies=guarded,
        tags=["health"],
    )
    async def health(container: ContainerName) -> Any:
        """200 while the worker syncs and its lag is within its SLO (``max-lag``); 503 otherwise."""
        result = worker_health(view(container), time.time())
        return result if result.healthy else JSONResponse(result.model_dump(), status_code=503)

    def action(path: str, verb: str, summary: str) -> None:
        async def act(container: ContainerName) -> Done:
            getattr(control, verb)(container)
            return Done(container=container, done=verb)

        act.__name__ = verb
        app.post(
            path,
            response_model=Done,
            dependencies=guarded,
            responses=ERRORS,
            tags=["workers"],
            summary=summary,
        )(act)

    @app.get(
        "/workers/{container}/history",
        response_model=list[HistoryOut],
        dependencies=guarded,
        responses=ERRORS,
        tags=["workers"],
    )
    async def history(
        container: ContainerName, limit: Annotated[int, Query(ge=1, le=1000)] = 50
    ) -> list[HistoryOut]:
        """The container's recent worker history from the store, newest first."""
        rows = control.history(container, limit)
        return [HistoryOut(ts=r.ts, event=r.event, code=r.code, detail=r.detail) for r in rows]

    action("/workers/{container}/resync", "resync", "Full resync of every mount now")
    action("/workers/{container}/pause", "pause", "Stop sending (changes are kept, sent on resume)")
    action("/workers/{container}/resume", "resume", "Send again; also restarts a halted or failed worker")

    @app.get(
        "/containers/{container}/split-brain",
        response_model=SplitBrainOut,
        dependencies=guarded,
        responses=ERRORS,
        tags=["split-brain"],
    )
    async def split_brain(container: ContainerName) -> SplitBrainOut:
        """The per-path diff of a worker halted on a split-brain, and what each policy would do."""
        return control.split_brain(container)

    @app.post(
        "/containers/{container}/resolve",
        response_model=ResolveOut,
        dependencies=guarded,
        responses=ERRORS,
        tags=["split-brain"],
    )
    async def resolve(container: ContainerName, request: ResolveIn) -> ResolveOut:
        """Apply a policy to a halted worker (it restarts with it), or with dry_run only show it."""
        return control.resolve(container, request)

    @app.get(
        "/containers/{container}/policy",
        response_model=PolicyOut,
        dependencies=guarded,
        responses=ERRORS,
        tags=["policy"],
    )
    async def get_policy(container: ContainerName) -> PolicyOut:
        return control.policy(container)

    @app.put(
        "/containers/{container}/policy",
        response_model=PolicyOut,
        dependencies=guarded,
        responses=ERRORS,
        tags=["policy"],
    )
    async def put_policy(container: ContainerName, policy: ContainerPolicy) -> PolicyOut:
        """Replace the API override (keys not given fall back to labels and config)."""
        return control.set_policy(container, policy)

    @app.delete(
        "/containers/{container}/policy",
        response_model=PolicyOut,
        dependencies=guarded,
        responses=ERRORS,
        tags=["policy"],
    )
    async def delete_policy(container: ContainerName) -> PolicyOut:
        """Drop the API override: back to labels and config."""
        return control.reset_policy(container)

    @app.get(
        "/events",
        dependencies=guarded,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "server-sent events"},
            **ERRORS,
        },
        tags=["events"],
        response_class=StreamingResponse,
    )
    async def events(request: Request) -> StreamingResponse:
        """Server-sent events: a ``state`` event whenever a worker's state,
        reason, pid or pause changes, ``removed`` when tandem forgets it (data:
        the worker as in GET /workers/{container}); a ``: ping`` comment every 15 s."""
        queue = control.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b": connected\n\n"
                while not await request.is_disconnected():
                    try:
                        item = await asyncio.wait_for(queue.get(), PING_EVERY)
                    except TimeoutError:
                        yield b": ping\n\n"
                        continue
                    if item is None:  # the supervisor stops, or this reader fell too far behind
                        return
                    kind, view = item
                    data = worker_out(view, time.time()).model_dump_json()
                    yield f"event: {kind}\ndata: {data}\n\n".encode()
            finally:
                control.unsubscribe(queue)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.get(
        "/metrics", dependencies=guarded, response_class=PlainTextResponse, responses=ERRORS, tags=["health"]
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics."""
        return PlainTextResponse(control.render_metrics(), media_type=CONTENT_TYPE_LATEST)

    return app
