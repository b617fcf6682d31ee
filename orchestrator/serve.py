"""``tandem serve``: settings in, runtimes chosen, the supervisor and its REST
API run in one event loop until SIGTERM.

The API socket is bound before anything starts, so a port in use is a clear
start-up error (exit 2). uvicorn serves on that socket in the same loop as the
supervisor (its handlers run on the loop, so the supervisor stays the only
writer); signals stay with the supervisor, which stops its workers (they flush)
while the API keeps answering, then the API stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import sys
from collections.abc import Iterator

import uvicorn

from orchestrator.api import create_app
from orchestrator.runtimes import Runtime
from orchestrator.runtimes.lxc import LxcRuntime
from orchestrator.settings import Settings
from orchestrator.store import Store
from orchestrator.supervisor import Supervisor, install_signals
from workers import __version__
from workers.spec import ExitCode

log = logging.getLogger("tandem.serve")


def runtimes_for(settings: Settings) -> list[Runtime]:
    chosen: list[Runtime] = []
    if settings.docker:
        from orchestrator.runtimes.docker import DockerRuntime

        chosen.append(DockerRuntime(settings.docker_host))
    if settings.lxd:
        from orchestrator.runtimes.lxd import LxdRuntime

        chosen.append(LxdRuntime(settings.lxd_socket, settings.lxd_dir))
    chosen.append(LxcRuntime(settings.state_dir))
    return chosen


def run_serve(settings: Settings) -> int:
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper()),
        format="%(asctime)s tandem %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    lock = open(settings.state_dir / "supervisor.lock", "a+")  # noqa: SIM115 (held for the process's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error("another tandem serve uses %s: refusing to start a second one", settings.state_dir)
        return int(ExitCode.CONFIG)
    try:
        listener = bind(settings.api_host, settings.api_port)
    except OSError as err:
        log.error("cannot listen on %s port %d: %s", settings.api_host, settings.api_port, err)
        return int(ExitCode.CONFIG)
    store = Store(settings.state_dir / "tandem.db")
    supervisor = Supervisor(settings, runtimes_for(settings), store)
    token = settings.api_token.get_secret_value() if settings.api_token else None
    app = create_app(supervisor, token, __version__)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="off"
    )
    server = _Server(config)
    host, port = listener.getsockname()[:2]
    supervisor.registry.api = f"http://{host if ':' not in host else f'[{host}]'}:{port}"

    async def main() -> int:
        stop, hurry = asyncio.Event(), asyncio.Event()
        install_signals(stop, hurry)
        api = asyncio.get_running_loop().create_task(server.serve(sockets=[listener]))
        try:
            return await supervisor.run(stop, hurry)
        finally:
            server.should_exit = True
            await api

    log.info(
        "tandem serve: host %s, state in %s, API on %s%s",
        settings.host,
        settings.state_dir,
        supervisor.registry.api,
        " (token required)" if token else "",
    )
    try:
        return asyncio.run(main())
    finally:
        store.close()
        listener.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on HOST:PORT (IPv4 or IPv6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.set_inheritable(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: SIGTERM belongs to the supervisor."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
