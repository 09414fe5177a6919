"""One account as the risk engine sees it, and its measures at current marks.

Positions, cash and realized P&L are kept by the accounts' own `Ledger` (the same netting,
average-entry and realized-P&L arithmetic as the accounts service, so the two agree to the
last digit). On top of it the risk engine keeps the equity landmarks (peak, start of day),
the recent order times, the level of each rule and the kill switch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

import msgspec

from bourse.accounts.ledger import ZERO, Ledger
from bourse.risk.levels import Level
from bourse.risk.rules import RuleName

FRACTION = Decimal("0.000001")  # concentration and drawdown are reported to 1e-6


class RiskMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """An account's risk measures at `ts`, positions valued at the latest marks (a position
    in a symbol without a mark yet is valued at its average entry price).

    - `equity` = cash + Σ qty × mark; `unrealized_pnl` = Σ qty × (mark − average entry).
    - `daily_pnl` = equity − `day_start_equity` (the equity when the trading day started, or
      when an admin reset the kill switch; deposits raise it, so they are not profit).
    - `drawdown`: (peak − equity) / peak, a fraction; the peak is raised by deposits too.
    - `gross_exposure` = Σ |qty × mark|; `net_exposure` = Σ qty × mark (signed).
    - `concentration`: the largest |qty × mark| over gross exposure, `concentration_symbol`.
    - `order_rate`: orders submitted within the rules' window ending at `ts`.
    """

    ts: int
    account_id: str
    cash: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    equity: Decimal
    peak_equity: Decimal
    day_start_equity: Decimal
    daily_pnl: Decimal
    drawdown: Decimal
    gross_exposure: Decimal
    net_exposure: Decimal
    concentration: Decimal
    concentration_symbol: str
    order_rate: int
    halted: bool
    kill_switch_tripped: bool

    def value_of(self, rule: RuleName) -> Decimal:
        """What `rule` compares with its limit (a loss and a drawdown are positive)."""
        match rule:
            case RuleName.DAILY_LOSS:
                return max(ZERO, -self.daily_pnl)
            case RuleName.DRAWDOWN:
                return self.drawdown
            case RuleName.GROSS_EXPOSURE:
                return self.gross_exposure
            case RuleName.NET_EXPOSURE:
                return abs(self.net_exposure)
            case RuleName.CONCENTRATION:
                return self.concentration
            case RuleName.ORDER_RATE:
                return Decimal(self.order_rate)


@dataclass(slots=True)
class AccountRisk:
    ledger: Ledger
    peak_equity: Decimal = ZERO
    day_start_equity: Decimal = ZERO
    order_times: deque[int] = field(default_factory=deque)  # ts of recent orders, oldest first
    levels: dict[RuleName, Level] = field(default_factory=dict)  # rules above NORMAL only
    fills_seen: dict[str, int] = field(default_factory=dict)  # symbol -> last match_id applied
    halted: bool = False  # as the journal says (TradingHalted / TradingResumed)
    kill_switch_tripped: bool = False  # a halt was requested; only an admin resume re-arms it
    alerts_raised: int = 0
    halts_requested: int = 0

    @property
    def account_id(self) -> str:
        return self.ledger.account_id

    def forget_orders_before(self, ts: int) -> None:
        """Drop order times at or before `ts` (outside the rolling window)."""
        while self.order_times and self.order_times[0] <= ts:
            self.order_times.popleft()

    def measure(self, marks: dict[str, Decimal], ts: int, orders_after: int) -> RiskMetrics:
        """The measures at `marks`, counting the orders submitted after `orders_after` (ns).
        The reported peak includes the current equity; the caller stores it back when the
        measure is an evaluation rather than a query."""
        ledger = self.ledger
        gross = net = unrealized = largest = ZERO
        largest_symbol = ""
        for symbol in sorted(ledger.positions):
            position = ledger.positions[symbol]
            mark = marks.get(symbol, position.avg_entry_price)
            value = position.qty * mark
            net += value
            gross += abs(value)
            unrealized += position.unrealized_pnl(mark)
            if abs(value) > largest:
                largest, largest_symbol = abs(value), symbol
        equity = ledger.cash + net
        peak = max(self.peak_equity, equity)
        drawdown = _fraction(peak - equity, peak) if peak > 0 and equity < peak else ZERO
        return RiskMetrics(
            ts=ts,
            account_id=ledger.account_id,
            cash=ledger.cash,
            realized_pnl=ledger.realized_pnl,
            unrealized_pnl=unrealized,
            equity=equity,
            peak_equity=peak,
            day_start_equity=self.day_start_equity,
            daily_pnl=equity - self.day_start_equity,
            drawdown=drawdown,
            gross_exposure=gross,
            net_exposure=net,
            concentration=_fraction(largest, gross) if gross > 0 else ZERO,
            concentration_symbol=largest_symbol,
            order_rate=sum(1 for t in self.order_times if t > orders_after),
            halted=self.halted,
            kill_switch_tripped=self.kill_switch_tripped,
        )


def _fraction(part: Decimal, whole: Decimal) -> Decimal:
    return (part / whole).quantize(FRACTION, rounding=ROUND_HALF_EVEN)
