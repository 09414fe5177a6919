"""Market data and ticks for the strategy tests: made here, deterministic, small."""

from __future__ import annotations

import math
import random
from decimal import Decimal

from bourse.model import marketdata
from bourse.model.instruments import Instrument, universe_by_symbol
from bourse.strategy.types import Tick

AAPL: Instrument = universe_by_symbol()["AAPL"]
BTC: Instrument = universe_by_symbol()["BTC-USD"]
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SECOND = 1_000_000_000


def tick(
    price: str,
    *,
    seq: int = 1,
    ts: int = T0,
    bid: str | None = None,
    ask: str | None = None,
    symbol: str = "AAPL",
) -> Tick:
    return Tick(
        seq=seq,
        ts=ts,
        symbol=symbol,
        venue="nyse",
        price=Decimal(price),
        bid=None if bid is None else Decimal(bid),
        ask=None if ask is None else Decimal(ask),
    )


def quote(
    mid: Decimal, n: int, *, venue: str = "nyse", symbol: str = "AAPL", half: str = "0.01"
) -> marketdata.Quote:
    spread = Decimal(half)
    return marketdata.Quote(
        symbol=symbol,
        venue=venue,
        bid=mid - spread,
        ask=mid + spread,
        bid_size=Decimal(100),
        ask_size=Decimal(100),
        last=mid,
        last_size=Decimal(1),
        volume=Decimal(1000),
        ts=T0 + n * SECOND,
        seq=n + 1,
    )


def wave(count: int, *, seed: int = 1, venue: str = "nyse") -> list[marketdata.Quote]:
    """Quotes of AAPL swinging around 100 (a few crossovers a hundred ticks), on the cent."""
    rng = random.Random(seed)
    quotes = []
    for n in range(count):
        level = 100 + 3 * math.sin(n / 12) + rng.uniform(-0.3, 0.3) + n * 0.01
        mid = Decimal(f"{level:.2f}")
        quotes.append(quote(mid, n, venue=venue))
    return quotes


def csv_text(quotes: list[marketdata.Quote]) -> str:
    """The same quotes in the feed's CSV format (ts in ns)."""
    lines = ["ts,symbol,venue,bid,ask,bid_size,ask_size"]
    for q in quotes:
        lines.append(f"{q.ts},{q.symbol},{q.venue},{q.bid},{q.ask},{q.bid_size},{q.ask_size}")
    return "\n".join(lines) + "\n"
