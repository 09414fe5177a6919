"""What a run made: equity marked at every tick, drawdown, time in the market, the summary.

Pure. `PerformanceTracker.mark(ts, equity, position)` is called after every tick has been
executed (fills first, then the mark at the tick's price): equity is cash plus the position
at the tick's price. Drawdown is measured from the highest equity marked so far; exposure is
the share of the run's time (first tick to last, by the ticks' own timestamps) during which a
position was held, each tick's position counting until the next tick (by ticks when all
share one timestamp).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import msgspec

from bourse.strategy.types import ClosedTrade, Side

_ZERO = Decimal(0)
_RATIO = Decimal("0.000001")


def ratio(numerator: Decimal, denominator: Decimal) -> Decimal:
    """numerator / denominator to 1e-6 (0 when the denominator is 0)."""
    if denominator == 0:
        return _ZERO
    return (numerator / denominator).quantize(_RATIO, rounding=ROUND_HALF_EVEN)


class PerformanceTracker:
    """Equity, drawdown and exposure from the marks; `initial_equity` None: the first mark's."""

    def __init__(self, initial_equity: Decimal | None) -> None:
        self._initial = initial_equity
        self.equity = initial_equity if initial_equity is not None else _ZERO
        self.peak = self.equity
        self.max_drawdown = _ZERO
        self.max_drawdown_pct = _ZERO
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.ticks = 0
        self.ticks_in_market = 0
        self.ns_in_market = 0
        self._held = False

    @property
    def initial_equity(self) -> Decimal:
        return self._initial if self._initial is not None else self.equity

    def mark(self, ts: int, equity: Decimal, position: Decimal) -> None:
        if self._initial is None:
            self._initial = self.peak = equity
        if self.last_ts is not None and self._held and ts > self.last_ts:
            self.ns_in_market += ts - self.last_ts
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        self.ticks += 1
        self._held = position != 0
        self.ticks_in_market += self._held
        self.equity = equity
        if equity > self.peak:
            self.peak = equity
        drawdown = self.peak - equity
        if drawdown > self.max_drawdown:
            self.max_drawdown = drawdown
            self.max_drawdown_pct = ratio(drawdown, self.peak)

    @property
    def exposure(self) -> Decimal:
        span = (self.last_ts or 0) - (self.first_ts or 0)
        if span > 0:
            return ratio(Decimal(self.ns_in_market), Decimal(span))
        return ratio(Decimal(self.ticks_in_market), Decimal(self.ticks))


class TradeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One fill of the strategy's, with the tick and the reason behind it."""

    tick_seq: int
    ts: int
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    limit_price: Decimal
    client_order_id: str
    reason: str


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """A run's result; everything but `elapsed_s` and `pipeline` is a function of the data,
    the configuration and the seed."""

    mode: str  # backtest or live
    symbol: str
    venue: str
    source: str
    seed: int | None
    ticks: int
    first_ts: int | None
    last_ts: int | None
    orders: int
    refused: dict[str, int]
    trades: int  # fills
    round_trips: int
    wins: int
    losses: int
    paper_round_trips: int  # signals sized at nothing, scored for the Kelly estimate only
    win_rate: Decimal
    initial_equity: Decimal
    final_equity: Decimal
    position: Decimal
    gross_pnl: Decimal
    fees: Decimal
    net_pnl: Decimal
    return_: Decimal = msgspec.field(name="return")
    max_drawdown: Decimal
    max_drawdown_pct: Decimal
    exposure: Decimal
    fills: list[TradeRecord]
    closed_trades: list[ClosedTrade]
    elapsed_s: float = 0.0
    pipeline: dict[str, object] = msgspec.field(default_factory=dict)

    def deterministic(self) -> Summary:
        """The summary without what depends on the machine (wall time, pipeline metrics)."""
        return msgspec.structs.replace(self, elapsed_s=0.0, pipeline={})
