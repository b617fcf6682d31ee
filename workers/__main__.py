"""``python -m workers [--spec-fd N]``: run one worker from a JSON WorkerSpec.

The spec is read from stdin, or from file descriptor N. The exit status is an
``ExitCode``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pydantic import ValidationError

from workers.spec import ExitCode, WorkerSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("--spec-fd", type=int, help="read the spec from this descriptor")
    args = parser.parse_args(argv)
    if args.spec_fd is not None:
        with os.fdopen(args.spec_fd, "rb") as handle:
            data = handle.read()
    else:
        data = sys.stdin.buffer.read()
    try:
        spec = WorkerSpec.model_validate_json(data)
    except ValidationError as err:
        print(f"tandem: bad worker spec: {err}", file=sys.stderr)
        return ExitCode.CONFIG
    logging.basicConfig(
        level=getattr(logging, spec.log_level.upper()),
        format=f"tandem[{spec.name}] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from workers.runner import Worker

    return Worker(spec).run()


if __name__ == "__main__":
    sys.exit(main())
