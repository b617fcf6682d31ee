"""DEST's own path, walked before anything is written: no symlink on the way.

A container can plant a symlink in its tree that tandem replicates (that is its
job); a destination naming a path through it would let rsync, the split-brain
scan and the pull follow it to any host directory. So DEST is resolved one
component at a time without following links, on this host (``open`` with
``O_PATH|O_NOFOLLOW`` relative to the directory before, which is what
``openat2(RESOLVE_NO_SYMLINKS)`` does) and on an ssh peer (a shell walk that
tests ``[ -L ]`` and compares ``pwd -P`` after every ``cd -P``). A symlink
anywhere on the path refuses DEST; missing directories are made there, mode
0700, so a replica's setuid files and device nodes are never reachable by other
users through a directory tandem made. An rsync daemon's path cannot be walked
from here: the daemon resolves it inside its module (``use chroot``).
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
from collections.abc import Callable
from typing import NamedTuple

from workers.proc import run
from workers.snapshot import ScanError, ssh_argv
from workers.spec import Destination

MODE = 0o700  # of every directory tandem makes on DEST's path
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(ValueError):
    """DEST's path cannot be used; the message says which component and why."""


class Walk(NamedTuple):
    """What the walk found: the components it made, and the mode of every
    directory it walked, down to DEST (the start, / or the login directory, aside)."""

    made: tuple[str, ...]
    modes: tuple[int, ...]


def components(path: str) -> list[str]:
    """The names to walk, in order ('.' and empty ones dropped; '..' refused)."""
    names = [n for n in path.split("/") if n not in ("", ".")]
    if ".." in names:
        raise Refused(f"DEST {path!r} climbs with '..'")
    return names


def open_to_others(walk: Walk) -> bool:
    """Every directory on the way lets other users through (o+x): files below
    DEST are then reachable by any user of the host."""
    return all(mode & stat.S_IXOTH for mode in walk.modes)


def warning(dest: str, walk: Walk) -> str | None:
    """The line to log when DEST is reachable by every user, else None."""
    if not open_to_others(walk):
        return None
    return (
        f"DEST {dest} is reachable by every user of its host (no directory on its path "
        "is closed to others): a replica's setuid files and device nodes are usable there; "
        "close a directory above it (chmod o-x) and mount it nosuid,nodev"
    )


# -- this host ------------------------------------------------------------------------------------


def walk_local(path: str) -> Walk:
    """Open PATH component by component without following links, making what is
    missing (mode 0700). Raises Refused on a symlink or a non-directory."""
    start = "/" if path.startswith("/") else "."
    fd = os.open(start, _DIR)
    made: list[str] = []
    modes: list[int] = []
    try:
        for name in components(path):
            step = _step(fd, name, path, made)
            os.close(fd)
            fd = step
            modes.append(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    return Walk(tuple(made), tuple(modes))


def _step(fd: int, name: str, path: str, made: list[str]) -> int:
    """The directory NAME below FD, opened without following a link (made if missing)."""
    for _attempt in range(2):  # a race with another maker: open what it made
        try:
            return os.open(name, _DIR, dir_fd=fd)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise Refused(_why(fd, name, path, err)) from None
        try:
            os.mkdir(name, MODE, dir_fd=fd)
            made.append(name)
        except FileExistsError:
            continue
        except OSError as err:
            raise Refused(f"cannot make {name!r} on the way to DEST {path!r}: {err.strerror}") from None
    return os.open(name, _DIR, dir_fd=fd)


def _why(fd: int, name: str, path: str, err: OSError) -> str:
    try:
        link = stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        link = False
    if link or err.errno == errno.ELOOP:
        return f"DEST {path!r}: {name!r} on its path is a symbolic link (name the real path)"
    return f"DEST {path!r}: {name!r} on its path is not a directory ({err.strerror})"


# -- an ssh peer ---------------------------------------------------------------------------------

# Run by sh on the peer with the components as "$@". One line per component:
# "ok MODE" or "made MODE" (octal), or a last word saying why the walk stopped.
_REMOTE_WALK = r"""
w=$(pwd -P) || exit 1; [ "$w" = / ] && w=
for c in "$@"; do
  if [ -L "$c" ]; then echo link; exit 0; fi
  m=ok
  if [ ! -e "$c" ]; then
    mkdir -m 700 -- "$c" 2>/dev/null && m=made || [ -d "$c" ] || { echo mkfail; exit 0; }
  fi
  if [ -L "$c" ] || [ ! -d "$c" ]; then echo notdir; exit 0; fi
  cd -P -- "$c" || { echo notdir; exit 0; }
  w=$w/$c
  [ "$(pwd -P)" = "$w" ] || { echo moved; exit 0; }
  echo "$m $(stat -c %a .)"
done
"""

_WHY = {
    "link": "is a symbolic link (name the real path)",
    "notdir": "is not a directory",
    "mkfail": "cannot be made",
    "moved": "resolved elsewhere while walked (a symlink swapped in)",
}


def remote_command(path: str) -> str:
    """The shell command that walks PATH on the peer (from /, or from the login
    directory for a relative path)."""
    names = components(path)
    start = "cd / && " if path.startswith("/") else ""
    args = " ".join(shlex.quote(n) for n in names)
    return f"{start}sh -c {shlex.quote(_REMOTE_WALK)} walk {args}"


def parse_remote(path: str, output: bytes) -> Walk:
    """The peer's walk of PATH from its lines (raises Refused where it stopped)."""
    names = components(path)
    made: list[str] = []
    modes: list[int] = []
    lines = output.decode(errors="replace").splitlines()
    for index, name in enumerate(names):
        word, _, mode = (lines[index] if index < len(lines) else "").partition(" ")
        if word in _WHY:
            raise Refused(f"DEST {path!r} on the peer: {name!r} on its path {_WHY[word]}")
        if word not in ("ok", "made") or not mode.isdigit():
            raise Refused(f"DEST {path!r}: the peer's walk stopped at {name!r} ({output[-200:]!r})")
        if word == "made":
            made.append(name)
        modes.append(int(mode, 8))
    return Walk(tuple(made), tuple(modes))


def walk_ssh(
    dest: Destination, rsh: str | None, timeout: float, deadline: Callable[[], float | None] | None = None
) -> Walk:
    """Walk an ssh DEST on the peer; ScanError when the peer cannot be asked.
    DEADLINE (if given) is read while waiting: a stop shortens the wait."""
    result = run(ssh_argv(dest, rsh, remote_command(dest.path)), timeout=timeout, deadline=deadline)
    if result.returncode != 0:
        raise ScanError(f"cannot walk DEST {dest}: exit {result.returncode}: {result.stderr_tail()}")
    return parse_remote(dest.path, result.stdout)


def walk(
    dest: Destination, rsh: str | None, timeout: float, deadline: Callable[[], float | None] | None = None
) -> Walk | None:
    """Check (and complete) DEST's path; None for an rsync daemon (not walkable)."""
    if dest.kind == "local":
        return walk_local(dest.path)
    if dest.kind == "ssh":
        return walk_ssh(dest, rsh, timeout, deadline)
    return None
