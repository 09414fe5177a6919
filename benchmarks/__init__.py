"""Ratio benchmarks: each measures Bourse against a peer in the same run on the same machine.

Absolute times on a shared machine are noise; the ratio to a peer measured alongside is the
figure. Every benchmark returns one JSON-able dict with at least `name`, `ratio`, `target`
and `met` (true only when every target of that benchmark holds), decided on the figures
as printed (`at_least`, `at_most`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Any

Result = dict[str, Any]
Benchmark = Callable[[bool], Coroutine[Any, Any, Result]]


def at_least(ratio: float, places: int = 3) -> float:
    """A ratio with an at-least target as reported: rounded down, so the figure never
    overstates it and `met` (the figure >= the target) agrees with what is printed."""
    scale = float(10**places)
    return math.floor(round(ratio * scale, 6)) / scale


def at_most(ratio: float, places: int = 2) -> float:
    """A ratio with an at-most target as reported: rounded up (see `at_least`)."""
    scale = float(10**places)
    return math.ceil(round(ratio * scale, 6)) / scale


def registry() -> dict[str, Benchmark]:
    """Name -> benchmark coroutine taking `quick` (a short run for smoke tests)."""
    from benchmarks import analytics, dashboard, engine, fanout, feed, history, orders

    return {
        "feed": feed.run,
        "engine": engine.run,
        "orders": orders.run,
        "fanout": fanout.run,
        "analytics": analytics.run,
        "history": history.run,
        "dashboard": dashboard.run,
    }
