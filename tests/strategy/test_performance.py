"""Drawdown and exposure by hand."""

from __future__ import annotations

from decimal import Decimal

from bourse.strategy.performance import PerformanceTracker

D = Decimal


def test_drawdown_is_the_largest_fall_from_a_peak() -> None:
    tracker = PerformanceTracker(D(100))
    for ts, equity in enumerate((100, 110, 99, 120, 108, 115)):
        tracker.mark(ts, D(equity), D(0))
    # 110 -> 99 is 11 (10 %); 120 -> 108 is 12 (10 %): the larger in money is kept.
    assert (tracker.max_drawdown, tracker.max_drawdown_pct) == (D(12), D("0.100000"))
    assert (tracker.peak, tracker.equity, tracker.initial_equity) == (D(120), D(115), D(100))


def test_exposure_is_the_share_of_time_a_position_was_held() -> None:
    tracker = PerformanceTracker(D(100))
    for ts, position in ((0, 0), (10, 5), (20, 5), (30, 0), (40, 0)):
        tracker.mark(ts, D(100), D(position))
    assert tracker.exposure == D("0.500000")  # held from 10 to 30, of 0 to 40


def test_exposure_counts_ticks_when_they_share_one_time_and_initial_equity_can_wait() -> None:
    tracker = PerformanceTracker(None)
    for position in (0, 1, 1, 0):
        tracker.mark(5, D(250), D(position))
    assert tracker.exposure == D("0.500000")
    assert tracker.initial_equity == D(250) and tracker.max_drawdown == 0
