"""Market-data messages for the analytics tests, with short names and decimal strings."""

from __future__ import annotations

import itertools
from decimal import Decimal

from bourse.feed.simulator import Simulator
from bourse.model.marketdata import MarketData, Quote, Trade

S = 1_000_000_000  # one second in ns
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z
_seq = itertools.count(1)


def trade(
    price: str | Decimal,
    size: str | int | Decimal,
    ts: int,
    *,
    venue: str = "nyse",
    symbol: str = "AAPL",
) -> Trade:
    return Trade(
        symbol=symbol,
        venue=venue,
        price=Decimal(price),
        size=Decimal(size),
        ts=ts,
        seq=next(_seq),
    )


def quote(
    bid: str | Decimal,
    ask: str | Decimal,
    ts: int,
    *,
    venue: str = "nyse",
    symbol: str = "AAPL",
    bid_size: str | int | Decimal = 100,
    ask_size: str | int | Decimal = 100,
) -> Quote:
    return Quote(
        symbol=symbol,
        venue=venue,
        bid=Decimal(bid),
        ask=Decimal(ask),
        bid_size=Decimal(bid_size),
        ask_size=Decimal(ask_size),
        last=Decimal(bid),
        last_size=Decimal(1),
        volume=Decimal(0),
        ts=ts,
        seq=next(_seq),
    )


def simulated(ticks: int, *, seed: int = 1, step_ns: int = 150_000_000) -> list[MarketData]:
    """The simulator's messages for `ticks` rounds of quotes `step_ns` apart from T0."""
    simulator = Simulator(seed=seed)
    return [m for i in range(ticks) for m in simulator.tick(T0 + i * step_ns)]
