"""The engine benchmark's nautilus_trader peer: optional, and doing the same work as ours."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from benchmarks import engine
from bourse.engine.book import OrderBook


async def test_without_nautilus_the_benchmark_still_runs_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "nautilus_trader.core.nautilus_pyo3", None)
    figures = await engine.run(quick=True)
    assert figures["nautilus"] is None
    assert "not importable" in figures["nautilus_not_measured"]
    assert figures["same_events"] is True
    assert figures["met"] == (figures["ratio"] >= engine.TARGET)


@pytest.mark.skipif(
    importlib.util.find_spec("nautilus_trader") is None, reason="nautilus_trader not installed"
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_nautilus_driver_gives_our_events_and_book(seed: int) -> None:
    nautilus, _ = engine._load_nautilus()
    warmup, stream = engine.make_session(seed=seed, resting=200, commands=2_000)
    ours = OrderBook("BENCH")
    _, _, ours_events = engine._time(engine._bourse_calls(ours, warmup, stream), timed=False)
    theirs, calls = engine._nautilus_calls(nautilus, warmup, stream)
    _, _, their_events = engine._time(calls, timed=False)
    assert their_events == ours_events
    assert engine._same_book(ours, theirs)
    assert ours.match_count > 0
