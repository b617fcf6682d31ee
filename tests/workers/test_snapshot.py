"""Table tests of the scans: local walk (real tmp tree, fake scandir), find and --list-only parsers."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from workers.rules import Rules, parse_lines
from workers.snapshot import Entry, open_dir, parse_find, parse_list_only, scan_local, under_real_dirs


def rules(*lines: str) -> Rules:
    return Rules(tuple(parse_lines(list(lines), "t")))


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """src/{f1 (3 bytes), d/, d/f2, d/e/, d/e/deep, skip/, skip/x, link -> ../outside, fifo}."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    root = tmp_path / "src"
    (root / "d" / "e").mkdir(parents=True)
    (root / "skip").mkdir()
    (root / "f1").write_text("abc")
    (root / "d" / "f2").write_text("")
    (root / "d" / "e" / "deep").write_text("12345")
    (root / "skip" / "x").write_text("")
    (root / "link").symlink_to(outside)
    os.mkfifo(root / "fifo")
    return root


def kinds(tree: dict[str, Entry]) -> dict[str, str]:
    return {path: entry.type for path, entry in tree.items()}


def test_scan_local_types_and_no_symlink_following(src: Path) -> None:
    tree = scan_local(str(src))
    assert kinds(tree) == {
        "f1": "f",
        "d": "d",
        "d/f2": "f",
        "d/e": "d",
        "d/e/deep": "f",
        "skip": "d",
        "skip/x": "f",
        "link": "l",
        "fifo": "o",
    }
    assert tree["f1"].size == 3 and tree["d/e/deep"].size == 5
    assert tree["f1"].mtime == os.lstat(src / "f1").st_mtime
    assert tree["d"].is_dir and not tree["link"].is_dir


@pytest.mark.parametrize(
    ("lines", "below", "expected"),
    [
        (["-d^skip$"], "", {"f1", "d", "d/f2", "d/e", "d/e/deep", "link", "fifo"}),
        (["-s^d$"], "", {"f1", "d/f2", "d/e", "d/e/deep", "skip", "skip/x", "link", "fifo"}),
        (["-w^d/e$"], "", {"f1", "d", "d/f2", "d/e", "skip", "skip/x", "link", "fifo"}),
        (["-f."], "", {"d", "d/e", "skip"}),
        (["+d^$", "+f^f1$", "-*"], "", {"f1"}),
        (["-*"], "", set()),
        ([], "d", {"d/f2", "d/e", "d/e/deep"}),
        (["-f^d/f2$"], "d", {"d/e", "d/e/deep"}),
        (["-d^d$"], "d", set()),  # an excluded subtree is not walked even when asked for
        ([], "d/e", {"d/e/deep"}),
        ([], "nope", set()),  # vanished before the scan
    ],
)
def test_scan_local_rules_and_below(src: Path, lines: list[str], below: str, expected: set[str]) -> None:
    opened: list[str] = []

    def opendir(path: str, top: bool):  # type: ignore[no-untyped-def]
        opened.append(os.path.relpath(path, src))
        return open_dir(path, top)

    r = rules(*lines) if lines else None
    assert set(scan_local(str(src), r, below=below, opendir=opendir)) == expected
    if r is not None:  # excluded directories are never listed
        assert all(r.can_enter("" if d == "." else d) for d in opened)


def test_scan_local_survives_vanished_and_unreadable_dirs(
    src: Path, caplog: pytest.LogCaptureFixture
) -> None:
    @contextlib.contextmanager
    def opendir(path: str, top: bool) -> Iterator[tuple[list[str], Callable[[str], os.stat_result]]]:
        rel = os.path.relpath(path, src)
        if rel == "d":
            raise FileNotFoundError(2, "No such file or directory", path)
        if rel == "skip":
            raise PermissionError(13, "Permission denied", path)
        with open_dir(path, top) as (names, lstat):
            yield ([*names, "ghost"] if rel == "." else names), lstat  # ghost: gone before its stat

    with caplog.at_level(logging.WARNING, logger="workers.snapshot"):
        tree = scan_local(str(src), opendir=opendir)
    assert set(tree) == {"f1", "d", "skip", "link", "fifo"}  # both dirs kept as entries, no content
    assert "ghost" not in tree
    assert any(
        "skip" in rec.getMessage() and "Permission denied" in rec.getMessage() for rec in caplog.records
    )
    assert not any(os.path.join(str(src), "d") in rec.getMessage() for rec in caplog.records)


def test_scan_local_missing_root_is_empty(tmp_path: Path) -> None:
    assert scan_local(str(tmp_path / "absent")) == {}


def test_scan_local_reports_progress(src: Path) -> None:
    counts: list[int] = []
    scan_local(str(src), on_entry=counts.append)
    assert sum(counts) == 9


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (b"", {}),
        (b"f 3 1700000000.5 a\0", {"a": Entry("f", 3, 1700000000.5)}),
        (b"f 3 1.0 with space\0", {"with space": Entry("f", 3, 1.0)}),
        (b"f 3 1.0  lead  trail \0", {" lead  trail ": Entry("f", 3, 1.0)}),
        (b"f 0 1.0 dir/new\nline\0", {"dir/new\nline": Entry("f", 0, 1.0)}),
        (
            b"d 4096 2.25 dir\0l 7 3.0 dir/ln\0p 0 4.0 fifo\0s 0 5.0 sock\0",
            {
                "dir": Entry("d", 4096, 2.25),
                "dir/ln": Entry("l", 7, 3.0),
                "fifo": Entry("o", 0, 4.0),
                "sock": Entry("o", 0, 5.0),
            },
        ),
        (
            b"f 1 1.0 caf\xc3\xa9\0f 1 1.0 bad\xff\0",
            {
                "caf\u00e9": Entry("f", 1, 1.0),
                "bad\udcff": Entry("f", 1, 1.0),
            },
        ),
        (b"f 1 1.0 a\0f 2 2.0 b", {"a": Entry("f", 1, 1.0), "b": Entry("f", 2, 2.0)}),  # no final NUL
    ],
)
def test_parse_find(output: bytes, expected: dict[str, Entry]) -> None:
    assert parse_find(output) == expected


LISTING = b"""\
drwxr-xr-x          4,096 2024/01/02 03:04:05 .
-rw-r--r--          1,234 2024/01/02 03:04:05 a file
-rw-r--r--      1,234,567 2024/01/02 03:04:05 big
-rw-r--r--            100 2024/01/02 03:04:05 plain
drwxr-xr-x          4,096 2024/01/02 03:04:05 dir
-rw-r--r--              5 2024/01/02 03:04:05 dir/new\\#012line
-rw-r--r--              5 2024/01/02 03:04:05 dir/bad\\#377
lrwxrwxrwx             11 2024/01/02 03:04:05 dir/ln -> ../a file
prw-r--r--              0 2024/01/02 03:04:05 fifo
-rw-r--r--              1 2024/01/02 03:04:05 back\\#slash
"""


def test_parse_list_only() -> None:
    assert parse_list_only(LISTING) == {
        "a file": Entry("f", 1234, 0.0),
        "big": Entry("f", 1234567, 0.0),
        "plain": Entry("f", 100, 0.0),
        "dir": Entry("d", 4096, 0.0),
        "dir/new\nline": Entry("f", 5, 0.0),
        "dir/bad\udcff": Entry("f", 5, 0.0),
        "dir/ln": Entry("l", 11, 0.0),
        "fifo": Entry("o", 0, 0.0),
        "back\\#slash": Entry("f", 1, 0.0),
    }


@pytest.mark.parametrize(
    ("line", "name"),
    [
        (b"-rw-r--r--              5 2024/01/02 03:04:05  lead", " lead"),  # rsync prints one space
        (b"-rw-r--r--              5 2024/01/02 03:04:05 trail ", "trail "),
        (b"-rw-r--r--              5 2024/01/02 03:04:05 two  spaces", "two  spaces"),
        (b"lrwxrwxrwx              3 2024/01/02 03:04:05 l -> x y", "l"),
    ],
)
def test_parse_list_only_keeps_spaces_in_names(line: bytes, name: str) -> None:
    assert list(parse_list_only(line + b"\n")) == [name]


@pytest.mark.parametrize(
    "noise",
    [b"", b"\n\n", b"receiving incremental file list\n"],
)
def test_parse_list_only_ignores_noise(noise: bytes) -> None:
    assert parse_list_only(noise) == {}


def test_under_real_dirs_drops_paths_behind_symlinked_dirs(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host data")
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "f").write_text("x")
    os.symlink(outside, root / "escape")
    os.symlink(root / "real", root / "inward")
    paths = ["real/f", "escape", "escape/secret", "inward/f", "gone/deleted", "top"]
    assert under_real_dirs(str(root), paths) == ["real/f", "escape", "gone/deleted", "top"]


def test_scan_local_does_not_follow_a_directory_swapped_for_a_symlink(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host data")

    @contextlib.contextmanager
    def opendir(path: str, top: bool) -> Iterator[tuple[list[str], Callable[[str], os.stat_result]]]:
        if os.path.basename(path) == "d":  # after its lstat said "directory", before its open
            os.rmdir(path)
            os.symlink(outside, path)
        with open_dir(path, top) as found:
            yield found

    tree = scan_local(str(root), opendir=opendir)
    assert set(tree) == {"d"} and "d/secret" not in tree
