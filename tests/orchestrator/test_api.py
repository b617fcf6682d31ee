"""The REST API of a real ``tandem serve`` (containers through the LXC hook, real
workers, real rsync, the SQLite store): workers, resync, pause/resume, policy,
events, health, metrics, auth, and bad input that changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.api import worker_health
from orchestrator.state import PairView, WorkerView
from tests.conftest import ROOT, tree, wait_until
from tests.orchestrator.test_supervisor import ON, args, config, dest, rootfs
from tests.serve import Serve, lxc_hook, serve_fixture  # noqa: F401

pytestmark = pytest.mark.real


def api(s: Serve, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=s.url(), headers=headers, timeout=10)


def started(tmp_path: Path, serve, *containers: tuple[str, tuple[str, ...]], extra: str = "") -> Serve:
    s = serve(config(tmp_path, extra), *args())
    s.wait_runtime("lxc")
    for name, labels in containers:
        lxc_hook(s.state_dir, name, "start-host", rootfs(tmp_path, name), *labels)
    return s


def wait_api(client: httpx.Client, path: str, check, timeout: float = 20.0, what: str = "") -> Any:
    def probe() -> Any:
        body = client.get(path).json()
        return body if check(body) else None

    try:
        return wait_until(probe, timeout, what or path)
    except AssertionError:
        raise AssertionError(f"{what or path}: last {client.get(path).json()}") from None


def test_workers_list_one_and_unknown(tmp_path: Path, serve) -> None:
    s = started(tmp_path, serve, ("c1", (ON,)), ("c2", ()))
    with api(s) as client:
        one = wait_api(client, "/workers/c1", lambda w: w["state"] == "running" and w["counters"]["syncs"])
        assert one["runtime"] == "lxc" and one["pid"] > 0 and one["paused"] is False
        assert one["sources"] == [str(tmp_path / "lxc" / "c1" / "rootfs")]
        assert one["destinations"] == [str(dest(tmp_path, "c1"))]
        assert one["last_sync"] > time.time() - 60 and one["lag"] == 0 and one["pending"] == 0
        assert one["counters"]["bytes"] == len("c1")  # etc/hostname, the only file
        assert one["pairs"][0]["label"] == "c1/rootfs" and one["pairs"][0]["watches"] >= 2
        listed = client.get("/workers").json()
        assert [w["container"] for w in listed] == ["c1"]  # c2 is not opted in
        for path, status, words in [
            ("/workers/c2", 404, "no worker"),
            ("/workers/ghost", 404, "no worker"),
            ("/workers/..%2Fetc", 404, "Not Found"),  # no route has a '/' in a name
            ("/workers/%2E%2E", 422, "pattern"),
            ("/workers/-x", 422, "pattern"),
            ("/workers/" + "a" * 200, 422, "pattern"),
        ]:
            response = client.get(path)
            assert response.status_code == status, path
            assert words in json.dumps(response.json()), response.text
        for verb in ("resync", "pause", "resume"):
            assert client.post(f"/workers/ghost/{verb}").status_code == 404
            response = client.post(f"/workers/c2/{verb}")
            assert response.status_code == 409 and "not synced" in response.json()["detail"]
        assert not (s.state_dir / "standby" / "c2").exists()


def test_pause_collects_and_resume_sends(tmp_path: Path, serve) -> None:
    s = started(tmp_path, serve, ("c1", (ON, "tandem.delay=0.2")))
    root = tmp_path / "lxc" / "c1" / "rootfs"
    with api(s) as client:
        wait_api(client, "/workers/c1", lambda w: w["state"] == "running")
        response = client.post("/workers/c1/pause")
        assert response.json() == {"container": "c1", "done": "pause"}
        paused = wait_api(client, "/workers/c1", lambda w: w["state"] == "standby" and w["paused"])
        (root / "while-paused").write_text("held back")
        time.sleep(5)  # beyond heartbeat_timeout (4 s): a paused worker still heartbeats
        assert not (dest(tmp_path, "c1") / "while-paused").exists()
        now = client.get("/workers/c1").json()
        assert now["pending"] >= 1 and now["pid"] == paused["pid"] and now["restarts"] == 0
        client.post("/workers/c1/resume").raise_for_status()
        wait_until(lambda: tree(dest(tmp_path, "c1")) == tree(root), 10, "sent after resume")
        wait_api(client, "/workers/c1", lambda w: w["state"] == "running" and not w["paused"])
        events = [h["event"] for h in client.get("/workers/c1/history").json()]
        assert events[:2] == ["resume", "pause"] and "start" in events


def test_pause_survives_a_supervisor_restart(tmp_path: Path, serve) -> None:
    s = started(tmp_path, serve, ("c1", (ON, "tandem.delay=0.2")))
    with api(s) as client:
        wait_api(client, "/workers/c1", lambda w: w["state"] == "running")
        client.post("/workers/c1/pause").raise_for_status()
        wait_api(client, "/workers/c1", lambda w: w["state"] == "standby")
    assert s.stop() == 0
    again = serve(config(tmp_path), *args(), state_dir=s.state_dir)
    again.wait_runtime("lxc")
    lxc_hook(again.state_dir, "c1", "start-host", tmp_path / "lxc" / "c1" / "rootfs", ON, "tandem.delay=0.2")
    with api(again) as client:
        wait_api(client, "/workers/c1", lambda w: w["state"] == "standby" and w["paused"])


def test_resync_restores_what_was_removed_at_the_destination(tmp_path: Path, serve) -> None:
    s = started(tmp_path, serve, ("c1", (ON,)))
    root = tmp_path / "lxc" / "c1" / "rootfs"
    with api(s) as client:
        wait_api(client, "/workers/c1", lambda w: w["state"] == "running" and w["counters"]["syncs"])
        wait_until(lambda: tree(dest(tmp_path, "c1")) == tree(root), 10, "initial sync")
        (dest(tmp_path, "c1") / "etc" / "hostname").unlink()  # behind tandem's back
        assert client.post("/workers/c1/resync").json()["done"] == "resync"
        wait_until(lambda: (dest(tmp_path, "c1") / "etc" / "hostname").exists(), 10, "resynced")
        wait_api(client, "/workers/c1", lambda w: w["counters"]["resyncs"] == 1)
        assert client.get("/workers/c1/history").json()[0]["event"] == "resync"
        lxc_hook(s.state_dir, "c1", "post-stop")
        wait_api(client, "/workers/c1", lambda w: w["state"] == "stopped")
        response = client.post("/workers/c1/resync")
        assert response.status_code == 409 and "no worker runs" in response.json()["detail"]


def test_policy_put_enables_a_container_and_delete_goes_back(tmp_path: Path, serve) -> None:
    s = started(tmp_path, serve, ("c2", ("tandem.delay=0.5",)), extra=f'dest_roots = ["{tmp_path}"]')
    root = tmp_path / "lxc" / "c2" / "rootfs"
    with api(s) as client:
        wait_until(lambda: client.get("/containers/c2/policy").status_code == 200, 10, "c2 seen")
        before = client.get("/containers/c2/policy").json()
        assert before["override"] == {} and before["effective"]["enable"] is False
        assert before["effective"]["delay"] == 0.5  # from its label
        put = client.put("/containers/c2/policy", json={"enable": True, "max-lag": 30})
        assert put.status_code == 200, put.text
        body = put.json()
        assert body["override"] == {"enable": True, "max-lag": 30.0}
        assert body["effective"]["enable"] is True and body["effective"]["delay"] == 0.5
        assert body["applies"].startswith("now")
        wait_until(lambda: tree(dest(tmp_path, "c2")) == tree(root), 15, "enabled through the API")
        assert client.get("/workers/c2/health").json()["max_lag"] == 30
        # a new destination restarts the worker, after its flush, towards the new place
        other = tmp_path / "elsewhere"
        put = client.put("/containers/c2/policy", json={"enable": True, "dest": f"{other}/{{container}}"})
        assert put.status_code == 200, put.text
        wait_until(lambda: tree(other / "c2") == tree(root), 15, "synced to the new destination")
        gone = client.delete("/containers/c2/policy")
        assert gone.status_code == 200 and gone.json()["override"] == {}
        wait_until(lambda: client.get("/workers/c2").status_code == 404, 20, "worker gone: back to labels")
        history = [h["event"] for h in client.get("/workers/c2/history?limit=100").json()]
        assert history.count("policy") == 3 and "start" in history


BAD_POLICIES: list[tuple[object, str]] = [
    ({"dest": "relative/path"}, "absolute"),
    ({"dest": "/x/../../etc/{container}"}, ".."),
    ({"dest": "/srv/{nope}"}, "{nope}"),
    ({"dest": "-oProxyCommand=x:/srv"}, "not a host name or address"),
    ({"dest": "/etc"}, "outside the allowed dest_roots"),
    ({"enable": 0}, "true or false"),
    ({"delay": True}, "number of seconds"),
    ({"paths": ["/not-a-mount"]}, "not a mount"),
    ({"paths": ["relative"]}, "absolute"),
    ({"exclude": ["("]}, "bad regex"),
    ({"delay": -1}, "greater than or equal"),
    ({"delay": "soon"}, "valid number"),
    ({"max-lag": 0}, "greater than 0"),
    ({"split-brain": "coin-toss"}, "newest"),
    ({"frobnicate": 1}, "body.frobnicate: Extra inputs"),
    ({"exclude": "x" * 100_000}, "tuple"),
    ([1, 2], "valid dictionary"),
]


def test_bad_policy_is_refused_and_changes_nothing(tmp_path: Path, serve) -> None:
    roots = f'dest_roots = ["{tmp_path}"]'
    s = started(tmp_path, serve, ("c1", (ON, "tandem.delay=0.3")), extra=roots)
    with api(s) as client:
        first = wait_api(client, "/workers/c1", lambda w: w["state"] == "running")["pid"]
        client.put("/containers/c1/policy", json={"delay": 0.4}).raise_for_status()  # a new worker
        ready = wait_api(client, "/workers/c1", lambda w: w["state"] == "running" and w["pid"] != first)
        pid = ready["pid"]
        before = client.get("/containers/c1/policy").json()
        for body, words in BAD_POLICIES:
            response = client.put("/containers/c1/policy", json=body)
            assert response.status_code == 422, (body, response.text)
            assert words in response.json()["detail"], (body, response.text)
            assert client.get("/containers/c1/policy").json() == before
        history = [h["event"] for h in client.get("/workers/c1/history?limit=100").json()]
        assert history.count("policy") == 1  # only the good one was stored
        time.sleep(0.5)
        assert client.get("/workers/c1").json()["pid"] == pid  # the worker was not touched


def test_dest_through_the_api_needs_dest_roots(tmp_path: Path, serve) -> None:
    s = started(tmp_path, serve, ("c1", (ON,)))
    with api(s) as client:
        wait_api(client, "/workers/c1", lambda w: w["state"] == "running")
        response = client.put("/containers/c1/policy", json={"dest": f"{tmp_path}/x/{{container}}"})
        assert response.status_code == 422 and "dest_roots" in response.json()["detail"]
        assert client.get("/containers/c1/policy").json()["override"] == {}


def test_policy_for_unknown_containers_is_404(tmp_path: Path, serve) -> None:
    s = started(tmp_path, serve)
    with api(s) as client:
        for method in ("GET", "DELETE"):
            response = client.request(method, "/containers/ghost/policy")
            assert response.status_code == 404 and "ghost" in response.json()["detail"]
        response = client.put("/containers/ghost/policy", json={"enable": True})
        assert response.status_code == 404
        assert client.put("/containers/%2E%2E/policy", json={}).status_code == 422
        assert client.put("/containers/..%2F..%2Fetc/policy", json={}).status_code == 404
    assert not list((s.state_dir).glob("standby/*"))


def test_policy_override_is_stored_across_restarts(tmp_path: Path, serve) -> None:
    s = started(tmp_path, serve, ("c2", ()))
    with api(s) as client:
        wait_until(lambda: client.get("/containers/c2/policy").status_code == 200, 10, "c2 seen")
        client.put("/containers/c2/policy", json={"enable": True, "split-brain": "manual"}).raise_for_status()
        wait_api(client, "/workers/c2", lambda w: w.get("state") == "running")
    assert s.stop() == 0
    again = serve(config(tmp_path), *args(), state_dir=s.state_dir)
    again.wait_runtime("lxc")
    with api(again) as client:
        stored = client.get("/containers/c2/policy").json()
        assert stored["override"] == {"enable": True, "split-brain": "manual"}
        assert stored["applies"] == "at the container's next start"
        lxc_hook(again.state_dir, "c2", "start-host", tmp_path / "lxc" / "c2" / "rootfs")
        wait_api(
            client, "/workers/c2", lambda w: w.get("state") == "running"
        )  # enabled by the stored override


def test_resume_restarts_a_halted_worker(tmp_path: Path, serve) -> None:
    s = started(tmp_path, serve, ("c1", (ON,)))
    root = tmp_path / "lxc" / "c1" / "rootfs"
    with api(s) as client:
        wait_api(client, "/workers/c1", lambda w: w["state"] == "running")
        hidden = root.rename(root.with_name("away"))  # the source vanishes: a safety halt
        halted = wait_api(client, "/workers/c1", lambda w: w["state"] == "halted")
        assert "vanished" in halted["reason"]
        health = client.get("/workers/c1/health")
        assert health.status_code == 503 and "halted" in health.json()["detail"]
        hidden.rename(root)
        client.put("/containers/c1/policy", json={"delay": 0.3}).raise_for_status()
        time.sleep(1)
        assert client.get("/workers/c1").json()["state"] == "halted"  # a policy change does not lift it
        client.post("/workers/c1/resume").raise_for_status()
        wait_api(client, "/workers/c1", lambda w: w["state"] == "running")
        (root / "after").write_text("x")
        wait_until(lambda: (dest(tmp_path, "c1") / "after").exists(), 10, "syncing again")


def test_health_follows_the_lag_slo(tmp_path: Path, serve) -> None:
    s = started(tmp_path, serve, ("c1", (ON, "tandem.delay=60", "tandem.max-lag=1")))
    with api(s) as client:
        wait_api(client, "/workers/c1", lambda w: w["state"] == "running" and w["counters"]["syncs"])
        ok = client.get("/workers/c1/health")
        assert ok.status_code == 200 and ok.json()["healthy"] is True and ok.json()["max_lag"] == 1
        (tmp_path / "lxc" / "c1" / "rootfs" / "slow").write_text("waits in a 60 s window")
        wait_until(lambda: client.get("/workers/c1/health").status_code == 503, 15, "lag over its SLO")
        body = client.get("/workers/c1/health").json()
        assert body["healthy"] is False and body["lag"] > 1 and "SLO" in body["detail"]
        assert client.get("/workers/ghost/health").status_code == 404
        assert client.get("/healthz").json() == {"status": "ok", "detail": ""}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["runtimes"]["lxc"]["connected"] is True


@pytest.mark.parametrize(
    ("lagging", "healthy"), [("", True), ("behind: oldest change 454s old, 14160 paths pending", False)]
)
def test_health_is_503_while_a_running_worker_says_it_is_behind(lagging: str, healthy: bool) -> None:
    # No lag SLO set: a busy worker heartbeats and says "running"; its own verdict counts.
    pair = PairView("data", "/src", "/dst", status="running", pending=14_160, lag=454.0, lagging=lagging)
    view = WorkerView("c1", "lxc", "running", pairs=(pair,))
    health = worker_health(view, now=0.0)
    assert health.healthy is healthy and health.state == "running"
    assert (lagging in health.detail) if lagging else health.detail == ""


def test_readyz_is_503_while_a_runtime_is_missing(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path), "--no-lxd", "--host", "h1", env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    with api(s) as client:
        wait_until(lambda: client.get("/readyz").status_code == 503, 20, "not ready")
        body = client.get("/readyz").json()
        assert body["ready"] is False and body["runtimes"]["docker"]["connected"] is False
        assert client.get("/healthz").status_code == 200


def test_events_stream_state_changes(tmp_path: Path, serve) -> None:
    s = started(tmp_path, serve)
    seen: list[tuple[str, dict[str, Any]]] = []
    with api(s) as client:

        def follow() -> None:
            with api(s) as own, own.stream("GET", "/events", timeout=httpx.Timeout(10, read=30)) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                kind = ""
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        seen.append((kind, json.loads(line.split(":", 1)[1])))
                        if kind == "removed":
                            return

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        time.sleep(0.5)
        root = rootfs(tmp_path, "c1")
        lxc_hook(s.state_dir, "c1", "start-host", root, ON)
        wait_until(lambda: any(w["state"] == "running" for _, w in seen), 20, "running event")
        client.post("/workers/c1/pause").raise_for_status()
        wait_until(lambda: any(w["paused"] for _, w in seen), 10, "paused event")
        lxc_hook(s.state_dir, "c1", "post-stop")
        wait_until(lambda: any(w["state"] == "stopped" for _, w in seen), 20, "stopped event")
        assert all(w["container"] == "c1" for _, w in seen)
        states = [w["state"] for _, w in seen]
        assert states.index("running") < states.index("stopped")
        assert s.stop() == 0  # an open event stream does not hold the supervisor up
    reader.join(10)
    assert not reader.is_alive()  # the supervisor ended the stream


def test_metrics_in_prometheus_format(tmp_path: Path, serve) -> None:
    s = started(tmp_path, serve, ("c1", (ON, "tandem.delay=0.2")))
    with api(s) as client:
        wait_api(client, "/workers/c1", lambda w: w["state"] == "running" and w["counters"]["syncs"])
        (tmp_path / "lxc" / "c1" / "rootfs" / "more").write_text("x")
        wait_api(client, "/workers/c1", lambda w: w["counters"]["syncs"] >= 2)
        response = client.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
    for line in (
        'tandem_worker_syncs_total{container="c1",mount="rootfs"}',
        'tandem_worker_lag_seconds{container="c1",mount="rootfs"} 0.0',
        'tandem_worker_pending_paths{container="c1",mount="rootfs"} 0.0',
        'tandem_worker_state{container="c1",state="running"} 1.0',
        'tandem_worker_state{container="c1",state="halted"} 0.0',
        'tandem_sync_duration_seconds_count{container="c1"}',
        "tandem_inotify_max_user_watches ",
        'tandem_runtime_connected{runtime="lxc"} 1.0',
    ):
        assert line in text, line
    watches = [ln for ln in text.splitlines() if ln.startswith("tandem_worker_inotify_watches{")]
    assert watches and float(watches[0].split()[-1]) >= 2


def test_a_token_is_required_when_set(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path), *args(), env={"TANDEM_API_TOKEN": "s3cret-token"})
    s.wait_runtime("lxc")
    with api(s) as client:
        assert client.get("/healthz").status_code == 200  # probes need no token
        assert client.get("/readyz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
            for path in ("/workers", "/metrics", "/events", "/containers/c1/policy"):
                response = client.get(path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
        assert client.post("/workers/c1/pause").status_code == 401
    with api(s, "s3cret-token") as client:
        assert client.get("/workers").status_code == 200
    assert "s3cret-token" not in s.log.read_text()  # never logged


def test_a_non_loopback_address_without_token_is_refused(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "orchestrator.cli", "serve", "--state-dir", str(tmp_path / "s")]
    argv += ["--no-docker", "--no-lxd", "--api-host", "0.0.0.0", "--dest", f"{tmp_path}/d/{{container}}"]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "not loopback: set api_token" in result.stderr
    assert not (tmp_path / "s").exists()


def test_a_port_in_use_is_a_clear_start_up_error(tmp_path: Path, serve) -> None:
    first = started(tmp_path, serve)
    port = first.url().rsplit(":", 1)[1]
    second = serve(config(tmp_path), *args(), "--api-port", port)
    assert second.proc.wait(30) == 2
    assert f"cannot listen on 127.0.0.1 port {port}" in second.log_tail()
    assert first.proc.poll() is None
