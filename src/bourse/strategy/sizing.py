"""Stage 3, position sizing: a capped Kelly fraction of equity, in whole lots, affordable.

The Kelly fraction of a bet won with probability p that pays b times what it risks is
`f* = p - (1 - p) / b`. Both are estimated from the strategy's own closed trades (round trips
flat to flat, net of fees, kept by `TradeBook`), shrunk towards a prior worth `k` trades
(`prior_weight`) of win rate p0 and payoff b0:

    p = (wins + k * p0) / (wins + losses + k)
    b = (k * b0 + n * b_obs) / (k + n)    where b_obs = mean win return / mean loss return
                                          (b = b0 until there is at least one of each)

The fraction used is `f = min(max(f*, 0), kelly_cap)`, floored to 1e-6. A long signal sized
at nothing (no edge, or less than a lot) is still scored, on paper (`PaperTrades`): bought at
its tick's ask, sold at the exit signal's bid, fees included, and counted with the real trades.
Otherwise a strategy whose estimate fell to zero would never trade again, and so never learn
that its edge came back. A long signal's
target is `f * equity / price` floored to whole lots; the part of it that has to be bought is
cut to what buying power pays for at the order's limit price plus fees (with a cent to
spare), so an order the sizing asks for is never refused for buying power. A flat signal's
target is 0.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

import msgspec

from bourse.model.instruments import Instrument
from bourse.strategy.config import StrategyConfig
from bourse.strategy.prices import BPS, CENT, limit_price, whole_lots
from bourse.strategy.types import (
    ClosedTrade,
    Direction,
    Fill,
    Portfolio,
    Signal,
    Target,
    Tick,
    TradeStats,
)

_ZERO = Decimal(0)
_ONE = Decimal(1)
_FRACTION = Decimal("0.000001")
_RETURN = Decimal("0.000001")


class KellyEstimate(msgspec.Struct, frozen=True, kw_only=True):
    win_probability: Decimal
    payoff: Decimal
    kelly: Decimal  # f*, uncapped (negative: no edge)
    fraction: Decimal  # what is used: capped, floored


def kelly_estimate(stats: TradeStats, config: StrategyConfig) -> KellyEstimate:
    """p, b, f* and the capped fraction for `stats` (see the module)."""
    k, p0, b0 = config.prior_weight, config.prior_win_rate, config.prior_payoff
    n = stats.wins + stats.losses
    p = p0 if n + k == 0 else (stats.wins + k * p0) / (n + k)
    b = b0
    if stats.wins and stats.losses and stats.loss_return_sum > 0:
        observed = (stats.win_return_sum / stats.wins) / (stats.loss_return_sum / stats.losses)
        b = (k * b0 + n * observed) / (k + n)
    kelly = p - (_ONE - p) / b
    fraction = min(max(kelly, _ZERO), config.kelly_cap).quantize(_FRACTION, rounding=ROUND_DOWN)
    return KellyEstimate(win_probability=p, payoff=b, kelly=kelly, fraction=fraction)


def size_target(
    signal: Signal, portfolio: Portfolio, config: StrategyConfig, instrument: Instrument
) -> Target:
    """The position `signal` asks for, given the account as it is (see the module)."""
    tick = signal.tick
    if signal.direction is Direction.FLAT:
        return Target(tick=tick, qty=_ZERO, fraction=_ZERO, reason=signal.reason)
    estimate = kelly_estimate(portfolio.stats, config)
    equity = portfolio.equity(tick.price)
    if estimate.fraction <= 0 or equity <= 0:
        why = f"no edge (Kelly {estimate.kelly:.4f})" if equity > 0 else "no equity"
        return Target(
            tick=tick, qty=portfolio.position, fraction=_ZERO, reason=f"{signal.reason}; {why}"
        )
    wanted = whole_lots(estimate.fraction * equity / tick.price, instrument)
    if wanted > portfolio.position:
        unit = limit_price("buy", tick, config.limit_bps, instrument) * (1 + config.fee_bps / BPS)
        affordable = whole_lots(max(portfolio.buying_power - CENT, _ZERO) / unit, instrument)
        wanted = portfolio.position + min(wanted - portfolio.position, affordable)
    return Target(
        tick=tick,
        qty=wanted,
        fraction=estimate.fraction,
        reason=f"{signal.reason}; Kelly {estimate.fraction} of equity {equity:.2f}",
    )


class _Open:
    __slots__ = ("cost", "entry_ts", "max_qty", "proceeds", "qty")

    def __init__(self, entry_ts: int) -> None:
        self.entry_ts = entry_ts
        self.qty = _ZERO
        self.max_qty = _ZERO
        self.cost = _ZERO
        self.proceeds = _ZERO


class TradeBook:
    """The strategy's fills as round trips (long only), and the record Kelly reads.

    A position held before the strategy started (a live account's) counts as a trade opened
    at its average entry price.
    """

    def __init__(
        self, *, position: Decimal = _ZERO, avg_price: Decimal = _ZERO, opened_ts: int = 0
    ) -> None:
        self.closed: list[ClosedTrade] = []
        self.stats = TradeStats()
        self._open: _Open | None = None
        if position > 0:
            self._open = _Open(opened_ts)
            self._open.qty = self._open.max_qty = position
            self._open.cost = position * avg_price

    @property
    def position(self) -> Decimal:
        return self._open.qty if self._open is not None else _ZERO

    def on_fill(self, fill: Fill) -> ClosedTrade | None:
        """Book a fill; the round trip it closes, if it does."""
        if fill.qty <= 0:
            return None
        notional = fill.qty * fill.price
        if fill.side == "buy":
            trade = self._open = self._open or _Open(fill.ts)
            trade.qty += fill.qty
            trade.max_qty = max(trade.max_qty, trade.qty)
            trade.cost += notional + fill.fee
            return None
        held = self._open
        if held is None or fill.qty > held.qty:
            raise ValueError(f"a sell of {fill.qty} but only {self.position} is held (long only)")
        trade = held
        trade.qty -= fill.qty
        trade.proceeds += notional - fill.fee
        if trade.qty > 0:
            return None
        self._open = None
        pnl = trade.proceeds - trade.cost
        ratio = (
            (pnl / trade.cost).quantize(_RETURN, rounding=ROUND_HALF_EVEN) if trade.cost else _ZERO
        )
        closed = ClosedTrade(
            entry_ts=trade.entry_ts,
            exit_ts=fill.ts,
            qty=trade.max_qty,
            cost=trade.cost,
            proceeds=trade.proceeds,
            pnl=pnl,
            return_=ratio,
        )
        self.closed.append(closed)
        stats = self.stats
        if closed.won:
            self.stats = msgspec.structs.replace(
                stats, wins=stats.wins + 1, win_return_sum=stats.win_return_sum + ratio
            )
        else:
            self.stats = msgspec.structs.replace(
                stats, losses=stats.losses + 1, loss_return_sum=stats.loss_return_sum - ratio
            )
        return closed


def combined(a: TradeStats, b: TradeStats) -> TradeStats:
    return TradeStats(
        wins=a.wins + b.wins,
        losses=a.losses + b.losses,
        win_return_sum=a.win_return_sum + b.win_return_sum,
        loss_return_sum=a.loss_return_sum + b.loss_return_sum,
    )


class PaperTrades:
    """Round trips the signal asked for but sizing did not take, scored at the quotes."""

    def __init__(self, fee_bps: Decimal) -> None:
        self._cost_factor = 1 + fee_bps / BPS
        self._proceeds_factor = 1 - fee_bps / BPS
        self._entry: Decimal | None = None
        self.stats = TradeStats()
        self.count = 0

    @property
    def open(self) -> bool:
        return self._entry is not None

    def enter(self, tick: Tick) -> None:
        self._entry = tick.buy_price * self._cost_factor

    def exit(self, tick: Tick) -> Decimal | None:
        """Close the paper trade at this tick, if one is open; its return."""
        if self._entry is None:
            return None
        cost, self._entry = self._entry, None
        result = ((tick.sell_price * self._proceeds_factor - cost) / cost).quantize(
            _RETURN, rounding=ROUND_HALF_EVEN
        )
        self.count += 1
        stats = self.stats
        if result > 0:
            self.stats = msgspec.structs.replace(
                stats, wins=stats.wins + 1, win_return_sum=stats.win_return_sum + result
            )
        else:
            self.stats = msgspec.structs.replace(
                stats, losses=stats.losses + 1, loss_return_sum=stats.loss_return_sum - result
            )
        return result
