"""Safe operations on a local DEST tree: never through a symlink out of it."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil

from workers.batching import Move
from workers.snapshot import type_of

log = logging.getLogger(__name__)


def target(root: str, rel: str) -> str | None:
    """ROOT/REL, or None when a directory on the way is a symlink or not a directory
    (the last component itself is never followed by the callers)."""
    path = os.path.join(root, rel) if rel else root
    parent = os.path.dirname(path) if rel else root
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(parent)
    if real_parent != real_root and not real_parent.startswith(real_root + os.sep):
        return None
    return path


def remove(path: str) -> None:
    """Delete a file, a symlink or a whole directory tree; missing is fine."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def move(root: str, change: Move) -> bool:
    """Rename at DEST; False when the old path is not there or the rename fails."""
    try:
        rename_below(root, change.old, change.new)
    except OSError as err:
        log.info("rename %s -> %s at DEST failed (%s); sending it instead", change.old, change.new, err)
        return False
    return True


_STEP = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class NotInside(OSError):
    """A directory on the way is a symlink or not a directory: using it could lead out of ROOT."""


def open_dir(root: str, rel: str, *, make: bool = False) -> int:
    """A directory fd of REL below ROOT ('' is ROOT). Each directory on the way is
    opened relative to the one before it and never through a symlink (NotInside):
    a link swapped in after a scan cannot lead out of ROOT. MAKE: missing
    directories are made on the way (also never through a link)."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in filter(None, rel.split("/")):
            if make:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
            try:
                step = os.open(part, _STEP, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotInside(err.errno, f"{part!r} on the way to {rel!r} is not a directory") from None
                raise
            os.close(fd)
            fd = step
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_parent(root: str, rel: str, *, make: bool = False) -> tuple[int, str]:
    """A directory fd of REL's parent below ROOT (see ``open_dir``) and REL's last name."""
    head, _, name = rel.rpartition("/")
    return open_dir(root, head, make=make), name


def real_dir(root: str, rel: str) -> str:
    """ROOT/REL made a real directory (NotInside when a link or a file is on the way),
    as the absolute path it resolves to now: for a program that takes a path (rsync's
    --backup-dir), never one it would resolve through a link made later on the way."""
    fd = open_dir(root, rel, make=True)
    try:
        where = os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    expected = os.path.join(os.path.realpath(root), rel)
    if where != expected:
        raise NotInside(errno.EXDEV, f"{rel!r} below {root!r} is {where!r}")
    return where


def rename_below(root: str, old: str, new: str, kind: str = "") -> None:
    """Rename OLD to NEW below ROOT through directory fds (see ``open_parent``); NEW's
    missing directories are made. KIND ('f', 'd', 'l'; '' any): OLD must still be of
    that type, as the scan saw it. OSError when it cannot be done safely."""
    src, old_name = open_parent(root, old)
    try:
        mode = os.stat(old_name, dir_fd=src, follow_symlinks=False).st_mode
        if kind and type_of(mode) != kind:
            raise FileExistsError(f"{old!r} changed type since it was scanned")
        dst, new_name = open_parent(root, new, make=True)
        try:
            os.rename(old_name, new_name, src_dir_fd=src, dst_dir_fd=dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)
