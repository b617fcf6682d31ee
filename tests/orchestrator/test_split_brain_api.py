"""The manual split-brain flow through a real ``tandem serve``: a container
(LXC hook) syncs to a real ssh peer in a network namespace; both sides change
while it is stopped; with ``tandem.split-brain=manual`` its worker halts; the
API shows the diff, a dry run changes nothing, a resolve applies a policy."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import tree, wait_until
from tests.orchestrator.test_commands import ok, tandem
from tests.orchestrator.test_supervisor import ON, args, peer_config, rootfs
from tests.serve import lxc_hook, serve_fixture  # noqa: F401
from tests.sshpeer import running_peer

pytestmark = [pytest.mark.real, pytest.mark.ssh]


def visible(root: Path) -> dict[str, object]:
    return {k: v for k, v in tree(root).items() if not k.startswith(".tandem-backup")}


def edit(path: Path, text: str, mtime: float) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_manual_split_brain_diff_dry_run_then_resolve(tmp_path: Path, serve) -> None:
    with running_peer() as peer:
        remote = tmp_path / "peer"
        s = serve(peer_config(peer, remote, "heartbeat_timeout = 4\n"), *args())
        s.wait_runtime("lxc")
        url = s.url()
        root = rootfs(tmp_path, "c1")
        target = remote / "h1" / "c1" / "rootfs"
        labels = (ON, "tandem.split-brain=manual")
        lxc_hook(s.state_dir, "c1", "start-host", root, *labels)
        s.wait_state("c1", "running")  # an empty peer is no split-brain
        wait_until(lambda: visible(target) == tree(root), 15, "first sync to the peer")
        lxc_hook(s.state_dir, "c1", "post-stop")
        s.wait_state("c1", "stopped")
        # while stopped, both hosts change: the same file, and one file on the peer only
        now = time.time()
        edit(root / "etc" / "hostname", "A's edit", now - 50)
        edit(target / "etc" / "hostname", "B's edit", now - 10)
        edit(target / "b-new", "made on B", now - 10)
        before = (tree(root), visible(target))
        lxc_hook(s.state_dir, "c1", "start-host", root, *labels)
        halted = s.wait_state("c1", "halted")
        assert "split-brain: 2 paths differ (1 conflicts)" in halted["reason"]
        with httpx.Client(base_url=url, timeout=10) as client:
            health = client.get("/workers/c1/health")
            assert health.status_code == 503 and "split-brain" in health.json()["detail"]
            diff = client.get("/containers/c1/split-brain").json()
            (mount,) = diff["mounts"]
            assert {p["path"]: p["class"] for p in mount["paths"]} == {
                "etc/hostname": "conflict",
                "b-new": "changed-there",
            }
            assert mount["here"] == "h1" and mount["ancestor"] is True
            assert mount["latest"]["there"] > mount["latest"]["here"]  # B changed last
            assert mount["policies"]["newest"]["winner"] == "there"
            dry = client.post("/containers/c1/resolve", json={"policy": "keep-both", "dry_run": True})
            assert dry.status_code == 200, dry.text
            (preview,) = dry.json()["mounts"]
            assert preview["conflicts"][0]["path"] == "etc/hostname"
            assert preview["conflicts"][0]["copy"].startswith("etc/hostname.tandem-conflict-h1-")
            out = ok("resolve", "c1", "--policy", "keep-both", "--dry-run", url=url)
            assert "both    etc/hostname (there wins" in out and "<- DEST  b-new" in out
            assert (tree(root), visible(target)) == before  # dry runs change nothing
            bad = client.post("/containers/c1/resolve", json={"policy": "coin-toss"})
            assert bad.status_code == 422
            applied = client.post("/containers/c1/resolve", json={"policy": "keep-both"})
            assert applied.status_code == 200, applied.text
            s.wait_state("c1", "running")
            wait_until(lambda: visible(target) == visible(root), 15, "both sides equal")
            assert (root / "etc" / "hostname").read_text() == "B's edit"  # the newer version
            copies = list((root / "etc").glob("hostname.tandem-conflict-h1-*"))
            assert len(copies) == 1 and copies[0].read_text() == "A's edit"
            assert (root / "b-new").read_text() == "made on B"
            assert client.get("/containers/c1/split-brain").status_code == 404  # resolved
            again = client.post("/containers/c1/resolve", json={"policy": "newest"})
            assert again.status_code == 409 and "not halted" in again.json()["detail"]
            events = [h["event"] for h in client.get("/workers/c1/history").json()]
            assert "resolve" in events
        assert tandem("split-brain", "c1", url=url).returncode == 2  # nothing to show now
        lxc_hook(s.state_dir, "c1", "post-stop")
        s.wait_state("c1", "stopped")
        assert s.stop() == 0
