"""Table tests of the batcher: time is passed in, nothing sleeps."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.workers.naive_batching import NaiveBatcher
from workers.batching import Batch, Batcher, Change, Kind, Move


def content(path: str, size: int = 0) -> Change:
    return Change(Kind.CONTENT, path, size=size)


def test_window_counts_from_first_event_not_last() -> None:
    b = Batcher(delay=1.0)
    b.add(content("a"), now=0.0)
    for t in (0.3, 0.6, 0.9):  # a steady trickle does not push the window out
        b.add(content(f"f{t}"), now=t)
    assert b.take(0.99) is None
    batch = b.take(1.0)
    assert batch is not None and batch.paths == ("a", "f0.3", "f0.6", "f0.9")
    assert b.pending == 0 and b.ready_at() is None


def test_next_window_opens_with_next_event() -> None:
    b = Batcher(delay=0.5)
    b.add(content("a"), 0.0)
    assert b.take(0.5) is not None
    b.add(content("b"), 2.0)
    assert b.ready_at() == 2.5


@pytest.mark.parametrize(
    ("run_end", "interval", "event", "ready"),
    [
        (None, 5.0, 0.0, 1.0),  # no run yet: only the delay counts
        (0.0, 5.0, 0.5, 5.0),  # the interval from the last run's end dominates
        (0.0, 0.5, 2.0, 3.0),  # interval long past: delay dominates
    ],
)
def test_sync_interval(run_end: float | None, interval: float, event: float, ready: float) -> None:
    b = Batcher(delay=1.0, sync_interval=interval)
    if run_end is not None:
        b.ran(run_end)
    b.add(content("a"), event)
    assert b.ready_at() == ready


def test_sub_second_values() -> None:
    b = Batcher(delay=0.05, sync_interval=0.02)
    b.add(content("a"), 10.0)
    assert b.take(10.049) is None
    assert b.take(10.05) is not None


@pytest.mark.parametrize(
    ("threshold", "size", "big"),
    [(0, 10**9, False), (100, 100, False), (100, 101, True)],  # strictly larger; 0 = off
)
def test_bigfile_threshold(threshold: int, size: int, big: bool) -> None:
    b = Batcher(delay=1.0, bigfile_threshold=threshold, bigfile_delay=10.0)
    b.add(content("f", size=size), 0.0)
    batch = b.take(1.0)
    assert (batch is None) is big
    if big:
        assert b.take(9.9) is None
        late = b.take(10.0)
        assert late is not None and late.paths == ("f",)


def test_big_files_held_while_small_ones_go() -> None:
    b = Batcher(delay=1.0, bigfile_threshold=100, bigfile_delay=5.0)
    b.add(content("big", size=1000), 0.0)
    b.add(content("small", size=10), 0.5)
    first = b.take(1.5)
    assert first is not None and first.paths == ("small",)
    assert b.ready_at() == 5.0
    second = b.take(5.0)
    assert second is not None and second.paths == ("big",)


def test_overflow_makes_a_full_batch_that_carries_the_pending_paths() -> None:
    b = Batcher(delay=1.0)
    b.add(content("a"), 0.0)
    b.add(Change(Kind.OVERFLOW), 0.2)
    batch = b.take(1.0)
    assert batch is not None and batch.full and batch.paths == ("a",)  # sent again as changed
    assert batch.oldest == 0.0  # lag keeps the oldest change's age
    assert b.pending == 0


def test_flush_releases_everything_now() -> None:
    b = Batcher(delay=100.0, bigfile_threshold=1, bigfile_delay=100.0)
    b.add(content("a"), 0.0)
    b.add(content("big", size=5), 0.0)
    batch = b.take(0.0, flush=True)
    assert batch is not None and batch.paths == ("a", "big")


def test_flush_with_nothing_pending() -> None:
    assert Batcher().take(0.0, flush=True) is None


def test_directory_walk_and_children_under_a_walk_are_folded() -> None:
    b = Batcher(delay=0.0)
    b.add(Change(Kind.DIR_CREATED, "new", True), 0.0)
    b.add(Change(Kind.DIR_CREATED, "new/sub", True), 0.0)
    b.add(content("new/sub/f"), 0.0)
    batch = b.take(0.0)
    assert batch is not None
    assert batch.walk == frozenset({"new"})
    assert "new/sub" not in batch.walk


def test_delete_of_directory_drops_pending_children() -> None:
    b = Batcher(delay=0.0)
    b.add(content("d/a"), 0.0)
    b.add(content("d/b"), 0.0)
    b.add(Change(Kind.DELETED, "d", True), 0.0)
    batch = b.take(0.0)
    assert batch is not None and batch.paths == ("d",)


def test_rename_moves_pending_paths_and_keeps_the_move() -> None:
    b = Batcher(delay=0.0)
    b.add(content("old/changed"), 0.0)
    b.add(Change(Kind.MOVED, "old", True, dest_path="new"), 0.1)
    batch = b.take(0.1)
    assert batch is not None
    assert batch.moves == (Move("old", "new", True),)
    assert set(batch.paths) == {"old", "new", "new/changed"}
    # the content change before the rename must still be sent under the new name
    assert "new/changed" not in batch.moved_only
    assert batch.moved_only == frozenset({"new"})


def test_rename_chain_keeps_order() -> None:
    b = Batcher(delay=0.0)
    b.add(Change(Kind.MOVED, "a", True, dest_path="b"), 0.0)
    b.add(Change(Kind.MOVED, "b", True, dest_path="c"), 0.0)
    batch = b.take(0.0)
    assert batch is not None
    assert batch.moves == (Move("a", "b", True), Move("b", "c", True))
    assert "c" in batch.moved_only


def test_rename_onto_a_changed_path_is_not_moved_only() -> None:
    b = Batcher(delay=0.0)
    b.add(content("b"), 0.0)
    b.add(Change(Kind.MOVED, "a", False, dest_path="b"), 0.0)
    batch = b.take(0.0)
    assert batch is not None and "b" not in batch.moved_only


def test_requeue_keeps_age_and_walks() -> None:
    b = Batcher(delay=1.0)
    failed = Batch(paths=("x", "y"), walk=frozenset({"y"}), oldest=3.0)
    b.requeue(failed, now=10.0)
    assert b.oldest() == 3.0
    batch = b.take(11.0)
    assert batch is not None and batch.paths == ("x", "y") and batch.walk == frozenset({"y"})


def test_requeue_only_failed_paths() -> None:
    b = Batcher(delay=0.0)
    b.requeue(Batch(paths=("x", "y", "z"), oldest=1.0), 2.0, paths=("y",))
    batch = b.take(2.0)
    assert batch is not None and batch.paths == ("y",)


def test_requeue_full_batch_stays_full() -> None:
    b = Batcher(delay=0.0)
    b.requeue(Batch(full=True, oldest=1.0), 2.0)
    batch = b.take(2.0)
    assert batch is not None and batch.full and batch.oldest == 1.0


def test_pending_and_lag() -> None:
    b = Batcher(delay=5.0)
    assert b.oldest() is None
    b.add(content("a"), 1.0)
    b.add(content("a"), 2.0)  # the same path again: one pending, age of the first
    assert b.pending == 1 and b.oldest() == 1.0


def test_rename_goes_with_the_first_batch_even_a_big_one() -> None:
    # A big file renamed before its window closed: its DEST rename must happen
    # before (or with) the big transfer, never after it over the new content.
    b = Batcher(delay=2.0, bigfile_threshold=100, bigfile_delay=0.3)
    b.add(content("a", size=1000), 0.0)
    b.add(Change(Kind.MOVED, "a", False, dest_path="b"), 0.1)
    first = b.take(0.3)
    assert first is not None and first.moves == (Move("a", "b", False),) and "b" in first.paths
    later = b.take(2.1)
    assert later is not None and later.moves == ()


def test_parked_paths_wait_for_their_own_backoff_and_keep_their_age() -> None:
    b = Batcher(delay=1.0)
    b.park(["locked"], since=5.0, now=10.0, retry_delay=1.0, max_delay=30.0)
    assert b.pending == 1 and b.oldest() == 5.0  # counted in pending and lag
    b.add(Change(Kind.CONTENT, "other"), 10.0)
    batch = b.take(11.0)  # other's window is over; locked's backoff too (due 11.0)
    assert batch is not None and batch.paths == ("locked", "other") and batch.oldest == 5.0
    b.park(["locked"], since=batch.oldest, now=11.0, retry_delay=1.0, max_delay=30.0)
    assert b.ready_at() == 13.0  # second failure: 2 s
    b.add(Change(Kind.CONTENT, "new"), 11.5)
    batch = b.take(12.5)
    assert batch is not None and batch.paths == ("new",)  # the parked path does not hold it back
    b.settled(["locked"])  # sent by some run: its next failure starts from 1 s again
    b.park(["locked"], since=5.0, now=20.0, retry_delay=1.0, max_delay=30.0)
    assert b.ready_at() == 21.0


def test_parked_backoff_is_capped_and_flush_takes_parked_paths() -> None:
    b = Batcher(delay=1.0)
    for _ in range(10):
        b.park(["x"], since=0.0, now=100.0, retry_delay=1.0, max_delay=30.0)
    assert b.ready_at() == 130.0
    batch = b.take(100.0, flush=True)  # a stop tries them once more
    assert batch is not None and batch.paths == ("x",)
    assert b.pending == 0


def test_a_full_batch_covers_parked_paths_and_a_parked_directory_is_walked() -> None:
    b = Batcher(delay=1.0)
    b.park(["dir"], since=0.0, now=0.0, retry_delay=5.0, max_delay=30.0, walk=frozenset({"dir"}))
    b.request_full(1.0)
    batch = b.take(2.0)
    assert batch is not None and batch.full and b.pending == 0 and batch.oldest == 0.0
    b.park(["dir"], since=0.0, now=3.0, retry_delay=1.0, max_delay=30.0, walk=frozenset({"dir"}))
    batch = b.take(100.0)
    assert batch is not None and batch.walk == frozenset({"dir"})


def test_a_full_batch_carries_the_pending_paths_and_a_failed_one_keeps_them() -> None:
    b = Batcher(delay=1.0)
    b.add(Change(Kind.CONTENT, "edited"), 0.0)
    b.add(Change(Kind.OVERFLOW), 0.5)
    batch = b.take(2.0)
    assert batch is not None and batch.full and batch.paths == ("edited",)
    b.requeue(batch, 3.0)  # the full run failed
    again = b.take(5.0)
    assert again is not None and again.full and again.paths == ("edited",) and again.oldest == 0.0


# -- the index against the batcher as it was (a scan of every pending path) ------------

# Names around '/' in sort order ('-' and '.' before it, '0' after it): a prefix
# question answered from sorted keys must stop exactly at the directory's end.
_NAMES = st.sampled_from(["a", "b", "a-b", "a.b", "a0"])
_PATHS = st.lists(_NAMES, min_size=1, max_size=3).map("/".join)
_STEPS = st.one_of(
    st.tuples(st.just("content"), _PATHS, st.sampled_from([0, 500])),
    st.tuples(st.just("dir"), _PATHS),
    st.tuples(st.just("delete"), _PATHS),
    st.tuples(st.just("move"), _PATHS, _PATHS, st.booleans()),
    st.tuples(st.just("overflow")),
    st.tuples(st.just("take"), st.booleans()),
    st.tuples(st.just("requeue")),
    st.tuples(st.just("park"), _PATHS),
    st.tuples(st.just("oldest")),
)


def _change(step: tuple[Any, ...]) -> Change | None:
    kind = step[0]
    if kind == "content":
        return Change(Kind.CONTENT, step[1], size=step[2])
    if kind == "dir":
        return Change(Kind.DIR_CREATED, step[1], True)
    if kind == "delete":
        return Change(Kind.DELETED, step[1])
    if kind == "move":
        old, new = step[1], step[2]
        if new == old or new.startswith(old + "/") or old.startswith(new + "/"):
            return None  # no rename does that
        return Change(Kind.MOVED, old, step[3], dest_path=new)
    if kind == "overflow":
        return Change(Kind.OVERFLOW)
    return None


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(st.tuples(_STEPS, st.floats(0.0, 0.7)), max_size=40))
def test_the_indexed_batcher_answers_as_the_scanning_one(steps: list[tuple[tuple[Any, ...], float]]) -> None:
    args: dict[str, Any] = {"delay": 0.5, "bigfile_threshold": 100, "bigfile_delay": 2.0}
    fast, model = Batcher(**args), NaiveBatcher(**args)
    now = 0.0
    last: Batch | None = None
    for step, dt in steps:
        now += dt
        change = _change(step)
        if change is not None:
            fast.add(change, now)
            model.add(change, now)
        elif step[0] == "take":
            last = fast.take(now, flush=step[1])
            assert _plain(last) == model.take(now, flush=step[1])
        elif step[0] == "requeue" and last is not None:
            fast.requeue(last, now)
            model.requeue(last, now)
        elif step[0] == "park":
            for b in (fast, model):
                b.park([step[1]], now - 1.0, now, retry_delay=0.5, max_delay=4.0)
        assert (fast.pending, fast.oldest(), fast.ready_at()) == (
            model.pending,
            model.oldest(),
            model.ready_at(),
        )
    assert _plain(fast.take(now, flush=True)) == model.take(now, flush=True)


def _plain(batch: Batch | None) -> Batch | None:
    """BATCH without its suspect names (the scanning batcher had none)."""
    return None if batch is None else replace(batch, suspect=frozenset())


def test_a_storm_past_max_pending_becomes_one_full_batch_that_keeps_what_was_recorded() -> None:
    b = Batcher(delay=1.0, max_pending=3)
    for i, name in enumerate(["a", "b", "c", "d", "e"]):
        b.add(content(name), float(i))
    b.add(content("a"), 5.0)  # already pending: recorded as before
    b.add(Change(Kind.DELETED, "a"), 5.0)
    assert b.pending == 4 and b.oldest() == 0.0  # a, b, c and the full batch; d and e left to it
    batch = b.take(4.0)
    assert batch == Batch(paths=("a", "b", "c"), full=True, oldest=0.0)
    b.requeue(Batch(paths=batch.paths, oldest=batch.oldest), 5.0)  # the full run hands them back
    b.add(content("f"), 5.0)  # a new count: no second full batch
    again = b.take(6.0)
    assert again is not None and not again.full and again.paths == ("a", "b", "c", "f")


def test_a_storm_of_deletions_costs_what_it_touches() -> None:
    """50 000 pending paths, then 2 000 deletions of other paths and 200 renames
    (lag asked after each): 0.03 s; a scan of every pending path per change took 6 s."""
    b = Batcher(delay=1.0, max_pending=100_000)
    for i in range(50_000):
        b.add(content(f"keep/{i % 100}/f{i}"), 0.0)
    started = time.process_time()
    for i in range(2_000):
        b.add(Change(Kind.DELETED, f"gone/{i}"), 1.0)
    for i in range(200):
        b.add(Change(Kind.MOVED, f"keep/{i % 100}/f{i}", dest_path=f"moved/f{i}"), 1.0)
        b.oldest()
    assert time.process_time() - started < 1.0
    batch = b.take(2.0)
    assert batch is not None and len(batch.paths) == 50_000 + 2_000 + 200


def moved(old: str, new: str, seen: float, is_dir: bool = False) -> Change:
    return Change(Kind.MOVED, old, is_dir, dest_path=new, seen=seen)


@pytest.mark.parametrize(
    ("read", "end", "seen", "suspect"),
    [
        (("app.log", "b"), 10.0, 9.0, {"app.log.1"}),  # seen while the run went on
        (("app.log",), 10.0, 14.9, {"app.log.1"}),  # seen within event_lag of its end
        (("app.log",), 10.0, 3.0, {"app.log.1"}),  # seen before it started, taken in after it
        (("app.log",), 10.0, 15.1, set()),  # seen later: the run read it before the rename
        (("app.lo", "app.log.1", "app.log/x"), 10.0, 9.0, set()),  # the run did not read it
        (None, 10.0, 9.0, {"app.log.1"}),  # a full run reads everything
        (("app.log",), None, 9.0, {"app.log.1"}),  # taken in while the run goes on (a retry's backoff)
    ],
)
def test_a_rename_a_run_may_have_read_after_it_happened_is_suspect(
    read: tuple[str, ...] | None, end: float | None, seen: float, suspect: set[str]
) -> None:
    b = Batcher(delay=0.0, event_lag=5.0)
    b.reading(read or (), everything=read is None)
    if end is not None:
        b.ran(end)
    b.add(moved("app.log", "app.log.1", seen), now=30.0)  # applied late: when it was seen counts
    batch = b.take(30.0)
    assert batch is not None and batch.suspect == frozenset(suspect)
    b.add(moved("b", "c", 31.0), now=31.0)
    later = b.take(31.0)
    assert later is not None and later.suspect == frozenset()  # handed out once, with its move


@pytest.mark.parametrize(
    ("read", "suspect"),
    [
        (("d/x", "d/sub/y", "d-other", "dd/z", "d"), {"e/x", "e/sub/y"}),  # what was read below it
        (("d",), set()),  # a listed directory: its attributes, not its files
        (("d-other", "dd/z"), set()),
        (None, {"e"}),  # everything: the whole tree (the runner compares all below)
    ],
)
def test_a_renamed_directory_suspects_what_was_read_below_it(
    read: tuple[str, ...] | None, suspect: set[str]
) -> None:
    b = Batcher(delay=0.0)
    b.reading(read or (), everything=read is None)
    b.ran(10.0)
    b.add(moved("d", "e", 10.5, is_dir=True), now=10.5)
    batch = b.take(10.5)
    assert batch is not None and batch.suspect == frozenset(suspect)


def test_suspect_names_follow_later_renames_and_go_with_a_full_batch() -> None:
    b = Batcher(delay=1.0)
    b.reading(["a", "z"])
    b.ran(1.0)
    b.add(moved("a", "b", 1.5), 1.5)
    b.add(moved("d", "e", 2.0, is_dir=True), 2.0)
    b.add(moved("b", "e/b", 2.1), 2.1)  # not a read name itself, but it holds what was read
    batch = b.take(5.0)
    assert batch is not None and batch.suspect == frozenset({"e/b"})
    b.add(moved("z", "y", 5.0), 5.0)
    b.request_full(5.0)
    full = b.take(6.0)  # moves are not repeated: the full compare and the pending paths cover them
    assert full is not None and full.full and full.suspect == frozenset()
    b.add(moved("q", "r", 6.5), 6.5)
    batch = b.take(7.5)
    assert batch is not None and batch.suspect == frozenset()


def test_a_run_is_forgotten_once_a_change_seen_after_its_window_came() -> None:
    b = Batcher(delay=0.0, event_lag=5.0)
    b.reading(["a"])
    b.ran(10.0)
    b.add(Change(Kind.CONTENT, "x", seen=16.0), 16.0)
    b.add(moved("a", "b", 14.0), 16.0)  # cannot happen (seen in order): shows the run is gone
    batch = b.take(16.0)
    assert batch is not None and batch.suspect == frozenset()


def test_a_parked_path_renamed_is_suspect_under_its_new_name() -> None:
    """A run failed to send it: DEST's copy, renamed at DEST, is the old version."""
    b = Batcher(delay=0.0)
    b.park(["d/f", "g"], since=0.0, now=0.0, retry_delay=60.0, max_delay=60.0)
    b.add(moved("d", "e", 1.0, is_dir=True), 1.0)
    b.add(moved("g", "h", 1.0), 1.0)
    batch = b.take(1.0)
    assert batch is not None and batch.suspect == frozenset({"e/f", "h"})
