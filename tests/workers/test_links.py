"""HardLinks on real files: the other names of a written file go with it; a link
no full scan has seen asks for one; names outside SOURCE do not."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from workers.links import HardLinks
from workers.snapshot import scan_local


def scanned(root: Path) -> HardLinks:
    links = HardLinks()
    found: dict[tuple[int, int], list[str]] = {}
    scan_local(str(root), links=found)
    links.rebuild(found)
    return links


def test_other_names_of_a_written_file_join_the_batch(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    (tmp_path / "d").mkdir()
    os.link(tmp_path / "a", tmp_path / "d" / "b")
    os.link(tmp_path / "a", tmp_path / "c")
    (tmp_path / "single").write_text("x")
    links = scanned(tmp_path)
    assert len(links) == 1
    assert links.others(str(tmp_path), {"d/b"}) == ({"a", "c"}, False)
    assert links.others(str(tmp_path), {"single", "gone"}) == (set(), False)
    (tmp_path / "c").unlink()  # a name goes: it is forgotten, the others still go together
    assert links.others(str(tmp_path), {"c", "a"}) == ({"d/b"}, False)


def test_a_link_made_after_the_scan_asks_for_a_full_scan_once(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    links = scanned(tmp_path)
    os.link(tmp_path / "a", tmp_path / "new")
    assert links.others(str(tmp_path), {"new"}) == (set(), True)  # "a" is not known as a link yet
    links = scanned(tmp_path)
    assert links.others(str(tmp_path), {"new"}) == ({"a"}, False)


def test_names_outside_source_are_not_asked_for_again(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").write_text("1")
    os.link(root / "a", tmp_path / "outside")
    links = scanned(root)
    assert links.others(str(root), {"a"}) == (set(), False)


def test_a_name_replaced_by_another_file_moves_to_it(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    os.link(tmp_path / "a", tmp_path / "b")
    links = scanned(tmp_path)
    (tmp_path / "new").write_text("2")
    os.link(tmp_path / "new", tmp_path / "other")
    os.replace(tmp_path / "new", tmp_path / "b")  # b is now new's inode, linked with "other"
    extra, unknown = links.others(str(tmp_path), {"b"})
    assert extra == {"a"}  # a write through b before the replace shows under a
    assert unknown  # b's new partner was never scanned
    assert links.others(str(tmp_path), {"b"}) == (set(), True)  # b is now known as new's


def test_a_name_written_through_then_deleted_still_sends_the_others(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    (tmp_path / "d").mkdir()
    os.link(tmp_path / "a", tmp_path / "d" / "b")
    links = scanned(tmp_path)
    with open(tmp_path / "d" / "b", "a") as handle:
        handle.write("written through b")
    (tmp_path / "d" / "b").unlink()
    (tmp_path / "d").rmdir()
    # the folder's deletion dropped the pending write below it: "d" stands for "d/b"
    assert links.others(str(tmp_path), {"d"}) == ({"a"}, False)
    assert links.others(str(tmp_path), {"d/b"}) == (set(), False)  # forgotten once gone


def test_a_name_written_through_then_deleted_alone(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    os.link(tmp_path / "a", tmp_path / "b")
    links = scanned(tmp_path)
    (tmp_path / "b").unlink()
    assert links.others(str(tmp_path), {"b"}) == ({"a"}, False)


def test_a_renamed_name_is_followed(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("1")
    os.link(tmp_path / "d" / "a", tmp_path / "b")
    links = scanned(tmp_path)
    (tmp_path / "d").rename(tmp_path / "e")
    links.moved("d", "e")
    assert links.others(str(tmp_path), {"b"}) == ({"e/a"}, False)


def test_a_folder_deleted_and_made_again_still_sends_the_others(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    (tmp_path / "d").mkdir()
    os.link(tmp_path / "a", tmp_path / "d" / "b")
    links = scanned(tmp_path)
    with open(tmp_path / "d" / "b", "a") as handle:
        handle.write("written through b")
    (tmp_path / "d" / "b").unlink()
    (tmp_path / "d").rmdir()
    (tmp_path / "d").mkdir()  # one batch: "d" listed and walked, "d/b" dropped by the deletion
    assert links.others(str(tmp_path), {"d"}) == (set(), False)  # not made anew: not looked below
    assert links.others(str(tmp_path), {"d"}, fresh={"d"}) == ({"a"}, False)
    assert len(links) == 1 and links.others(str(tmp_path), {"a"}) == (set(), False)


def test_a_folder_of_many_names_is_followed_through_a_rename(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    (tmp_path / "links").mkdir()
    for i in range(200):
        os.link(tmp_path / "a", tmp_path / "links" / str(i))
    links = scanned(tmp_path)
    assert links.others(str(tmp_path), {"gone"}) == (set(), False)  # nothing known below it
    (tmp_path / "links").rename(tmp_path / "moved")
    links.moved("links", "moved")
    extra, unknown = links.others(str(tmp_path), {"a"})
    assert extra == {f"moved/{i}" for i in range(200)} and not unknown
    shutil.rmtree(tmp_path / "moved")
    assert links.others(str(tmp_path), {"moved"}) == ({"a"}, False)  # the partner left behind
    assert links.others(str(tmp_path), {"a"}) == (set(), False)
