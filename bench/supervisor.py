#!/usr/bin/env python3
"""Benchmark the supervisor on a real (private) dockerd.

Run:  /work/main/.venv/bin/python bench/supervisor.py [--quick] [--n 20] [--many 100] [--json FILE]

1. start -> first byte: a labelled container writes a file into its volume as
   its first act; time from the create+start request until that file is at the
   destination; N times; p50 / p95 / max. Beside tandem, the clsync model by
   hand (a Docker events listener that starts one ``clsync`` per container, as
   clsync's own container hooks do), the same with ``lsyncd``, and one plain
   ``rsync -a`` run started when the start event arrives (the floor: no watcher).
2. many at once: MANY labelled containers started together; time until every
   one's first file is at the destination; then the memory of every worker
   process (RSS and PSS, from /proc) and of the supervisor, and the inotify
   instances they hold.

The dockerd is private (own data root and socket, no bridge, no iptables) and
is stopped at the end with every container; every process started is reaped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from tests.dockerd import DockerDaemon  # noqa: E402  (the same private dockerd the tests use)

PYTHON = str(ROOT / ".venv" / "bin" / "python")
WRITE_FIRST = ("sh", "-c", "echo first > /data/first; exec sleep 3600")


def wait_for(path: Path, timeout: float) -> float | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return time.monotonic()
        time.sleep(0.005)
    return None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@contextlib.contextmanager
def process(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], grace: float = 40.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# -- the tools -------------------------------------------------------------------


class Tandem:
    name = "tandem"

    def __init__(self, daemon: DockerDaemon, scratch: Path) -> None:
        self.daemon, self.scratch = daemon, scratch
        self.dest = scratch / "dest-tandem"
        self.state = scratch / "state"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Tandem:
        config = self.scratch / "tandem.toml"
        config.write_text(f'[defaults]\ndest = "{self.dest}/{{container}}/{{mount}}"\ndelay = 1.0\n')
        argv = [PYTHON, "-m", "orchestrator.cli", "serve", "--config", str(config)]
        argv += ["--state-dir", str(self.state), "--no-lxd", "--log-level", "warning"]
        env = {**os.environ, "DOCKER_HOST": self.daemon.host}
        with open(self.scratch / "tandem.log", "ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=out, env=env, cwd=ROOT, start_new_session=True
            )
        state = self.state / "state.json"
        end = time.monotonic() + 30
        while time.monotonic() < end:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(state.read_text())["runtimes"]["docker"]["connected"]:
                    return self
            time.sleep(0.05)
        raise RuntimeError("tandem serve did not connect to dockerd")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        stop(self.proc, grace=120)

    def first(self, container: str) -> Path:
        return self.dest / container / "data" / "first"

    def workers(self) -> list[int]:
        data = json.loads((self.state / "state.json").read_text())
        return [w["pid"] for w in data["workers"] if w.get("pid")]


class ByHand:
    """The clsync model by hand: Docker events -> one sync process per container."""

    def __init__(
        self, name: str, daemon: DockerDaemon, scratch: Path, command: Callable[[str, Path], list[str]]
    ):
        self.name, self.daemon, self.scratch, self.command = name, daemon, scratch, command
        self.dest = scratch / f"dest-{name}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.ready = threading.Event()

    def __enter__(self) -> ByHand:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        self.stream.close()
        self.thread.join(5)
        for proc in self.procs:
            stop(proc)

    def _follow(self) -> None:
        client = self.daemon.client
        self.stream = client.api.events(decode=True, filters={"type": "container", "event": "start"})
        self.ready.set()
        with contextlib.suppress(Exception):
            for event in self.stream:
                if self.stop_flag.is_set():
                    return
                info = client.api.inspect_container(event["id"])
                name = info["Name"].lstrip("/")
                source = next(m["Source"] for m in info["Mounts"] if m["Destination"] == "/data")
                dest = self.dest / name / "data"
                dest.mkdir(parents=True, exist_ok=True)
                log = self.scratch / f"{self.name}.log"
                with open(log, "ab") as out:
                    argv = self.command(source, dest)
                    self.procs.append(subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True))

    def first(self, container: str) -> Path:
        return self.dest / container / "data" / "first"


def clsync(source: str, dest: Path) -> list[str]:
    return [
        "clsync",
        "-M",
        "rsyncdirect",
        "-W",
        source,
        "-D",
        str(dest),
        "-t",
        "1",
        "-w",
        "1",
        "-H",
        "/NULL/",
    ]


def lsyncd_for(scratch: Path) -> Callable[[str, Path], list[str]]:
    def command(source: str, dest: Path) -> list[str]:
        config = scratch / f"lsyncd-{dest.parent.name}.lua"
        config.write_text(
            "settings { nodaemon = true }\n"
            f'sync {{ default.rsync, source = "{source}", target = "{dest}", delay = 1 }}\n'
        )
        return ["lsyncd", str(config)]

    return command


def rsync_once(source: str, dest: Path) -> list[str]:
    return ["rsync", "-a", f"{source}/", f"{dest}/"]


# -- scenarios ---------------------------------------------------------------------


def start_to_first_byte(tool: Any, daemon: DockerDaemon, n: int, prefix: str) -> dict[str, Any]:
    times = []
    for i in range(n):
        name = f"{prefix}{i}"
        begin = time.monotonic()
        daemon.client.containers.run(
            "tiny:latest",
            list(WRITE_FIRST),
            name=name,
            detach=True,
            init=True,
            volumes=[f"{name}-v:/data"],
            labels={"tandem.enable": "true"},
        )
        arrived = wait_for(tool.first(name), 30)
        times.append((arrived - begin) if arrived else float("nan"))
        time.sleep(0.3)
    done = [t for t in times if t == t]
    return {
        "n": n,
        "missing": n - len(done),
        "p50": round(statistics.median(done), 3) if done else None,
        "p95": round(percentile(done, 0.95), 3) if done else None,
        "max": round(max(done), 3) if done else None,
    }


def many_at_once(tool: Tandem, daemon: DockerDaemon, many: int) -> dict[str, Any]:
    names = [f"m{i:03d}" for i in range(many)]
    client = docker.DockerClient(base_url=daemon.host, timeout=600)  # 100 starts at once take a while
    begin = time.monotonic()
    threads = [
        threading.Thread(
            target=client.containers.run,
            args=("tiny:latest", list(WRITE_FIRST)),
            kwargs=dict(
                name=n, detach=True, init=True, volumes=[f"{n}-v:/data"], labels={"tandem.enable": "true"}
            ),
        )
        for n in names
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    started = time.monotonic() - begin
    pending = set(names)
    end = time.monotonic() + 180
    while pending and time.monotonic() < end:
        pending = {n for n in pending if not tool.first(n).exists()}
        time.sleep(0.05)
    all_there = time.monotonic() - begin
    time.sleep(2)
    pids = tool.workers()
    rss = [memory(pid, "VmRSS") for pid in pids]
    pss = [smaps_pss(pid) for pid in pids]
    assert tool.proc is not None
    return {
        "containers": many,
        "docker_start_all_s": round(started, 2),
        "all_first_bytes_s": round(all_there, 2),
        "missing": len(pending),
        "workers": len(pids),
        "worker_rss_mib_median": round(statistics.median(rss) / 1024, 1) if rss else None,
        "worker_pss_mib_median": round(statistics.median(pss) / 1024, 1) if pss else None,
        "workers_pss_mib_total": round(sum(pss) / 1024, 1),
        "supervisor_rss_mib": round(memory(tool.proc.pid, "VmRSS") / 1024, 1),
        "inotify_instances": sum(inotify_instances(pid) for pid in pids),
    }


def memory(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def smaps_pss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def inotify_instances(pid: int) -> int:
    count = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                    count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N=5, 20 containers at once")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--many", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    n, many = (5, 20) if args.quick else (args.n, args.many)
    # One inotify instance per synced mount: lift the per-user limit above MANY plus the peers.
    with contextlib.suppress(OSError):
        current = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
        if current < many + 200:
            Path("/proc/sys/fs/inotify/max_user_instances").write_text(str(many + 200))
    scratch = Path(tempfile.mkdtemp(prefix="tandem-bench-sup-"))
    daemon = DockerDaemon()
    results: dict[str, Any] = {"n": n, "many": many}
    try:
        daemon.start()
        latency: dict[str, Any] = {}
        with Tandem(daemon, scratch) as tandem:
            latency["tandem"] = start_to_first_byte(tandem, daemon, n, "t")
        daemon.reset()
        peers = [("rsync", rsync_once)]
        for tool, command in (("clsync", clsync), ("lsyncd", lsyncd_for(scratch))):
            if shutil.which(tool):
                peers.insert(0, (tool, command))
            else:
                results.setdefault("notes", []).append(f"{tool} not installed: skipped")
        for tool, command in peers:
            with ByHand(tool, daemon, scratch, command) as runner:
                latency[tool] = start_to_first_byte(runner, daemon, n, tool[0])
            daemon.reset()
        results["start_to_first_byte"] = latency
        with Tandem(daemon, scratch) as tandem:
            results["many_at_once"] = many_at_once(tandem, daemon, many)
    finally:
        daemon.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def report(results: dict[str, Any]) -> None:
    latency = results["start_to_first_byte"]
    base = latency["tandem"]
    print(f"container start -> first byte at DEST (N={results['n']}, 1 s collect delay for all)")
    print(f"{'tool':<8} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'missing':>8}   tandem/other p50  p95")
    for tool, row in latency.items():
        ratio = ""
        if tool != "tandem" and row["p50"] and base["p50"]:
            ratio = f"{base['p50'] / row['p50']:>17.2f}x {base['p95'] / row['p95']:.2f}x"
        print(f"{tool:<8} {row['p50']!s:>7} {row['p95']!s:>7} {row['max']!s:>7} {row['missing']:>8}  {ratio}")
    many = results["many_at_once"]
    print(f"\n{many['containers']} containers started at once (tandem)")
    for key, value in many.items():
        print(f"  {key:<24} {value}")
    for note in results.get("notes", []):
        print(f"note: {note}")


if __name__ == "__main__":
    sys.exit(main())
