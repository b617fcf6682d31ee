"""The operator commands (`tandem status`, `workers show`, `resync`, `pause`,
`resume`, `policy get|set|reset`, `events`) through the real API of a real
``tandem serve``; their exit codes and messages when something is wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import ROOT, tree, wait_until
from tests.orchestrator.test_supervisor import ON, args, config, dest, rootfs
from tests.serve import Serve, lxc_hook, serve_fixture  # noqa: F401

pytestmark = pytest.mark.real


def tandem(*argv: str, url: str | None = None, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env["COLUMNS"] = "200"
    if url is not None:
        env["TANDEM_API_URL"] = url
    if token is not None:
        env["TANDEM_API_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(*argv: str, url: str, token: str | None = None) -> str:
    result = tandem(*argv, url=url, token=token)
    assert result.returncode == 0, (argv, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture
def running(tmp_path: Path, serve) -> tuple[Serve, str]:
    s = serve(config(tmp_path, f'dest_roots = ["{tmp_path}"]'), *args())
    s.wait_runtime("lxc")
    lxc_hook(s.state_dir, "c1", "start-host", rootfs(tmp_path, "c1"), ON, "tandem.delay=0.2")
    lxc_hook(s.state_dir, "c2", "start-host", rootfs(tmp_path, "c2"))
    s.wait_state("c1", "running")
    wait_until(lambda: s.worker("c1")["pairs"][0]["syncs"], 10, "first sync")
    return s, s.url()


def test_status_is_a_table_of_workers(running: tuple[Serve, str]) -> None:
    _, url = running
    out = ok("status", url=url)
    header, row = out.splitlines()[:2]
    for column in ("CONTAINER", "RUNTIME", "STATE", "LAG", "PENDING", "LAST SYNC", "SYNCS", "FAILURES"):
        assert column in header
    assert row.split()[:3] == ["c1", "lxc", "running"]
    assert "ago" in row
    listed = json.loads(ok("status", "--json", url=url))
    assert [w["container"] for w in listed] == ["c1"]


def test_workers_show_pause_resume_resync(running: tuple[Serve, str], tmp_path: Path) -> None:
    s, url = running
    out = ok("workers", "show", "c1", url=url)
    assert "c1 (lxc): running" in out and "c1/rootfs" in out and str(dest(tmp_path, "c1")) in out
    assert "history" in out and "start" in out
    assert ok("pause", "c1", url=url).strip() == "c1: paused"
    s.wait_state("c1", "standby")
    (tmp_path / "lxc" / "c1" / "rootfs" / "held").write_text("x")
    assert "(paused)" in ok("status", url=url) or "standby" in ok("status", url=url)
    assert ok("resume", "c1", url=url).strip() == "c1: resumed"
    wait_until(lambda: (dest(tmp_path, "c1") / "held").exists(), 10, "sent after resume")
    assert ok("resync", "c1", url=url).strip() == "c1: full resync started"
    shown = json.loads(ok("workers", "show", "c1", "--json", url=url))
    assert [h["event"] for h in shown["history"]][:3] == ["resync", "resume", "pause"]


def test_policy_get_set_reset(running: tuple[Serve, str], tmp_path: Path) -> None:
    s, url = running
    out = ok("policy", "get", "c2", url=url)
    assert "c2" in out and "enable" in out and "applies: now" in out
    out = ok("policy", "set", "c2", "enable=true", "delay=0.3", "exclude=\\.tmp$,^cache/", url=url)
    assert '"override"' not in out and "0.3" in out
    got = json.loads(ok("policy", "get", "c2", "--json", url=url))
    assert got["override"] == {"enable": True, "delay": 0.3, "exclude": [r"\.tmp$", "^cache/"]}
    s.wait_state("c2", "running")
    root = tmp_path / "lxc" / "c2" / "rootfs"
    wait_until(lambda: tree(dest(tmp_path, "c2")) == tree(root), 10, "c2 synced")
    ok("policy", "set", "c2", "delay=", url=url)  # KEY= drops a key, the others stay
    got = json.loads(ok("policy", "get", "c2", "--json", url=url))
    assert got["override"] == {"enable": True, "exclude": [r"\.tmp$", "^cache/"]}
    ok("policy", "reset", "c2", url=url)
    assert json.loads(ok("policy", "get", "c2", "--json", url=url))["override"] == {}
    s.wait_gone("c2")


REFUSED: list[tuple[tuple[str, ...], str]] = [
    (("workers", "show", "ghost"), "404: no worker for container 'ghost'"),
    (("resync", "ghost"), "404: no container 'ghost'"),
    (("pause", "c2"), "409: container 'c2' is not synced"),
    (("policy", "set", "c1", "delay=soon"), "tandem.delay"),
    (("policy", "set", "c1", "colour=blue"), "not KEY=VALUE"),
    (("policy", "set", "c1", "exclude=("), "bad regex"),
    (("policy", "set", "c1", "dest=/etc"), "outside the allowed dest_roots"),
    (("policy", "get", "-x"), "No such option"),
    (("policy", "get", "../workers"), "is not a container name"),
    (("resync", "a/b"), "is not a container name"),
]


def test_refused_requests_exit_2_and_change_nothing(running: tuple[Serve, str]) -> None:
    s, url = running
    before = json.loads(ok("policy", "get", "c1", "--json", url=url))
    for argv, words in REFUSED:
        result = tandem(*argv, url=url)
        assert result.returncode == 2, (argv, result.stdout, result.stderr)
        assert words in result.stderr, (argv, result.stderr)
    assert json.loads(ok("policy", "get", "c1", "--json", url=url)) == before
    assert s.worker("c1")["state"] == "running"


def test_no_supervisor_is_a_clear_error(tmp_path: Path) -> None:
    for argv in (("status",), ("pause", "c1"), ("events",), ("policy", "get", "c1")):
        result = tandem(*argv, url="http://127.0.0.1:9")
        assert result.returncode == 1
        assert "cannot reach the tandem API at http://127.0.0.1:9" in result.stderr
        assert "is `tandem serve` running?" in result.stderr
        assert "Traceback" not in result.stderr


def test_token_from_the_environment(tmp_path: Path, serve) -> None:
    s = serve(config(tmp_path), *args(), env={"TANDEM_API_TOKEN": "tok-123"})
    s.wait_runtime("lxc")
    url = s.url()
    result = tandem("status", url=url)
    assert result.returncode == 2 and "401: missing or wrong bearer token" in result.stderr
    assert "no workers" in ok("status", url=url, token="tok-123")
    assert "no workers" in ok("status", "--url", url, "--token", "tok-123", url="http://127.0.0.1:9")


def test_events_follows_state_changes(running: tuple[Serve, str], tmp_path: Path) -> None:
    s, url = running
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    follower = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "events", "--url", url],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal sends it, also when this suite runs from a background
        # shell (which starts its children with SIGINT ignored: Python keeps it so).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def seen(*words: str) -> bool:
        return any(all(w in line for w in words) for line in lines)

    def pause_seen() -> bool:
        """The stream has no snapshot on connect: a pause made before the follower
        subscribed is never shown, so pause (again) until one is."""
        if tandem("pause", "c1", url=url).returncode != 0:
            return False
        try:
            wait_until(lambda: seen("c1 ", " paused"), 2, "the pause")
        except AssertionError:
            ok("resume", "c1", url=url)
            return False
        return True

    try:
        wait_until(pause_seen, 30, "a pause in the events")
        ok("resume", "c1", url=url)
        lxc_hook(s.state_dir, "c1", "post-stop")
        wait_until(lambda: seen("c1 stopped"), 20, "c1 stopped in the events")
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            follower.wait(10)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait(10)
            reader.join(10)  # the pipe's end: it stops by itself
            assert follower.stdout is not None and follower.stderr is not None
            follower.stdout.close()
            follower.stderr.close()
    assert follower.returncode in (0, 130)


def test_container_strings_are_printed_as_text(tmp_path: Path, serve) -> None:
    """Issue 15 item 12: a label key that looks like rich markup crashed `tandem
    status`; a terminal escape in a label reached the terminal raw."""
    s = serve(config(tmp_path), *args())
    s.wait_runtime("lxc")
    hostile = ("tandem.[/]=1", "tandem.\x1b]0;owned\x07\x1b[2J=1")
    lxc_hook(s.state_dir, "evil", "start-host", rootfs(tmp_path, "evil"), ON, *hostile)
    s.wait_state("evil", "failed")
    url = s.url()
    for argv in (("status",), ("workers", "show", "evil"), ("policy", "get", "evil")):
        out = ok(*argv, url=url)
        assert "\x1b" not in out and "\x07" not in out, argv
    assert "tandem.[/]" in ok("status", url=url)
    assert "\\x1b" in ok("workers", "show", "evil", url=url)
