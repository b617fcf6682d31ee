"""``tandem serve``: settings in, runtimes chosen, the supervisor run until SIGTERM."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sys

from orchestrator.runtimes import Runtime
from orchestrator.runtimes.lxc import LxcRuntime
from orchestrator.settings import Settings
from orchestrator.supervisor import Supervisor, install_signals
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
    supervisor = Supervisor(settings, runtimes_for(settings))

    async def main() -> int:
        stop = asyncio.Event()
        install_signals(stop)
        return await supervisor.run(stop)

    log.info("tandem serve: host %s, state in %s", settings.host, settings.state_dir)
    return asyncio.run(main())
