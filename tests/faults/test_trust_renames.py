"""Trust boundaries (issue 15): renames and backup folders never reach outside
the trees, whatever the container made them hold (symlinks in place of the
directories on the way, swapped in after a scan).

- A rename replayed at an ssh DEST whose parent there is still the container's
  old symlink: refused, the content is sent by rsync (which replaces the link).
- The split-brain loser's rename at SOURCE when a directory on the way became a
  symlink after the scan: refused, nothing outside SOURCE is renamed.
- ``.tandem-backup`` made by the container as a symlink (SOURCE for a pull, the
  peer's DEST for a push): a safety halt that names it, nothing moved outside.

Each test fails without its guard (a host file moved or renamed).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import WorkerProc, wait_until
from tests.faults.test_hostile import Canary, assert_no_loss
from tests.sshpeer import running_peer
from workers.transfer import localfs
from workers.transfer.rsync_plan import remote_dir_command, remote_move_command

pytestmark = [pytest.mark.faults]


# -- the peer's rename command, run by a real shell here ------------------------------------------


def _tree(root: Path) -> set[str]:
    return {
        str(p.relative_to(root)) + ("/" if p.is_dir() and not p.is_symlink() else "") for p in root.rglob("*")
    }


@pytest.mark.parametrize(
    ("old", "new", "moved"),
    [
        ("a/f", "a/g", True),  # same directory (a conflict copy)
        ("a/f", "n/e/w/g", True),  # new directories made on the way
        ("f0", "top", True),  # at the root
        ("a", "b/a2", True),  # a directory
        ("a/f", "link/f", False),  # the new parent is a symlink out of the tree
        ("a/f", "link/x/f", False),  # ... a directory on the way to it
        ("link/s", "a/s", False),  # the old parent is a symlink out of the tree
        ("a/f", "file/f", False),  # the new parent is a file
        ("gone", "a/gone", False),  # nothing to rename
        ("a/f", "-rf/--f", True),  # names that look like options
        ("a/f", "odd\nname/f\tg", True),  # new lines and tabs in names
        ("a/f", "trail\n/f\n", True),  # names ending in a new line
    ],
)
@pytest.mark.parametrize("shell", ["sh", "bash", "local"])
def test_rename_below_root(tmp_path: Path, shell: str, old: str, new: str, moved: bool) -> None:
    """The peer's rename command (run by SHELL) and the local one through directory
    fds ("local") agree: a rename is done, or refused with nothing changed."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (outside / "s").write_text("outside")
    (root / "a" / "f").write_text("f")
    (root / "f0").write_text("f0")
    (root / "file").write_text("")
    (root / "b").mkdir()
    (root / "link").symlink_to(outside)
    before_outside, before = _tree(outside), _tree(root)
    if shell == "local":
        try:
            localfs.rename_below(str(root), old, new)
            done, why = True, ""
        except OSError as err:
            done, why = False, str(err)
    else:
        command = remote_move_command(str(root), old, new)
        result = subprocess.run([shell, "-c", command], capture_output=True, timeout=10, check=False)
        done, why = result.returncode == 0, result.stderr.decode()
    assert _tree(outside) == before_outside, "something was made or renamed outside ROOT"
    assert done is moved, why
    if moved:
        assert (root / new).exists() and not os.path.lexists(root / old)
    else:
        assert _tree(root) == before, "a refused rename changed ROOT"


@pytest.mark.parametrize(
    ("rel", "made"),
    [
        (".tandem-backup/S", True),
        ("new/deep/S", True),
        ("b/S\n", True),
        ("link/S", False),  # a symlink out of the tree
        ("file/S", False),  # a file on the way
    ],
)
def test_backup_folder_commands(tmp_path: Path, rel: str, made: bool) -> None:
    """The peer's command (sh) and the local walk make REL a real directory below
    ROOT, and name it by its absolute path; never through a link or a file."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "b").mkdir(parents=True)
    outside.mkdir()
    (root / "file").write_text("")
    (root / "link").symlink_to(outside)
    result = subprocess.run(
        ["sh", "-c", remote_dir_command(str(root), rel)], capture_output=True, timeout=10, check=False
    )
    assert result.returncode == (0 if made else 1), result.stderr
    assert not list(outside.iterdir()), "something was made outside ROOT"
    if made:
        assert result.stdout == os.fsencode(root) + b"\0"
        assert (root / rel).is_dir() and not (root / rel).is_symlink()
        shutil.rmtree(root / rel.split("/")[0])
        (root / "b").mkdir(exist_ok=True)
        assert localfs.real_dir(str(root), rel) == str(root / rel)
        assert (root / rel).is_dir()
    else:
        with pytest.raises(localfs.NotInside):
            localfs.real_dir(str(root), rel)
        assert not list(outside.iterdir())


# -- 4. a rename at an ssh DEST through the container's old symlink --------------------------------


@pytest.mark.real
@pytest.mark.ssh
def test_remote_rename_never_passes_through_a_dest_symlink(
    tmp_path: Path, start_worker: Callable[..., WorkerProc]
) -> None:
    """The container syncs ``sub -> <host dir>``, then in one batch replaces it with
    a directory and moves a file into it. The rename replayed at the peer must not
    follow DEST's ``sub`` (still the link): the file lands in DEST's new ``sub``."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    canary = Canary(tmp_path)
    (src / "f").write_text("* * * * * root echo owned\n")
    (src / "sub").symlink_to(canary.dir)
    with running_peer() as peer:
        worker = start_worker(src, peer.dest(dst), "--rsh", peer.rsh, "--delay", "0.5")
        worker.wait_running(30)
        assert_no_loss(src, dst)
        assert os.readlink(dst / "sub") == str(canary.dir)
        synced = worker.syncs()
        script = f"cd {shlex.quote(str(src))} && rm sub && mkdir sub && mv f sub/f"
        subprocess.run(["sh", "-c", script], check=True, timeout=10)  # one batch (0.5 s delay)
        worker.wait_synced(synced)
        assert_no_loss(src, dst)
        assert worker.stop() == 0, worker.err()
    assert (dst / "sub" / "f").read_text() == "* * * * * root echo owned\n"
    canary.untouched()


# -- 5. the split-brain loser's rename at SOURCE, a parent swapped for a link after the scan ------------

T0 = 1_700_000_000.0  # mtimes set by hand: which side is newer must not depend on the clock


def write(path: Path, text: str, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def acting_rsh(tmp_path: Path, rsh: str, when: str, act: str) -> tuple[str, Path]:
    """An --rsh that runs ACT (shell) once, just before the first ssh command that
    contains WHEN, while the file it returns exists: the container acting at a
    known point of the worker's start (e.g. during DEST's scan), every time."""
    armed = tmp_path / "armed"
    script = tmp_path / "rsh"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *{shlex.quote(when)}*) '
        f"if rm {shlex.quote(str(armed))} 2>/dev/null; then {act}; fi;; esac\n"
        f'exec {rsh} "$@"\n'
    )
    script.chmod(0o755)
    return str(script), armed


def split_brain_args(tmp_path: Path, policy: str) -> tuple[str, ...]:
    state = tmp_path / "state"
    return (
        "--delay",
        "0.2",
        "--split-brain",
        policy,
        "--snapshot-file",
        str(state / "snap.json.gz"),
        "--split-brain-report",
        str(state / "report.json"),
        "--host-name",
        "host-a",
        "--peer-name",
        "host-b",
    )


@pytest.mark.real
@pytest.mark.ssh
def test_loser_rename_never_follows_a_parent_swapped_after_the_scan(
    tmp_path: Path, start_worker: Callable[..., WorkerProc]
) -> None:
    """keep-both, DEST's ``d/secret`` newer: SOURCE's version is to become its
    conflict copy. While DEST is scanned (after SOURCE's scan) the container
    replaces ``d`` with a symlink to a host directory holding a ``secret``: that
    host file must not be renamed. The worker stops instead (a later start
    decides again)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    canary = Canary(tmp_path)
    write(src / "d" / "secret", "v1", T0)
    with running_peer() as peer:
        args = split_brain_args(tmp_path, "keep-both")
        worker = start_worker(src, peer.dest(dst), "--rsh", peer.rsh, *args)
        worker.wait_running(30)
        assert_no_loss(src, dst)
        assert worker.stop() == 0, worker.err()
        write(src / "d" / "secret", "A's edit", T0 + 100)
        write(dst / "d" / "secret", "B's edit", T0 + 200)  # newer: DEST's version wins
        swap = f"mv {src / 'd'} {src / 'd.moved'} && ln -s {canary.dir} {src / 'd'}"
        rsh, armed = acting_rsh(tmp_path, peer.rsh, "-mindepth 1", swap)
        armed.touch()
        worker = start_worker(src, peer.dest(dst), "--rsh", rsh, *args)
        wait_until(lambda: worker.proc.poll() is not None or worker.status() == "running", 30, "a decision")
        assert not armed.exists(), "the container's swap did not run"
        canary.untouched()
        assert worker.wait(5) == 4, worker.err()
    assert "cannot keep 'd/secret'" in worker.err()
    assert (src / "d.moved" / "secret").read_text() == "A's edit"
    assert (dst / "d" / "secret").read_text() == "B's edit"


# -- 6. a .tandem-backup the container made a symlink ------------------------------------------------


@pytest.mark.real
@pytest.mark.ssh
@pytest.mark.parametrize("side", ["source", "dest"])
def test_backup_folder_made_a_symlink_halts(
    side: str, tmp_path: Path, start_worker: Callable[..., WorkerProc]
) -> None:
    """Both sides changed ``f``; the losing side (SOURCE for a pull, the peer's DEST
    for a push) holds ``.tandem-backup -> <host dir>``: rsync would move the loser
    into the host directory. The worker halts (exit 3) naming the folder, before
    anything changes on either side."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    canary = Canary(tmp_path)
    write(src / "f", "v1", T0)
    with running_peer() as peer:
        args = split_brain_args(tmp_path, "newest")
        worker = start_worker(src, peer.dest(dst), "--rsh", peer.rsh, *args)
        worker.wait_running(30)
        assert_no_loss(src, dst)
        assert worker.stop() == 0, worker.err()
        newer, older = (dst, src) if side == "source" else (src, dst)
        write(newer / "f", "the winner", T0 + 200)
        write(older / "f", "the loser", T0 + 100)
        (older / ".tandem-backup").symlink_to(canary.dir)
        worker = start_worker(src, peer.dest(dst), "--rsh", peer.rsh, *args)
        wait_until(lambda: worker.proc.poll() is not None or worker.status() == "running", 30, "a decision")
        canary.untouched()
        assert worker.wait(5) == 3, worker.err()
    assert f"{side.upper()}'s backup folder '.tandem-backup' is not a real directory" in worker.err()
    assert (older / "f").read_text() == "the loser"
    assert (newer / "f").read_text() == "the winner"
    report = json.loads((tmp_path / "state" / "report.json").read_text())
    assert "backup folder" in report["halt"]
