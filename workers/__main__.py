"""``python -m workers [--spec-fd N]``: run one worker from a JSON spec.

The spec is a ``WorkerSpec`` (one SOURCE/DEST pair, ``tandem sync``) or a
``ContainerSpec`` (a container's pairs, from the supervisor), read from stdin or
from file descriptor N. The exit status is an ``ExitCode``.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import resource
import sys

from pydantic import ValidationError

from workers.spec import ContainerSpec, ExitCode, WorkerSpec


def main(argv: list[str] | None = None) -> int:
    # SIGABRT (the supervisor's word to a hung worker, before SIGKILL) and fatal
    # errors write every thread's stack to stderr, the worker's log. No core file:
    # the stacks say where it was, and a host of workers must not fill its disk.
    faulthandler.enable(all_threads=True)
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("--spec-fd", type=int, help="read the spec from this descriptor")
    args = parser.parse_args(argv)
    if args.spec_fd is not None:
        with os.fdopen(args.spec_fd, "rb") as handle:
            data = handle.read()
    else:
        data = sys.stdin.buffer.read()
    try:
        spec: WorkerSpec | ContainerSpec
        raw = json.loads(data)
        if isinstance(raw, dict) and "pairs" in raw:
            spec = ContainerSpec.model_validate(raw)
        else:
            spec = WorkerSpec.model_validate(raw)
    except (ValidationError, ValueError) as err:
        print(f"tandem: bad worker spec: {err}", file=sys.stderr)
        return ExitCode.CONFIG
    if isinstance(spec, ContainerSpec):
        logging.basicConfig(
            level=getattr(logging, spec.pairs[0].log_level.upper()),
            format="%(asctime)s tandem[%(threadName)s] %(levelname)s %(message)s",
            stream=sys.stderr,
        )
        from workers.group import run_group

        return run_group(spec)
    logging.basicConfig(
        level=getattr(logging, spec.log_level.upper()),
        format=f"tandem[{spec.name}] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from workers.runner import Worker

    return Worker(spec).run()


if __name__ == "__main__":
    sys.exit(main())
