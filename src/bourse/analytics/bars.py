"""Time bars per symbol, venue and timeframe: OHLC, volume, trade count and VWAP. A pure core.

    builder = BarBuilder(["1s", "1Min", "5Min", "1Hour"])
    closed = builder.on_message(message)   # bars that this message closed
    closed += builder.flush(now_ns)        # bars whose time is over, in a quiet market too

**What a bar is.** A bar of timeframe `tf` covers `[start_ts, end_ts)`, aligned to the epoch
(see `timeframes`). It is built from the venue's trades: open and close are the earliest and
latest prints by timestamp (ties by arrival), high and low the extremes, `volume` the sum of
sizes, `trade_count` the number of prints and `vwap` the volume-weighted price (`None` when the
prints had no size; rounding as in `rounding.divide`). A venue that printed nothing in the bar
but quoted gets a bar from its quotes' mid-prices instead: `source="quotes"`, volume 0,
`trade_count` 0, `vwap` None. A venue that sent nothing in the bar gets no bar (as Alpaca: no
activity, no bar); a consumer that wants a continuous series carries the last close forward.

**When a bar closes.** When a message of the same symbol and venue falls in a later bar, or
when `flush(now_ns)` is called with `now_ns` at or past the bar's end. The shell calls
`flush` on its (injected) clock, less any lateness it wants to allow, so bars close on time
in a quiet market; a replay calls it with the replayed time. Bars are therefore a function of
the messages alone: building them live (messages interleaved with flushes at times no later
than the next message) or from a replay gives the same bars.

**Late data.** The finest timeframe is the unit of accumulation (every other timeframe is an
exact roll-up of it, so a 1-minute bar always equals its sixty 1-second bars). A message older
than the open finest bar of its symbol and venue, or than the end of the last closed one, is
late: it is dropped and counted in `late`, and never changes a bar already published. Order
within the open bar does not matter.

**Restart.** `snapshot()` serialises the open bars (JSON bytes) and `BarBuilder.restore`
resumes from them: snapshot, restore and the rest of the stream give the same bars as one pass.

**Proposed subject:** `analytics.bars.<timeframe>.<venue>.<symbol>` (for instance
`analytics.bars.1Min.nyse.AAPL`; `analytics.bars.1Min.*.AAPL` is every venue's minute bars of
AAPL), in an ANALYTICS stream over `analytics.>`; the message id
`bar.<timeframe>.<venue>.<symbol>.<start_ts>` makes a republished bar a duplicate JetStream
drops. Alpaca's bar fields are `t`=start_ts, `o`, `h`, `l`, `c`, `v`=volume,
`n`=trade_count, `vw`=vwap. See docs/analytics.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from math import gcd
from typing import Literal

import msgspec

from bourse.analytics.rounding import EXACT, PricePlaces, divide, halve
from bourse.analytics.timeframes import DEFAULT_TIMEFRAMES, Timeframe, as_timeframe
from bourse.errors import ConfigError
from bourse.model.marketdata import MarketData, Quote, Trade

BarSource = Literal["trades", "quotes"]

_ZERO = Decimal(0)


class Bar(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="bar"):
    """One closed bar of one symbol on one venue (see the module for the rules)."""

    symbol: str
    venue: str
    timeframe: str  # canonical name, e.g. "1Min"
    start_ts: int  # ns since the epoch, inclusive (Alpaca's `t`)
    end_ts: int  # ns, exclusive
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trade_count: int
    vwap: Decimal | None
    source: BarSource  # "quotes": no trade in the bar, prices are quote mid-prices


class _Prices(msgspec.Struct, kw_only=True):
    """OHLC, with the timestamps that decide which price opens and which closes."""

    open: Decimal
    open_ts: int
    high: Decimal
    low: Decimal
    close: Decimal
    close_ts: int

    def add(self, price: Decimal, ts: int) -> None:
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        if ts < self.open_ts:
            self.open, self.open_ts = price, ts
        if ts >= self.close_ts:
            self.close, self.close_ts = price, ts

    def merge(self, later: _Prices) -> None:
        """Fold in the prices of a later stretch of time."""
        self.high = max(self.high, later.high)
        self.low = min(self.low, later.low)
        if later.open_ts < self.open_ts:
            self.open, self.open_ts = later.open, later.open_ts
        if later.close_ts >= self.close_ts:
            self.close, self.close_ts = later.close, later.close_ts


def _first(price: Decimal, ts: int) -> _Prices:
    return _Prices(open=price, open_ts=ts, high=price, low=price, close=price, close_ts=ts)


class _Bucket(msgspec.Struct, kw_only=True):
    """What one bar has accumulated: trades, and quote mids in case there is no trade.

    Mids are kept doubled (bid + ask) and halved when the bar is made: exact, and one
    division per bar rather than per quote.
    """

    start: int
    trades: _Prices | None = None
    trade_count: int = 0
    volume: Decimal = _ZERO
    notional: Decimal = _ZERO
    double_mids: _Prices | None = None

    def add_trade(self, price: Decimal, size: Decimal, ts: int) -> None:
        if self.trades is None:
            self.trades = _first(price, ts)
        else:
            self.trades.add(price, ts)
        self.trade_count += 1
        self.volume = EXACT.add(self.volume, size)
        self.notional = EXACT.add(self.notional, EXACT.multiply(price, size))

    def add_double_mid(self, bid_plus_ask: Decimal, ts: int) -> None:
        if self.double_mids is None:
            self.double_mids = _first(bid_plus_ask, ts)
        else:
            self.double_mids.add(bid_plus_ask, ts)

    def merge(self, later: _Bucket) -> None:
        if later.trades is not None:
            if self.trades is None:
                self.trades = msgspec.structs.replace(later.trades)
            else:
                self.trades.merge(later.trades)
        if later.double_mids is not None:
            if self.double_mids is None:
                self.double_mids = msgspec.structs.replace(later.double_mids)
            else:
                self.double_mids.merge(later.double_mids)
        self.trade_count += later.trade_count
        self.volume = EXACT.add(self.volume, later.volume)
        self.notional = EXACT.add(self.notional, later.notional)


class _Series(msgspec.Struct, kw_only=True):
    """One symbol on one venue: the open finest bucket and the open coarser ones."""

    symbol: str
    venue: str
    closed_through: int = 0  # end of the last closed finest bucket: older messages are late
    base: _Bucket | None = None
    higher: dict[str, _Bucket] = msgspec.field(default_factory=dict)


class _Snapshot(msgspec.Struct, kw_only=True):
    version: int = 1
    timeframes: list[str]
    late: int
    series: list[_Series]


_snapshot_encoder = msgspec.json.Encoder()
_snapshot_decoder = msgspec.json.Decoder(_Snapshot)


class BarBuilder:
    """Builds bars for every configured timeframe from trades and quotes (see the module)."""

    def __init__(
        self,
        timeframes: Iterable[Timeframe | str] = DEFAULT_TIMEFRAMES,
        *,
        price_places: Callable[[str], int] | None = None,
    ) -> None:
        ordered = sorted({as_timeframe(t) for t in timeframes})
        if not ordered:
            raise ConfigError("timeframes", [], "at least one timeframe, e.g. 1Min")
        self.timeframes: tuple[Timeframe, ...] = tuple(ordered)
        # Accumulate at the greatest common width; every timeframe is a roll-up of it.
        self._base_width = gcd(*(t.width_ns for t in ordered))
        finest = ordered[0]
        self._base_timeframe = finest if finest.width_ns == self._base_width else None
        self._higher = tuple((t, str(t)) for t in ordered if t != self._base_timeframe)
        self._places = price_places or PricePlaces()
        self._series: dict[tuple[str, str], _Series] = {}
        self.late = 0

    def on_message(self, message: MarketData) -> list[Bar]:
        """Take a trade or quote (depth is ignored); return the bars it closed."""
        match message:
            case Trade():
                return self.on_trade(message)
            case Quote():
                return self.on_quote(message)
            case _:
                return []

    def on_trade(self, trade: Trade) -> list[Bar]:
        """Take a trade; return the bars it closed."""
        return self.on_trade_as(trade, trade.venue)

    def on_quote(self, quote: Quote) -> list[Bar]:
        """Take a quote (its mid counts only if the bar has no trade); return bars it closed."""
        return self.on_quote_as(quote, quote.venue)

    def on_trade_as(self, trade: Trade, venue: str) -> list[Bar]:
        """`on_trade` as if `venue` had printed it: with a pseudo-venue every venue's trades
        and quotes go to, consolidated bars (see docs/analytics.md)."""
        # The hot path: a message in the open finest bucket of its series closes nothing.
        ts = trade.ts
        series = self._series.get((trade.symbol, venue))
        if series is not None:
            base = series.base
            if base is not None and 0 <= ts - base.start < self._base_width:
                base.add_trade(trade.price, trade.size, ts)
                return []
        bucket, closed = self._bucket_for(trade.symbol, venue, ts)
        if bucket is not None:
            bucket.add_trade(trade.price, trade.size, ts)
        return closed

    def on_quote_as(self, quote: Quote, venue: str) -> list[Bar]:
        """`on_quote` as if `venue` had quoted it (see `on_trade_as`)."""
        ts = quote.ts
        series = self._series.get((quote.symbol, venue))
        if series is not None:
            base = series.base
            if base is not None and 0 <= ts - base.start < self._base_width:
                bucket: _Bucket | None = base
                closed: list[Bar] = []
            else:
                bucket, closed = self._bucket_for(quote.symbol, venue, ts)
        else:
            bucket, closed = self._bucket_for(quote.symbol, venue, ts)
        # A bucket with a trade is a trade bar, in every roll-up too: its mids are never used.
        if bucket is not None and bucket.trades is None:
            bucket.add_double_mid(EXACT.add(quote.bid, quote.ask), ts)
        return closed

    def flush(self, now_ns: int) -> list[Bar]:
        """Close every bar whose end is at or before `now_ns`; return them."""
        closed: list[Bar] = []
        for series in self._series.values():
            base = series.base
            if base is not None and base.start + self._base_width <= now_ns:
                self._close_base(series, closed)
            self._close_higher(series, now_ns, closed)
        return closed

    def partial(self, symbol: str, venue: str, timeframe: Timeframe | str) -> Bar | None:
        """The bar in progress (not closed yet), or None when it has nothing yet."""
        tf = as_timeframe(timeframe)
        if tf not in self.timeframes:
            accepted = ", ".join(str(t) for t in self.timeframes)
            raise ConfigError("timeframe", str(timeframe), f"one of the built ones: {accepted}")
        series = self._series.get((symbol, venue))
        if series is None:
            return None
        parts = [series.higher.get(str(tf)) if tf != self._base_timeframe else None, series.base]
        present = [part for part in parts if part is not None]
        if not present:
            return None
        bucket = _Bucket(start=tf.start_of(present[0].start))
        for part in present:
            bucket.merge(part)
        return self._bar(series, tf, bucket)

    def snapshot(self) -> bytes:
        """The open bars and counters, as JSON bytes for `restore`."""
        return _snapshot_encoder.encode(
            _Snapshot(
                timeframes=[str(t) for t in self.timeframes],
                late=self.late,
                series=list(self._series.values()),
            )
        )

    @classmethod
    def restore(
        cls, snapshot: bytes, *, price_places: Callable[[str], int] | None = None
    ) -> BarBuilder:
        """A builder that carries on from `snapshot` (see `snapshot`)."""
        state = _snapshot_decoder.decode(snapshot)
        builder = cls(state.timeframes, price_places=price_places)
        builder.late = state.late
        builder._series = {(s.symbol, s.venue): s for s in state.series}
        return builder

    def _bucket_for(self, symbol: str, venue: str, ts: int) -> tuple[_Bucket | None, list[Bar]]:
        series = self._series.get((symbol, venue))
        if series is None:
            series = self._series[(symbol, venue)] = _Series(symbol=symbol, venue=venue)
        start = ts - ts % self._base_width
        closed: list[Bar] = []
        base = series.base
        if base is not None:
            if start == base.start:
                return base, closed
            if start < base.start:
                self.late += 1
                return None, closed
            self._close_base(series, closed)
        elif ts < series.closed_through:
            self.late += 1
            return None, closed
        self._close_higher(series, start, closed)
        series.base = _Bucket(start=start)
        return series.base, closed

    def _close_base(self, series: _Series, closed: list[Bar]) -> None:
        base = series.base
        assert base is not None
        series.base = None
        series.closed_through = base.start + self._base_width
        if self._base_timeframe is not None:
            closed.append(self._bar(series, self._base_timeframe, base))
        # Every open coarser bucket contains this one: `_close_higher` ran when it opened.
        for tf, name in self._higher:
            bucket = series.higher.get(name)
            if bucket is None:
                bucket = series.higher[name] = _Bucket(start=tf.start_of(base.start))
            bucket.merge(base)

    def _close_higher(self, series: _Series, before: int, closed: list[Bar]) -> None:
        for tf, name in self._higher:
            bucket = series.higher.get(name)
            if bucket is not None and bucket.start + tf.width_ns <= before:
                del series.higher[name]
                closed.append(self._bar(series, tf, bucket))

    def _bar(self, series: _Series, tf: Timeframe, bucket: _Bucket) -> Bar:
        source: BarSource
        vwap: Decimal | None = None
        if bucket.trades is not None:
            source, prices = "trades", bucket.trades
            ohlc = (prices.open, prices.high, prices.low, prices.close)
            if bucket.volume:
                places = self._places(series.symbol)
                vwap = divide(bucket.notional, bucket.volume, price_places=places)
        else:
            # A bucket exists only once a message landed in it: trades or quotes.
            assert bucket.double_mids is not None
            source, doubled = "quotes", bucket.double_mids
            ohlc = (
                halve(doubled.open),
                halve(doubled.high),
                halve(doubled.low),
                halve(doubled.close),
            )
        return Bar(
            symbol=series.symbol,
            venue=series.venue,
            timeframe=str(tf),
            start_ts=bucket.start,
            end_ts=bucket.start + tf.width_ns,
            open=ohlc[0],
            high=ohlc[1],
            low=ohlc[2],
            close=ohlc[3],
            volume=bucket.volume,
            trade_count=bucket.trade_count,
            vwap=vwap,
            source=source,
        )
