"""Soak: containers on real Docker and LXD started and stopped at random, random
file operations inside them, for a given time; at every stop DEST must equal SOURCE.

Run (as root, from the repository; LXD is shared, so hold its lock):

    flock /tmp/tandem-lxd.lock .venv/bin/python -m bench.soak --containers 20 --duration 1800 \
        [--seed N] [--json]

The command starts a private dockerd (``tests.dockerd.DockerDaemon``), LXD
(``tests.lxd.LxdDaemon``: adopted when it already runs, then left running) and
a real ``tandem serve`` with a local destination; ``run()`` is the core and
takes daemons already started (the pytest test passes its session fixtures).

Half the containers are Docker (a named volume at /data), half LXD (a custom
volume at /data; every other one syncs its root filesystem too). Each runs for
a random time, stops, stays down for a random time and starts again. File
operations go to the running containers' sources at ``--rate`` per second, most
on the host side of the mount, some through ``docker exec`` / ``lxc exec``. At
every stop the soak waits until the container's worker is ``stopped`` and
compares every synced mount with ``tests.faults.compare.compare``.

Memory: every ~1 s the VmRSS of the supervisor and of each worker (a child of
the supervisor, with its rsync children) from /proc. CPU: the supervisor is our
child and reaps its workers, which reap their rsync runs, so ``os.wait4`` on it
gives the CPU of all of them together, exactly.

Exit code 0 only when nothing was lost, stale or reverted at any comparison,
every worker started and stopped in time (no anomaly) and the supervisor exited
0; 1 otherwise. ``--skip KINDS`` and ``--no-early-ops`` leave out what hits
tandem's known defects (bench/README.md, "Soak"); a loss is reported with the
journal of every operation on its path, also written to WORKDIR/journal.txt.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import gzip
import heapq
import itertools
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.dockerd import IMAGE as DOCKER_IMAGE
from tests.dockerd import DockerDaemon
from tests.faults.compare import compare, digest
from tests.lxd import LxdDaemon, LxdError, daemon_pids
from tests.serve import Serve

HOST = "soak"  # {host} in the destination template
STOP_WAIT = 90.0  # seconds for a worker to reach "stopped" after its container stopped
READY_WAIT = 90.0  # seconds for a started container's worker to reach "running"
SAMPLE_EVERY = 1.0
MAX_ENTRIES = 150  # per operations folder; above it deletions win
MAX_PULLS = 20  # pulled paths explained in the summary
LOG_LINES = 12  # a worker's log lines shown per reported path (the last ones that name it)
BACKUP = b".tandem-backup"  # where a split-brain puts the losing side's files
KEEP = b".soak-keep"  # one file per operations folder that no operation touches (below)
DONE_STATES = ("stopped", "failed", "halted")
ODD_STATES = ("backoff", "failed", "halted")

# Names nobody should have to handle, and everybody does.
ODD_NAMES = (
    b"with space %d",
    b"new\nline %d",
    b"latin1 \xe9\xff\xfe %d",
    b"-dash %d",
    "unicod\u00e9 \u65e5\u672c %d".encode(),
    b"tab\there %d",
    b"quote'\"$`;&|<> %d",
    b"back\\slash %d",
    b" lead %d",
    b"trail %d ",
    b".hidden %d",
    b"*?[glob]{a,b} %d",
    b"x" * 200 + b" %d",
)
PLAIN = re.compile(rb"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")

HOST_KINDS = {  # kind -> weight, operations on the host side of the mount
    "create": 14,
    "append": 10,
    "overwrite-same-size": 7,
    "overwrite-same-mtime": 4,
    "same-second": 4,
    "truncate": 5,
    "chmod": 5,
    "mkdir": 6,
    "rename-file": 7,
    "rename-dir": 4,
    "delete-file": 6,
    "delete-tree": 2,
    "symlink": 4,
    "hardlink": 3,
    "write-linked": 3,
    "log-rotate": 3,
    "save-atomic": 3,
    "save-vim": 3,
    "save-emacs": 3,
}
PRUNE_KINDS = {"delete-file": 5, "delete-tree": 3, "rename-file": 1, "append": 1}
EXEC_KINDS = {"exec-create": 3, "exec-append": 3, "exec-mkdir": 2, "exec-rename": 2, "exec-delete": 1}
SAVES = ("save-atomic", "save-vim", "save-emacs")  # how editors replace a file they save
LOG = b"app.log"  # log-rotate's file, in any folder
FILE_MODES = (0o644, 0o600, 0o640, 0o664, 0o755, 0o444)
DIR_MODES = (0o755, 0o700, 0o750, 0o775)


@dataclass
class Config:
    containers: int = 20
    duration: float = 1800.0
    seed: int = 0
    delay: float = 0.3  # every worker's collect window
    rate: float = 20.0  # file operations per second, all containers together
    exec_share: float = 0.1  # of the operations, through docker exec / lxc exec
    skip: frozenset[str] = frozenset()  # operation kinds not done (to narrow a loss down)
    early_ops: bool = True  # operations also before a just-started container's worker runs
    life: tuple[float, float] = (5.0, 30.0)  # seconds a container runs (uniform)
    down: tuple[float, float] = (1.0, 8.0)  # seconds it stays stopped
    log_level: str = "info"  # the supervisor's and the workers'
    stop: threading.Event = field(default_factory=threading.Event)  # set: end the random part now
    progress: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))


@dataclass
class Mount:
    name: str  # the mount's name in tandem ({mount}: data, rootfs)
    source: Path  # what the worker syncs
    dest: Path
    root: bytes  # where the operations happen: SOURCE or a folder below it
    inside: str  # ROOT as the container sees it
    uid: int = 0  # owner of what the host side makes (an LXD container's root)
    gid: int = 0
    reverted: set[bytes] = field(default_factory=set)  # under SOURCE/.tandem-backup, seen


@dataclass
class Box:
    """One container and what the soak knows about it."""

    name: str
    runtime: str  # docker or lxd
    mounts: list[Mount] = field(default_factory=list)
    state: str = "new"  # new, starting, running, stopping, stopped
    ready: bool = False  # its worker reached "running" in this life
    due: float | None = None  # monotonic time of the next start or stop
    handle: Any = None  # the docker SDK's Container


@dataclass
class Result:
    seed: int
    duration: float
    elapsed: float = 0.0  # the random part
    setup: float = 0.0  # supervisor and containers up
    teardown: float = 0.0  # last stops and comparisons, supervisor down
    containers: int = 0
    docker: int = 0
    lxd: int = 0
    ops: Counter[str] = field(default_factory=Counter)
    exec_failed: int = 0
    starts: int = 0
    stops: int = 0  # containers cycled
    comparisons: int = 0
    lost: int = 0  # summed over the comparisons: a path lost at three stops counts three times
    stale: int = 0
    lost_paths: int = 0  # different (container, mount, path) ever lost
    reverted: int = 0  # SOURCE files a split-brain replaced with DEST's (moved to SOURCE/.tandem-backup)
    pulled: int = 0  # paths the workers' split-brain checks took from DEST (from their logs)
    pulls: list[dict[str, Any]] = field(default_factory=list)  # the first MAX_PULLS of them, explained
    drift: int = 0  # entries equal in content whose mtime differs at DEST (what a check then pulls)
    ancestor_gaps: int = 0  # DEST entries the snapshot saved at a stop lacks or holds otherwise
    drift_examples: list[str] = field(default_factory=list)
    losses: list[dict[str, Any]] = field(default_factory=list)
    syncs: int = 0
    files: int = 0
    bytes: int = 0
    failures: int = 0
    restarts: int = 0
    anomalies: list[str] = field(default_factory=list)
    odd_states: list[str] = field(default_factory=list)
    supervisor_exit: int | None = None
    rss_supervisor_kb: int = 0
    rss_worker_kb: int = 0  # largest single worker, with its rsync children
    rss_worker_python_kb: int = 0  # largest worker process alone
    rss_workers_kb: int = 0  # largest sum over all workers at one sample
    workers_peak: int = 0
    samples: int = 0
    cpu_user: float = 0.0
    cpu_sys: float = 0.0
    cpu_wall: float = 0.0  # the supervisor's life
    cpu_method: str = "os.wait4 on the supervisor (it reaps its workers, they reap their rsync runs)"

    @property
    def ops_total(self) -> int:
        return sum(self.ops.values())

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_user + self.cpu_sys

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_seconds / self.cpu_wall if self.cpu_wall else 0.0

    @property
    def ok(self) -> bool:
        clean = self.lost == 0 and self.stale == 0 and self.reverted == 0
        return clean and not self.anomalies and self.supervisor_exit == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ops"] = dict(sorted(self.ops.items()))
        data.update(
            ops_total=self.ops_total,
            cpu_seconds=round(self.cpu_seconds, 2),
            cpu_percent=round(self.cpu_percent, 1),
            ok=self.ok,
        )
        return data


# --- file operations ------------------------------------------------------------


@dataclass
class Tree:
    files: list[bytes]  # regular files
    dirs: list[bytes]  # the operations folder first
    links: list[bytes]  # symlinks
    single: list[bytes]  # regular files with one name
    linked: list[bytes]  # regular files with more than one name (hard links)

    @property
    def size(self) -> int:
        return len(self.files) + len(self.dirs) + len(self.links)


def scan(root: bytes) -> Tree:
    """Every entry below ROOT by kind (symlinks never followed)."""
    tree = Tree([], [root], [], [], [])
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.name in (BACKUP, KEEP):
                continue
            try:
                if entry.is_symlink():
                    tree.links.append(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    tree.dirs.append(entry.path)
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    tree.files.append(entry.path)
                    names = entry.stat(follow_symlinks=False).st_nlink
                    (tree.single if names == 1 else tree.linked).append(entry.path)
            except OSError:
                continue
    return tree


class Operator:
    """Random file operations on one folder, from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.serial = itertools.count()

    def name(self, odd_share: float = 0.2) -> bytes:
        n = next(self.serial)
        if self.rng.random() < odd_share:
            return self.rng.choice(ODD_NAMES) % n
        return b"%s%d" % (self.rng.choice((b"f", b"doc", b"tmp.", b"data_", b"log.")), n)

    def content(self) -> bytes:
        roll = self.rng.random()
        size = (
            self.rng.randint(0, 4096)
            if roll < 0.7
            else self.rng.randint(4096, 65536)
            if roll < 0.97
            else self.rng.randint(256 << 10, 2 << 20)
        )
        return self.rng.randbytes(size)

    def pick(self, weights: dict[str, int]) -> str:
        return self.rng.choices(list(weights), list(weights.values()))[0]

    @staticmethod
    def own(mount: Mount, *paths: bytes) -> None:
        if mount.uid or mount.gid:
            for path in paths:
                os.lchown(path, mount.uid, mount.gid)

    def write_new(self, mount: Mount, path: bytes, data: bytes) -> None:
        with open(path, "xb") as handle:
            handle.write(data)
        self.own(mount, path)

    def host(self, kind: str, mount: Mount, tree: Tree) -> tuple[str, list[bytes]]:
        """Do KIND, or what comes nearest when the tree has nothing for it to act on;
        returns what was done and the paths it touched."""
        if kind in ("append", "overwrite-same-size", "overwrite-same-mtime", "truncate", "chmod", *SAVES):
            kind = kind if tree.single else "create"
        elif kind == "write-linked" and not tree.linked:
            kind = "hardlink"
        elif kind in ("rename-dir", "delete-tree") and len(tree.dirs) < 2:
            kind = "mkdir"
        elif kind in ("rename-file", "delete-file") and not (tree.files or tree.links):
            kind = "create"
        if kind == "hardlink" and not tree.files:
            kind = "create"
        action: Callable[[Mount, Tree], list[bytes]] = getattr(self, "op_" + kind.replace("-", "_"))
        return kind, action(mount, tree)

    def op_create(self, mount: Mount, tree: Tree) -> list[bytes]:
        path = os.path.join(self.rng.choice(tree.dirs), self.name())
        self.write_new(mount, path, self.content())
        return [path]

    def op_append(self, mount: Mount, tree: Tree) -> list[bytes]:
        path = self.rng.choice(tree.single)
        with open(path, "ab") as handle:
            handle.write(self.rng.randbytes(self.rng.randint(1, 4096)))
        return [path]

    def op_overwrite_same_size(self, mount: Mount, tree: Tree) -> list[bytes]:
        path = self.rng.choice(tree.single)
        self.rewrite(path, os.lstat(path).st_size)
        return [path]

    def op_overwrite_same_mtime(self, mount: Mount, tree: Tree) -> list[bytes]:
        """Size and mtime as before: only the content differs."""
        path = self.rng.choice(tree.single)
        st = os.lstat(path)
        self.rewrite(path, st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        return [path]

    def op_truncate(self, mount: Mount, tree: Tree) -> list[bytes]:
        path = self.rng.choice(tree.single)
        os.truncate(path, self.rng.randint(0, os.lstat(path).st_size))
        return [path]

    def op_chmod(self, mount: Mount, tree: Tree) -> list[bytes]:
        if self.rng.random() < 0.3 and len(tree.dirs) > 1:
            path, mode = self.rng.choice(tree.dirs[1:]), self.rng.choice(DIR_MODES)
        else:
            path, mode = self.rng.choice(tree.single), self.rng.choice(FILE_MODES)
        os.chmod(path, mode)
        return [path]

    def op_mkdir(self, mount: Mount, tree: Tree) -> list[bytes]:
        """One to three nested folders, sometimes filled at once (as an untar does)."""
        path = self.rng.choice(tree.dirs)
        made = []
        for _ in range(self.rng.randint(1, 3)):
            path = os.path.join(path, self.name())
            os.mkdir(path)
            self.own(mount, path)
            made.append(path)
        for _ in range(self.rng.randint(1, 4) if self.rng.random() < 0.5 else 0):
            made.append(os.path.join(path, self.name()))
            self.write_new(mount, made[-1], self.content())
        return made

    def op_rename_file(self, mount: Mount, tree: Tree) -> list[bytes]:
        """A file or symlink to a new name, or over an existing file."""
        source = self.rng.choice(tree.files + tree.links)
        others = [f for f in tree.files if f != source]
        if others and self.rng.random() < 0.3:
            target = self.rng.choice(others)
        else:
            target = os.path.join(self.rng.choice(tree.dirs), self.name())
        os.rename(source, target)
        return [source, target]

    def op_rename_dir(self, mount: Mount, tree: Tree) -> list[bytes]:
        folder = self.rng.choice(tree.dirs[1:])
        targets = [d for d in tree.dirs if d != folder and not d.startswith(folder + b"/")]
        target = os.path.join(self.rng.choice(targets), self.name())
        os.rename(folder, target)
        return [folder, target]

    def op_delete_file(self, mount: Mount, tree: Tree) -> list[bytes]:
        path = self.rng.choice(tree.files + tree.links)
        os.unlink(path)
        return [path]

    def op_delete_tree(self, mount: Mount, tree: Tree) -> list[bytes]:
        path = self.rng.choice(tree.dirs[1:])
        shutil.rmtree(path)
        return [path]

    def op_symlink(self, mount: Mount, tree: Tree) -> list[bytes]:
        """A relative link inside the tree: to a file, a folder or a name that does not exist."""
        where = self.rng.choice(tree.dirs)
        target = self.rng.choice([*tree.files, *tree.dirs, os.path.join(where, b"nowhere")])
        path = os.path.join(where, self.name())
        os.symlink(os.path.relpath(target, where), path)
        self.own(mount, path)
        return [path]

    def op_hardlink(self, mount: Mount, tree: Tree) -> list[bytes]:
        source = self.rng.choice(tree.files)
        path = os.path.join(self.rng.choice(tree.dirs), self.name())
        os.link(source, path)
        return [source, path]

    def op_write_linked(self, mount: Mount, tree: Tree) -> list[bytes]:
        """A file with several names changed in place through one: all the others change too."""
        path = self.rng.choice(tree.linked)
        if self.rng.random() < 0.3:
            os.chmod(path, self.rng.choice(FILE_MODES))
        else:
            with open(path, "ab") as handle:
                handle.write(self.rng.randbytes(self.rng.randint(1, 512)))
        return [path]

    def edited(self, tree: Tree) -> bytes:
        """A file an editor saves: not one of the editors' own backups (NAME~)."""
        return self.rng.choice([p for p in tree.single if not p.endswith(b"~")] or tree.single)

    def op_save_atomic(self, mount: Mount, tree: Tree) -> list[bytes]:
        """A new version written to a temp file beside the file, renamed over it."""
        path = self.edited(tree)
        head, name = os.path.split(path)
        temp = os.path.join(head, b".%s.tmp%d" % (name, next(self.serial)))
        self.write_new(mount, temp, self.content())
        os.rename(temp, path)
        return [temp, path]

    def op_save_vim(self, mount: Mount, tree: Tree) -> list[bytes]:
        """Vim's backup-by-rename: NAME to NAME~, NAME written anew, NAME~ removed."""
        path = self.edited(tree)
        backup = path + b"~"
        os.rename(path, backup)
        self.write_new(mount, path, self.content())
        os.unlink(backup)
        return [path, backup]

    def op_save_emacs(self, mount: Mount, tree: Tree) -> list[bytes]:
        """Emacs: the lock symlink .#NAME (dangling), NAME renamed over NAME~ (made
        first when missing, so the rename replaces a file), NAME written anew, the
        lock removed."""
        path = self.edited(tree)
        head, name = os.path.split(path)
        backup, lock = path + b"~", os.path.join(head, b".#" + name)
        if not os.path.lexists(backup):
            self.write_new(mount, backup, self.content())
        os.symlink(b"root@soak.%d:1700000000" % os.getpid(), lock)
        self.own(mount, lock)
        os.rename(path, backup)
        self.write_new(mount, path, self.content())
        os.unlink(lock)
        return [path, backup, lock]

    def rotate_big(self, mount: Mount, tree: Tree) -> bytes:
        """log-rotate's first step: a large append to some folder's app.log (made
        when missing), so that the rotation can land while its sync runs."""
        path = os.path.join(self.rng.choice(tree.dirs), LOG)
        existed = os.path.lexists(path)
        with open(path, "ab") as handle:
            handle.write(self.rng.randbytes(self.rng.randint(256 << 10, 2 << 20)))
        if not existed:
            self.own(mount, path)
        return path

    def rotate(self, mount: Mount, path: bytes) -> list[bytes]:
        """app.log renamed to app.log.1 (over the last one), a new app.log written."""
        os.rename(path, path + b".1")
        self.write_new(mount, path, self.rng.randbytes(self.rng.randint(1, 4096)))
        return [path, path + b".1"]

    def rewrite(self, path: bytes, size: int) -> None:
        """New content of exactly SIZE bytes (at least one), written in place."""
        data = bytearray(self.rng.randbytes(max(size, 1)))
        with open(path, "r+b") as handle:
            if handle.read(1) == data[:1]:
                data[0] ^= 0xFF
            handle.seek(0)
            handle.write(data)

    def shell(self, kind: str, mount: Mount, tree: Tree, *, dirs: bool = True) -> tuple[str, str]:
        """(kind, sh -c script) for an operation inside the container, on plain names only;
        exec-rename moves folders too unless not DIRS."""
        rng = self.rng
        root = mount.root

        def inside(path: bytes) -> str:
            rel = path[len(root) :].decode()
            return shlex.quote(mount.inside + rel)

        plain = [p for p in [*tree.files, *tree.dirs[1:]] if PLAIN.match(p[len(root) :].lstrip(b"/"))]
        plain_files = [p for p in plain if p in set(tree.single)]  # write-linked is its own kind
        plain_dirs = [root] + [p for p in plain if p not in set(tree.files)]
        text = shlex.quote(rng.randbytes(rng.randint(1, 60)).hex())
        fresh = os.path.join(rng.choice(plain_dirs), self.name(odd_share=0))
        if kind == "exec-append" and plain_files:
            return kind, f"echo {text} >> {inside(rng.choice(plain_files))}"
        if kind == "exec-mkdir":
            return kind, f"mkdir -p {inside(fresh)}/sub && echo {text} > {inside(fresh)}/sub/f"
        movable = plain if dirs else [p for p in plain if p in set(tree.files)]
        if kind == "exec-rename" and movable:
            source = rng.choice(movable)
            targets = [d for d in plain_dirs if d != source and not d.startswith(source + b"/")]
            target = os.path.join(rng.choice(targets), self.name(odd_share=0))
            return kind, f"mv -- {inside(source)} {inside(target)}"
        if kind == "exec-delete" and plain:
            return kind, f"rm -rf -- {inside(rng.choice(plain))}"
        return "exec-create", f"echo {text} > {inside(fresh)}"


# --- memory sampling ------------------------------------------------------------


def _ppids() -> dict[int, int]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with (
                contextlib.suppress(OSError, IndexError, ValueError),
                open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle,
            ):
                table[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
    return table


def rss_kb(pid: int) -> int:
    """VmRSS of PID in KiB (0 when it is gone or a kernel thread)."""
    with (
        contextlib.suppress(OSError, ValueError),
        open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle,
    ):
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """Peak RSS of the supervisor and of its workers (each with its children),
    and any worker seen in an odd state, every SAMPLE_EVERY seconds."""

    def __init__(self, serve: Serve, result: Result) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.serve = serve
        self.result = result
        self.done = threading.Event()
        self.last = (0, 0)  # supervisor, all workers (KiB), for progress lines

    def run(self) -> None:
        while not self.done.wait(SAMPLE_EVERY):
            self.sample()

    def sample(self) -> None:
        r = self.result
        kids: dict[int, list[int]] = {}
        for pid, ppid in _ppids().items():
            kids.setdefault(ppid, []).append(pid)
        supervisor = rss_kb(self.serve.pid)
        workers = kids.get(self.serve.pid, [])
        sizes = []
        for worker in workers:
            own = rss_kb(worker)
            r.rss_worker_python_kb = max(r.rss_worker_python_kb, own)
            sizes.append(own + sum(rss_kb(p) for p in _descendants(worker, kids)))
        r.rss_supervisor_kb = max(r.rss_supervisor_kb, supervisor)
        r.rss_worker_kb = max([r.rss_worker_kb, *sizes])
        r.rss_workers_kb = max(r.rss_workers_kb, sum(sizes))
        r.workers_peak = max(r.workers_peak, len(workers))
        r.samples += 1
        self.last = (supervisor, sum(sizes))
        for worker in self.serve.state().get("workers", []):
            seen = f"{worker['container']}: {worker['state']} {worker.get('reason', '')}".strip()
            if worker["state"] in ODD_STATES and seen not in r.odd_states:
                r.odd_states.append(seen)

    def stop(self) -> None:
        self.done.set()
        self.join(10)


def _mtimes(root: Path) -> dict[bytes, tuple[str, float]]:
    """relative path -> (d, f or l, mtime) below ROOT, .tandem-backup left out."""
    out: dict[bytes, tuple[str, float]] = {}
    top = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d != BACKUP]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
                out[os.path.relpath(path, top)] = (kind, st.st_mtime)
    return out


def _pulled(logs: Path) -> int:
    """The paths the workers' split-brain checks took from DEST, from their logs."""
    found = re.compile(rb"split-brain resolved: .* (\d+) from DEST")
    return sum(int(m.group(1)) for log in logs.glob("*.log") for m in found.finditer(log.read_bytes()))


_CHECK_LINE = re.compile(rb"^(\S+ [\d:]+,\d+) tandem\[([^\]/]+)/([^\]]+)\] \w+ split-brain (.*)$")
_PULL = re.compile(r"pull ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"): ")


def _pull_lines(logs: Path) -> list[tuple[str, str, bytes, list[str]]]:
    """(container, mount, path, the check's lines about it) for every path a
    split-brain check pulled, from the workers' logs (``splitbrain.explain``)."""
    found = []
    for log in sorted(logs.glob("*.log")):
        check: list[str] = []
        for line in log.read_bytes().splitlines():
            if not (match := _CHECK_LINE.match(line)):
                continue
            text = line.decode(errors="replace")
            said = match.group(4).decode(errors="replace")
            if said.startswith("decision:"):
                check = [text]
            elif said.startswith("latest change"):
                check.append(text)
            elif pulled := _PULL.match(said):
                path = os.fsencode(ast.literal_eval(pulled.group(1)))
                found.append((match.group(2).decode(), match.group(3).decode(), path, [*check, text]))
    return found


def _log_mentions(log: Path, path: bytes, skip: str = "split-brain") -> list[str]:
    """The last LOG_LINES lines of a worker's log that name PATH's last component
    (as the watcher's events and the log print it), SKIP lines left out."""
    name = repr(os.path.basename(path))[2:-1].encode()
    if not name or not log.exists():
        return []
    skipped = skip.encode()
    lines = [line for line in log.read_bytes().splitlines() if name in line and skipped not in line]
    return [line.decode(errors="replace")[:300] for line in lines[-LOG_LINES:]]


def _meta(root: Path, rel: bytes) -> str:
    """REL below ROOT as type, size, mode and mtime (or absent)."""
    try:
        st = os.lstat(os.path.join(os.fsencode(root), rel))
    except OSError:
        return "absent"
    kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
    mode = stat.S_IMODE(st.st_mode)
    return f"{kind} {st.st_size} {mode:o} {st.st_mtime_ns / 1e9:.6f} ({st.st_nlink} links)"


def _clock(wall: float) -> str:
    """HH:MM:SS.mmm, as in the supervisor's and the workers' logs."""
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall % 1 * 1000):03d}"


def _links(root: Path, rel: bytes) -> int:
    """How many names the file REL has at SOURCE (st_nlink; 0 when gone)."""
    try:
        return os.lstat(os.path.join(os.fsencode(root), rel)).st_nlink
    except OSError:
        return 0


def _descendants(pid: int, kids: dict[int, list[int]]) -> list[int]:
    found, stack = [], list(kids.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(kids.get(child, []))
    return found


# --- the soak -------------------------------------------------------------------


class Soak:
    def __init__(self, dockerd: DockerDaemon, lxd: LxdDaemon, workdir: Path, config: Config) -> None:
        self.dockerd = dockerd
        self.lxd = lxd
        self.workdir = workdir
        self.config = config
        self.rng = random.Random(config.seed)
        self.operator = Operator(self.rng)
        self.result = Result(seed=config.seed, duration=config.duration)
        self.lock = threading.Lock()  # the result, from the start and stop threads
        self.docker_lock = threading.Lock()  # one docker SDK call at a time
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="soak")
        self.futures: list[Future[None]] = []
        self.deferred: list[tuple[float, int, Box, Callable[[], None]]] = []
        self.boxes: list[Box] = []
        self.journal: list[tuple[float, str, str, str, list[bytes]]] = []
        self.lost_paths: set[tuple[str, str, bytes]] = set()
        self.dest = workdir / "dest"
        conf = (
            f'heartbeat = 1.0\nrestart_delay = 0.5\nstop_timeout = 30\nlog_level = "{config.log_level}"\n'
            f'[defaults]\ndest = "{self.dest}/{{host}}/{{container}}/{{mount}}"\ndelay = {config.delay}\n'
        )
        self.serve = Serve(workdir / "state", conf, "--host", HOST, env={"DOCKER_HOST": dockerd.host})
        self.sampler = Sampler(self.serve, self.result)
        self.serve_started = 0.0

    # -- the run -------------------------------------------------------------------

    def run(self) -> Result:
        cfg, r = self.config, self.result
        try:
            self.serve_started = time.monotonic()
            self.serve.start()
            self.serve.wait_runtime("docker", timeout=60)
            self.serve.wait_runtime("lxd", timeout=60)
            self.sampler.start()
            self._create_all()
            r.setup = time.monotonic() - self.serve_started
            cfg.progress(f"soak: {r.containers} containers ({r.docker} docker, {r.lxd} lxd), seed {cfg.seed}")
            self._loop()
            done = time.monotonic()
            self._finish()
            r.teardown = time.monotonic() - done
        finally:
            self._cleanup()
        return r

    def _loop(self) -> None:
        cfg = self.config
        start = time.monotonic()
        end = start + cfg.duration
        next_op = next_report = start
        while (now := time.monotonic()) < end and not cfg.stop.is_set():
            self._reap_futures()
            self._run_deferred(now)
            self._cycle(now)
            if now >= next_op:
                self._operate()
                next_op = max(next_op + 1.0 / cfg.rate, now - 1.0)
            if now >= next_report:
                self._report(now - start)
                next_report += 10.0
            time.sleep(max(0.0, min(next_op - time.monotonic(), 0.05)))
        self.result.elapsed = time.monotonic() - start

    def _finish(self) -> None:
        """Let starts and stops end, stop every running container (last comparisons),
        then SIGTERM the supervisor and take its CPU figures."""
        self.deferred.clear()
        self._wait_futures()
        for box in self.boxes:
            if box.state == "running":
                box.state = "stopping"
                self._submit(self._stop, box, False)
        self._wait_futures()
        self.sampler.sample()
        self._stop_supervisor()
        self.sampler.stop()
        self.result.pulled = _pulled(self.serve.state_dir / "logs")
        self._explain_pulls()
        self._report(self.result.elapsed)

    def _stop_supervisor(self) -> None:
        r = self.result
        proc = self.serve.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 90
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                r.anomalies.append("the supervisor did not exit within 90 s of SIGTERM: killed")
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)
        r.supervisor_exit = proc.returncode
        r.cpu_user, r.cpu_sys = usage.ru_utime, usage.ru_stime
        r.cpu_wall = time.monotonic() - self.serve_started

    def _cleanup(self) -> None:
        with contextlib.suppress(OSError), open(self.workdir / "journal.txt", "w") as out:
            for at, who, where, kind, paths in list(self.journal):
                out.write(f"{_clock(at)} {who} {where or '-'} {kind} {b' | '.join(paths)!r}\n")
        self.deferred.clear()
        with contextlib.suppress(Exception):
            self._wait_futures()
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.sampler.is_alive():
            self.sampler.stop()
        if self.serve.proc is not None and self.serve.proc.returncode is None:
            self.serve.cleanup()  # SIGKILL, reaped, and every worker by its pid file
        for box in self.boxes:
            with contextlib.suppress(Exception):
                self._remove(box)

    # -- containers --------------------------------------------------------------

    def _create_all(self) -> None:
        n, r = self.config.containers, self.result
        r.containers, r.lxd = n, n // 2
        r.docker = n - r.lxd
        for i in range(r.docker):
            self.boxes.append(Box(f"soak-d{i:02d}", "docker"))
        for i in range(r.lxd):
            self.boxes.append(Box(f"tt-soak-{i:02d}", "lxd"))
        for box in self.boxes:  # every container starts running, as on a host that boots
            box.state = "starting"
            self._submit(self._create, box)
        self._wait_futures()
        if any(box.state != "running" for box in self.boxes):
            raise RuntimeError(f"containers not created: {self.result.anomalies}")

    def _create(self, box: Box) -> None:
        dest = self.dest / HOST / box.name
        if box.runtime == "docker":
            with self.docker_lock:
                box.handle = self.dockerd.client.containers.create(
                    DOCKER_IMAGE,
                    ["/bin/sleep", "1000000"],
                    name=box.name,
                    init=True,
                    volumes=[f"{box.name}:/data"],
                    labels={"tandem.enable": "true"},
                )
            data = self.dockerd.root / "volumes" / box.name / "_data"
            box.mounts.append(Mount("data", data, dest / "data", os.fsencode(data), "/data"))
        else:
            volume = self.lxd.create_volume(box.name)
            config = {"user.tandem.enable": "true"}
            rootfs = int(box.name[-2:]) % 2 == 0  # every other one syncs its root filesystem too
            if not rootfs:
                config["user.tandem.paths"] = "/data"
            self.lxd.launch(box.name, config, {box.name: "/data"})
            with self.lock:
                self.result.starts += 1
            st = os.stat(volume)
            box.mounts.append(
                Mount("data", volume, dest / "data", os.fsencode(volume), "/data", st.st_uid, st.st_gid)
            )
            if rootfs:
                fs = self.lxd.rootfs(box.name)
                st = os.stat(fs)
                ops = fs / "srv" / "soak"
                for folder in (ops.parent, ops):
                    folder.mkdir(exist_ok=True)
                    os.chown(folder, st.st_uid, st.st_gid)
                mount = Mount(
                    "rootfs", fs, dest / "rootfs", os.fsencode(ops), "/srv/soak", st.st_uid, st.st_gid
                )
                box.mounts.append(mount)
            for mount in box.mounts:
                self._keep(mount)
            box.state = "running"
            self._wait_ready(box)
            return
        self._keep(box.mounts[0])
        self._start(box)

    @staticmethod
    def _keep(mount: Mount) -> None:
        """A source that a container empties at its start makes the split-brain check
        halt the worker (by design: a side suddenly empty); real volumes keep something."""
        path = os.path.join(mount.root, KEEP)
        with open(path, "wb") as handle:
            handle.write(b"never touched by the soak's operations\n")
        Operator.own(mount, path)

    def _start(self, box: Box) -> None:
        self._note(box, None, "start", [])
        if box.runtime == "docker":
            with self.docker_lock:
                box.handle.start()
        else:
            self.lxd.start_container(box.name)
        with self.lock:
            self.result.starts += 1
        box.state = "running"
        self._wait_ready(box)

    def _wait_ready(self, box: Box) -> None:
        """Wait until the worker of this life runs: a stop asked for while a worker is
        still starting cancels that start, and the next start's full sync sends it all."""
        deadline, state = time.monotonic() + READY_WAIT, None
        while time.monotonic() < deadline:
            state = self.serve.worker(box.name).get("state")
            if state == "running":
                break
            if state in ("failed", "halted"):
                self._anomaly(f"{box.name}: worker {state} after a start: {self.serve.worker(box.name)}")
                break
            time.sleep(0.1)
        else:
            self._anomaly(f"{box.name}: worker not running {READY_WAIT:.0f} s after the start")
        self._note(box, None, f"worker {state} (pid {self.serve.worker(box.name).get('pid')})", [])
        box.ready = True

    def _stop(self, box: Box, force: bool) -> None:
        """Stop the container, wait until its worker is stopped, compare every mount."""
        self._note(box, None, "kill" if force else "stop", [])
        if box.runtime == "docker":
            with self.docker_lock:
                if force:
                    box.handle.kill()
                else:
                    box.handle.stop(timeout=5)
        else:
            self.lxd.stop(box.name, force=force)
        worker = self._wait_stopped(box)
        self._note(box, None, f"worker {worker.get('state')}", [])
        pairs = worker.get("pairs", [])
        with self.lock:
            r = self.result
            r.stops += 1
            r.syncs += sum(p.get("syncs", 0) for p in pairs)
            r.files += sum(p.get("files", 0) for p in pairs)
            r.bytes += sum(p.get("bytes", 0) for p in pairs)
            r.failures += sum(p.get("failures", 0) for p in pairs)
            r.restarts += worker.get("restarts", 0)
        for mount in box.mounts:
            self._compare(box, mount)
        box.ready = False
        box.state = "stopped"

    def _wait_stopped(self, box: Box) -> dict[str, Any]:
        deadline = time.monotonic() + STOP_WAIT
        while time.monotonic() < deadline:
            worker = self.serve.worker(box.name)
            if worker.get("state") in DONE_STATES and not worker.get("pid"):
                if worker["state"] != "stopped":
                    self._anomaly(f"{box.name}: worker {worker['state']} at a stop: {worker.get('reason')}")
                return worker
            time.sleep(0.1)
        worker = self.serve.worker(box.name)
        self._anomaly(f"{box.name}: worker not stopped {STOP_WAIT:.0f} s after the container: {worker}")
        return worker

    def _compare(self, box: Box, mount: Mount) -> None:
        self._reverted(box, mount)
        self._drift(box, mount)
        self._ancestor_gaps(box, mount)
        loss = compare(mount.source, mount.dest)
        with self.lock:
            r = self.result
            r.comparisons += 1
            r.lost += loss.lost
            r.stale += len(loss.stale)
            self.lost_paths |= {(box.name, mount.name, p) for p in (*loss.missing, *loss.differing)}
            r.lost_paths = len(self.lost_paths)
            if loss.equal:
                return
            source, dest = digest(mount.source), digest(mount.dest)
            for kind, paths in (
                ("missing", loss.missing),
                ("differing", loss.differing),
                ("stale", loss.stale),
            ):
                for path in sorted(paths)[:50]:
                    r.losses.append(
                        {
                            "container": box.name,
                            "mount": mount.name,
                            "stop": r.stops,
                            "kind": kind,
                            "path": repr(path)[2:-1],
                            "source": repr(source.get(path))[:120],
                            "links": _links(mount.source, path),
                            "history": self._history(box, mount, path),
                            "log": _log_mentions(self.serve.state_dir / "logs" / f"{box.name}.log", path),
                            "dest": repr(dest.get(path))[:120],
                        }
                    )
        self.config.progress(f"soak: LOSS at the stop of {box.name}/{mount.name}: {loss}")

    def _drift(self, box: Box, mount: Mount) -> None:
        """Entries whose mtime differs between SOURCE and DEST by more than tandem's
        modify window: not a loss, but what makes the next start's split-brain
        check see a change at DEST."""
        source, dest = _mtimes(mount.source), _mtimes(mount.dest)
        found = [
            f"{box.name}/{mount.name} stop {self.result.stops}: {kind} {path!r} "
            f"DEST {dest[path][1] - mtime:+.3f} s"
            for path, (kind, mtime) in source.items()
            if path in dest and dest[path][0] == kind and abs(dest[path][1] - mtime) > 0.001
        ]
        with self.lock:
            self.result.drift += len(found)
            self.result.drift_examples += found[: max(0, 20 - len(self.result.drift_examples))]

    def _ancestor_gaps(self, box: Box, mount: Mount) -> None:
        """DEST entries the worker's saved ancestor lacks or holds with another type,
        size or mtime. After a stop's flush both sides and the ancestor are the
        same; a gap is what the next start's check takes for a change at DEST
        (and pulls, when the container changed that path before the check)."""
        saved = self.serve.state_dir / "snapshots" / box.name / f"{mount.name}.json.gz"
        try:
            with gzip.open(saved, "rt", encoding="utf-8") as handle:
                entries = json.load(handle)["entries"]
        except (OSError, ValueError, KeyError):
            return
        gaps = []
        for path, (kind, mtime) in _mtimes(mount.dest).items():
            known = entries.get(os.fsdecode(path))
            with contextlib.suppress(OSError):
                size = os.lstat(os.path.join(os.fsencode(mount.dest), path)).st_size if kind != "d" else 0
                if known is None or known[0] != kind or (kind != "d" and known[1:] != [size, mtime]):
                    gaps.append((path, known))
        with self.lock:
            self.result.ancestor_gaps += len(gaps)
            for path, known in gaps[:20]:
                self.result.losses.append(
                    {
                        "container": box.name,
                        "mount": mount.name,
                        "stop": self.result.stops,
                        "kind": "ancestor gap",
                        "path": repr(path)[2:-1],
                        "source": _meta(mount.source, path),
                        "dest": f"{_meta(mount.dest, path)}; ancestor {known}",
                        "links": _links(mount.source, path),
                        "history": self._history(box, mount, path),
                        "log": _log_mentions(self.serve.state_dir / "logs" / f"{box.name}.log", path),
                    }
                )
        if gaps:
            self.config.progress(f"soak: ANCESTOR GAP at {box.name}/{mount.name}: {[g[0] for g in gaps[:5]]}")

    def _reverted(self, box: Box, mount: Mount) -> None:
        """Files a start's split-brain check took from DEST over SOURCE's: nothing but
        tandem writes DEST here, so each one is a write of the container undone."""
        backup = os.path.join(os.fsencode(mount.source), BACKUP)
        found = {p for p in scan(backup).files if p not in mount.reverted} if os.path.isdir(backup) else set()
        mount.reverted |= found
        with self.lock:
            self.result.reverted += len(found)
            for path in sorted(found)[:50]:
                rel = path[len(backup) + 1 :]
                self.result.losses.append(
                    {
                        "container": box.name,
                        "mount": mount.name,
                        "stop": self.result.stops,
                        "kind": "reverted",
                        "path": repr(rel)[2:-1],
                        "source": "the container's version, moved to SOURCE/.tandem-backup",
                        "dest": "",
                        "links": 1,
                        "history": self._history(box, mount, rel.split(b"/", 1)[-1]),
                    }
                )
        if found:
            self.config.progress(f"soak: REVERTED at {box.name}/{mount.name}: {sorted(found)[:5]}")

    def _explain_pulls(self) -> None:
        """Each path the checks pulled (the first MAX_PULLS): what the check saw and
        decided, the worker's log lines about it, the journal, both sides now."""
        logs = self.serve.state_dir / "logs"
        mounts = {(b.name, m.name): (b, m) for b in self.boxes for m in b.mounts}
        for container, name, path, check in _pull_lines(logs)[:MAX_PULLS]:
            if (found := mounts.get((container, name))) is None:
                continue
            box, mount = found
            self.result.pulls.append(
                {
                    "container": container,
                    "mount": name,
                    "path": repr(path)[2:-1],
                    "check": check,
                    "log": _log_mentions(logs / f"{container}.log", path),
                    "history": self._history(box, mount, path),
                    "source": _meta(mount.source, path),
                    "dest": _meta(mount.dest, path),
                }
            )

    def _remove(self, box: Box) -> None:
        if box.runtime == "docker":
            with self.docker_lock:
                if box.handle is not None:
                    box.handle.remove(force=True)
                self.dockerd.client.volumes.get(box.name).remove(force=True)
        else:
            if box.name in self.lxd.containers():
                self.lxd.delete(box.name)
            if box.name in self.lxd.volumes():
                subprocess.run(
                    ["lxc", "storage", "volume", "delete", "default", box.name],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )

    # -- the loop's steps --------------------------------------------------------

    def _cycle(self, now: float) -> None:
        """Start the containers whose down time is over, stop those whose life is."""
        life, down = self.config.life, self.config.down
        for box in self.boxes:
            if box.due is None:
                if box.state == "stopped":
                    box.due = now + self.rng.uniform(*down)
                elif box.state == "running" and box.ready:
                    box.due = now + self.rng.uniform(*life)
                continue
            if now < box.due:
                continue
            if box.state == "stopped":
                box.state, box.due = "starting", None
                self._submit(self._start, box)
            elif box.state == "running":
                box.state, box.due = "stopping", None
                self._submit(self._stop, box, self.rng.random() < 0.7)

    def _operate(self) -> None:
        running = [b for b in self.boxes if b.state == "running" and (b.ready or self.config.early_ops)]
        if not running:
            return
        box = self.rng.choice(running)
        mount = self.rng.choice(box.mounts)
        tree = scan(mount.root)
        inside = {k: w for k, w in EXEC_KINDS.items() if k not in self.config.skip}
        if inside and self.rng.random() < self.config.exec_share:
            self._exec(box, mount, tree, inside)
            return
        weights = PRUNE_KINDS if tree.size > MAX_ENTRIES else HOST_KINDS
        weights = {k: w for k, w in weights.items() if k not in self.config.skip} or {"create": 1}
        kind = self.operator.pick(weights)
        try:
            if kind == "same-second":
                self._same_second(box, mount, tree)
            elif kind == "log-rotate":
                self._log_rotate(box, mount, tree)
            else:
                kind, paths = self.operator.host(kind, mount, tree)
                self._note(box, mount, kind, paths)
        except (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError) as err:
            kind = f"skipped ({type(err).__name__})"
        self.result.ops[kind] += 1

    def _exec(self, box: Box, mount: Mount, tree: Tree, kinds: dict[str, int]) -> None:
        dirs = "rename-dir" not in self.config.skip
        kind, script = self.operator.shell(self.operator.pick(kinds), mount, tree, dirs=dirs)
        try:
            if box.runtime == "docker":
                with self.docker_lock:
                    code, output = box.handle.exec_run(["sh", "-c", script])
                if code != 0:
                    raise RuntimeError(f"exit {code}: {output!r}")
            else:
                self.lxd.exec(box.name, script)
        except (RuntimeError, LxdError) as err:
            self.result.exec_failed += 1
            self.config.progress(f"soak: {kind} in {box.name} failed ({script!r}): {err}")
            return
        self._note(box, mount, kind, [script.encode()])
        self.result.ops[kind] += 1

    def _log_rotate(self, box: Box, mount: Mount, tree: Tree) -> None:
        """A large write to app.log now, its rotation about when the worker's run
        of it starts (the collect window plus up to 0.2 s): rsync may be reading
        app.log as it is renamed away and a new one is made under its name."""
        path = self.operator.rotate_big(mount, tree)
        self._note(box, mount, "log-rotate (write)", [path])

        def rotate() -> None:
            self._note(box, mount, "log-rotate (rotate)", self.operator.rotate(mount, path))

        self._defer(time.time() + self.config.delay + self.rng.uniform(0.0, 0.2), box, rotate)

    def _same_second(self, box: Box, mount: Mount, tree: Tree) -> None:
        """A new file, then new content of the same size in the same second, late
        enough that the first version has usually reached DEST already: the case
        where rsync's size+mtime check sees nothing to do."""
        now = time.time()
        second = math.floor(now) if now % 1 < 0.2 else math.ceil(now)
        path = os.path.join(self.rng.choice(tree.dirs), self.operator.name())
        data = self.operator.content() or b"x"

        def first() -> None:
            self.operator.write_new(mount, path, data)
            self._note(box, mount, "same-second (first)", [path])

        def second_write() -> None:
            st = os.lstat(path)
            linked = st.st_nlink > 1 and "write-linked" in self.config.skip  # linked since the first
            if stat.S_ISREG(st.st_mode) and st.st_size == len(data) and not linked:
                self.operator.rewrite(path, len(data))
                self._note(box, mount, "same-second (second)", [path])

        if second == math.floor(now):
            first()
        else:
            self._defer(second + 0.02, box, first)
        self._defer(second + 0.9, box, second_write)

    def _note(self, box: Box, mount: Mount | None, kind: str, paths: list[bytes]) -> None:
        """Journal an operation or a container's start or stop (for the report of a loss)."""
        base = os.fsencode(mount.source) + b"/" if mount else b""
        rel = [p.removeprefix(base) for p in paths]
        at = time.time()
        self.journal.append((at, box.name, mount.name if mount else "", kind, rel))

    def _history(self, box: Box, mount: Mount, path: bytes) -> list[str]:
        """The journal's lines about PATH itself (all of them), about the folders above
        it (by name: renames are there too) and BOX's starts and stops (the last 30)."""
        name = os.path.basename(path)
        keys = set(path.split(b"/")) - {b"sub", b"f"}  # exec-mkdir's names are not unique
        journal = [e for e in list(self.journal) if e[1] == box.name and e[2] in ("", mount.name)]
        own, near = [], []
        for index, (_, _, where, _, paths) in enumerate(journal):
            parts = [set(p.split(b"/")) for p in paths]
            if where and any(name in part for part in parts):
                own.append(index)
            elif not where or any(keys & part for part in parts):
                near.append(index)
        keep = sorted({*own, *near[-30:]})
        return [f"{_clock(journal[i][0])} {journal[i][3]} {b' | '.join(journal[i][4])!r}" for i in keep]

    def _defer(self, at_wall: float, box: Box, action: Callable[[], None]) -> None:
        at = time.monotonic() + (at_wall - time.time())
        heapq.heappush(self.deferred, (at, next(self.operator.serial), box, action))

    def _run_deferred(self, now: float) -> None:
        while self.deferred and self.deferred[0][0] <= now:
            _, _, box, action = heapq.heappop(self.deferred)
            if box.state != "running":  # stopping: its source must not change any more
                continue
            with contextlib.suppress(FileNotFoundError, FileExistsError, NotADirectoryError):
                action()

    # -- threads -----------------------------------------------------------------

    def _submit(self, fn: Callable[..., None], box: Box, *args: Any) -> None:
        """Run FN(BOX, *ARGS) in a thread; a failure is an anomaly, and takes the
        container out of the cycle unless a start failed (it is tried again)."""

        def body() -> None:
            try:
                fn(box, *args)
            except Exception as err:
                self._anomaly(f"{box.name}: {fn.__name__} failed: {type(err).__name__}: {err}")
                box.ready = False
                box.state = "stopped" if fn == self._start else "broken"

        self.futures.append(self.pool.submit(body))

    def _reap_futures(self) -> None:
        self.futures = [f for f in self.futures if not f.done()]

    def _wait_futures(self) -> None:
        for future in list(self.futures):
            future.result(timeout=STOP_WAIT + READY_WAIT + 120)
        self.futures.clear()

    def _anomaly(self, text: str) -> None:
        with self.lock:
            self.result.anomalies.append(text)
        self.config.progress(f"soak: {text}")

    def _report(self, t: float) -> None:
        r = self.result
        running = sum(b.state == "running" for b in self.boxes)
        sup, workers = self.sampler.last
        self.config.progress(
            f"soak {t:6.0f}s  running {running:2d}/{len(self.boxes)}  ops {r.ops_total:6d}  "
            f"stops {r.stops:4d}  compared {r.comparisons:4d}  lost {r.lost}  stale {r.stale}  "
            f"rss supervisor {sup / 1024:.0f} MiB, workers {workers / 1024:.0f} MiB"
        )


def run(dockerd: DockerDaemon, lxd: LxdDaemon, workdir: Path, config: Config) -> Result:
    """The soak on daemons already started; every container and volume it made, the
    supervisor and its workers are gone when it returns."""
    return Soak(dockerd, lxd, workdir, config).run()


# --- output ---------------------------------------------------------------------


def summary(r: Result) -> str:
    mib = 1024.0
    lines = [
        f"soak: {r.elapsed:.0f} s (asked {r.duration:.0f} s; set-up {r.setup:.0f} s, "
        f"last stops and supervisor exit {r.teardown:.0f} s), seed {r.seed}",
        f"containers      {r.containers} ({r.docker} docker, {r.lxd} lxd)",
        f"operations      {r.ops_total} ({r.ops_total / max(r.elapsed, 1e-9):.1f}/s); "
        f"exec failures {r.exec_failed}",
    ]
    lines += [f"  {kind:<22} {count}" for kind, count in sorted(r.ops.items())]
    lines += [
        f"syncs           {r.syncs} (files {r.files}, bytes {r.bytes}, failures {r.failures}, "
        f"worker restarts {r.restarts})",
        f"cycled          {r.stops} stops, {r.starts} starts",
        f"comparisons     {r.comparisons}",
        f"lost            {r.lost} ({r.lost_paths} different paths; a path lost at n stops counts n times)",
        f"stale           {r.stale}",
        f"reverted        {r.reverted} (SOURCE files a start's split-brain check replaced with DEST's)",
        f"pulled          {r.pulled} (paths the split-brain checks at starts took from DEST)",
        f"mtime drift     {r.drift} (entries equal in content, mtime different at DEST, at the stops)",
        f"ancestor gaps   {r.ancestor_gaps} (DEST entries unlike the ancestor saved at a stop)",
        f"peak RSS        supervisor {r.rss_supervisor_kb / mib:.1f} MiB; largest worker "
        f"{r.rss_worker_kb / mib:.1f} MiB (python alone {r.rss_worker_python_kb / mib:.1f} MiB); "
        f"all workers {r.rss_workers_kb / mib:.1f} MiB ({r.workers_peak} at most, {r.samples} samples)",
        f"CPU             {r.cpu_seconds:.1f} s (user {r.cpu_user:.1f}, sys {r.cpu_sys:.1f}) over "
        f"{r.cpu_wall:.0f} s = {r.cpu_percent:.1f}% of one core [{r.cpu_method}]",
        f"supervisor exit {r.supervisor_exit}",
    ]
    lines += [f"  {text}" for text in r.drift_examples[:10]]
    if r.odd_states:
        lines.append(f"odd worker states seen ({len(r.odd_states)}):")
        lines += [f"  {text}" for text in r.odd_states[:20]]
    if r.anomalies:
        lines.append(f"anomalies ({len(r.anomalies)}):")
        lines += [f"  {text}" for text in r.anomalies[:20]]
    if r.losses:
        lines.append(f"losses ({len(r.losses)} paths listed; the journal of each path's name below it):")
        told = set()
        for x in r.losses[:60]:
            lines.append(
                f"  stop {x['stop']} {x['container']}/{x['mount']} {x['kind']}: {x['path']!r} "
                f"({x['links']} links) source {x['source']} dest {x['dest']}"
            )
            if (where := (x["container"], x["mount"], x["path"])) not in told:  # its journal once
                told.add(where)
                lines += [f"      {line}" for line in x["history"]]
                lines += [f"      log: {line}" for line in x.get("log", ())]
    if r.pulls:
        lines.append(f"pulls ({len(r.pulls)} listed; the check, the worker's log and the journal of each):")
        for x in r.pulls:
            lines.append(
                f"  {x['container']}/{x['mount']}: {x['path']!r} now: source {x['source']}; dest {x['dest']}"
            )
            lines += [f"      check: {line}" for line in x["check"]]
            lines += [f"      log: {line}" for line in x["log"]]
            lines += [f"      {line}" for line in x["history"]]
    lines.append("OK: nothing lost" if r.ok else "FAILED")
    return "\n".join(lines)


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=20, help="containers, half Docker, half LXD")
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of random operations")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    parser.add_argument("--rate", type=float, default=20.0, help="file operations per second")
    parser.add_argument("--delay", type=float, default=0.3, help="the workers' collect window (s)")
    parser.add_argument("--life", type=_pair, default=(5.0, 30.0), help="MIN,MAX seconds a container runs")
    parser.add_argument("--down", type=_pair, default=(1.0, 8.0), help="MIN,MAX seconds it stays stopped")
    parser.add_argument("--skip", default="", help="operation kinds not to do, comma-separated")
    parser.add_argument(
        "--no-early-ops",
        action="store_true",
        help="operations only once a started container's worker runs (see bench/README.md)",
    )
    parser.add_argument("--log-level", default="info", help="the supervisor's and the workers' log level")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a summary")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (destinations, logs)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    skip = frozenset(k for k in args.skip.split(",") if k)
    if unknown := skip - set(HOST_KINDS) - set(EXEC_KINDS):
        parser.error(f"--skip: unknown kinds {sorted(unknown)}; known: {sorted({*HOST_KINDS, *EXEC_KINDS})}")
    config = Config(
        args.containers,
        args.duration,
        seed,
        args.delay,
        args.rate,
        skip=skip,
        life=args.life,
        down=args.down,
        early_ops=not args.no_early_ops,
        log_level=args.log_level,
    )

    first: list[float] = []

    def stop(signum: int, _frame: object) -> None:
        """The first SIGINT/SIGTERM ends the random part (the last stops and comparisons
        still run); one more, later than 2 s after (a group signal comes twice), ends it all."""
        if first and time.monotonic() - first[0] > 2.0:
            raise KeyboardInterrupt
        if not first:
            first.append(time.monotonic())
            print(f"soak: {signal.Signals(signum).name}: ending the random part now", file=sys.stderr)
        config.stop.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    workdir = Path(tempfile.mkdtemp(prefix="tandem-soak-", dir="/tmp"))
    (workdir / "lxd").mkdir()
    dockerd, lxd = DockerDaemon(), LxdDaemon(workdir / "lxd")
    adopted = bool(daemon_pids())  # an LXD that ran before us keeps running after us
    try:
        dockerd.start()
        lxd.start()
        result = run(dockerd, lxd, workdir, config)
    finally:
        dockerd.stop()
        if not adopted:
            lxd.shutdown()
        if args.keep:
            print(f"soak: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result.to_dict(), indent=1) if args.json else summary(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
