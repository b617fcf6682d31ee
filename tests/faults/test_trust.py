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

import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import WorkerProc
from tests.faults.test_hostile import Canary, assert_no_loss
from tests.sshpeer import running_peer
from workers.transfer.rsync_plan import remote_move_command

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
@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_remote_move_command(tmp_path: Path, shell: str, old: str, new: str, moved: bool) -> None:
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
    result = subprocess.run(
        [shell, "-c", remote_move_command(str(root), old, new)], capture_output=True, timeout=10, check=False
    )
    assert _tree(outside) == before_outside, "something was made or renamed outside ROOT"
    assert (result.returncode == 0) is moved, result.stderr
    if moved:
        assert (root / new).exists() and not os.path.lexists(root / old)
    else:
        assert _tree(root) == before, "a refused rename changed ROOT"


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
