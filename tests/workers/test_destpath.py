"""DEST's path walk: the pure half as tables, the local walk on a real tree."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from workers import destpath
from workers.destpath import Refused, Walk


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("/srv/tandem/h1", ["srv", "tandem", "h1"]),
        ("/srv//tandem/./h1/", ["srv", "tandem", "h1"]),
        ("rel/dir", ["rel", "dir"]),
        (".", []),
        ("/", []),
        ("/a\nb/-c", ["a\nb", "-c"]),
    ],
)
def test_components(path: str, names: list[str]) -> None:
    assert destpath.components(path) == names


def test_components_refuse_climbing() -> None:
    with pytest.raises(Refused, match=r"'\.\.'"):
        destpath.components("/srv/../etc")


@pytest.mark.parametrize(
    ("output", "walk"),
    [
        (b"ok 755\nok 700\nmade 700\n", Walk(("c",), (0o755, 0o700, 0o700))),
        (b"made 700\nmade 700\nmade 700\n", Walk(("a", "b", "c"), (0o700,) * 3)),
        (b"ok 1777\nok 755\nok 2755\n", Walk((), (0o1777, 0o755, 0o2755))),
    ],
)
def test_parse_remote(output: bytes, walk: Walk) -> None:
    assert destpath.parse_remote("/a/b/c", output) == walk


@pytest.mark.parametrize(
    ("output", "words"),
    [
        (b"ok 755\nlink\n", "'b' on its path is a symbolic link"),
        (b"notdir\n", "'a' on its path is not a directory"),
        (b"ok 755\nok 755\nmkfail\n", "'c' on its path cannot be made"),
        (b"ok 755\nmoved\n", "'b' on its path resolved elsewhere"),
        (b"ok 755\nok 755\n", "the peer's walk stopped at 'c'"),  # cut short
        (b"ok 755\nok x\nok 755\n", "the peer's walk stopped at 'b'"),  # garbled
        (b"", "the peer's walk stopped at 'a'"),
    ],
)
def test_parse_remote_refuses(output: bytes, words: str) -> None:
    with pytest.raises(Refused, match=words):
        destpath.parse_remote("/a/b/c", output)


def test_remote_command_quotes_every_name() -> None:
    command = destpath.remote_command("/srv/a b/$(reboot)/-x")
    assert command.startswith("cd / && sh -c ")
    assert command.endswith(" walk srv 'a b' '$(reboot)' -x")
    assert not destpath.remote_command("rel/dir").startswith("cd /")


@pytest.mark.parametrize(
    ("modes", "open_"),
    [
        ((0o755, 0o755, 0o755), True),
        ((0o755, 0o700, 0o755), False),  # one closed directory keeps others out
        ((0o755, 0o754, 0o755), False),  # o+r without o+x does not let anyone through
        ((0o711, 0o711), True),  # traversable is enough
        ((), True),  # DEST is the start itself
    ],
)
def test_open_to_others(modes: tuple[int, ...], open_: bool) -> None:
    walk = Walk((), modes)
    assert destpath.open_to_others(walk) is open_
    assert (destpath.warning("/d", walk) is not None) is open_


def test_local_walk_makes_missing_directories_0700(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir(mode=0o755)
    walk = destpath.walk_local(str(tmp_path / "a" / "b" / "c"))
    assert walk.made == ("b", "c")
    assert [stat.S_IMODE(m) for m in walk.modes[-3:]] == [0o755, 0o700, 0o700]
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert destpath.walk_local(str(tmp_path / "a" / "b" / "c")).made == ()


def test_local_walk_refuses_a_link_anywhere_and_makes_nothing_through_it(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    for dest in ("link", "link/below/deeper"):
        with pytest.raises(Refused, match="'link' on its path is a symbolic link"):
            destpath.walk_local(str(tmp_path / dest))
    assert os.listdir(tmp_path / "real") == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(Refused, match="'file' on its path is not a directory"):
        destpath.walk_local(str(tmp_path / "file" / "d"))
