"""Indicators: VWAP over a session and over a sliding window, SMA and EMA of bar closes.

Pure cores with exact decimal arithmetic. Sums are exact; every ratio goes through
`rounding.divide` (exact when the quotient terminates, else rounded to the nearest at the
instrument's price places + `EXTRA_PLACES`):

- `Sma(period)`: the mean of the last `period` values; None until there are `period`.
- `Ema(period)`: alpha = 2 / (period + 1), seeded with the SMA of the first `period` values
  (None before), then `ema = (2 * value + (period - 1) * ema) / (period + 1)`: one rounding
  per step, and the rounded value is the state, so the series is a deterministic function of
  its inputs (a replay gives the same digits). The EMA of a constant is that constant.
- `SessionVwap`: the VWAP of the trades since the session began (sessions are UTC days by
  default, Bourse's trading day); a trade of an earlier session is late, dropped, counted.
- `WindowVwap(window_ns)`: the VWAP of the trades in `(now - window_ns, now]`; trades may
  arrive out of order; one older than the window already reached is late, dropped, counted.

Keyed books feed them from the bus's messages and produce the messages to publish:

- `MovingAverages.on_bar(bar)`: SMA and EMA of the closes of each (symbol, venue, timeframe)
  series, as `BarIndicators` (bars from quote mids count like any other close; a bar that
  is not later than the last one seen, such as a redelivery, is ignored).
- `VwapBook.on_trade(trade)` / `.value(symbol, venue, now_ns)`: `VwapUpdate` per symbol and
  venue.

**Proposed subjects:** `analytics.indicators.<timeframe>.<venue>.<symbol>` (one
`BarIndicators` per closed bar) and `analytics.vwap.<venue>.<symbol>` (a `VwapUpdate` when
the service chooses to publish, e.g. with each 1-second bar), in the ANALYTICS stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from decimal import Decimal

import msgspec

from bourse.analytics.bars import Bar
from bourse.analytics.rounding import EXACT, PricePlaces, divide
from bourse.errors import ConfigError
from bourse.model.marketdata import Trade

DAY_NS = 86_400 * 1_000_000_000
_json = msgspec.json.Encoder()
DEFAULT_WINDOW_NS = 5 * 60 * 1_000_000_000
_ZERO = Decimal(0)


def _check_period(period: int) -> int:
    if period < 1:
        raise ConfigError("period", period, "a whole number of values, at least 1")
    return period


def _check_duration(setting: str, ns: int) -> int:
    if ns < 1:
        raise ConfigError(setting, ns, "a positive number of nanoseconds")
    return ns


class Sma:
    """Simple moving average of the last `period` values (see the module)."""

    def __init__(self, period: int, *, price_places: int) -> None:
        self.period = _check_period(period)
        self._places = price_places
        self._window: deque[Decimal] = deque()
        self._sum = _ZERO
        self.value: Decimal | None = None

    def update(self, value: Decimal) -> Decimal | None:
        self._window.append(value)
        self._sum = EXACT.add(self._sum, value)
        if len(self._window) > self.period:
            self._sum = EXACT.subtract(self._sum, self._window.popleft())
        if len(self._window) == self.period:
            self.value = divide(self._sum, self.period, price_places=self._places)
        return self.value


class _SmaState(msgspec.Struct, array_like=True):
    window: list[Decimal]
    sum: Decimal
    value: Decimal | None


def _sma_state(sma: Sma) -> _SmaState:
    return _SmaState(list(sma._window), sma._sum, sma.value)


def _restore_sma(sma: Sma, state: _SmaState) -> Sma:
    sma._window, sma._sum, sma.value = deque(state.window), state.sum, state.value
    return sma


class Ema:
    """Exponential moving average, alpha 2/(period+1), seeded by an SMA (see the module)."""

    def __init__(self, period: int, *, price_places: int) -> None:
        self.period = _check_period(period)
        self._places = price_places
        self._seed: Sma | None = Sma(period, price_places=price_places)
        self.value: Decimal | None = None

    def update(self, value: Decimal) -> Decimal | None:
        if self._seed is not None:
            self.value = self._seed.update(value)
            if self.value is not None:
                self._seed = None
            return self.value
        assert self.value is not None
        weighted = EXACT.add(EXACT.multiply(value, 2), EXACT.multiply(self.value, self.period - 1))
        self.value = divide(weighted, self.period + 1, price_places=self._places)
        return self.value


class SessionVwap:
    """VWAP since the start of the session (UTC day by default); see the module."""

    def __init__(
        self, *, price_places: int, session_ns: int = DAY_NS, session_offset_ns: int = 0
    ) -> None:
        self._places = price_places
        self._session_ns = _check_duration("session length", session_ns)
        self._offset = session_offset_ns
        self.session_start: int | None = None
        self.volume = _ZERO
        self.notional = _ZERO
        self.late = 0

    def session_of(self, ts: int) -> int:
        """Start of the session containing `ts`."""
        return ts - (ts - self._offset) % self._session_ns

    def update(self, ts: int, price: Decimal, size: Decimal) -> None:
        self.add(ts, EXACT.multiply(price, size), size)

    def add(self, ts: int, notional: Decimal, size: Decimal) -> None:
        """`update` with the trade's notional (price x size, exact) already computed."""
        session = ts - (ts - self._offset) % self._session_ns
        if self.session_start is None or session > self.session_start:
            self.session_start, self.volume, self.notional = session, _ZERO, _ZERO
        elif session < self.session_start:
            self.late += 1
            return
        self.volume = EXACT.add(self.volume, size)
        self.notional = EXACT.add(self.notional, notional)

    def value_at(self, now_ns: int) -> Decimal | None:
        """The VWAP of the session containing `now_ns`; None before its first sized trade."""
        if self.session_start != self.session_of(now_ns) or not self.volume:
            return None
        return divide(self.notional, self.volume, price_places=self._places)


class WindowVwap:
    """VWAP of the trades in the last `window_ns` (see the module)."""

    def __init__(self, window_ns: int, *, price_places: int) -> None:
        self.window_ns = _check_duration("VWAP window", window_ns)
        self._places = price_places
        # (ts, notional, size) in time order (equal times in arrival order).
        self._trades: deque[tuple[int, Decimal, Decimal]] = deque()
        self._horizon: int | None = None  # the latest time seen, by trade or by query
        self.volume = _ZERO
        self.notional = _ZERO
        self.late = 0

    def update(self, ts: int, price: Decimal, size: Decimal) -> None:
        self.add(ts, EXACT.multiply(price, size), size)

    def add(self, ts: int, notional: Decimal, size: Decimal) -> None:
        """`update` with the trade's notional (price x size, exact) already computed."""
        if self._horizon is not None and ts <= self._horizon - self.window_ns:
            self.late += 1
            return
        trades = self._trades
        if not trades or ts >= trades[-1][0]:
            trades.append((ts, notional, size))
        else:  # out of order: usually only a little, so look from the newest end
            index = len(trades) - 1
            while index > 0 and trades[index - 1][0] > ts:
                index -= 1
            trades.insert(index, (ts, notional, size))
        self.volume = EXACT.add(self.volume, size)
        self.notional = EXACT.add(self.notional, notional)
        self._advance(ts)

    def value_at(self, now_ns: int) -> Decimal | None:
        """The VWAP over `(now_ns - window_ns, now_ns]`; None when no sized trade is in it."""
        self._advance(now_ns)
        if not self.volume:
            return None
        return divide(self.notional, self.volume, price_places=self._places)

    def _advance(self, now_ns: int) -> None:
        if self._horizon is not None and now_ns <= self._horizon:
            return
        self._horizon = now_ns
        cutoff = now_ns - self.window_ns
        trades = self._trades
        while trades and trades[0][0] <= cutoff:
            _, notional, size = trades.popleft()
            self.volume = EXACT.subtract(self.volume, size)
            self.notional = EXACT.subtract(self.notional, notional)


class BarIndicators(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="indicators"):
    """SMA and EMA of one series' closes after the bar starting at `start_ts` closed.

    `sma` and `ema` map each period to its value, None until the series is long enough.
    """

    symbol: str
    venue: str
    timeframe: str
    start_ts: int
    end_ts: int
    close: Decimal
    sma: dict[int, Decimal | None]
    ema: dict[int, Decimal | None]


class VwapUpdate(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="vwap"):
    """A symbol's VWAP on one venue at `ts`: over the session and over the last `window_ns`."""

    symbol: str
    venue: str
    ts: int
    session_start_ts: int
    session_vwap: Decimal | None
    session_volume: Decimal
    window_ns: int
    window_vwap: Decimal | None
    window_volume: Decimal


class _AveragesState(msgspec.Struct, array_like=True):
    symbol: str
    venue: str
    timeframe: str
    last_start: int
    sma: list[_SmaState]
    ema: list[tuple[_SmaState | None, Decimal | None]]  # (seed while seeding, value)


class _MovingAveragesState(msgspec.Struct):
    sma_periods: tuple[int, ...]
    ema_periods: tuple[int, ...]
    series: list[_AveragesState]


class _Averages:
    __slots__ = ("ema", "last_start", "sma")

    def __init__(self, sma: list[Sma], ema: list[Ema]) -> None:
        self.sma, self.ema = sma, ema
        self.last_start = -1


class MovingAverages:
    """SMA and EMA of bar closes per (symbol, venue, timeframe); see the module."""

    def __init__(
        self,
        *,
        sma_periods: Iterable[int] = (20,),
        ema_periods: Iterable[int] = (12, 26),
        price_places: Callable[[str], int] | None = None,
    ) -> None:
        self.sma_periods = tuple(sorted({_check_period(p) for p in sma_periods}))
        self.ema_periods = tuple(sorted({_check_period(p) for p in ema_periods}))
        self._places = price_places or PricePlaces()
        self._series: dict[tuple[str, str, str], _Averages] = {}

    def snapshot(self) -> bytes:
        """Every series' state, as JSON bytes for `restore`."""
        series = [
            _AveragesState(
                symbol,
                venue,
                timeframe,
                averages.last_start,
                [_sma_state(sma) for sma in averages.sma],
                [
                    (None if ema._seed is None else _sma_state(ema._seed), ema.value)
                    for ema in averages.ema
                ],
            )
            for (symbol, venue, timeframe), averages in self._series.items()
        ]
        return _json.encode(_MovingAveragesState(self.sma_periods, self.ema_periods, series))

    @classmethod
    def restore(
        cls, snapshot: bytes, *, price_places: Callable[[str], int] | None = None
    ) -> MovingAverages:
        """Moving averages that carry on from `snapshot`."""
        state = msgspec.json.decode(snapshot, type=_MovingAveragesState)
        averages = cls(
            sma_periods=state.sma_periods, ema_periods=state.ema_periods, price_places=price_places
        )
        for saved in state.series:
            places = averages._places(saved.symbol)
            series = _Averages(
                [
                    _restore_sma(Sma(p, price_places=places), sma)
                    for p, sma in zip(averages.sma_periods, saved.sma, strict=True)
                ],
                [Ema(p, price_places=places) for p in averages.ema_periods],
            )
            for ema, (seed, value) in zip(series.ema, saved.ema, strict=True):
                ema.value = value
                ema._seed = (
                    None
                    if seed is None
                    else _restore_sma(Sma(ema.period, price_places=places), seed)
                )
            series.last_start = saved.last_start
            averages._series[(saved.symbol, saved.venue, saved.timeframe)] = series
        return averages

    def on_bar(self, bar: Bar) -> BarIndicators | None:
        """Fold in a closed bar; None if it is not later than the series' last bar."""
        key = (bar.symbol, bar.venue, bar.timeframe)
        series = self._series.get(key)
        if series is None:
            places = self._places(bar.symbol)
            series = self._series[key] = _Averages(
                [Sma(p, price_places=places) for p in self.sma_periods],
                [Ema(p, price_places=places) for p in self.ema_periods],
            )
        if bar.start_ts <= series.last_start:
            return None
        series.last_start = bar.start_ts
        return BarIndicators(
            symbol=bar.symbol,
            venue=bar.venue,
            timeframe=bar.timeframe,
            start_ts=bar.start_ts,
            end_ts=bar.end_ts,
            close=bar.close,
            sma={s.period: s.update(bar.close) for s in series.sma},
            ema={e.period: e.update(bar.close) for e in series.ema},
        )


class _VwapState(msgspec.Struct, array_like=True):
    symbol: str
    venue: str
    session_start: int | None
    session_volume: Decimal
    session_notional: Decimal
    session_late: int
    window_trades: list[tuple[int, Decimal, Decimal]]
    window_horizon: int | None
    window_volume: Decimal
    window_notional: Decimal
    window_late: int


class _VwapBookState(msgspec.Struct):
    window_ns: int
    session_ns: int
    session_offset_ns: int
    series: list[_VwapState]


class VwapBook:
    """Session and window VWAP per (symbol, venue), from trades; see the module."""

    def __init__(
        self,
        *,
        window_ns: int = DEFAULT_WINDOW_NS,
        session_ns: int = DAY_NS,
        session_offset_ns: int = 0,
        price_places: Callable[[str], int] | None = None,
    ) -> None:
        self.window_ns = _check_duration("VWAP window", window_ns)
        self._session_ns = _check_duration("session length", session_ns)
        self._session_offset = session_offset_ns
        self._places = price_places or PricePlaces()
        self._series: dict[tuple[str, str], tuple[SessionVwap, WindowVwap]] = {}

    def snapshot(self) -> bytes:
        """Every series' sums and the trades still in the window, as JSON bytes."""
        series = [
            _VwapState(
                symbol,
                venue,
                session.session_start,
                session.volume,
                session.notional,
                session.late,
                list(window._trades),
                window._horizon,
                window.volume,
                window.notional,
                window.late,
            )
            for (symbol, venue), (session, window) in self._series.items()
        ]
        return _json.encode(
            _VwapBookState(self.window_ns, self._session_ns, self._session_offset, series)
        )

    @classmethod
    def restore(
        cls, snapshot: bytes, *, price_places: Callable[[str], int] | None = None
    ) -> VwapBook:
        """A VWAP book that carries on from `snapshot`."""
        state = msgspec.json.decode(snapshot, type=_VwapBookState)
        book = cls(
            window_ns=state.window_ns,
            session_ns=state.session_ns,
            session_offset_ns=state.session_offset_ns,
            price_places=price_places,
        )
        for saved in state.series:
            session, window = book._new_series(saved.symbol)
            session.session_start, session.volume = saved.session_start, saved.session_volume
            session.notional, session.late = saved.session_notional, saved.session_late
            window._trades, window._horizon = deque(saved.window_trades), saved.window_horizon
            window.volume, window.notional = saved.window_volume, saved.window_notional
            window.late = saved.window_late
            book._series[(saved.symbol, saved.venue)] = (session, window)
        return book

    def _new_series(self, symbol: str) -> tuple[SessionVwap, WindowVwap]:
        places = self._places(symbol)
        return (
            SessionVwap(
                price_places=places,
                session_ns=self._session_ns,
                session_offset_ns=self._session_offset,
            ),
            WindowVwap(self.window_ns, price_places=places),
        )

    @property
    def late(self) -> int:
        """Trades dropped as too old, summed over series (a trade may count for both VWAPs)."""
        return sum(s.late + w.late for s, w in self._series.values())

    def on_trade(self, trade: Trade) -> None:
        symbol, venue = trade.symbol, trade.venue
        series = self._series.get((symbol, venue))
        if series is None:
            series = self._series[(symbol, venue)] = self._new_series(symbol)
        size = trade.size
        notional = EXACT.multiply(trade.price, size)  # once for both
        series[0].add(trade.ts, notional, size)
        series[1].add(trade.ts, notional, size)

    def value(self, symbol: str, venue: str, now_ns: int) -> VwapUpdate | None:
        """Both VWAPs at `now_ns`, or None if the venue never printed the symbol."""
        series = self._series.get((symbol, venue))
        if series is None:
            return None
        session, window = series
        session_start = session.session_of(now_ns)
        return VwapUpdate(
            symbol=symbol,
            venue=venue,
            ts=now_ns,
            session_start_ts=session_start,
            session_vwap=session.value_at(now_ns),
            session_volume=session.volume if session.session_start == session_start else _ZERO,
            window_ns=self.window_ns,
            window_vwap=window.value_at(now_ns),
            window_volume=window.volume,
        )
