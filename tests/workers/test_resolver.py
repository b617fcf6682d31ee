"""Table tests of mirror_list: what a full sync lists so DEST ends up equal to SOURCE."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from workers.resolver import mirror_list
from workers.rules import Rules, parse_lines


@dataclass(frozen=True)
class E:
    is_dir: bool


F, D = E(False), E(True)


def tree(spec: str) -> dict[str, E]:
    """'a b/ b/c' -> a file, b dir, b/c file."""
    return {p.rstrip("/"): D if p.endswith("/") else F for p in spec.split()}


def allows(*lines: str) -> Rules:
    return Rules(tuple(parse_lines(list(lines), "t")))


@pytest.mark.parametrize(
    ("source", "dest", "lines", "listed"),
    [
        # source paths always listed, even ones the predicate would refuse
        ("a b/ b/c", "", [], ["a", "b", "b/c"]),
        ("a x.tmp", "", ["-f\\.tmp$"], ["a", "x.tmp"]),
        ("a", "a", [], ["a"]),  # on both sides: listed once
        # DEST-only files
        ("a", "a old", [], ["a", "old"]),
        ("a", "a x.tmp", ["-f\\.tmp$"], ["a"]),
        ("d/", "d/ d/old d/x.tmp", ["-f\\.tmp$"], ["d", "d/old"]),
        # DEST-only directory with an excluded file somewhere below: not listed, allowed children are
        ("", "d/ d/keep.tmp d/old", ["-f\\.tmp$"], ["d/old"]),
        (
            "",
            "d/ d/e/ d/e/f/ d/e/f/keep.tmp d/e/g d/h/ d/h/i",
            ["-f\\.tmp$"],
            ["d/e/g", "d/h"],  # d/h holds nothing excluded: listed whole
        ),
        ("", "d/ d/cache/ d/cache/z d/old", ["-d^d/cache$"], ["d/old"]),
        # DEST-only directory whose whole subtree is allowed: only the directory
        ("", "d/ d/a d/b/ d/b/c", [], ["d"]),
        ("x", "x d/ d/a d/b/ d/b/c", ["-f\\.tmp$"], ["d", "x"]),
        # DEST-only excluded directory: neither it nor its content
        ("", "cache/ cache/a", ["-d^cache$"], []),
        # output sorted across both sides
        ("z b", "z b c m/ m/n", [], ["b", "c", "m", "z"]),
    ],
)
def test_mirror_list(source: str, dest: str, lines: list[str], listed: list[str]) -> None:
    assert mirror_list(tree(source), tree(dest), allows(*lines).allows) == listed


@pytest.mark.parametrize(
    ("dest", "listed"),
    [
        # 'a-b' sorts between 'a' and 'a/x' ('-' < '/'); 'a' is listed whole, so 'a/x' is not
        ("a/ a/x a-b", ["a", "a-b"]),
        ("a/ a/x a-b/ a-b/y", ["a", "a-b"]),
        ("a/ a/x a-b/ a-b/y a.c/ a.c/z a/y/ a/y/w", ["a", "a-b", "a.c"]),
    ],
)
def test_children_of_a_whole_directory_are_not_listed_when_a_sibling_sorts_between(
    dest: str, listed: list[str]
) -> None:
    assert mirror_list({}, tree(dest), allows().allows) == listed


def test_only_needs_is_dir_and_a_predicate() -> None:
    seen: list[tuple[str, bool]] = []

    def pred(path: str, is_dir: bool) -> bool:
        seen.append((path, is_dir))
        return path != "d/no"

    assert mirror_list({"s": F}, {"d": D, "d/no": F, "d/yes": F}, pred) == ["d/yes", "s"]
    assert ("d", True) in seen and ("d/no", False) in seen


def test_unlike_lists_what_dest_lacks_or_holds_otherwise_and_what_it_has_more() -> None:
    from workers.resolver import unlike
    from workers.snapshot import Entry

    source = {
        "b/same": Entry("f", 3, 10.0),
        "b/within": Entry("f", 3, 10.0),
        "b/size": Entry("f", 3, 10.0),
        "b/mtime": Entry("f", 3, 10.0),
        "b/missing": Entry("f", 3, 10.0),
        "b/type": Entry("f", 3, 10.0),
        "b/dir": Entry("d", 0, 10.0),
        "b/link": Entry("l", 4, 10.0),
    }
    dest = {
        "b/same": Entry("f", 3, 10.0),
        "b/within": Entry("f", 3, 10.0005),
        "b/size": Entry("f", 4, 10.0),
        "b/mtime": Entry("f", 3, 11.0),
        "b/type": Entry("d", 0, 10.0),
        "b/dir": Entry("d", 0, 99.0),  # a directory's mtime moves with its content
        "b/link": Entry("l", 4, 12.0),
        "b/extra": Entry("f", 1, 1.0),
        "b/extra-dir": Entry("d", 0, 1.0),
        "b/extra-dir/inner": Entry("f", 1, 1.0),
    }
    assert unlike(source, dest, 0.001, lambda p, d: True) == [
        "b/extra",
        "b/extra-dir",  # listed whole: its content goes with it
        "b/link",
        "b/missing",
        "b/mtime",
        "b/size",
        "b/type",
    ]
