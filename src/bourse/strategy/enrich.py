"""Stage 1, enrichment: market-data messages become ticks, ticks get their indicators.

`TickReader` keeps the messages of one symbol on one venue and reads each as a price:
a quote's mid or a trade's price, as `price_source` says (`auto`: mids, and trades only while
the venue has not quoted yet, so a venue that prints both is not counted twice). Depth
messages and other symbols or venues give nothing.

`Enricher` adds the fast and slow simple moving averages of the prices (the analytics SMA,
exact decimals rounded once per value) and the change from the previous tick, absolute and in
basis points (rounded half-even to 0.01 bps).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from bourse.analytics.indicators import Sma
from bourse.analytics.rounding import halve
from bourse.model.marketdata import MarketData, Quote, Trade
from bourse.strategy.config import PriceSource, StrategyConfig
from bourse.strategy.prices import BPS
from bourse.strategy.types import Enriched, Tick

_BPS_QUANTUM = Decimal("0.01")


class TickReader:
    """One symbol on one venue, as ticks numbered from 1 (see the module)."""

    def __init__(self, symbol: str, venue: str, price_source: PriceSource = "auto") -> None:
        self.symbol = symbol
        self.venue = venue
        self.price_source = price_source
        self._quoted = False
        self.count = 0

    def read(self, message: MarketData) -> Tick | None:
        if message.symbol != self.symbol or message.venue != self.venue:
            return None
        match message:
            case Quote() if self.price_source != "trade":
                self._quoted = True
                bid, ask = message.bid, message.ask
                return self._tick(message.ts, halve(bid + ask), bid, ask)
            case Trade() if self.price_source == "trade" or (
                self.price_source == "auto" and not self._quoted
            ):
                return self._tick(message.ts, message.price, None, None)
            case _:
                return None

    def _tick(self, ts: int, price: Decimal, bid: Decimal | None, ask: Decimal | None) -> Tick:
        self.count += 1
        return Tick(
            seq=self.count,
            ts=ts,
            symbol=self.symbol,
            venue=self.venue,
            price=price,
            bid=bid,
            ask=ask,
        )


def change_in_bps(change: Decimal, previous: Decimal) -> Decimal:
    return (change * BPS / previous).quantize(_BPS_QUANTUM, rounding=ROUND_HALF_EVEN)


class Enricher:
    """Fast and slow SMAs of the tick prices and the change since the last tick."""

    def __init__(self, config: StrategyConfig, *, price_places: int) -> None:
        self._fast = Sma(config.fast, price_places=price_places)
        self._slow = Sma(config.slow, price_places=price_places)
        self._previous: Decimal | None = None

    def on_tick(self, tick: Tick) -> Enriched:
        previous, self._previous = self._previous, tick.price
        change = None if previous is None else tick.price - previous
        return Enriched(
            tick=tick,
            fast=self._fast.update(tick.price),
            slow=self._slow.update(tick.price),
            change=change,
            change_bps=None
            if change is None or previous is None
            else change_in_bps(change, previous),
        )
