"""The ancestor snapshot on a real file: round trip, pair check, bad files,
updates after incremental syncs."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

from workers.ancestor import Ancestor, load, load_synced_until, save
from workers.snapshot import Entry, scan_local

PAIR = ("/src", "peer:/dst")


def test_round_trip_and_only_for_its_own_pair(tmp_path: Path) -> None:
    path = str(tmp_path / "s" / "snap.json.gz")
    tree = {"a": Entry("f", 3, 1.5), "d": Entry("d", 0, 2.0)}
    save(path, tree, PAIR)
    assert load(path, PAIR) == tree
    assert load(path, ("/src", "peer:/elsewhere")) is None  # a new DEST has no ancestor
    assert load(str(tmp_path / "missing.json.gz"), PAIR) is None
    assert load(None, PAIR) is None


def test_a_damaged_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "snap.json.gz"
    path.write_bytes(b"not gzip")
    assert load(str(path), PAIR) is None
    with gzip.open(path, "wt") as f:
        f.write('{"version": 99}')
    assert load(str(path), PAIR) is None


def test_updates_follow_what_was_synced(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "x").write_text("x")
    (root / "y").write_text("y")
    snap = str(tmp_path / "snap.json.gz")
    ancestor = Ancestor(snap, str(root), PAIR)
    ancestor.replace({**scan_local(str(root)), ".tandem-backup/T/z": Entry("f", 1, 1.0)})
    assert ".tandem-backup/T/z" not in ancestor.tree  # backups are never part of it
    (root / "y").write_text("longer")
    os.unlink(root / "d" / "x")
    os.rmdir(root / "d")
    ancestor.update(["y", "d"], since=time.time() + 1)
    assert set(ancestor.tree) == {"y"} and ancestor.tree["y"].size == 6
    ancestor.update(["y"], since=0.0)  # y changed after the run began: no longer known
    assert "y" not in ancestor.tree
    ancestor.update(["y"], since=time.time() + 1)
    ancestor.maybe_save(0.0)
    assert load(snap, PAIR) == ancestor.tree and not ancestor.dirty
    ancestor.update(["y"], since=time.time() + 1)
    ancestor.maybe_save(1.0)  # within SAVE_EVERY: not written yet
    assert ancestor.dirty
    ancestor.maybe_save(1.0, force=True)
    assert not ancestor.dirty


def test_synced_until_round_trip_and_bad_values(tmp_path: Path) -> None:
    path = str(tmp_path / "snap.json.gz")
    assert Ancestor(path, "/src", PAIR).synced_until is None  # no file: not known
    ancestor = Ancestor(path, "/src", PAIR)
    ancestor.synced(1234.5)
    ancestor.maybe_save(0.0)
    assert Ancestor(path, "/src", PAIR).synced_until == 1234.5
    assert load_synced_until(path, ("/src", "peer:/elsewhere")) is None
    for bad in ("1e999", '"soon"', "null", "true"):
        with gzip.open(path, "wt") as f:
            pair = '["/src", "peer:/dst"]'
            f.write(f'{{"version": 1, "pair": {pair}, "synced_until": {bad}, "entries": {{}}}}')
        assert load_synced_until(path, PAIR) is None, bad


def test_a_scan_names_what_changed_since(tmp_path: Path) -> None:
    (tmp_path / "old").write_text("1")
    (tmp_path / "d").mkdir()
    since = os.stat(tmp_path / "old").st_ctime + 0.05
    time.sleep(0.1)
    (tmp_path / "d" / "new").write_text("2")
    recent: set[str] = set()
    tree = scan_local(str(tmp_path), changed=(since, recent))
    assert set(tree) == {"old", "d", "d/new"}
    assert recent == {"d", "d/new"}  # d: an entry was added


def test_a_clock_set_back_moves_synced_until_back_as_far(tmp_path: Path) -> None:
    path = str(tmp_path / "snap.json.gz")
    ahead = time.time() + 3600  # saved while the clock read an hour later than now
    with gzip.open(path, "wt") as f:
        pair = '["/src", "peer:/dst"]'
        f.write(f'{{"version": 1, "pair": {pair}, "saved": {ahead}, "synced_until": {ahead - 10}}}')
    value = load_synced_until(path, PAIR)
    assert value is not None and value <= time.time() - 10


def test_a_rename_moves_what_is_below(tmp_path: Path) -> None:
    ancestor = Ancestor(None, str(tmp_path), PAIR)
    ancestor.replace(
        {
            "d": Entry("d", 0, 1.0),
            "d/x": Entry("f", 1, 1.0),
            "dx": Entry("f", 2, 1.0),
            "e/old": Entry("f", 3, 1.0),
        }
    )
    ancestor.moved("d", "e")
    assert ancestor.tree == {"e": Entry("d", 0, 1.0), "e/x": Entry("f", 1, 1.0), "dx": Entry("f", 2, 1.0)}


def test_a_folder_changed_during_its_run_keeps_what_is_below(tmp_path: Path) -> None:
    """A run that lists folder d (a file was made in it) while another file is made
    there: d's own state is unknown, but what is below d was synced by runs of its
    own and stays known. It was all dropped, and a file below d that the container
    deleted before the next start's check then looked made at DEST: pulled back."""
    root = tmp_path / "root"
    (root / "d" / "e").mkdir(parents=True)
    for name in ("d/x", "d/e/y", "z"):
        (root / name).write_text(name)
    ancestor = Ancestor(None, str(root), PAIR)
    ancestor.replace(scan_local(str(root)))
    since = time.time()
    time.sleep(0.01)  # ctime is as fine as the kernel's clock tick
    (root / "d" / "new").write_text("made during the run")
    assert ancestor.update(["d", "d/e"], since=since) == ["d"]  # to be sent again
    assert set(ancestor.tree) == {"d/x", "d/e", "d/e/y", "z"}
    os.unlink(root / "d" / "e" / "y")
    os.rmdir(root / "d" / "e")
    (root / "d" / "e").write_text("a file now")  # no longer a folder: nothing below it on either side
    ancestor.update(["d/e"], since=time.time() + 1)
    assert set(ancestor.tree) == {"d/x", "d/e", "z"} and ancestor.tree["d/e"].type == "f"
