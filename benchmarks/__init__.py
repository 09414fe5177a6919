"""Ratio benchmarks: each measures Bourse against a peer in the same run on the same machine.

Absolute times on a shared machine are noise; the ratio to a peer measured alongside is the
figure. Every benchmark returns one JSON-able dict with at least `name`, `ratio`, `target`
and `met` (true only when every target of that benchmark holds).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

Result = dict[str, Any]
Benchmark = Callable[[bool], Coroutine[Any, Any, Result]]


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
