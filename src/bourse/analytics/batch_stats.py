"""Per-symbol statistics over a batch of market data: count, volume, VWAP, high and low.

A pure core: no I/O, no clock. Trades contribute their `price` and `size`; quotes their
`last` and `last_size` (the venue's last print, which a quote repeats until the next one, so a
batch of quotes weights a print once per quote that carries it). Notional and volume are
summed exactly; only the VWAP, a ratio, is rounded (to `VWAP_DIGITS` significant digits,
half-even). Rounding is monotonic, so the VWAP stays within [low, high].
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from bourse.model.marketdata import MarketData, Quote, Trade

VWAP_DIGITS = 28


class SymbolStats(msgspec.Struct, frozen=True, kw_only=True):
    """One symbol's statistics over a batch.

    `vwap` is None when no size traded (every print had size zero); `high` and `low` still
    cover those prints' prices.
    """

    symbol: str
    count: int
    volume: Decimal
    notional: Decimal
    vwap: Decimal | None
    high: Decimal
    low: Decimal


@dataclass(slots=True)
class _Running:
    count: int
    volume: Decimal
    notional: Decimal
    high: Decimal
    low: Decimal


def _print_of(message: MarketData) -> tuple[Decimal, Decimal] | None:
    match message:
        case Trade(price=price, size=size):
            return price, size
        case Quote(last=price, last_size=size):
            return price, size
        case _:
            return None  # depth snapshots carry no print


class BatchStats:
    """Accumulates market data and reports per-symbol `SymbolStats`.

    `add` may be called any number of times; `result` can be read at any point and does not
    reset the accumulator.
    """

    def __init__(self) -> None:
        self._symbols: dict[str, _Running] = {}
        # Exact sums: enough precision that no product or sum is ever rounded.
        self._exact = decimal.Context(
            prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN
        )

    def add(self, message: MarketData) -> None:
        printed = _print_of(message)
        if printed is None:
            return
        price, size = printed
        notional = self._exact.multiply(price, size)
        running = self._symbols.get(message.symbol)
        if running is None:
            self._symbols[message.symbol] = _Running(1, size, notional, price, price)
            return
        running.count += 1
        running.volume = self._exact.add(running.volume, size)
        running.notional = self._exact.add(running.notional, notional)
        running.high = max(running.high, price)
        running.low = min(running.low, price)

    def extend(self, messages: Iterable[MarketData]) -> None:
        for message in messages:
            self.add(message)

    def result(self) -> dict[str, SymbolStats]:
        """Statistics per symbol, in the order symbols were first seen."""
        ratio = decimal.Context(prec=VWAP_DIGITS, rounding=decimal.ROUND_HALF_EVEN)
        return {
            symbol: SymbolStats(
                symbol=symbol,
                count=running.count,
                volume=running.volume,
                notional=running.notional,
                vwap=ratio.divide(running.notional, running.volume) if running.volume else None,
                high=running.high,
                low=running.low,
            )
            for symbol, running in self._symbols.items()
        }


def batch_stats(messages: Iterable[MarketData]) -> dict[str, SymbolStats]:
    """Per-symbol statistics of `messages` (see `BatchStats`)."""
    stats = BatchStats()
    stats.extend(messages)
    return stats.result()
