"""Table test of the worker's own "behind" verdict (time passed in)."""

from __future__ import annotations

import pytest

from workers.status import LAGGING_AFTER, lagging


@pytest.mark.parametrize(
    ("lag", "window", "behind"),
    [
        (0.0, 1.0, False),
        (1.0 + LAGGING_AFTER, 1.0, False),  # a full collect window plus the allowance
        (1.1 + LAGGING_AFTER, 1.0, True),
        (454.0, 1.0, True),  # issue 14: 14 160 paths pending, status "running"
        (100.0, 30.0 + 10.0, False),  # a big file's window (30 s) and sync interval (10 s) allowed for
    ],
)
def test_a_worker_is_behind_once_its_lag_passes_its_window_by_lagging_after(
    lag: float, window: float, behind: bool
) -> None:
    reason = lagging(lag, 14_160, window)
    assert bool(reason) is behind
    if behind:
        assert f"{lag:.0f}s" in reason and "14160 paths pending" in reason
