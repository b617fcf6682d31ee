"""A replica is a faithful copy of a container's tree: hard links stay links,
ACLs, xattrs and file capabilities travel, and so does the root's own mtime; a
DEST that cannot hold xattrs gets everything else, with a warning."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import tree, wait_until

pytestmark = pytest.mark.real


def attrs(root: Path) -> dict[str, object]:
    """Per path: inode group (which names share one), xattrs, ACL text, mtime."""
    groups: dict[tuple[int, int], str] = {}
    out: dict[str, object] = {}
    for path in sorted([root, *root.rglob("*")]):
        rel = str(path.relative_to(root))
        st = path.lstat()
        names = {
            n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)
        }
        first = groups.setdefault((st.st_dev, st.st_ino), rel) if st.st_nlink > 1 and path.is_file() else rel
        acl = ""
        if not path.is_symlink():
            acl = subprocess.run(
                ["getfacl", "-cp", str(path)], capture_output=True, text=True, timeout=10, check=True
            ).stdout
        out[rel] = (first, names, acl, st.st_mtime_ns)
    return out


def converged(src: Path, dst: Path, timeout: float = 10.0) -> None:
    wait_until(lambda: tree(src) == tree(dst) and attrs(src) == attrs(dst), timeout, "a faithful replica")


def populate(root: Path, tag: str) -> None:
    (root / f"{tag}-perl").write_bytes(b"#!" + os.urandom(2000))
    os.link(root / f"{tag}-perl", root / f"{tag}-perl5.36")
    (root / "bin").mkdir(exist_ok=True)
    os.link(root / f"{tag}-perl", root / "bin" / f"{tag}-perl")
    (root / f"{tag}-ping").write_bytes(b"\x7fELF" + os.urandom(100))
    subprocess.run(["setcap", "cap_net_raw+ep", str(root / f"{tag}-ping")], check=True, timeout=10)
    (root / f"{tag}-shared").write_text("acl")
    subprocess.run(
        ["setfacl", "-m", "u:1234:rw,g:2345:r", str(root / f"{tag}-shared")], check=True, timeout=10
    )
    (root / f"{tag}-dir").mkdir()
    subprocess.run(["setfacl", "-d", "-m", "u:1234:rwx", str(root / f"{tag}-dir")], check=True, timeout=10)
    os.setxattr(root / f"{tag}-dir", "user.note", tag.encode())
    os.setxattr(root / f"{tag}-shared", "trusted.origin", b"container")


def test_hard_links_acls_xattrs_and_capabilities_travel(dirs, start_worker) -> None:
    src, dst = dirs
    populate(src, "initial")
    worker = start_worker(src, dst, "--delay", "0.1")
    worker.wait_running()
    converged(src, dst)
    populate(src, "live")
    converged(src, dst)
    assert os.stat(dst / "live-perl").st_ino == os.stat(dst / "bin" / "live-perl").st_ino
    getcap = subprocess.run(["getcap", str(dst / "live-ping")], capture_output=True, text=True, timeout=10)
    assert "cap_net_raw" in getcap.stdout
    assert worker.stop() == 0


@pytest.mark.parametrize("rules", [(), ("--exclude", r"\.tmp$")])
def test_the_roots_mtime_follows(dirs, start_worker, rules: tuple[str, ...]) -> None:
    src, dst = dirs
    worker = start_worker(src, dst, "--delay", "0.1", *rules)
    worker.wait_running()
    for step in range(3):
        time.sleep(1.05)  # a new second, so a stale root mtime shows
        (src / f"top{step}").write_text("x")
        if step:
            (src / f"top{step - 1}").unlink()
        wait_until(lambda: src.stat().st_mtime_ns == dst.stat().st_mtime_ns, 10, "the root's mtime")
    assert worker.stop() == 0


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A filesystem without xattrs."""
    mount = tmp_path / "ramfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mount)], check=True, timeout=10)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True, timeout=10)


def test_a_dest_without_xattrs_gets_everything_else_and_a_warning(tmp_path, ramfs, start_worker) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("content")
    os.setxattr(src / "f", "user.x", b"1")
    worker = start_worker(src, ramfs, "--delay", "0.1")
    worker.wait_running()
    (src / "g").write_text("live")
    os.setxattr(src / "g", "user.x", b"2")
    wait_until(lambda: tree(src) == tree(ramfs), 10, "content, modes and times")
    assert worker.stop() == 0
    assert worker.stderr.count(b"cannot hold xattrs") == 1
    assert b"undelivered" not in worker.stderr
