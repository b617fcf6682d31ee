"""The shell handler: ``CMD LABEL LISTFILE``, cwd = SOURCE, list NUL-separated."""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile

from workers.batching import Move
from workers.proc import SpawnError, run
from workers.snapshot import Tree
from workers.spec import WorkerSpec
from workers.transfer import ConfigError, Deadline, Job, Outcome, Verdict
from workers.transfer.rsync_plan import encode_list


class ShellHandler:
    recursive = False
    root_attrs = False  # a command gets paths only

    def __init__(self, spec: WorkerSpec) -> None:
        assert spec.handler is not None
        self.argv = shlex.split(spec.handler)
        if not self.argv or shutil.which(self.argv[0]) is None:
            raise ConfigError(f"--handler program {spec.handler!r} not found or not executable")
        self.spec = spec

    def move(self, move: Move, deadline: Deadline) -> bool:
        return False  # the command sees both paths in its list instead

    def scan_dest(self, deadline: Deadline) -> Tree | None:
        return None

    def scan_dest_below(self, paths: list[str], deadline: Deadline) -> Tree | None:
        return None

    def send(self, job: Job, deadline: Deadline) -> Outcome:
        with tempfile.NamedTemporaryFile(prefix="tandem-list-", delete=False) as listfile:
            listfile.write(encode_list(job.paths))
        env = dict(
            os.environ,
            TANDEM_LABEL=job.label,
            TANDEM_SOURCE=job.source,
            TANDEM_DEST=job.dest,
            TANDEM_FULL="1" if job.full else "0",
        )
        try:
            result = run(
                [*self.argv, job.label, listfile.name],
                cwd=job.source,
                env=env,
                timeout=self.spec.timeout,
                deadline=deadline,
            )
        except SpawnError as err:
            return Outcome(Verdict.FATAL, message=str(err))
        finally:
            os.unlink(listfile.name)
        if result.timed_out:
            return Outcome(Verdict.RETRY, message=f"handler killed after {result.duration:.1f}s")
        if result.returncode == 0 or result.returncode in self.spec.ignore_exit_code:
            return Outcome(Verdict.OK)
        return Outcome(Verdict.RETRY, message=f"handler exit {result.returncode}: {result.stderr_tail()}")
