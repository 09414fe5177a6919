"""A market simulator: geometric Brownian motion per symbol, quoted on several venues.

The core is pure and deterministic: given the same instruments, seed and timestamps it emits
the same messages. Each symbol's reference price follows GBM with its own drift and
volatility; each venue quotes around it with a small mean-reverting offset of its own, so
venues disagree slightly (best bid/offer across venues and arbitrage are meaningful) and now
and then cross (on about 3 % of quotes by default: a crossed market most of the time would
make both meaningless). Spreads and sizes are drawn per quote; a fraction of ticks also
print a trade at the touch.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from bourse.model.instruments import DEFAULT_UNIVERSE, AssetClass, Instrument
from bourse.model.marketdata import MarketData, Quote, Trade
from bourse.model.numbers import from_units, to_units

SECONDS_PER_YEAR = 365.25 * 24 * 3600


class SymbolParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one symbol moves: start price, annual drift and volatility, spread in basis points."""

    start: Decimal
    drift: float = 0.05
    volatility: float = 0.30
    spread_bps: float = 2.0
    venue_dispersion_bps: float = 0.5
    trade_probability: float = 0.3


DEFAULT_PARAMS: dict[str, SymbolParams] = {
    "AAPL": SymbolParams(start=Decimal("190.00"), volatility=0.25),
    "GOOGL": SymbolParams(start=Decimal("140.00"), volatility=0.28),
    "AMZN": SymbolParams(start=Decimal("180.00"), volatility=0.32),
    "MSFT": SymbolParams(start=Decimal("420.00"), volatility=0.22),
    "TSLA": SymbolParams(start=Decimal("250.00"), volatility=0.55, spread_bps=3.0),
    "BTC-USD": SymbolParams(start=Decimal("65000.00"), volatility=0.60, spread_bps=1.0),
    "ETH-USD": SymbolParams(start=Decimal("3200.00"), volatility=0.70, spread_bps=1.5),
}


@dataclass(slots=True)
class _VenueBook:
    venue: str
    offset_bps: float = 0.0
    last_ticks: int = 0
    last_size_lots: int = 0
    volume_lots: int = 0


@dataclass(slots=True)
class _SymbolState:
    instrument: Instrument
    params: SymbolParams
    log_price: float
    tick: float
    tick_units: int
    lot_units: int
    venues: list[_VenueBook] = field(default_factory=list)


class Simulator:
    """Pure simulator core. `tick(now_ns)` advances every symbol and returns the new messages.

    `seq_by_venue` numbers each venue's messages 1, 2, 3... with no gaps, across symbols.
    """

    def __init__(
        self,
        instruments: tuple[Instrument, ...] = DEFAULT_UNIVERSE,
        *,
        params: dict[str, SymbolParams] | None = None,
        seed: int = 0,
        start_ns: int | None = None,
    ) -> None:
        self._rng = random.Random(seed)
        params = params or DEFAULT_PARAMS
        self._symbols: list[_SymbolState] = []
        self.seq_by_venue: dict[str, int] = {}
        for instrument in instruments:
            p = params.get(instrument.symbol) or SymbolParams(start=Decimal(100))
            tick_units = to_units(instrument.tick_size, instrument.price_precision)
            state = _SymbolState(
                instrument=instrument,
                params=p,
                log_price=math.log(float(p.start)),
                tick=float(instrument.tick_size),
                tick_units=tick_units,
                lot_units=to_units(instrument.lot_size, instrument.size_precision),
            )
            for venue in instrument.venues:
                state.venues.append(_VenueBook(venue=venue))
                self.seq_by_venue.setdefault(venue, 0)
            self._symbols.append(state)
        self._last_ns = start_ns

    @property
    def venues(self) -> list[str]:
        return sorted(self.seq_by_venue)

    @property
    def symbols(self) -> list[str]:
        return [s.instrument.symbol for s in self._symbols]

    def reference_price(self, symbol: str) -> float:
        for state in self._symbols:
            if state.instrument.symbol == symbol:
                return math.exp(state.log_price)
        raise KeyError(symbol)

    def tick(self, now_ns: int) -> list[MarketData]:
        """Advance to `now_ns` and quote every symbol on every venue once."""
        # The first tick (no previous time) and clock steps backwards move prices by 1 µs.
        elapsed = 1_000 if self._last_ns is None else max(now_ns - self._last_ns, 1_000)
        dt_years = elapsed / 1e9 / SECONDS_PER_YEAR
        self._last_ns = now_ns
        out: list[MarketData] = []
        for state in self._symbols:
            self._advance(state, dt_years)
            for book in state.venues:
                out.extend(self._quote(state, book, now_ns))
        return out

    def _advance(self, state: _SymbolState, dt: float) -> None:
        p = state.params
        shock = self._rng.gauss(0.0, 1.0)
        state.log_price += (p.drift - 0.5 * p.volatility**2) * dt + p.volatility * math.sqrt(
            dt
        ) * shock

    def _next_seq(self, venue: str) -> int:
        self.seq_by_venue[venue] += 1
        return self.seq_by_venue[venue]

    def _quote(self, state: _SymbolState, book: _VenueBook, now_ns: int) -> list[MarketData]:
        rng, p, inst = self._rng, state.params, state.instrument
        # Each venue's offset mean-reverts towards zero (Ornstein-Uhlenbeck, half-life ~3 ticks).
        book.offset_bps = 0.8 * book.offset_bps + rng.gauss(0.0, p.venue_dispersion_bps * 0.6)
        mid = math.exp(state.log_price) * (1 + book.offset_bps / 1e4)
        half_spread_ticks = max(
            1, round(mid * p.spread_bps / 1e4 * rng.uniform(0.6, 1.6) / 2 / state.tick)
        )
        mid_ticks = round(mid / state.tick)
        bid_ticks = max(1, mid_ticks - half_spread_ticks)
        ask_ticks = mid_ticks + half_spread_ticks
        scale = state.tick_units
        bid_size = self._size_lots(inst)
        ask_size = self._size_lots(inst)
        out: list[MarketData] = []
        if book.last_ticks == 0:
            book.last_ticks, book.last_size_lots = mid_ticks, self._size_lots(inst)
        if rng.random() < p.trade_probability:
            buy = rng.random() < 0.5
            price_ticks = ask_ticks if buy else bid_ticks
            size = max(1, self._size_lots(inst) // 3)
            book.last_ticks, book.last_size_lots = price_ticks, size
            book.volume_lots += size
            out.append(
                Trade(
                    symbol=inst.symbol,
                    venue=book.venue,
                    price=from_units(price_ticks * scale, inst.price_precision),
                    size=from_units(size * state.lot_units, inst.size_precision),
                    side="buy" if buy else "sell",
                    ts=now_ns,
                    seq=self._next_seq(book.venue),
                )
            )
        out.append(
            Quote(
                symbol=inst.symbol,
                venue=book.venue,
                bid=from_units(bid_ticks * scale, inst.price_precision),
                ask=from_units(ask_ticks * scale, inst.price_precision),
                bid_size=from_units(bid_size * state.lot_units, inst.size_precision),
                ask_size=from_units(ask_size * state.lot_units, inst.size_precision),
                last=from_units(book.last_ticks * scale, inst.price_precision),
                last_size=from_units(book.last_size_lots * state.lot_units, inst.size_precision),
                volume=from_units(book.volume_lots * state.lot_units, inst.size_precision),
                ts=now_ns,
                seq=self._next_seq(book.venue),
            )
        )
        return out

    def _size_lots(self, instrument: Instrument) -> int:
        # Log-normal sizes, rounded to lots: mostly small, sometimes large, like real books.
        if instrument.asset_class is AssetClass.CRYPTO:
            return max(1, int(self._rng.lognormvariate(math.log(2_000), 1.0)))
        return max(1, int(self._rng.lognormvariate(math.log(300), 0.8)))
