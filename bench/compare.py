#!/usr/bin/env python3
"""Benchmark tandem against clsync, lsyncd and plain rsync on the same trees.

Run:  /work/main/.venv/bin/python bench/compare.py [--quick] [--tools ...] [--json FILE]

Scenarios (fresh SOURCE/DEST dirs under a scratch dir, removed at the end):

1. initial sync of many small files: one-shot mode (tandem --only-initial-sync,
   clsync --only-initialsync, rsync -a) wall time, and live mode time from
   start until DEST holds every file with the right size (lsyncd: live only);
2. one-change latency: a live, idle tool; write one file; time until it is at
   DEST with the right content; N times; p50/p95/max. Same 1 s collect delay
   for everyone, plus tandem --delay 0.05 as an extra row;
3. burst: many files created quickly in a new tree while the tool runs; time
   until all are at DEST; missing / wrong-content counts after the wait;
4. rename of a synced directory: time until the new path is complete and the
   old path gone; whether the files were re-copied (inode + ctime at DEST
   before/after; same pair => renamed in place).

Every tool runs as a subprocess in its own session; it is stopped with SIGTERM
to its process group, then SIGKILL, and always reaped. Nothing is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIZES: dict[str, dict[str, int]] = {
    # dirs x files per dir
    "full": dict(
        init_dirs=200,
        init_files=100,
        lat_n=10,
        burst_dirs=100,
        burst_files=100,
        rename_dirs=10,
        rename_files=100,
    ),
    "quick": dict(
        init_dirs=20, init_files=100, lat_n=3, burst_dirs=10, burst_files=100, rename_dirs=2, rename_files=100
    ),
}
TOOLS = ("tandem", "clsync", "lsyncd", "rsync")
LIVE_TOOLS = ("tandem", "clsync", "lsyncd")

TIMEOUT_INITIAL = 180.0  # one-shot run / live initial sync
TIMEOUT_LATENCY = 15.0  # one change
TIMEOUT_BURST = 90.0
TIMEOUT_RENAME = 30.0
RENAME_GRACE = 8.0  # after the new path is complete, wait this long for the old one to go
TIMEOUT_READY = 120.0  # live tool: seed tree at DEST
SETTLE = 2.0  # idle time after a live tool's initial sync
STOP_TIMEOUT = 10.0  # SIGTERM -> SIGKILL

Manifest = dict[str, dict[str, tuple[int, int]]]  # dir rel -> name -> (size, crc32)


# -- trees ---------------------------------------------------------------------


def make_tree(
    root: Path, prefix: str, ndirs: int, nfiles: int, rng: random.Random, lo: int = 1024, hi: int = 4096
) -> Manifest:
    """ndirs x nfiles files of lo..hi bytes under root/prefix; returns the manifest."""
    man: Manifest = {}
    base = root / prefix if prefix else root
    base.mkdir(parents=True, exist_ok=True)
    for d in range(ndirs):
        drel = f"{prefix}/d{d:03d}" if prefix else f"d{d:03d}"
        dpath = root / drel
        dpath.mkdir()
        files: dict[str, tuple[int, int]] = {}
        for f in range(nfiles):
            data = rng.randbytes(rng.randint(lo, hi))
            name = f"f{f:03d}.dat"
            with open(dpath / name, "wb") as fh:
                fh.write(data)
            files[name] = (len(data), zlib.crc32(data))
        man[drel] = files
    return man


def count(man: Manifest) -> int:
    return sum(len(v) for v in man.values())


def pending(dst: Path, man: Manifest) -> int:
    """Files of the manifest not (yet) at DEST with the right size. Cheap: names first."""
    missing = 0
    for drel, files in man.items():
        try:
            names = set(os.listdir(dst / drel))
        except (FileNotFoundError, NotADirectoryError):
            missing += len(files)
            continue
        missing += sum(1 for n in files if n not in names)
    if missing:
        return missing
    bad = 0
    for drel, files in man.items():
        for n, (size, _) in files.items():
            try:
                if os.stat(dst / drel / n).st_size != size:
                    bad += 1
            except OSError:
                bad += 1
    return bad


def complete(dst: Path, man: Manifest) -> Callable[[], bool]:
    return lambda: pending(dst, man) == 0


def verify(dst: Path, man: Manifest) -> tuple[int, int]:
    """(missing, wrong content) of the manifest at DEST, reading every file."""
    missing = wrong = 0
    for drel, files in man.items():
        for n, (size, crc) in files.items():
            try:
                data = (dst / drel / n).read_bytes()
            except OSError:
                missing += 1
                continue
            if len(data) != size or zlib.crc32(data) != crc:
                wrong += 1
    return missing, wrong


def rm(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def flush_disk() -> None:
    os.sync()


# -- processes -----------------------------------------------------------------


class Proc:
    """A tool in its own session/process group; reaped only in stop()."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(log, "wb") as fh:
            self.p = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.rc: int | None = None
        self.cpu: float | None = None
        LIVE.append(self)

    def exited(self) -> int | None:
        """Exit code if the leader has exited (left a zombie, not reaped), else None."""
        if self.rc is not None:
            return self.rc
        try:
            info = os.waitid(os.P_PID, self.p.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            return -1
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def _group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.p.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        if self.rc is not None:
            return self.rc
        if self.exited() is None:
            self._group(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.exited() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        # leader exited (a zombie keeps the group id reserved) or timed out:
        # kill whatever is left of the group, then reap
        self._group(signal.SIGKILL)
        try:
            self.rc = self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.rc = -999
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = (ru1.ru_utime + ru1.ru_stime) - (self.ru0.ru_utime + self.ru0.ru_stime)
        if self in LIVE:
            LIVE.remove(self)
        return self.rc

    def tail(self, n: int = 8) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])


LIVE: list[Proc] = []


def run_timed(argv: list[str], log: Path, timeout: float) -> tuple[float | str, float]:
    """Run to completion in its own session; (wall seconds or error word, cpu seconds)."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(log, "wb") as fh:
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = p.wait(timeout=timeout)
            dt: float | str = time.monotonic() - t0
            if rc != 0:
                dt = f"rc={rc}"
        except subprocess.TimeoutExpired:
            dt = "timeout"
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)  # leftovers of the group, if any
            p.wait(timeout=10)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return dt, (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)


# -- tools ---------------------------------------------------------------------


def tandem_bin() -> str | None:
    cand = Path(sys.executable).parent / "tandem"
    return str(cand) if cand.exists() else shutil.which("tandem")


def available(tool: str) -> str | None:
    """Path of the program, or None."""
    return tandem_bin() if tool == "tandem" else shutil.which(tool)


def version(tool: str) -> str:
    argv = {
        "tandem": [str(available("tandem")), "--version"],
        "clsync": ["clsync", "-V"],
        "lsyncd": ["lsyncd", "-version"],
        "rsync": ["rsync", "--version"],
    }[tool]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    for line in text:
        if "version" in line.lower() or "clsync v" in line or tool in line.lower():
            return line.strip()[:60]
    return text[0][:60] if text else "?"


class Env:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.logs = scratch / "logs"
        self.logs.mkdir()
        self.n = 0

    def fresh(self, name: str) -> tuple[Path, Path]:
        self.n += 1
        base = self.scratch / f"{self.n:02d}-{name}"
        (base / "src").mkdir(parents=True)
        (base / "dst").mkdir()
        return base / "src", base / "dst"

    def log(self, name: str) -> Path:
        self.n += 1
        return self.logs / f"{self.n:02d}-{name}.log"


def tandem_argv(src: Path, dst: Path, *extra: str) -> list[str]:
    return [
        str(available("tandem")),
        "sync",
        str(src),
        str(dst),
        "--label",
        "bench",
        "--log-level",
        "info",
        *extra,
    ]


def clsync_argv(src: Path, dst: Path, *extra: str) -> list[str]:
    # whole seconds only: -t collect delay, -w minimum between syncs
    return [
        "clsync",
        "-M",
        "rsyncdirect",
        "-W",
        str(src),
        "-D",
        str(dst),
        "-t",
        "1",
        "-w",
        "1",
        "-H",
        "/NULL/",
        "-l",
        "bench",
        *extra,
    ]


def live_argv(tool: str, src: Path, dst: Path, env: Env, delay: float = 1.0) -> list[str]:
    if tool == "tandem":
        return tandem_argv(src, dst, "--delay", str(delay), "--stop-timeout", "5")
    if tool == "clsync":
        return clsync_argv(src, dst)
    if tool == "lsyncd":
        conf = env.log("lsyncd-conf").with_suffix(".lua")
        conf.write_text(
            "settings { nodaemon = true, insist = true }\n"
            f'sync {{ default.rsync, source = "{src}", target = "{dst}", delay = 1 }}\n'
        )
        return ["lsyncd", "-nodaemon", str(conf)]
    raise ValueError(tool)


def oneshot_argv(tool: str, src: Path, dst: Path) -> list[str] | None:
    if tool == "tandem":
        return tandem_argv(src, dst, "--only-initial-sync")
    if tool == "clsync":
        return clsync_argv(src, dst, "--only-initialsync")
    if tool == "rsync":
        return ["rsync", "-a", f"{src}/", f"{dst}/"]
    return None  # lsyncd: no one-shot mode


def wait_until(
    cond: Callable[[], bool], timeout: float, proc: Proc | None, step: float
) -> tuple[float | None, str]:
    """Poll cond() until true; (seconds, '') or (None, reason)."""
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0, ""
        if proc is not None and proc.exited() is not None:
            if cond():
                return time.monotonic() - t0, ""
            return None, f"exited rc={proc.exited()}"
        if time.monotonic() - t0 > timeout:
            return None, "timeout"
        time.sleep(step)


def start_ready(
    tool: str, src: Path, dst: Path, env: Env, man: Manifest, delay: float = 1.0, tag: str = ""
) -> tuple[Proc | None, str]:
    """Start a live tool on a populated SOURCE, wait until DEST holds man, settle."""
    proc = Proc(live_argv(tool, src, dst, env, delay), env.log(f"{tool}{tag}"))
    dt, why = wait_until(complete(dst, man), TIMEOUT_READY, proc, 0.1)
    if dt is None:
        note = f"not ready ({why}): {proc.tail()}"
        proc.stop()
        return None, note
    time.sleep(SETTLE)
    if proc.exited() is not None:
        note = f"exited rc={proc.exited()} after start: {proc.tail()}"
        proc.stop()
        return None, note
    return proc, ""


# -- scenarios -----------------------------------------------------------------

Results = dict[str, dict[str, Any]]  # metric -> tool -> value
NOTES: list[str] = []
EXTRA = " (tandem --delay 0.05)"


def put(res: Results, metric: str, tool: str, value: Any) -> None:
    res.setdefault(metric, {})[tool] = value


def note(msg: str) -> None:
    NOTES.append(msg)
    print(f"  note: {msg}", flush=True)


def sc_initial(tools: list[str], env: Env, sz: dict[str, int], rng: random.Random) -> Results:
    res: Results = {}
    base = env.scratch / "initial"
    src = base / "src"
    src.mkdir(parents=True)
    man = make_tree(src, "", sz["init_dirs"], sz["init_files"], rng)
    flush_disk()
    n = count(man)
    print(f"[1] initial sync of {n} files", flush=True)
    for tool in tools:
        argv = oneshot_argv(tool, src, base / "dst")
        if argv is not None:
            dst = base / "dst"
            rm(dst)
            dst.mkdir()
            flush_disk()
            oneshot, cpu = run_timed(argv, env.log(f"init-oneshot-{tool}"), TIMEOUT_INITIAL)
            missing, wrong = verify(dst, man)
            put(res, "one-shot: wall s", tool, oneshot)
            put(res, "one-shot: CPU s", tool, round(cpu, 2))
            put(res, "one-shot: missing/wrong", tool, f"{missing}/{wrong}")
            print(
                f"  {tool:7s} one-shot {fmt(oneshot)} s  cpu {cpu:.2f}  missing/wrong {missing}/{wrong}",
                flush=True,
            )
        if tool in LIVE_TOOLS:
            dst = base / "dst"
            rm(dst)
            dst.mkdir()
            flush_disk()
            proc = Proc(live_argv(tool, src, dst, env), env.log(f"init-live-{tool}"))
            dt, why = wait_until(complete(dst, man), TIMEOUT_INITIAL, proc, 0.1)
            left = pending(dst, man) if dt is None else 0
            if dt is None:
                note(f"{tool} live initial: {why}, {left} files pending; log: {proc.tail(3)}")
            proc.stop()
            missing, wrong = verify(dst, man)
            put(res, "live start -> complete s", tool, dt if dt is not None else why)
            put(res, "live: missing/wrong", tool, f"{missing}/{wrong}")
            print(
                f"  {tool:7s} live     {fmt(dt if dt is not None else why)} s  "
                f"missing/wrong {missing}/{wrong}",
                flush=True,
            )
    rm(base)
    return res


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def latency_run(
    tool: str, env: Env, n: int, rng: random.Random, delay: float = 1.0, tag: str = ""
) -> tuple[list[float], str]:
    src, dst = env.fresh(f"lat-{tool}{tag}")
    man = make_tree(src, "seed", 2, 10, rng)
    (src / "lat").mkdir()
    man["lat"] = {}
    proc, why = start_ready(tool, src, dst, env, man, delay, tag)
    if proc is None:
        return [], why
    times: list[float] = []
    problem = ""
    try:
        for i in range(n):
            data = f"change {i} {time.time_ns()} {rng.random()}\n".encode() * 20
            target = dst / "lat" / f"c{i:02d}.txt"

            def arrived(target: Path = target, data: bytes = data) -> bool:
                try:
                    return target.read_bytes() == data
                except OSError:
                    return False

            t0 = time.monotonic()
            with open(src / "lat" / f"c{i:02d}.txt", "wb") as fh:
                fh.write(data)
            dt, why = wait_until(arrived, TIMEOUT_LATENCY, proc, 0.005)
            if dt is None:
                problem = f"change {i}: {why}"
                break
            times.append(time.monotonic() - t0)
            time.sleep(1.2 + rng.random() * 0.5)  # idle again, random phase
    finally:
        proc.stop()
    return times, problem


def sc_latency(tools: list[str], env: Env, sz: dict[str, int], rng: random.Random) -> Results:
    res: Results = {}
    n = sz["lat_n"]
    print(f"[2] one-change latency, N={n}", flush=True)
    runs = [(t, 1.0, "") for t in tools if t in LIVE_TOOLS]
    if "tandem" in tools:
        runs.append(("tandem", 0.05, "-d0.05"))
    for tool, delay, tag in runs:
        times, problem = latency_run(tool, env, n, rng, delay, tag)
        key = "" if not tag else EXTRA
        if problem:
            note(f"{tool}{tag} latency: {problem}")
        if times:
            put(res, f"p50 s{key}", tool, statistics.median(times))
            put(res, f"p95 s{key}", tool, pct(times, 0.95))
            put(res, f"max s{key}", tool, max(times))
        else:
            put(res, f"p50 s{key}", tool, "failed")
        if problem:
            put(res, f"ok/N{key}", tool, f"{len(times)}/{n}")
        print(f"  {tool}{tag:7s} " + " ".join(f"{t:.3f}" for t in times), flush=True)
    return res


def sc_burst(tools: list[str], env: Env, sz: dict[str, int], rng: random.Random) -> Results:
    res: Results = {}
    n = sz["burst_dirs"] * sz["burst_files"]
    print(f"[3] burst of {n} files in a new tree", flush=True)
    for tool in tools:
        if tool not in LIVE_TOOLS:
            continue
        src, dst = env.fresh(f"burst-{tool}")
        seed = make_tree(src, "seed", 2, 10, rng)
        proc, why = start_ready(tool, src, dst, env, seed)
        if proc is None:
            note(f"{tool} burst: {why}")
            put(res, "all at DEST s", tool, "failed")
            continue
        try:
            t0 = time.monotonic()
            man = make_tree(src, "burst", sz["burst_dirs"], sz["burst_files"], rng)
            created = time.monotonic() - t0
            dt, why = wait_until(complete(dst, man), TIMEOUT_BURST - created, proc, 0.1)
            total = created + dt if dt is not None else why
            missing, wrong = verify(dst, man)
            if dt is None:
                note(
                    f"{tool} burst: {why} after {TIMEOUT_BURST:.0f}s, {missing} missing, "
                    f"{wrong} wrong; log: {proc.tail(3)}"
                )
            elif dt > 10:
                note(f"{tool} burst: slow ({created + dt:.1f} s); log: {proc.tail(5)}")
        finally:
            proc.stop()
        # after stop: anything flushed on SIGTERM is not counted in the time
        missing_after, _ = verify(dst, man)
        put(res, "all at DEST s", tool, total)
        put(res, "creating took s", tool, created)
        put(res, "missing at end", tool, missing)
        put(res, "wrong content", tool, wrong)
        put(res, "missing after stop", tool, missing_after)
        put(res, "CPU s (whole run)", tool, round(proc.cpu or 0.0, 2))
        print(
            f"  {tool:7s} {fmt(total)} s (creating {created:.2f} s) missing {missing} wrong {wrong} "
            f"cpu {proc.cpu:.2f}",
            flush=True,
        )
    return res


def inodes(root: Path) -> dict[str, tuple[int, int, int]]:
    out: dict[str, tuple[int, int, int]] = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[os.path.relpath(p, root)] = (st.st_ino, st.st_ctime_ns, st.st_size)
    return out


def sc_rename(tools: list[str], env: Env, sz: dict[str, int], rng: random.Random) -> Results:
    res: Results = {}
    n = sz["rename_dirs"] * sz["rename_files"]
    print(f"[4] rename of a directory holding {n} files", flush=True)
    for tool in tools:
        if tool not in LIVE_TOOLS:
            continue
        src, dst = env.fresh(f"rename-{tool}")
        man_old = make_tree(src, "old", sz["rename_dirs"], sz["rename_files"], rng)
        man_new = {"new" + k[3:]: v for k, v in man_old.items()}
        proc, why = start_ready(tool, src, dst, env, man_old)
        if proc is None:
            note(f"{tool} rename: {why}")
            put(res, "new path complete s", tool, "failed")
            continue
        before = inodes(dst / "old")
        t_new = t_old = None
        try:
            t0 = time.monotonic()
            os.rename(src / "old", src / "new")
            while True:
                now = time.monotonic() - t0
                if t_new is None and pending(dst, man_new) == 0:
                    t_new = now
                if t_old is None and not (dst / "old").exists():
                    t_old = now
                if t_new is not None and t_old is not None:
                    break
                if now > TIMEOUT_RENAME or (t_new is not None and now - t_new > RENAME_GRACE):
                    break
                if proc.exited() is not None:
                    note(f"{tool} rename: exited rc={proc.exited()}")
                    break
                time.sleep(0.05)
        finally:
            proc.stop()
        after = inodes(dst / "new")
        recopied = [k for k, v in after.items() if before.get(k, (None, None))[:2] != v[:2]]
        rbytes = sum(after[k][2] for k in recopied)
        old_left = (dst / "old").exists()
        missing, wrong = verify(dst, man_new)
        put(res, "new path complete s", tool, t_new if t_new is not None else "incomplete")
        put(res, "old path gone s", tool, t_old if t_old is not None else "never")
        put(res, "old dir left at DEST", tool, "yes" if old_left else "no")
        put(res, "re-copied files", tool, f"{len(recopied)}/{len(after)}")
        put(res, "re-copied KiB", tool, round(rbytes / 1024))
        put(res, "re-copied", tool, "yes" if recopied else ("no" if after else "-"))
        put(res, "missing/wrong (new)", tool, f"{missing}/{wrong}")
        print(
            f"  {tool:7s} new {fmt(t_new)} old gone {fmt(t_old)} left={old_left} "
            f"recopied {len(recopied)}/{len(after)} missing/wrong {missing}/{wrong}",
            flush=True,
        )
    return res


# -- output --------------------------------------------------------------------


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:.2f}"
    return str(v)


RATIO_METRICS = ("wall s", "complete s", "p50 s", "p95 s", "max s", "all at DEST s", "gone s", "CPU s")


def table(all_res: dict[str, Results], tools: list[str]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    others = [t for t in tools if t != "tandem"] if "tandem" in tools else []
    t = Table(title="tandem vs peers (ratio = tandem / other; < 1 means tandem is faster)", show_lines=False)
    t.add_column("scenario")
    t.add_column("metric")
    for tool in tools:
        t.add_column(tool, justify="right")
    for o in others:
        t.add_column(f"tandem/{o}", justify="right")
    for scen, res in all_res.items():
        first = True
        for metric, vals in res.items():
            row = [scen if first else "", metric]
            first = False
            row += [fmt(vals.get(tool)) for tool in tools]
            mine = vals.get("tandem")
            for o in others:
                theirs = vals.get(o)
                # the extra tandem-0.05 rows compare with the peers' 1 s rows
                if theirs is None and metric.endswith(EXTRA):
                    theirs = res.get(metric[: -len(EXTRA)], {}).get(o)
                timed = any(m in metric for m in RATIO_METRICS)
                if (
                    timed
                    and isinstance(mine, (int, float))
                    and isinstance(theirs, (int, float))
                    and theirs > 0
                ):
                    row.append(f"{mine / theirs:.2f}x")
                else:
                    row.append("")
            t.add_row(*(escape(c) for c in row))
        t.add_section()
    Console(width=max(120, 40 + 14 * (len(tools) + len(others)))).print(t)


# -- main ----------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, N=3")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma list of " + ",".join(TOOLS))
    ap.add_argument("--scenarios", default="initial,latency,burst,rename")
    ap.add_argument("--json", metavar="FILE", help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (trees, logs)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    sz = SIZES["quick" if args.quick else "full"]
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    bad = [t for t in wanted if t not in TOOLS]
    if bad:
        ap.error(f"unknown tool(s): {', '.join(bad)}")
    tools = []
    for tool in TOOLS:  # fixed column order
        if tool not in wanted:
            continue
        if available(tool) is None:
            print(
                f"note: {tool} is not installed, skipped (apt-get install -y {tool})"
                if tool != "tandem"
                else "note: tandem not found next to this python nor on PATH, skipped",
                flush=True,
            )
            NOTES.append(f"{tool} not installed: skipped")
            continue
        tools.append(tool)
    if not tools:
        print("nothing to run", file=sys.stderr)
        return 2
    versions = {t: version(t) for t in tools}
    print("tools: " + "; ".join(f"{t}: {v}" for t, v in versions.items()), flush=True)

    rng = random.Random(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="tandem-bench-", dir="/tmp"))
    env = Env(scratch)
    all_res: dict[str, Results] = {}
    names = {
        "initial": f"1 initial {sz['init_dirs'] * sz['init_files']} files",
        "latency": f"2 one change (N={sz['lat_n']}, delay 1 s)",
        "burst": f"3 burst {sz['burst_dirs'] * sz['burst_files']} files",
        "rename": f"4 rename dir of {sz['rename_dirs'] * sz['rename_files']} files",
    }
    funcs = {"initial": sc_initial, "latency": sc_latency, "burst": sc_burst, "rename": sc_rename}
    t_start = time.monotonic()
    old_int = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for sc in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
            if sc not in funcs:
                ap.error(f"unknown scenario {sc}")
            all_res[names[sc]] = funcs[sc](tools, env, sz, rng)
    finally:
        for p in list(LIVE):
            p.stop()
        signal.signal(signal.SIGTERM, old_int)
        if args.keep:
            print(f"scratch kept: {scratch}")
        else:
            rm(scratch)
    elapsed = time.monotonic() - t_start

    print()
    table(all_res, tools)
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.platform()}; "
        f"{'quick' if args.quick else 'full'} run took {elapsed:.0f} s"
    )
    for n in NOTES:
        print(f"note: {n}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "mode": "quick" if args.quick else "full",
                    "sizes": sz,
                    "versions": versions,
                    "cpus": os.cpu_count(),
                    "elapsed_s": elapsed,
                    "results": all_res,
                    "notes": NOTES,
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
