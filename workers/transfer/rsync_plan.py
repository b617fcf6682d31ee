"""The pure half of the rsync handler: argv, list encoding, exit-code meaning.

One run sends an explicit NUL-separated list on stdin (``--files-from=- --from0``,
no recursion), so exactly the listed paths are compared and every legal name
works. A listed path missing at SOURCE is deleted at DEST
(``--delete-missing-args``; ``--force`` for non-empty directories, which the
planner only lists when nothing excluded lives in them). Incremental runs add
``--ignore-times``: the worker knows these paths changed, so rsync's
size+mtime quick check (which misses a same-second, same-size edit) is skipped.
Full runs keep the quick check. Every run compares mtimes to the nanosecond
(``--modify-window=-1``) unless the pair's modify window says the filesystems
are coarser: rsync's default compares whole seconds, which also decides whether
it sets the time of a symlink or directory it has just made, so one made in the
same second as at SOURCE kept DEST's own creation time (and every start's
split-brain check then saw a newer symlink at DEST).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from workers.transfer import Verdict

# rsync(1) EXIT VALUES. 24 (source files vanished) is fine: their deletion events follow.
_OK = frozenset({0, 24})
# ... but 2 with this is a race, not a bad option: a listed directory vanished (was
# renamed) while the sender walked, a listed path below it did not, and the
# receiver (3.4+) refuses a file whose parent is not in the list. Tried again.
_RACE = b"ABORTING due to invalid path from sender"
_PARTIAL = frozenset({23})
_FATAL = frozenset({1, 2, 4, 25, 126, 127})

# The split-brain backup folder at either root is never sent, overwritten or deleted.
# -H -A -X: a container's tree keeps its hard links, ACLs and xattrs (file
# capabilities live there); `--rsync-arg=--no-X` (or --no-A, --no-H) turns one off.
BASE_ARGS = (
    "-a",
    "-H",
    "-A",
    "-X",
    "--numeric-ids",
    "--from0",
    "--files-from=-",
    "--delete-missing-args",
    "--force",
    "--exclude=/.tandem-backup",
    "--stats",  # for the bytes counter: "Total transferred file size: N bytes"
)


def build_argv(
    binary: str,
    source: str,
    dest_root: str,
    *,
    full: bool,
    recursive: bool = False,
    rsh: str | None = None,
    extra: tuple[str, ...] = (),
    io_timeout: int = 0,
    modify_window: float = 0.0,
) -> list[str]:
    """The argv for one run; DEST_ROOT is ``Destination.rsync_root()``."""
    argv = [binary, *BASE_ARGS]
    if recursive:
        argv.append("-r")  # listed directories go whole (no rule can exclude anything)
    if not full:
        argv.append("--ignore-times")
    argv.append(f"--modify-window={-1 if modify_window < 1 else round(modify_window)}")
    if io_timeout:
        argv.append(f"--timeout={io_timeout}")  # rsync keeps alive while busy; a stall exits 30
    if rsh:
        argv += ["-e", rsh]
    argv += [*extra, source.rstrip("/") + "/", dest_root]
    return argv


_TRANSFERRED = re.compile(rb"^Total transferred file size: ([\d,.]+) bytes", re.MULTILINE)


def transferred_bytes(stdout: bytes) -> int:
    """The content bytes an rsync run with ``--stats`` transferred (0 if it does not say)."""
    match = _TRANSFERRED.search(stdout)
    return int(re.sub(rb"[,.]", b"", match.group(1))) if match else 0


def encode_list(paths: list[str] | tuple[str, ...]) -> bytes:
    """NUL-terminated list for ``--from0``; the root itself is '.'."""
    return b"".join(os.fsencode(p or ".") + b"\0" for p in paths)


# The root's own attributes (mode, owner, times, xattrs), none of its entries: a
# listed "." alone would send its whole first level.
ROOT_ONLY = ("--exclude=/*",)


@dataclass(frozen=True)
class Classified:
    verdict: Verdict
    failed: tuple[str, ...] = ()  # for PARTIAL: the listed paths rsync named
    unsupported: frozenset[str] = frozenset()  # "xattrs"/"ACLs" DEST's filesystem cannot hold


def classify(
    returncode: int,
    stderr: bytes,
    listed: tuple[str, ...] | list[str],
    roots: tuple[str, ...],
    ignore: tuple[int, ...] = (),
    *,
    recursive: bool = False,
) -> Classified:
    """What an rsync exit status means for the run that listed LISTED (RECURSIVE:
    the listed directories were sent as whole trees)."""
    if returncode in _OK or returncode in ignore:
        return Classified(Verdict.OK)
    if returncode == 2 and _RACE in stderr:
        return Classified(Verdict.RETRY)
    if returncode in _FATAL:
        return Classified(Verdict.FATAL)
    if returncode in _PARTIAL:
        unsupported, rest = attrs_unsupported(stderr)
        if unsupported and not _errors(rest):
            return Classified(Verdict.OK, unsupported=unsupported)  # the content went
        failed = failed_paths(rest, listed, roots, recursive=recursive)
        if failed:
            return Classified(Verdict.PARTIAL, failed, unsupported)
        return Classified(Verdict.RETRY, unsupported=unsupported)
    return Classified(Verdict.RETRY)


# rsync_xal_set: lsetxattr(...) failed / set_acl: sys_acl_set_file(...): Operation not supported (95)
_UNSUPPORTED = re.compile(rb"^rsync: (?:\[\w+\] )?(\w+): .*\(95\)\s*$")


def attrs_unsupported(stderr: bytes) -> tuple[frozenset[str], bytes]:
    """The attribute kinds a filesystem refused with EOPNOTSUPP (the file itself
    was written), and STDERR without those lines."""
    kinds: set[str] = set()
    rest: list[bytes] = []
    for line in stderr.splitlines():
        match = _UNSUPPORTED.match(line)
        where = match.group(1).lower() if match else b""  # the rsync function that failed
        if b"acl" in where:
            kinds.add("ACLs")
        elif b"xal" in where or b"xattr" in where:
            kinds.add("xattrs")
        else:
            rest.append(line)
    return frozenset(kinds), b"\n".join(rest)


def _errors(stderr: bytes) -> bool:
    return any(line.strip() and not line.startswith(_NOT_ERRORS) for line in stderr.splitlines())


_QUOTED = re.compile(rb'"(.+?)"(?=[: ]|$)')


def failed_paths(
    stderr: bytes, listed: tuple[str, ...] | list[str], roots: tuple[str, ...], *, recursive: bool = False
) -> tuple[str, ...]:
    """The paths that rsync's error lines name (absolute or relative, at SOURCE or
    DEST, as a receiver's temp file ``dir/.name.XXXXXX``, with rsync's ``\\#ooo``
    escapes): listed ones, or with RECURSIVE ones inside a listed directory.
    Empty unless EVERY error line names such a path: a failure tandem cannot
    place makes the whole list be retried."""
    wanted = set(listed)
    found: set[str] = set()
    for line in stderr.splitlines():
        if not line.strip() or line.startswith(_NOT_ERRORS):
            continue
        names = {
            name
            for name in (_listed_name(raw, roots) for raw in _candidates(line))
            if name in wanted or (recursive and _inside(name, wanted))
        }
        if not names:
            return ()
        found |= names
    return tuple(sorted(found))


def _inside(name: str, listed: set[str]) -> bool:
    """NAME is below one of the LISTED directories ("" is the root)."""
    if "" in listed:
        return name != "" and not name.startswith("/")
    while "/" in name:
        name = name.rpartition("/")[0]
        if name in listed:
            return True
    return False


_NOT_ERRORS = (b"rsync error:", b"rsync warning:", b"file has vanished:")
_DELETE = re.compile(rb"^delete_file: \w+\((.+)\) failed")


def _candidates(line: bytes) -> list[bytes]:
    if line.startswith(b"rsync: "):
        return list(_QUOTED.findall(line))
    match = _DELETE.match(line)
    return [match.group(1)] if match else []


def _listed_name(raw: bytes, roots: tuple[str, ...]) -> str:
    name = os.fsdecode(unescape(raw))
    for root in roots:
        prefix = root.rstrip("/") + "/"
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    name = name.removeprefix("./").rstrip("/")
    head, _, tail = name.rpartition("/")
    if tail.startswith(".") and len(tail) > 8 and tail[-7] == ".":
        return f"{head}/{tail[1:-7]}" if head else tail[1:-7]  # rsync's temp file
    return name


def unescape(name: bytes) -> bytes:
    """Undo rsync's ``\\#ooo`` (octal) escapes of odd bytes in names it prints."""
    parts = name.split(b"\\#")
    out = parts[0]
    for part in parts[1:]:
        if len(part) >= 3 and part[:3].isdigit():
            out += bytes([int(part[:3], 8)]) + part[3:]
        else:
            out += b"\\#" + part
    return out


# -- renames and backup folders on an ssh peer: one shell command each -------------------------------
# The peer's tree is not trusted: a directory on the way may be a symlink (synced
# from the container) to anywhere on the peer. Each step enters one component
# with `cd -P` (never a symlink, never through CDPATH) and then compares the
# physical working directory with the path it must be; only then is anything
# made or renamed there. `at` prints a dot after the path: command substitution
# would drop the new lines a name may end with.
_ENTER = (
    "unset CDPATH; "
    'enter() { for c in "$@"; do [ ! -L "$c" ] && [ -d "$c" ] && cd -P -- "./$c" || return 1; done; }; '
    'make() { for c in "$@"; do [ ! -L "$c" ] || return 1; [ -d "$c" ] || mkdir -- "./$c" || return 1; '
    'cd -P -- "./$c" || return 1; done; }; '
    'at() { [ "$(pwd -P; echo .)" = "$1" ]; }; '
)


def _parts(path: str) -> str:
    return " ".join(shlex.quote(p) for p in path.split("/") if p)


def _at_root(root: str) -> str:
    """Enter ROOT and remember it as $root (physical, no trailing slash)."""
    return f'cd -P -- {shlex.quote(root)} || exit 1; root=$(pwd -P); root="${{root%/}}"; '


def _reach(step: str, path: str) -> str:
    """STEP (enter or make) down to PATH below $root, then check where it arrived."""
    if not path:
        return 'cd -P -- "$root/" || exit 1; '
    where = shlex.quote(f"/{path}\n.")
    return f'cd -P -- "$root/" && {step} {_parts(path)} && at "$root"{where} || exit 1; '


def remote_move_command(root: str, old: str, new: str) -> str:
    """The shell command that renames OLD to NEW below ROOT on the peer, or fails
    (nothing moved) when a directory on the way to either is a symlink or not a
    directory. The old name's directory is held open (fd 3) while the new one's
    is reached, and the rename goes through it (/dev/fd/3, the very directory
    checked), so the check and the rename are one step, in one command."""
    old_dir, _, old_base = old.rpartition("/")
    new_dir, _, new_base = new.rpartition("/")
    q = shlex.quote
    return (
        _ENTER
        + _at_root(root)
        + _reach("enter", old_dir)
        + f"{{ [ -e ./{q(old_base)} ] || [ -L ./{q(old_base)} ]; }} || exit 1; exec 3<.; "
        + _reach("make", new_dir)
        + f"exec mv -T -- /dev/fd/3/{q(old_base)} ./{q(new_base)}"
    )


def remote_dir_command(root: str, rel: str) -> str:
    """The shell command that makes ROOT/REL a real directory on the peer (never
    through a symlink or a file on the way: exit 1) and prints $root, ROOT resolved,
    NUL-terminated."""
    return _ENTER + _at_root(root) + _reach("make", rel) + "printf '%s\\0' \"$root\""
