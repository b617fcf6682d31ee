"""The direct, shell and python handler modes with a real worker."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import tree, wait_until

pytestmark = pytest.mark.real


def test_direct_mode_mirrors_without_rsync(dirs, start_worker) -> None:
    src, dst = dirs
    (src / "a").write_text("a")
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "e" / "f").write_text("f")
    (dst / "stray").write_text("DEST-only: deleted by the initial sync")
    (dst / "keep.tmp").write_text("DEST-only and excluded: kept")
    env = dict(os.environ, PATH="/nonexistent")  # no rsync reachable
    worker = start_worker(src, dst, "--mode", "direct", "--delay", "0.1", "--exclude", r"\.tmp$", env=env)
    worker.wait_running()
    expected = tree(src)
    assert {k: v for k, v in tree(dst).items() if k != "keep.tmp"} == expected
    (src / "d").rename(src / "moved")  # with rules: sent as a new tree, old one deleted
    wait_until(lambda: (dst / "moved" / "e" / "f").exists() and not (dst / "d").exists(), 10)
    (src / "a").write_text("changed")
    os.symlink("a", src / "link")
    os.chmod(src / "a", 0o600)
    shutil.rmtree(src / "moved" / "e")
    (src / "moved" / "new").write_text("n")
    wait_until(lambda: {k: v for k, v in tree(dst).items() if k != "keep.tmp"} == tree(src), 10)
    assert (dst / "link").is_symlink()
    (src / "moved" / "e2").mkdir()
    (src / "moved" / "e2" / "g").write_text("g")
    wait_until(lambda: (dst / "moved" / "e2" / "g").exists())
    assert worker.stop() == 0


def test_shell_mode_gets_label_and_nul_list(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    log = tmp_path / "calls.jsonl"
    handler = tmp_path / "handler.py"
    handler.write_text(
        "import json, os, sys\n"
        "label, listfile = sys.argv[1], sys.argv[2]\n"
        "paths = open(listfile, 'rb').read().split(b'\\0')[:-1]\n"
        f"with open({str(log)!r}, 'a') as out:\n"
        "    out.write(json.dumps({'label': label, 'cwd': os.getcwd(), 'full': os.environ['TANDEM_FULL'],\n"
        "        'paths': [p.decode('utf-8', 'surrogateescape') for p in paths]}) + '\\n')\n"
    )
    (src / "pre").write_text("x")
    worker = start_worker(
        src, dst, "--mode", "shell", "--handler", f"python3 {handler}", "--label", "L1", "--delay", "0.1"
    )
    worker.wait_running()
    (src / "new\nline").write_text("x")
    calls = wait_until(lambda: [json.loads(x) for x in log.read_text().splitlines()][1:], 5, "second call")
    first = json.loads(log.read_text().splitlines()[0])
    assert first == {"label": "L1", "cwd": str(src), "full": "1", "paths": ["pre"]}
    assert calls[0]["full"] == "0" and "new\nline" in calls[0]["paths"]
    assert worker.stop() == 0


def test_shell_handler_failure_is_retried_then_fatal(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    (src / "f").write_text("x")
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho 'disk on fire' >&2\nexit 3\n")
    failing.chmod(0o755)
    worker = start_worker(
        src, dst, "--mode", "shell", "--handler", str(failing), "--retries", "1", "--retry-delay", "0.05"
    )
    assert worker.wait() == 4
    assert "disk on fire" in worker.err()


def test_python_mode_calls_the_function_with_the_batch(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    log = tmp_path / "batches.jsonl"
    (module_dir / "myhandler.py").write_text(
        "import json\n"
        "def handle(job):\n"
        f"    with open({str(log)!r}, 'a') as out:\n"
        "        out.write(json.dumps({'paths': list(job.paths), 'full': job.full, 'label': job.label,\n"
        "                              'source': job.source, 'dest': job.dest}) + '\\n')\n"
    )
    (src / "one").write_text("1")
    env = dict(os.environ, PYTHONPATH=str(module_dir))
    worker = start_worker(
        src, dst, "--mode", "python", "--handler", "myhandler:handle", "--delay", "0.1", env=env
    )
    worker.wait_running()
    (src / "two").write_text("2")
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, 5)
    first, second = (json.loads(x) for x in log.read_text().splitlines()[:2])
    assert first["full"] and first["paths"] == ["one"] and first["source"] == str(src)
    assert not second["full"] and "two" in second["paths"]
    assert worker.stop() == 0


def test_python_handler_exception_is_a_failure(dirs, start_worker, tmp_path) -> None:
    src, dst = dirs
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "badhandler.py").write_text("def handle(job):\n    raise RuntimeError('peer said no')\n")
    (src / "f").write_text("x")
    env = dict(os.environ, PYTHONPATH=str(module_dir))
    worker = start_worker(
        src, dst, "--mode", "python", "--handler", "badhandler:handle", "--retries", "0", env=env
    )
    assert worker.wait() == 4
    assert "peer said no" in worker.err()


def test_direct_mode_needs_local_dest(dirs, start_worker) -> None:
    src, _ = dirs
    worker = start_worker(src, "host:/x", "--mode", "direct")
    assert worker.wait() == 2
    assert "local DEST" in worker.err()


def test_direct_mode_never_writes_through_a_symlinked_dest_dir(dirs, start_worker, tmp_path: Path) -> None:
    src, dst = dirs
    victim = tmp_path / "victim"
    victim.mkdir()
    (src / "sub").mkdir()
    os.symlink(victim, dst / "sub")  # DEST's "sub" points outside DEST
    (src / "sub" / "f").write_text("x")
    worker = start_worker(
        src, dst, "--mode", "direct", "--delay", "0.1", "--retries", "0", "--ignore-failures"
    )
    wait_until(lambda: worker.syncs() >= 1 or any(line["failures"] for line in worker.lines), 10)
    assert not list(victim.iterdir()), "wrote outside DEST through a symlink"
    assert worker.stop() in (0, 4)


def test_direct_mode_copies_a_255_byte_name(dirs, start_worker) -> None:
    src, dst = dirs
    (src / ("L" * 255)).write_text("x")
    worker = start_worker(src, dst, "--mode", "direct", "--delay", "0.1", "--retries", "0")
    worker.wait_running()
    (src / ("M" * 255)).write_text("y")
    wait_until(lambda: (dst / ("M" * 255)).exists(), 10)
    assert (dst / ("L" * 255)).read_text() == "x"
    assert worker.stop() == 0


def test_direct_mode_repeats_renames_at_dest(dirs, start_worker) -> None:
    src, dst = dirs
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "e" / "f").write_text("f")
    worker = start_worker(src, dst, "--mode", "direct", "--delay", "0.1")
    worker.wait_running()
    with open(dst / "d" / "e" / "f") as held:  # held open: its inode cannot be reused
        inode = os.fstat(held.fileno()).st_ino
        (src / "d").rename(src / "moved")
        wait_until(lambda: (dst / "moved" / "e" / "f").exists() and not (dst / "d").exists(), 10)
        assert (dst / "moved" / "e" / "f").stat().st_ino == inode, "the rename was not repeated at DEST"
    assert worker.stop() == 0


@pytest.mark.parametrize("same", [True, False])
def test_direct_mode_compares_content_when_asked(dirs, same: bool) -> None:
    """A renamed file a run may have read under its old name after the rename:
    DEST's copy has SOURCE's size and mtime, maybe not its content."""
    from workers.spec import WorkerSpec
    from workers.transfer import Job
    from workers.transfer.direct import DirectHandler

    src, dst = dirs
    (src / "f").write_text("rotated")
    (dst / "f").write_text("rotated" if same else "new log")
    st = (src / "f").stat()
    os.utime(dst / "f", ns=(st.st_atime_ns, st.st_mtime_ns))
    kept = (dst / "f").stat().st_ino
    handler = DirectHandler(WorkerSpec(source=str(src), dest=str(dst)))
    job = Job(("f",), False, "t", str(src), str(dst), checksum=True)
    assert handler.send(job, lambda: None).verdict.value == "ok"
    assert (dst / "f").read_text() == "rotated"
    assert ((dst / "f").stat().st_ino == kept) is same  # equal content is not copied again
