"""The direct handler: copy in Python into a local DEST, no rsync."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import stat
import time

from workers.batching import Move
from workers.snapshot import Tree, scan_local, scan_local_below
from workers.spec import WorkerSpec
from workers.transfer import Deadline, Job, Outcome, Verdict, localfs

log = logging.getLogger(__name__)


class DirectHandler:
    recursive = False
    root_attrs = True

    def __init__(self, spec: WorkerSpec) -> None:
        self.root = spec.destination.path

    def move(self, move: Move, deadline: Deadline) -> bool:
        return localfs.move(self.root, move)

    def scan_dest_below(self, paths: list[str], deadline: Deadline) -> Tree | None:
        return scan_local_below(self.root, paths)

    def scan_dest(self, deadline: Deadline) -> Tree | None:
        return scan_local(self.root, on_entry=lambda _n: deadline()) if os.path.isdir(self.root) else {}

    def send(self, job: Job, deadline: Deadline) -> Outcome:
        os.makedirs(self.root, exist_ok=True)
        failed: list[str] = []
        dirs: list[tuple[str, os.stat_result]] = []
        for index, rel in enumerate(job.paths):
            end = deadline()
            if end is not None and time.monotonic() >= end:
                return Outcome(Verdict.RETRY, tuple(job.paths[index:]), "stopped by deadline")
            try:
                st = self._one(job.source, rel, full=job.full, checksum=job.checksum)
            except OSError as err:
                log.warning("direct copy of %r failed: %s", rel, err)
                failed.append(rel)
                continue
            if st is not None and stat.S_ISDIR(st.st_mode):
                dirs.append((rel, st))
        if job.root:
            try:
                dirs.insert(0, ("", os.lstat(job.source)))
                _copy_meta(self.root, dirs[0][1])
            except OSError as err:
                log.warning("the root's attributes were not copied: %s", err)
                failed.append("")
        for rel, st in reversed(dirs):  # directory times last: children change them
            path = localfs.target(self.root, rel)
            if path is not None:
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        if failed:
            return Outcome(Verdict.PARTIAL, tuple(failed), f"{len(failed)} paths failed")
        return Outcome(Verdict.OK)

    def _one(self, source: str, rel: str, *, full: bool, checksum: bool = False) -> os.stat_result | None:
        dst = localfs.target(self.root, rel)
        if dst is None:
            raise OSError(f"{rel!r}: a directory on the way at DEST is a symlink")
        src = os.path.join(source, rel) if rel else source
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            localfs.remove(dst)  # gone at SOURCE: gone at DEST
            return None
        try:
            have = os.lstat(dst)
        except FileNotFoundError:
            have = None
        if have is not None and stat.S_IFMT(have.st_mode) != stat.S_IFMT(st.st_mode):
            localfs.remove(dst)
            have = None
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if stat.S_ISDIR(st.st_mode):
            if have is None:
                os.mkdir(dst)
        elif stat.S_ISLNK(st.st_mode):
            if have is not None:
                os.unlink(dst)
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(st.st_mode):
            if full and have is not None and (have.st_size, have.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                return st
            if not (checksum and have is not None and _same_content(src, dst)):
                _copy_file(src, dst)
        else:
            log.info("skipping %r: not a file, directory or symlink", rel)
            return None
        _copy_meta(dst, st)
        return st


_TEMP_IDS = itertools.count()


def _copy_file(src: str, dst: str) -> None:
    """Copy through a temp file in DEST's directory and rename it into place."""
    head = os.path.dirname(dst)
    temp = os.path.join(head, f".tandem-{os.getpid()}-{next(_TEMP_IDS)}")  # short: NAME may be 255 bytes
    try:
        with open(src, "rb") as fin, open(temp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        os.replace(temp, dst)
    except BaseException:
        localfs.remove(temp)
        raise


def _same_content(src: str, dst: str, block: int = 1 << 20) -> bool:
    """SRC and DST hold the same bytes (whatever their sizes and mtimes say)."""
    with open(src, "rb") as a, open(dst, "rb") as b:
        while True:
            chunk = a.read(block)
            if chunk != b.read(block):
                return False
            if not chunk:
                return True


def _copy_meta(dst: str, st: os.stat_result) -> None:
    if os.geteuid() == 0:
        os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
