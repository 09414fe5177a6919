"""Everything the analytics service computes, as one pure core: market data in, messages out.

    pipeline = AnalyticsPipeline(AnalyticsConfig())
    pipeline.on_message(message)     # a decoded md.<venue>.<symbol> message
    pipeline.advance(now_ns)         # time passes: bars close, quotes go stale
    for output in pipeline.drain():  # (subject, message id, message), in publishing order
        publish(output)

It owns the cores (`BarBuilder`, `MovingAverages`, `VwapBook`, `NbboBook`,
`ArbitrageDetector`), decides what is published on which subject and with which message id,
and keeps the **market time**: `event_ns`, the latest venue timestamp seen, and `now_ns`, the
time the pipeline has been advanced to (never behind `event_ns`, never going back). There is
no clock here: the shell says what time it is (`advance`), so a replay gives the same output
as the live run it replays.

- A closed bar goes out with its `BarIndicators` and, for the finest timeframe of a venue that
  trades, a `VwapUpdate` at the bar's end (computed before the message that closed the bar is
  counted, so it covers exactly the trades before the bar's end).
- Consolidated bars (`consolidated_venue`, by default `consolidated`): every venue's trades
  and quotes also go to that pseudo-venue's series, so its bars are made of every venue's
  trades and, in a second no venue printed in, of every venue's quote mids: the history
  service's consolidated bars. They go out like a venue's bars, with their indicators (no
  VWAP update: `analytics.vwap.*` stays per venue).
- Bars close when a later message of their series arrives, or when `advance(now_ns)` passes
  their end by `allowed_lateness_ns`.
- The NBBO goes out when it changes. Without `conflate_nbbo` it is computed for every quote,
  at `max(now_ns, event_ns)`. With it (the default) it is computed once per symbol per
  `drain()`, after the symbol's latest quote and at the market time then: the intermediate
  states of a burst read in one batch are skipped (idle, one quote per batch, every change
  goes out).
- Arbitrage openings and closings go out as they happen; `advance` closes the stale ones.

Message ids are made from content, so a republished message is recognised as a duplicate
(see docs/analytics.md): `bar.<tf>.<venue>.<symbol>.<start_ts>`, `indicators...` alike,
`vwap.<venue>.<symbol>.<ts>`, `nbbo.<symbol>.<ts>.<n>` (the n-th change at that instant),
`arb.opened.<id>` and `arb.closed.<id>`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal

import msgspec

from bourse.analytics.arbitrage import (
    ArbitrageClosed,
    ArbitrageConfig,
    ArbitrageDetector,
    ArbitrageEvent,
)
from bourse.analytics.bars import Bar, BarBuilder
from bourse.analytics.indicators import DEFAULT_WINDOW_NS, MovingAverages, VwapBook
from bourse.analytics.messages import AnalyticsMessage
from bourse.analytics.nbbo import DEFAULT_MAX_AGE_NS, Nbbo, NbboBook
from bourse.analytics.rounding import PricePlaces
from bourse.analytics.timeframes import Timeframe
from bourse.errors import ConfigError
from bourse.model import subjects
from bourse.model.marketdata import MarketData, Quote, Trade

StartPosition = Literal["aligned", "first", "new"]

CONSOLIDATED = "consolidated"  # the venue of bars made from every venue's messages

Output = tuple[str, str, AnalyticsMessage]  # subject, Nats-Msg-Id, message


class AnalyticsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the analytics service computes and how it runs (see docs/analytics.md).

    Market-time settings are in nanoseconds, like the cores'; the shell's timings in seconds.
    """

    timeframes: tuple[str, ...] = ("1Sec", "1Min", "5Min", "1Hour")
    sma_periods: tuple[int, ...] = (20,)
    ema_periods: tuple[int, ...] = (12, 26)
    vwap_window_ns: int = DEFAULT_WINDOW_NS
    nbbo_max_age_ns: int = DEFAULT_MAX_AGE_NS
    arbitrage: ArbitrageConfig = msgspec.field(default_factory=ArbitrageConfig)
    # How long after a bar's end (in market time) it waits for a straggler before closing in a
    # quiet market: a venue's messages may lag the fastest venue's by up to this much.
    allowed_lateness_ns: int = 500_000_000
    conflate_nbbo: bool = True
    # The pseudo-venue of consolidated bars (every venue's messages as one venue, as the
    # history service defines them); None: no consolidated bars.
    consolidated_venue: str | None = CONSOLIDATED
    # Where a start without a snapshot begins reading MARKET_DATA: "aligned" is the start of
    # the longest timeframe's current bar (so its first bar is whole), "first" the whole
    # stream, "new" only what comes next.
    start: StartPosition = "aligned"
    tick_interval: float = 0.1  # seconds between timer passes (bars close, quotes expire)
    snapshot_interval: float = 10.0  # seconds between state snapshots (and one at stop)
    batch: int = 1024  # messages per pull request
    max_in_flight: int = 1024  # outputs not yet acknowledged by JetStream

    def __post_init__(self) -> None:
        if not self.timeframes:
            raise ConfigError("timeframes", self.timeframes, "at least one timeframe, e.g. 1Min")
        for setting, ns in (
            ("vwap_window_ns", self.vwap_window_ns),
            ("nbbo_max_age_ns", self.nbbo_max_age_ns),
        ):
            if ns < 1:
                raise ConfigError(setting, ns, "a positive number of nanoseconds")
        if self.allowed_lateness_ns < 0:
            raise ConfigError("allowed_lateness_ns", self.allowed_lateness_ns, "0 or more ns")
        if not (self.tick_interval > 0 and self.snapshot_interval > 0):
            raise ConfigError(
                "tick_interval / snapshot_interval",
                (self.tick_interval, self.snapshot_interval),
                "seconds, greater than zero",
            )
        if self.batch < 1 or self.max_in_flight < 1:
            raise ConfigError("batch / max_in_flight", (self.batch, self.max_in_flight), ">= 1")


class _State(msgspec.Struct, kw_only=True):
    version: int = 1
    event_ns: int
    now_ns: int
    nbbo_ids: list[tuple[str, int, int]]  # symbol, ts, changes at that ts
    bars: msgspec.Raw
    averages: msgspec.Raw
    vwap: msgspec.Raw
    nbbo: msgspec.Raw
    arbitrage: msgspec.Raw


_state_encoder = msgspec.json.Encoder()
_state_decoder = msgspec.json.Decoder(_State)


class AnalyticsPipeline:
    """Bars, indicators, VWAP, NBBO and arbitrage from market data (see the module)."""

    def __init__(
        self, config: AnalyticsConfig, *, price_places: Callable[[str], int] | None = None
    ) -> None:
        self.config = config
        self._places = price_places or PricePlaces()
        self.bars = BarBuilder(config.timeframes, price_places=self._places)
        self.averages = MovingAverages(
            sma_periods=config.sma_periods,
            ema_periods=config.ema_periods,
            price_places=self._places,
        )
        self.vwap = VwapBook(window_ns=config.vwap_window_ns, price_places=self._places)
        self.nbbo = NbboBook(max_age_ns=config.nbbo_max_age_ns)
        self.arbitrage = ArbitrageDetector(config.arbitrage)
        self.event_ns = 0
        self.now_ns = 0
        self._finest = str(self.bars.timeframes[0])
        self._nbbo_ids: dict[str, tuple[int, int]] = {}
        self._out: list[Output] = []
        self._pending_nbbo: dict[str, Output] = {}
        self._dirty_nbbo: dict[str, int] = {}  # symbol -> time of its latest quote
        self._subjects: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._bind()

    def _bind(self) -> None:
        """Keep the cores' hot methods at hand (`on_message` runs for every tick)."""
        self._bars_on_quote_as = self.bars.on_quote_as
        self._bars_on_trade_as = self.bars.on_trade_as
        self._consolidated = self.config.consolidated_venue
        self._vwap_on_trade = self.vwap.on_trade
        self._nbbo_take = self.nbbo.take
        self._arbitrage_on_quote = self.arbitrage.on_quote
        self._conflate = self.config.conflate_nbbo

    @property
    def longest_timeframe(self) -> Timeframe:
        return self.bars.timeframes[-1]

    def on_message(self, message: MarketData) -> None:
        """Fold in one market-data message (depth only moves the market time)."""
        # The hot path of the service: calls are skipped when there is nothing to emit.
        event_ns = self.event_ns
        if message.ts > event_ns:
            self.event_ns = event_ns = message.ts
        if isinstance(message, Quote):
            closed = self._bars_on_quote_as(message, message.venue)
            if closed:
                self._bars(closed)
            if self._consolidated is not None:
                closed = self._bars_on_quote_as(message, self._consolidated)
                if closed:
                    self._bars(closed)
            now = self.now_ns if self.now_ns > event_ns else event_ns
            if not self._conflate:
                nbbo = self.nbbo.on_quote(message, now)
                if nbbo is not None:
                    self._nbbo(nbbo)
            elif self._nbbo_take(message):
                self._dirty_nbbo[message.symbol] = now  # computed once, at the next drain
            events = self._arbitrage_on_quote(message, now)
            if events:
                for event in events:
                    self._arbitrage(event)
        elif isinstance(message, Trade):
            closed = self._bars_on_trade_as(message, message.venue)
            if closed:
                self._bars(closed)
            if self._consolidated is not None:
                closed = self._bars_on_trade_as(message, self._consolidated)
                if closed:
                    self._bars(closed)
            self._vwap_on_trade(message)

    def advance(self, now_ns: int) -> None:
        """Let market time reach `now_ns` (an earlier time changes nothing): bars whose end is
        `allowed_lateness_ns` behind close, quotes older than their max age expire."""
        if now_ns <= self.now_ns:
            return
        self.now_ns = now_ns
        self._bars(self.bars.flush(now_ns - self.config.allowed_lateness_ns))
        for nbbo in self.nbbo.expire(now_ns):
            self._nbbo(nbbo)
        for event in self.arbitrage.expire(now_ns):
            self._arbitrage(event)

    def drain(self) -> list[Output]:
        """The outputs since the last drain, in publishing order (conflated NBBOs last)."""
        out = self._out
        if self._dirty_nbbo:
            for symbol, quoted in self._dirty_nbbo.items():
                # As of now (after `advance`), so a quote that went stale meanwhile is out.
                nbbo = self.nbbo.refresh(symbol, max(quoted, self.now_ns))
                if nbbo is not None:
                    self._nbbo(nbbo)
            self._dirty_nbbo = {}
        if self._pending_nbbo:
            out.extend(self._pending_nbbo.values())
            self._pending_nbbo = {}
        self._out = []
        return out

    @property
    def pending(self) -> int:
        return len(self._out) + len(self._pending_nbbo) + len(self._dirty_nbbo)

    # ---- outputs ----

    def _bars(self, closed: list[Bar]) -> None:
        out = self._out
        for bar in closed:
            symbol, venue, timeframe = bar.symbol, bar.venue, bar.timeframe
            key = (timeframe, venue, symbol)
            names = self._subjects.get(key)
            if names is None:
                names = self._subjects[key] = (
                    subjects.analytics_bars(timeframe, venue, symbol),
                    subjects.analytics_indicators(timeframe, venue, symbol),
                )
            suffix = f"{timeframe}.{venue}.{symbol}.{bar.start_ts}"
            out.append((names[0], f"bar.{suffix}", bar))
            indicators = self.averages.on_bar(bar)
            if indicators is not None:
                out.append((names[1], f"indicators.{suffix}", indicators))
            if timeframe == self._finest:
                vwap = self.vwap.value(symbol, venue, bar.end_ts)
                if vwap is not None:
                    subject = subjects.analytics_vwap(venue, symbol)
                    out.append((subject, f"vwap.{venue}.{symbol}.{bar.end_ts}", vwap))

    def _nbbo(self, nbbo: Nbbo) -> None:
        symbol, ts = nbbo.symbol, nbbo.ts
        last_ts, count = self._nbbo_ids.get(symbol, (-1, 0))
        count = count + 1 if last_ts == ts else 1
        self._nbbo_ids[symbol] = (ts, count)
        output = (subjects.analytics_nbbo(symbol), f"nbbo.{symbol}.{ts}.{count}", nbbo)
        if self.config.conflate_nbbo:
            self._pending_nbbo[symbol] = output
        else:
            self._out.append(output)

    def _arbitrage(self, event: ArbitrageEvent) -> None:
        kind = "closed" if isinstance(event, ArbitrageClosed) else "opened"
        subject = subjects.analytics_arbitrage(event.symbol)
        self._out.append((subject, f"arb.{kind}.{event.id}", event))

    # ---- snapshots ----

    def snapshot(self) -> bytes:
        """The whole state as JSON bytes for `restore`; outputs not drained are not in it."""
        if self.pending:
            raise RuntimeError("drain the outputs before taking a snapshot")
        return _state_encoder.encode(
            _State(
                event_ns=self.event_ns,
                now_ns=self.now_ns,
                nbbo_ids=[(s, ts, n) for s, (ts, n) in self._nbbo_ids.items()],
                bars=msgspec.Raw(self.bars.snapshot()),
                averages=msgspec.Raw(self.averages.snapshot()),
                vwap=msgspec.Raw(self.vwap.snapshot()),
                nbbo=msgspec.Raw(self.nbbo.snapshot()),
                arbitrage=msgspec.Raw(self.arbitrage.snapshot()),
            )
        )

    @classmethod
    def restore(
        cls,
        snapshot: bytes,
        config: AnalyticsConfig,
        *,
        price_places: Callable[[str], int] | None = None,
    ) -> AnalyticsPipeline:
        """A pipeline with `config` that carries on from `snapshot`; ValueError when the
        snapshot was taken with other timeframes, periods or windows (they shape the state)."""
        state = _state_decoder.decode(snapshot)
        pipeline = cls(config, price_places=price_places)
        places = pipeline._places
        bars = BarBuilder.restore(bytes(state.bars), price_places=places)
        averages = MovingAverages.restore(bytes(state.averages), price_places=places)
        vwap = VwapBook.restore(bytes(state.vwap), price_places=places)
        nbbo = NbboBook.restore(bytes(state.nbbo))
        differs = [
            setting
            for setting, saved, wanted in (
                ("timeframes", bars.timeframes, pipeline.bars.timeframes),
                ("sma_periods", averages.sma_periods, pipeline.averages.sma_periods),
                ("ema_periods", averages.ema_periods, pipeline.averages.ema_periods),
                ("vwap_window_ns", vwap.window_ns, pipeline.vwap.window_ns),
                ("nbbo_max_age_ns", nbbo.max_age_ns, pipeline.nbbo.max_age_ns),
            )
            if saved != wanted
        ]
        if differs:
            raise ValueError(f"the snapshot was taken with other {', '.join(differs)}")
        pipeline.bars, pipeline.averages, pipeline.vwap, pipeline.nbbo = bars, averages, vwap, nbbo
        pipeline.arbitrage = ArbitrageDetector.restore(bytes(state.arbitrage), config.arbitrage)
        pipeline._bind()
        pipeline.event_ns, pipeline.now_ns = state.event_ns, state.now_ns
        pipeline._nbbo_ids = {s: (ts, n) for s, ts, n in state.nbbo_ids}
        return pipeline


def digest(state: bytes) -> str:
    """A fingerprint of a snapshot's state, checked when it is restored."""
    return hashlib.sha256(state).hexdigest()
