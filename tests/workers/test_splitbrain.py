"""The split-brain decision (pure): classes, policies, tie-breaks, the modify
window, the safety halt; and properties: a decision applied (as rsync would)
leaves two equal sides, deciding again changes nothing, keep-both loses no
version."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.splitbrain import (
    Class,
    Decision,
    Side,
    classify,
    conflict_name,
    decide,
    explain,
    latest_change,
    newer,
    safety,
    same,
)


@dataclass(frozen=True)
class E:
    type: str
    size: int
    mtime: float

    @property
    def is_dir(self) -> bool:
        return self.type == "d"


def f(size: int = 1, mtime: float = 100.0) -> E:
    return E("f", size, mtime)


D = E("d", 0, 50.0)
W = 0.001


def run(here, there, ancestor, policy, *, host_here="a", host_there="b"):
    diffs = classify(here, there, ancestor, W)
    return diffs, decide(
        diffs, here, there, ancestor, policy, window=W, host_here=host_here, host_there=host_there, stamp="S"
    )


def test_same_compares_type_size_and_mtime_within_the_window() -> None:
    assert same(f(1, 100.0), f(1, 100.0009), W)
    assert not same(f(1, 100.0), f(1, 100.002), W)
    assert not same(f(1, 100.0), f(2, 100.0), W)
    assert not same(f(), E("l", 1, 100.0), W)
    assert same(E("d", 1, 1.0), E("d", 9, 99.0), W)  # directories: type only
    assert same(None, None, W) and not same(f(), None, W)


@pytest.mark.parametrize(
    ("here", "there", "ancestor", "expected"),
    [
        ({"x": f()}, {"x": f()}, {"x": f()}, {}),
        ({"x": f(2, 200)}, {"x": f()}, {"x": f()}, {"x": Class.HERE}),
        ({"x": f()}, {"x": f(2, 200)}, {"x": f()}, {"x": Class.THERE}),
        ({"x": f(2, 200)}, {"x": f(3, 300)}, {"x": f()}, {"x": Class.CONFLICT}),
        ({"x": f(2, 200)}, {"x": f(2, 200)}, {"x": f()}, {}),  # both made the same change
        ({}, {"x": f()}, {"x": f()}, {"x": Class.HERE}),  # deleted here
        ({"x": f()}, {}, {"x": f()}, {"x": Class.THERE}),  # deleted there
        ({}, {"x": f(2, 200)}, {"x": f()}, {"x": Class.CONFLICT}),  # deleted here, changed there
        ({"x": f()}, {}, None, {"x": Class.HERE}),  # no ancestor: only here
        ({}, {"x": f()}, None, {"x": Class.THERE}),
        ({"x": f(2, 200)}, {"x": f()}, None, {"x": Class.CONFLICT}),
        ({"x": f(1, 100.0005)}, {"x": f(1, 100.0)}, None, {}),  # within the window
    ],
)
def test_classes(here, there, ancestor, expected) -> None:
    assert {d.path: d.cls for d in classify(here, there, ancestor, W)} == expected


def test_newer_and_deterministic_tie_breaks() -> None:
    assert newer(200.0, 100.0, W, "a", "b") is Side.HERE
    assert newer(100.0, 200.0, W, "a", "b") is Side.THERE
    assert newer(100.0, None, W, "a", "b") is Side.HERE
    # a tie goes to the host name that sorts first, whichever side asks
    assert newer(100.0, 100.0005, W, "node-a", "node-b") is Side.HERE
    assert newer(100.0005, 100.0, W, "node-b", "node-a") is Side.THERE
    assert newer(None, None, W, "z", "y") is Side.THERE


def test_latest_change_counts_only_differing_paths_and_their_directories() -> None:
    tree = {"old": f(1, 500.0), "new": f(1, 20.0), "d": E("d", 0, 30.0), "d/x": f(1, 10.0)}
    other = {"old": f(1, 500.0), "d": E("d", 0, 5.0), "d/x": f(1, 10.0), "d/gone": f(1, 1.0)}
    assert latest_change(tree, other, ["new"], W) == 20.0  # "old" is newer but the same on both sides
    assert latest_change(tree, other, ["d/gone"], W) == 30.0  # a deletion touched its directory
    same_dir = {**other, "d": E("d", 0, 30.0)}
    assert latest_change(tree, same_dir, ["d/gone"], W) is None  # a directory both sides agree on
    assert latest_change(tree, other, [], W) is None


def test_newest_decides_the_same_after_a_half_applied_decision() -> None:
    here, there = {"a": f(1, 100.0), "b": f(1, 100.0)}, {"a": f(2, 200.0), "b": f(2, 150.0)}
    _, first = run(here, there, None, "newest")
    assert first.winner is Side.THERE
    half = {**here, "a": there["a"]}  # the pull of "a" went through, then it was interrupted
    _, again = run(half, there, None, "newest")
    assert again.winner is Side.THERE and again.pull == ("b",)


def test_keep_both_does_not_delete_a_directory_with_changes_below() -> None:
    ancestor = {"P": D, "P/q": f(), "P/r": f()}
    here = {"P": D, "P/q": f(2, 200), "P/r": f(), "P/n": f(3, 300)}
    there: dict[str, E] = {}  # THERE removed P
    _, decision = run(here, {"x": f()} | there, {**ancestor, "x": f()}, "keep-both")
    assert "P" in decision.push and "P" not in decision.pull
    assert set(decision.push) >= {"P", "P/q", "P/n"} and decision.pull == ("P/r",)


def test_explain_tells_why_each_path_is_pulled_with_the_three_versions() -> None:
    ancestor = {"a": f(), "b": f()}
    here = {"a": f(2, 150), "b": f()}
    there = {"a": f(), "b": f(3, 160), "c": f(1, 170)}
    diffs, decision = run(here, there, ancestor, "newest")
    lines = explain(decision, diffs, here, there, ancestor, W, limit=2)
    assert lines == [
        "decision: newest: there wins; 0 paths to DEST, 3 from DEST, 0 conflicts kept both ways "
        "(1 changed-here, 2 changed-there; ancestor yes)",
        "latest change of the differing paths: SOURCE 150.000000, DEST 170.000000",
        "pull 'a': changed-here; SOURCE f 2 150.000000, DEST f 1 100.000000, ancestor f 1 100.000000",
        "pull 'b': changed-there; SOURCE f 1 100.000000, DEST f 3 160.000000, ancestor f 1 100.000000",
        "pull: 1 more paths",
    ]
    only_here = {"a": f(2, 150), "b": f()}
    diffs, decision = run(only_here, ancestor, ancestor, "newest")
    assert explain(decision, diffs, only_here, ancestor, None, W)[1:] == [
        "push 'a': changed-here; SOURCE f 2 150.000000, DEST f 1 100.000000, ancestor none"
    ]
    assert explain(Decision("newest"), [], here, here, ancestor, W) == []


@pytest.mark.parametrize(
    ("policy", "winner"),
    [("local", Side.HERE), ("remote", Side.THERE), ("newest", Side.THERE)],
)
def test_whole_tree_policies(policy: str, winner: Side) -> None:
    ancestor = {"a": f(), "b": f()}
    here = {"a": f(2, 150), "b": f()}  # changed a at 150
    there = {"a": f(), "b": f(3, 160), "c": f(1, 170)}  # changed b, made c, later
    _, decision = run(here, there, ancestor, policy)
    assert decision.winner is winner
    moved = ("a", "b", "c")
    assert (decision.push, decision.pull) == ((moved, ()) if winner is Side.HERE else ((), moved))


def test_newest_tie_goes_to_the_first_host_name_on_both_hosts() -> None:
    here, there = {"x": f(1, 100.0)}, {"x": f(2, 100.0)}
    _, on_a = run(here, there, None, "newest", host_here="a", host_there="b")
    _, on_b = run(there, here, None, "newest", host_here="b", host_there="a")
    assert on_a.winner is Side.HERE and on_b.winner is Side.THERE  # host a wins both times


def test_keep_both_applies_both_ways_and_keeps_conflict_copies() -> None:
    ancestor = {"same": f(), "mine": f(), "theirs": f(), "both": f(), "gone-here": f()}
    here = {"same": f(), "mine": f(2, 200), "theirs": f(), "both": f(3, 300), "new-here": f(1, 250)}
    there = {"same": f(), "mine": f(), "theirs": f(4, 210), "both": f(5, 310), "gone-here": f()}
    _, decision = run(here, there, ancestor, "keep-both")
    assert decision.winner is None
    copy = "both.tandem-conflict-a-S"  # there's version is newer: ours (host a) becomes the copy
    assert [(c.path, c.winner, c.copy) for c in decision.conflicts] == [("both", Side.THERE, copy)]
    assert set(decision.push) == {"mine", "new-here", "gone-here", copy}
    assert set(decision.pull) == {"theirs", "both"}


def test_keep_both_keeps_data_over_a_deletion() -> None:
    ancestor = {"x": f()}
    _, decision = run({}, {"x": f(2, 200)}, ancestor, "keep-both")  # deleted here, changed there
    assert decision.pull == ("x",) and not decision.push and not decision.conflicts


def test_manual_halts_with_the_counts_and_nothing_to_do_is_nothing() -> None:
    _, decision = run({"x": f(2, 200)}, {"x": f(3, 300)}, {"x": f()}, "manual")
    assert decision.halt.startswith("split-brain: 1 paths differ (1 conflicts)")
    assert not decision.changes
    _, quiet = run({"x": f()}, {"x": f()}, None, "manual")
    assert quiet == Decision("manual")
    with pytest.raises(ValueError, match="unknown split-brain policy"):
        run({"x": f()}, {"x": f(2)}, None, "coin")


@pytest.mark.parametrize(
    ("here", "there", "ancestor", "halts"),
    [
        ({}, {"x": f()}, None, "SOURCE is empty"),
        ({"": D}, {"x": f()}, {"x": f()}, "SOURCE is empty"),
        ({"x": f()}, {}, {"x": f()}, "DEST is empty"),
        ({"x": f()}, {}, None, ""),  # a first sync to an empty peer
        ({}, {}, None, ""),
        ({"x": f()}, {"y": f()}, None, ""),
    ],
)
def test_safety_halt_for_a_side_that_is_suddenly_empty(here, there, ancestor, halts) -> None:
    reason = safety(here, there, ancestor)
    assert reason.startswith(halts) if halts else reason == ""


def test_conflict_names() -> None:
    assert (
        conflict_name("a/b.txt", "node-b", "20261124T2100Z")
        == "a/b.txt.tandem-conflict-node-b-20261124T2100Z"
    )
    assert conflict_name("top", "h", "S") == "top.tandem-conflict-h-S"


# -- properties --------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c"])


@st.composite
def trees(draw):  # a consistent tree: every parent of an entry is a directory
    tree: dict[str, E] = {}
    for parts in draw(st.lists(st.lists(NAMES, min_size=1, max_size=3), max_size=8)):
        path = "/".join(parts)
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if any(p in tree and tree[p].type != "d" for p in parents) or path in tree:
            continue
        for p in parents:
            tree[p] = D
        if draw(st.booleans()):
            tree[path] = E("f", draw(st.integers(0, 2)), float(draw(st.integers(0, 3))))
        else:
            tree[path] = D
    return tree


def apply(decision: Decision, here: dict[str, E], there: dict[str, E]) -> tuple[dict, dict]:
    """The decision carried out the way the worker does with rsync: renames, pull, push."""
    here, there = dict(here), dict(there)
    for c in decision.conflicts:
        side = here if c.winner is Side.THERE else there
        for p in [p for p in side if p == c.path or p.startswith(c.path + "/")]:
            side[c.copy + p[len(c.path) :]] = side.pop(p)
    for paths, src, dst in ((decision.pull, there, here), (decision.push, here, there)):
        for p in paths:
            if p in src:
                if src[p].type != "d" or (p in dst and dst[p].type != "d"):
                    _remove(dst, p)
                parts = p.split("/")
                for i in range(1, len(parts)):  # rsync --relative makes the parents
                    parent = "/".join(parts[:i])
                    if dst.get(parent, D).type != "d":
                        _remove(dst, parent)
                    dst.setdefault(parent, D)
                dst[p] = src[p]
            else:
                _remove(dst, p)
    return here, there


def _remove(tree: dict[str, E], path: str) -> None:
    for p in [p for p in tree if p == path or p.startswith(path + "/")]:
        del tree[p]


def files(tree: dict[str, E]) -> set[tuple[int, float]]:
    return {(e.size, e.mtime) for e in tree.values() if e.type == "f"}


POLICY = st.sampled_from(["newest", "local", "remote", "keep-both"])


@settings(max_examples=400, deadline=None)
@given(trees(), trees(), st.one_of(st.none(), trees()), POLICY)
def test_applying_a_decision_leaves_two_equal_sides_and_deciding_again_does_nothing(
    here, there, ancestor, policy
) -> None:
    _, decision = run(here, there, ancestor, policy)
    new_here, new_there = apply(decision, here, there)
    assert classify(new_here, new_there, ancestor, W) == []
    _, again = run(new_here, new_there, ancestor, policy)
    assert not again.changes


@settings(max_examples=400, deadline=None)
@given(trees(), trees())
def test_keep_both_without_an_ancestor_loses_no_version(here, there) -> None:
    _, decision = run(here, there, None, "keep-both")
    new_here, new_there = apply(decision, here, there)
    assert files(here) | files(there) <= files(new_here) == files(new_there)


@pytest.mark.parametrize("policy", ["newest", "local", "remote", "keep-both", "manual"])
def test_one_side_changed_is_no_split_brain_whatever_the_policy(policy: str) -> None:
    ancestor = {"x": f(), "y": f()}
    _, theirs = run({"x": f(), "y": f()}, {"x": f(2, 200), "y": f()}, ancestor, policy)
    assert (theirs.winner, theirs.pull, theirs.push, theirs.halt) == (Side.THERE, ("x",), (), "")
    _, ours = run({"x": f(), "y": f(3, 50)}, {"x": f(), "y": f()}, ancestor, policy)
    assert (ours.winner, ours.push, ours.pull, ours.halt) == (Side.HERE, ("y",), (), "")


def test_split_brain_refuses_rsync_arguments_that_skip_files() -> None:
    from pydantic import ValidationError

    from workers.spec import WorkerSpec

    for arg in ("--max-size=1k", "--update", "--exclude=*.tmp"):
        with pytest.raises(ValidationError, match="skip files"):
            WorkerSpec(source="/s", dest="/d", split_brain="newest", rsync_arg=(arg,))
    WorkerSpec(source="/s", dest="/d", rsync_arg=("--max-size=1k",))  # without split-brain: fine
    WorkerSpec(source="/s", dest="/d", split_brain="newest", rsync_arg=("--mkpath", "-z"))
