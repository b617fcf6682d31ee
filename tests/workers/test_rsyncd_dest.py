"""An rsync:// DEST: a real rsync daemon on a loopback port."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import tree, wait_until

pytestmark = pytest.mark.real


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def rsyncd(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An rsync daemon serving module 'm' (a tmp dir) on 127.0.0.1; killed by PID."""
    root = tmp_path / "module"
    root.mkdir()
    port = free_port()
    config = tmp_path / "rsyncd.conf"
    config.write_text(
        f"use chroot = no\nuid = root\ngid = root\npid file = {tmp_path}/rsyncd.pid\n"
        f"[m]\n    path = {root}\n    read only = no\n"
    )
    daemon = subprocess.Popen(
        ["rsync", "--daemon", "--no-detach", f"--config={config}", "--address=127.0.0.1", f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < end, "rsync daemon did not listen"
                time.sleep(0.05)
        yield f"rsync://127.0.0.1:{port}/m/data", root / "data"
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_rsync_daemon_dest(dirs, start_worker, rsyncd) -> None:
    src, _ = dirs
    url, dst = rsyncd
    dst.mkdir()
    (dst / "stray").write_text("DEST-only: deleted by the initial sync")
    (dst / "keep.tmp").write_text("DEST-only, excluded: kept")
    (src / "a").write_text("a")
    (src / "d").mkdir()
    (src / "d" / "f").write_text("f")
    worker = start_worker(src, url, "--delay", "0.1", "--exclude", r"\.tmp$")
    worker.wait_running()

    def equal() -> bool:
        return {k: v for k, v in tree(dst).items() if k != "keep.tmp"} == tree(src)

    wait_until(equal, 10, "initial sync to the daemon")
    assert (dst / "keep.tmp").exists()
    (src / "d").rename(src / "e")  # a daemon cannot rename: sent again
    (src / "a").write_text("same")
    (src / "a").write_text("SAME")  # same size
    (src / "new").write_text("n")
    wait_until(equal, 10, "live changes at the daemon")
    assert worker.stop() == 0
