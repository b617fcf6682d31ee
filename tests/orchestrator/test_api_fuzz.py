"""Schemathesis over the OpenAPI document of a real ``tandem serve`` that syncs
a real (LXC-hook) container: no request may get a 5xx or a response outside
the documented schema, and the fuzz run changes nothing it should not."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, tree, wait_until
from tests.orchestrator.test_supervisor import ON, args, config, dest, rootfs
from tests.serve import lxc_hook, serve_fixture  # noqa: F401

pytestmark = pytest.mark.real

TOKEN = "fuzz-token"
# 503 is what these two answer by design (not ready; lag over its SLO or not syncing).
# 413 is a refusal too: a body over 1 MiB is not even parsed.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "406", "413", "422", "428", "5xx"]

[[operations]]
include-path = "/workers/{container}/health"
checks.not_a_server_error.expected-statuses = ["2XX", "4XX", "503"]

[[operations]]
include-path = "/readyz"
checks.not_a_server_error.expected-statuses = ["2XX", "4XX", "503"]
"""
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "ignored_auth",
    )
)


def test_schemathesis_finds_no_server_error(tmp_path: Path, serve) -> None:
    # dest_roots: the API can point a worker only below tmp_path, whatever the fuzzer sends
    s = serve(config(tmp_path, f'dest_roots = ["{tmp_path}"]'), *args(), env={"TANDEM_API_TOKEN": TOKEN})
    s.wait_runtime("lxc")
    # "web" is the example name in the OpenAPI document: the fuzzer reaches a real worker.
    root = rootfs(tmp_path, "web")
    lxc_hook(s.state_dir, "web", "start-host", root, ON, "tandem.delay=0.2")
    lxc_hook(s.state_dir, "db", "start-host", rootfs(tmp_path, "db"))
    s.wait_state("web", "running")
    url = s.url()
    report = tmp_path / "report.json"
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    argv = [
        str(ROOT / ".venv" / "bin" / "schemathesis"),
        "--config-file",
        str(tmp_path / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--exclude-path",
        "/events",  # a stream that never ends; tested on its own
        "--max-examples",
        "40",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",  # two workers crash schemathesis inside ast.parse on Python 3.11.7 (not thread-safe)
        "--request-timeout",
        "10",
        "--seed",
        "1",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "HOME": str(tmp_path)}
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = json.loads(report.read_text())
    assert summary["operations"]["tested"] == summary["operations"]["selected"] == 15
    assert summary["test_cases"]["generated"] >= 300 and summary["test_cases"]["with_failures"] == 0
    log = s.log.read_text()
    assert "web: full resync asked through the API" in log  # the fuzzer reached a real worker
    assert "web: policy override set through the API" in log
    s.alive()
    # the supervisor still syncs after thousands of hostile requests
    (root / "after-fuzz").write_text("still syncing")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        client.delete("/containers/web/policy")  # whatever the fuzzer stored
        client.post("/workers/web/resume")
        wait_until(lambda: tree(dest(tmp_path, "web")) == tree(root), 30, "web synced after the fuzz run")
