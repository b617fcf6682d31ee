"""The rsync handler: one rsync run per job, an explicit list on stdin."""

from __future__ import annotations

import errno
import logging
import os
import shlex
import shutil
import time
from dataclasses import replace

from workers.batching import Move
from workers.proc import SpawnError, run
from workers.snapshot import Tree, scan_dest, scan_dest_below, ssh_argv
from workers.spec import WorkerSpec
from workers.transfer import ConfigError, Deadline, Job, Outcome, Verdict, localfs
from workers.transfer.rsync_plan import (
    ROOT_ONLY,
    build_argv,
    classify,
    encode_list,
    remote_dir_command,
    remote_move_command,
    transferred_bytes,
)

log = logging.getLogger(__name__)

MOVE_TIMEOUT = 30.0
SSH_FAILED = 255  # ssh's own failure (no connection), not the remote command's
SCAN_TIMEOUT = 600.0


class RsyncHandler:
    recursive = True  # rsync -r: its incremental recursion is ~3x faster than a 20k-path list
    root_attrs = True

    def __init__(self, spec: WorkerSpec) -> None:
        if shutil.which(spec.rsync_binary) is None:
            raise ConfigError(f"rsync binary {spec.rsync_binary!r} not found or not executable")
        if spec.rsh:
            program = shlex.split(spec.rsh)[0]
            if shutil.which(program) is None:
                raise ConfigError(f"--rsh program {program!r} not found or not executable")
        self.spec = spec
        self.dest = spec.destination
        self._unreachable_until = 0.0
        self._unsupported: set[str] = set()  # attribute kinds a receiver refused (warned once)

    def move(self, move: Move, deadline: Deadline) -> bool:
        if self.dest.kind == "local":
            return localfs.move(self.dest.path, move)
        if self.dest.kind != "ssh" or time.monotonic() < self._unreachable_until:
            return False  # an rsync daemon cannot rename; a peer that just failed is not asked again
        command = remote_move_command(self.dest.path, move.old, move.new)  # refuses symlinked parents
        result = run(ssh_argv(self.dest, self.spec.rsh, command), timeout=MOVE_TIMEOUT, deadline=deadline)
        if result.returncode == SSH_FAILED or result.timed_out:
            # The rest of the batch's renames would each wait as long: send content instead.
            self._unreachable_until = time.monotonic() + MOVE_TIMEOUT
        return result.returncode == 0

    def send(self, job: Job, deadline: Deadline) -> Outcome:
        outcome = Outcome(Verdict.OK)
        if job.paths:
            outcome = self._run(
                job.source,
                self.dest.rsync_root(),
                job.paths,
                deadline,
                full=job.full,
                recursive=job.recursive,
                extra=("--checksum",) if job.checksum else (),  # it outranks --ignore-times
            )
        if not job.root or outcome.verdict is not Verdict.OK:
            return outcome
        root = self._run(job.source, self.dest.rsync_root(), ("",), deadline, full=False, extra=ROOT_ONLY)
        return replace(root, bytes=root.bytes + outcome.bytes, failed=())

    def backup_folder(self, source: str, rel: str, *, pull: bool, deadline: Deadline) -> str:
        """REL below the receiving side's root (SOURCE for a PULL, DEST otherwise) made a
        real directory, as the absolute resolved path for rsync's --backup-dir: a
        relative one is resolved by rsync through whatever the tree holds there (a
        container's ``.tandem-backup -> /etc``). localfs.NotInside when a symlink or a
        file is on the way; OSError when the peer cannot be asked."""
        if pull or self.dest.kind == "local":
            return localfs.real_dir(source if pull else self.dest.path, rel)
        if self.dest.kind != "ssh":
            return rel  # an rsync daemon resolves it inside its module
        command = remote_dir_command(self.dest.path, rel)
        result = run(ssh_argv(self.dest, self.spec.rsh, command), timeout=MOVE_TIMEOUT, deadline=deadline)
        if result.timed_out or result.returncode not in (0, 1):
            raise OSError(
                f"cannot make {rel!r} at {self.dest}: exit {result.returncode}: {result.stderr_tail()}"
            )
        if result.returncode == 1:
            raise localfs.NotInside(errno.ENOTDIR, f"{rel!r} at {self.dest} is not a real directory")
        root = os.fsdecode(result.stdout.rstrip(b"\0"))
        return f"{root}/{rel}"  # root is "" for "/"

    def transfer(
        self, source: str, paths: tuple[str, ...], *, pull: bool, backup_dir: str, deadline: Deadline
    ) -> Outcome:
        """Split-brain: PATHS from SOURCE to DEST (or, PULL, from DEST back to SOURCE);
        whatever they overwrite or delete on the receiving side is moved to BACKUP_DIR
        (absolute: see ``backup_folder``) first."""
        ends = (self.dest.rsync_root(), source) if pull else (source, self.dest.rsync_root())
        backup = ("--backup", f"--backup-dir={backup_dir}")
        return self._run(*ends, paths, deadline, full=False, extra=backup, ignore=False)

    def _run(
        self,
        src: str,
        dst: str,
        paths: tuple[str, ...],
        deadline: Deadline,
        *,
        full: bool,
        recursive: bool = False,
        extra: tuple[str, ...] = (),
        ignore: bool = True,
    ) -> Outcome:
        """One rsync run of the explicit list PATHS from SRC to DST."""
        argv = build_argv(
            self.spec.rsync_binary,
            src,
            dst,
            full=full,
            recursive=recursive,
            rsh=self.spec.rsh,
            extra=(*self.spec.rsync_arg, *extra),
            io_timeout=self.spec.io_timeout,
            modify_window=self.spec.modify_window,
        )
        try:
            result = run(argv, stdin=encode_list(paths), timeout=self.spec.timeout, deadline=deadline)
        except SpawnError as err:
            return Outcome(Verdict.FATAL, message=str(err))
        if result.timed_out:
            return Outcome(Verdict.RETRY, message=f"rsync killed after {result.duration:.1f}s")
        ignored = self.spec.ignore_exit_code if ignore else ()
        verdict = classify(
            result.returncode, result.stderr, paths, (src, self.dest.path), ignored, recursive=recursive
        )
        for kind in sorted(verdict.unsupported - self._unsupported):
            self._unsupported.add(kind)
            log.warning(
                "%s cannot hold %s (Operation not supported): they are not carried there; "
                "content, modes, owners and times are",
                dst,
                kind,
            )
        message = (
            "" if verdict.verdict is Verdict.OK else f"rsync exit {result.returncode}: {result.stderr_tail()}"
        )
        return Outcome(verdict.verdict, verdict.failed, message, transferred_bytes(result.stdout))

    def scan_dest_below(self, paths: list[str], deadline: Deadline) -> Tree | None:
        return scan_dest_below(self.dest, paths, rsh=self.spec.rsh, timeout=SCAN_TIMEOUT, deadline=deadline)

    def scan_dest(self, deadline: Deadline) -> Tree | None:
        return scan_dest(
            self.dest,
            rsh=self.spec.rsh,
            rsync_binary=self.spec.rsync_binary,
            timeout=SCAN_TIMEOUT,
            deadline=deadline,
        )
