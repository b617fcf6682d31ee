"""Find-like scans of SOURCE and DEST: path -> (type, size, mtime).

The local scan uses ``os.scandir`` (injectable) and never follows symlinks; files
that vanish mid-walk are skipped, unreadable directories are reported and kept
as entries. DEST over ssh is scanned with GNU ``find -printf`` on the peer
(NUL-separated, so every legal name survives); an rsync daemon with
``rsync --list-only``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import re
import shlex
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import NamedTuple

from workers.proc import run
from workers.rules import Rules
from workers.spec import Destination
from workers.transfer.rsync_plan import unescape

log = logging.getLogger(__name__)


class ScanError(RuntimeError):
    """DEST could not be listed (peer unreachable, find missing...)."""


class Entry(NamedTuple):
    """One scanned path (a named tuple: 100k of them are made per 100k-entry scan)."""

    type: str  # 'f' file, 'd' directory, 'l' symlink, 'o' other
    size: int
    mtime: float

    @property
    def is_dir(self) -> bool:
        return self.type == "d"


Tree = dict[str, Entry]


_KINDS = {stat.S_IFDIR: "d", stat.S_IFREG: "f", stat.S_IFLNK: "l"}


def type_of(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "o")


Lister = Callable[[str, bool], AbstractContextManager[tuple[list[str], Callable[[str], os.stat_result]]]]


_PIECE = 3072  # bytes of a path opened at once when the whole is longer than PATH_MAX
_AT = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC  # a directory fd only used as dir_fd


def open_long(path: str | bytes, flags: int, dir_fd: int | None = None) -> int:
    """``os.open``, also for a path longer than PATH_MAX (ENAMETOOLONG as a whole):
    then opened piece by piece, each piece relative to the directory before it,
    which the kernel resolves as it would the whole path (FLAGS apply to the last
    component)."""
    raw = os.fsencode(path)
    try:
        return os.open(raw, flags, dir_fd=dir_fd)
    except OSError as err:
        cut = raw.rfind(b"/", 1, _PIECE)
        if err.errno != errno.ENAMETOOLONG or cut <= 0:
            raise
    head = os.open(raw[:cut], _AT, dir_fd=dir_fd)
    try:
        return open_long(raw[cut + 1 :].lstrip(b"/"), flags, head)
    finally:
        os.close(head)


def lstat_long(path: str) -> os.stat_result:
    """``os.lstat``, also for a path longer than PATH_MAX."""
    try:
        return os.lstat(path)
    except OSError as err:
        if err.errno != errno.ENAMETOOLONG:
            raise
    head, _, name = path.rpartition("/")
    fd = open_long(head or "/", _AT)
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_dir(path: str, top: bool) -> Iterator[tuple[list[str], Callable[[str], os.stat_result]]]:
    """PATH's names and an lstat relative to it (one open directory, no path walks
    per entry; PATH may be longer than PATH_MAX). Below the top a symlink put in a
    directory's place is not followed."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if top else os.O_NOFOLLOW)
    fd = open_long(path, flags)
    try:
        yield os.listdir(fd), functools.partial(os.stat, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def scan_local(
    root: str,
    rules: Rules | None = None,
    *,
    below: str = "",
    opendir: Lister = open_dir,
    on_entry: Callable[[int], object] | None = None,
    links: dict[tuple[int, int], list[str]] | None = None,
    changed: tuple[float, set[str]] | None = None,
) -> Tree:
    """Walk ROOT/BELOW; with RULES, excluded entries are left out and excluded
    directories are not entered. Paths are relative to ROOT. Symlinks are never
    followed; what vanishes mid-walk is skipped. LINKS, if given, collects the
    names of every regular file with more than one hard link, by (dev, inode);
    CHANGED, (SINCE, a set), the paths whose ctime is SINCE or later."""
    tree: Tree = {}
    since, recent = changed if changed is not None else (math.inf, set())
    stack = [below]
    kinds = _KINDS
    make = Entry._make
    while stack:
        rel_dir = stack.pop()
        if rules is not None and not rules.can_enter(rel_dir):
            continue
        try:
            with opendir(os.path.join(root, rel_dir) if rel_dir else root, not rel_dir) as (names, lstat):
                prefix = f"{rel_dir}/" if rel_dir else ""
                for name in names:
                    rel = prefix + name
                    try:
                        st = lstat(name)
                    except FileNotFoundError:
                        continue
                    kind = kinds.get(st.st_mode & 0o170000, "o")
                    if rules is not None and not rules.allows(rel, kind == "d"):
                        if kind == "d" and rules.can_enter(rel):
                            stack.append(rel)  # the entry is not synced, its content may be
                        continue
                    tree[rel] = make((kind, st.st_size, st.st_mtime))
                    if st.st_ctime >= since:
                        recent.add(rel)
                    if kind == "d":
                        stack.append(rel)
                    elif links is not None and kind == "f" and st.st_nlink > 1:
                        links.setdefault((st.st_dev, st.st_ino), []).append(rel)
        except (FileNotFoundError, NotADirectoryError):
            continue  # vanished mid-walk
        except OSError as err:
            if err.errno == errno.ELOOP:
                continue  # replaced by a symlink mid-walk: not followed
            if not isinstance(err, PermissionError):
                raise
            log.warning("cannot list %s: %s", os.path.join(root, rel_dir), err.strerror)
            continue
        if on_entry is not None:
            on_entry(len(names))
    return tree


def under_real_dirs(root: str, paths: list[str]) -> list[str]:
    """PATHS whose parent directories are real directories (no symlink on the way)
    under ROOT: nothing is ever read through a symlink out of the tree. Missing
    parents are fine (deletions); one walk per distinct parent."""
    verdict: dict[str, bool] = {"": True}
    kept = []
    for path in paths:
        parent = os.path.dirname(path)
        if parent not in verdict:
            verdict[parent] = _no_symlink_on_the_way(root, parent)
        if verdict[parent]:
            kept.append(path)
        else:
            log.warning("not sending %r: a directory on its way is a symlink", path)
    return kept


def _no_symlink_on_the_way(root: str, rel: str) -> bool:
    """No component of REL below ROOT is a symlink (a missing one ends the walk:
    fine). Walked with directory fds, one component at a time, so this also
    holds for paths longer than PATH_MAX (where realpath stops looking)."""
    try:
        fd = open_long(root, _AT)
    except OSError:
        return True  # SOURCE itself is gone: the worker's own check halts it
    try:
        for name in rel.split("/"):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                return True  # missing (a deletion) or unreadable: nothing is read through it
            if stat.S_ISLNK(st.st_mode):
                return False
            if not stat.S_ISDIR(st.st_mode):
                return True  # nothing can be below a file
            try:
                step = os.open(name, _AT | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                return True
            except OSError:
                return False  # swapped for a symlink since its stat
            os.close(fd)
            fd = step
        return True
    finally:
        os.close(fd)


_FIND_TYPES = {"f": "f", "d": "d", "l": "l"}


def parse_find(output: bytes) -> Tree:
    """Parse ``find -printf '%y %s %T@ %P\\0'`` output."""
    tree: Tree = {}
    types = {k.encode(): v for k, v in _FIND_TYPES.items()}
    make, decode = Entry._make, os.fsdecode
    for record in output.split(b"\0"):
        if not record:
            continue
        kind, size, mtime, name = record.split(b" ", 3)
        if name:
            tree[decode(name)] = make((types.get(kind, "o"), int(size), float(mtime)))
    return tree


_LIST_LINE = re.compile(rb"^(?P<perms>\S+) +(?P<size>[\d,]+) \S+ \S+ (?P<name>.+)$")


def parse_list_only(output: bytes) -> Tree:
    """Parse ``rsync --list-only -r --no-h`` lines (rsync escapes odd bytes as ``\\#ooo``)."""
    tree: Tree = {}
    for line in output.split(b"\n"):
        match = _LIST_LINE.match(line)
        if match is None or match["name"] == b".":
            continue
        perms, size, name = match["perms"], match["size"], match["name"]
        kind = {ord("d"): "d", ord("-"): "f", ord("l"): "l"}.get(perms[0], "o")
        if kind == "l":
            name = name.rsplit(b" -> ", 1)[0]
        path = os.fsdecode(unescape(name))
        tree[path] = Entry(kind, int(size.replace(b",", b"")), 0.0)
    return tree


def ssh_argv(dest: Destination, rsh: str | None, command: str) -> list[str]:
    """The argv that runs COMMAND (one shell string) on an ssh DEST's host."""
    host = dest.host.strip("[]")  # rsync takes [v6]:path, ssh wants the bare address
    target = f"{dest.user}@{host}" if dest.user else host
    return [*shlex.split(rsh or "ssh"), "--", target, command]  # the host is never an option


def scan_local_below(root: str, paths: list[str]) -> Tree:
    """Entries for PATHS under ROOT and, for directories, everything below them."""
    tree: Tree = {}
    for path in paths:
        try:
            st = lstat_long(os.path.join(root, path))
        except (FileNotFoundError, NotADirectoryError):
            continue
        tree[path] = Entry(type_of(st.st_mode), st.st_size, st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            tree.update(scan_local(root, below=path))
    return tree


# Run on the peer: the NUL-separated start points arrive on stdin ("./NAME").
_FIND_BELOW = 'xargs -0 -r sh -c \'find "$@" -printf "%y %s %T@ %p\\\\0" 2>/dev/null\' find; exit 0'


def scan_dest_below(
    dest: Destination,
    paths: list[str],
    *,
    rsh: str | None,
    timeout: float,
    deadline: Callable[[], float | None] | None = None,
) -> Tree | None:
    """Like ``scan_dest``, only PATHS and what is below them; None for an rsync
    daemon (it cannot be asked cheaply)."""
    if dest.kind == "local":
        return scan_local_below(dest.path, paths) if os.path.isdir(dest.path) else {}
    if dest.kind != "ssh":
        return None
    command = f"cd {shlex.quote(dest.path)} 2>/dev/null && {_FIND_BELOW}"
    names = b"".join(b"./" + os.fsencode(p) + b"\0" for p in paths)
    result = run(ssh_argv(dest, rsh, command), stdin=names, timeout=timeout, deadline=deadline)
    if result.returncode != 0:
        raise ScanError(f"cannot list DEST {dest}: exit {result.returncode}: {result.stderr_tail()}")
    return {path.removeprefix("./"): entry for path, entry in parse_find(result.stdout).items()}


def scan_dest(
    dest: Destination,
    *,
    rsh: str | None,
    rsync_binary: str,
    timeout: float,
    deadline: Callable[[], float | None] | None = None,
) -> Tree:
    """List DEST recursively, whatever kind it is. A missing DEST is empty.
    DEADLINE (if given) is read while waiting: a stop shortens the wait."""
    if dest.kind == "local":
        if not os.path.isdir(dest.path):
            return {}
        return scan_local(dest.path, on_entry=None if deadline is None else lambda _n: deadline())
    if dest.kind == "ssh":
        path = shlex.quote(dest.path)
        command = f"if [ -d {path} ]; then cd {path} && find . -mindepth 1 -printf '%y %s %T@ %P\\0'; fi"
        argv = ssh_argv(dest, rsh, command)
        parse = parse_find
    else:
        argv = [rsync_binary, "--list-only", "-r", "--no-h", dest.rsync_root()]
        parse = parse_list_only
    result = run(argv, timeout=timeout, deadline=deadline)
    if result.returncode != 0:
        raise ScanError(f"cannot list DEST {dest}: exit {result.returncode}: {result.stderr_tail()}")
    return parse(result.stdout)
