"""The risk engine core: post-trade risk per account, as a deterministic fold.

It folds the ORDERS journal (accounts opened and funded, orders submitted, executions,
halts and resumes, the end of each trading day), optionally the POSITIONS stream, and mark
prices, and returns what to publish:

- `RiskAlert` on `risk.alerts.<severity>` when a rule crosses a level (see `levels`);
- `TradingHalted` on `orders.admin` when an account reaches its daily loss limit: the kill
  switch. Accounts then refuses the account's orders (`trading_halted`) until an admin
  journals `TradingResumed`, which re-arms the switch with a fresh daily allowance.

Every output carries a message id made of the account and a per-account counter
(`risk-alert:<account>:<n>`, `risk-halt:<account>:<n>`), so the same inputs give the same
ids and a shell can publish them idempotently. Nothing here reads a clock: times come from
the inputs. docs/risk.md describes the rules and the kill switch.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import NamedTuple

from bourse.accounts.core import deposit_is_valid
from bourse.accounts.ledger import Ledger, Position
from bourse.model import orders, positions, subjects
from bourse.risk.levels import Level, next_level, thresholds
from bourse.risk.messages import Mark, RiskAlert, Severity
from bourse.risk.rules import RiskConfig, RiskRules, RuleName
from bourse.risk.state import AccountRisk, RiskMetrics

RiskInput = orders.OrdersEvent | positions.PositionChanged | Mark

HALT_REASON_PREFIX = "risk:"

_LABEL = {
    RuleName.DAILY_LOSS: "daily loss",
    RuleName.DRAWDOWN: "drawdown",
    RuleName.GROSS_EXPOSURE: "gross exposure",
    RuleName.NET_EXPOSURE: "net exposure",
    RuleName.CONCENTRATION: "concentration",
    RuleName.ORDER_RATE: "order rate",
}


class RiskOutput(NamedTuple):
    """One message to publish: its subject, the message, and its `Nats-Msg-Id`."""

    subject: str
    message: RiskAlert | orders.TradingHalted
    msg_id: str


class RiskCore:
    """Per-account exposure, P&L, drawdown and order rate; alerts and the kill switch."""

    def __init__(self, config: RiskConfig | None = None) -> None:
        self.config = config or RiskConfig()
        self.accounts: dict[str, AccountRisk] = {}
        self.marks: dict[str, Decimal] = {}
        self.clock = 0  # the latest input time (ns): order-rate windows end here
        self.last_closed_day = ""  # the last trading day a SessionClosed ended (YYYY-MM-DD)
        # Derived, not state: rebuilt from the accounts and the configuration.
        self._rules: dict[str, RiskRules] = {}
        self._holders: dict[str, set[str]] = {}  # symbol -> accounts with a position in it

    # ---- the fold ----

    def apply(self, event: RiskInput) -> list[RiskOutput]:
        """Fold one input; return what to publish, in order."""
        self.clock = max(self.clock, event.ts)
        match event:
            case Mark(symbol=symbol, price=price, ts=ts):
                return self.on_mark(symbol, price, ts)
            case orders.AccountOpened(account_id=account_id):
                if account_id not in self.accounts:
                    self.accounts[account_id] = AccountRisk(Ledger(account_id))
            case orders.CashDeposited(account_id=account_id, amount=amount):
                return self._deposit(account_id, amount, event.ts)
            case orders.AssetDeposited():
                return self._asset_deposited(event)
            case orders.OrderSubmitted(account_id=account_id):
                account = self.accounts.get(account_id)
                if account is not None:
                    account.order_times.append(event.ts)
                    return self._evaluate(account, event.ts)
            case orders.Execution():
                return self._execution(event)
            case positions.PositionChanged():
                return self._position_changed(event)
            case orders.TradingHalted(account_id=account_id):
                if account_id in self.accounts:
                    self.accounts[account_id].halted = True
            case orders.TradingResumed(account_id=account_id):
                return self._resumed(account_id, event.ts)
            case orders.SessionClosed(trading_day=day):
                return self._session_closed(day, event.ts)
            case _:
                pass  # requests and outcomes that move no money change no risk
        return []

    def on_mark(self, symbol: str, price: Decimal, ts: int) -> list[RiskOutput]:
        """A new mark (reference) price for `symbol`: revalue every account holding it."""
        self.clock = max(self.clock, ts)
        if not price.is_finite() or price <= 0 or self.marks.get(symbol) == price:
            return []
        self.marks[symbol] = price
        out: list[RiskOutput] = []
        for account_id in sorted(self._holders.get(symbol, ())):
            out.extend(self._evaluate(self.accounts[account_id], ts))
        return out

    # ---- queries ----

    def metrics(self, account_id: str) -> RiskMetrics | None:
        """The account's measures now (None for an unknown account); changes nothing."""
        account = self.accounts.get(account_id)
        if account is None:
            return None
        return account.measure(self.marks, self.clock, self._window_start(account_id))

    def _window_start(self, account_id: str) -> int:
        return self.clock - self.rules_for(account_id).order_rate_window_ns

    def rules_for(self, account_id: str) -> RiskRules:
        rules = self._rules.get(account_id)
        if rules is None:
            rules = self._rules[account_id] = self.config.rules_for(account_id)
        return rules

    def state_digest(self) -> str:
        digest = hashlib.sha256(
            f"{self.clock}|{self.last_closed_day}|{sorted(self.marks.items())}".encode()
        )
        for account_id in sorted(self.accounts):
            account = self.accounts[account_id]
            ledger = account.ledger
            digest.update(
                f"|{account_id}|{ledger.cash}|{ledger.realized_pnl}|{account.peak_equity}"
                f"|{account.day_start_equity}|{list(account.order_times)}"
                f"|{sorted(account.levels.items())}|{sorted(account.fills_seen.items())}"
                f"|{account.halted}|{account.kill_switch_tripped}"
                f"|{account.alerts_raised}|{account.halts_requested}".encode()
            )
            for symbol in sorted(ledger.positions):
                position = ledger.positions[symbol]
                digest.update(f"|{symbol},{position.qty},{position.avg_entry_price}".encode())
        return digest.hexdigest()

    def rebuild_holders(self) -> None:
        """Recompute which accounts hold each symbol (after restoring a snapshot)."""
        self._holders = {}
        for account_id, account in self.accounts.items():
            for symbol in account.ledger.positions:
                self._holders.setdefault(symbol, set()).add(account_id)

    # ---- inputs ----

    def _deposit(self, account_id: str, amount: Decimal, ts: int) -> list[RiskOutput]:
        account = self.accounts.get(account_id)
        if account is None or not amount.is_finite() or amount <= 0:
            return []  # accounts ignores these too
        account.ledger.deposit(amount)
        # New capital is neither profit nor recovery: the landmarks move with it.
        account.peak_equity += amount
        account.day_start_equity += amount
        return self._evaluate(account, ts)

    def _asset_deposited(self, event: orders.AssetDeposited) -> list[RiskOutput]:
        account = self.accounts.get(event.account_id)
        if account is None or not deposit_is_valid(event):
            return []  # accounts ignores these too
        account.ledger.deposit_asset(event.symbol, event.qty, event.price)
        # Units transferred in are new capital at their cost basis, as cash would be.
        capital = event.qty * event.price
        account.peak_equity += capital
        account.day_start_equity += capital
        self._held(account, event.symbol)
        return self._evaluate(account, event.ts)

    def _execution(self, fill: orders.Execution) -> list[RiskOutput]:
        account = self.accounts.get(fill.account_id)
        if account is None or fill.match_id <= account.fills_seen.get(fill.symbol, 0):
            return []  # an unknown account (accounts ignores it), or a fill already applied
        account.fills_seen[fill.symbol] = fill.match_id
        side = 1 if fill.side == "buy" else -1
        account.ledger.apply_fill(fill.order_id, fill.symbol, side, fill.qty, fill.price)
        self._held(account, fill.symbol)
        return self._evaluate(account, fill.ts)

    def _position_changed(self, change: positions.PositionChanged) -> list[RiskOutput]:
        # The owner's statement of the account after one fill: it replaces what the core
        # computed, and tells a fill the core has not seen yet as its Execution would.
        account = self.accounts.get(change.account_id)
        if account is None:
            account = self.accounts[change.account_id] = AccountRisk(Ledger(change.account_id))
        if change.match_id <= account.fills_seen.get(change.symbol, 0):
            return []
        account.fills_seen[change.symbol] = change.match_id
        ledger = account.ledger
        ledger.cash = change.cash
        ledger.realized_pnl = change.realized_pnl
        if change.qty == 0:
            ledger.positions.pop(change.symbol, None)
        else:
            ledger.positions[change.symbol] = Position(
                change.symbol, change.qty, change.avg_entry_price
            )
        self._held(account, change.symbol)
        return self._evaluate(account, change.ts)

    def _resumed(self, account_id: str, ts: int) -> list[RiskOutput]:
        account = self.accounts.get(account_id)
        if account is None:
            return []
        was_halted, account.halted = account.halted, False
        if not (was_halted and account.kill_switch_tripped):
            return []
        # The admin reset: the loss so far is accepted and the day starts again from here.
        account.kill_switch_tripped = False
        account.day_start_equity = self._equity(account)
        return self._evaluate(account, ts)

    def _session_closed(self, day: str, ts: int) -> list[RiskOutput]:
        if day <= self.last_closed_day:
            return []  # that day already ended (the session clock may say it twice)
        self.last_closed_day = day
        out: list[RiskOutput] = []
        for account_id in sorted(self.accounts):
            account = self.accounts[account_id]
            account.day_start_equity = self._equity(account)
            out.extend(self._evaluate(account, ts))
        return out

    def _equity(self, account: AccountRisk) -> Decimal:
        return account.measure(self.marks, self.clock, self.clock).equity

    def _held(self, account: AccountRisk, symbol: str) -> None:
        holders = self._holders.setdefault(symbol, set())
        if symbol in account.ledger.positions:
            holders.add(account.account_id)
        else:
            holders.discard(account.account_id)

    # ---- rules ----

    def _evaluate(self, account: AccountRisk, ts: int) -> list[RiskOutput]:
        rules = self.rules_for(account.account_id)
        window_start = self._window_start(account.account_id)
        account.forget_orders_before(window_start)
        metrics = account.measure(self.marks, ts, window_start)
        account.peak_equity = metrics.peak_equity
        out: list[RiskOutput] = []
        for rule in RuleName:
            limit = rules.limit(rule)
            if limit is None:
                account.levels.pop(rule, None)
                continue
            value = metrics.value_of(rule)
            if rule is RuleName.DAILY_LOSS and value >= limit and not account.kill_switch_tripped:
                out.append(self._halt(account, value, limit, ts))
            current = account.levels.get(rule, Level.NORMAL)
            level = next_level(current, value, limit, rules.warning_at, rules.hysteresis)
            if level == current:
                continue
            if level is Level.NORMAL:
                del account.levels[rule]
            else:
                account.levels[rule] = level
            out.append(self._alert(account, rule, current, level, metrics, limit, rules, ts))
        return out

    def _halt(self, account: AccountRisk, loss: Decimal, limit: Decimal, ts: int) -> RiskOutput:
        account.kill_switch_tripped = True
        account.halts_requested += 1
        reason = f"{HALT_REASON_PREFIX} daily loss {loss:.2f} reached the limit {limit:.2f}"
        return RiskOutput(
            subjects.ORDERS_ADMIN,
            orders.TradingHalted(ts=ts, account_id=account.account_id, reason=reason),
            f"risk-halt:{account.account_id}:{account.halts_requested}",
        )

    def _alert(
        self,
        account: AccountRisk,
        rule: RuleName,
        before: Level,
        after: Level,
        metrics: RiskMetrics,
        limit: Decimal,
        rules: RiskRules,
        ts: int,
    ) -> RiskOutput:
        levels = thresholds(limit, rules.warning_at)
        value = metrics.value_of(rule)
        label = _LABEL[rule]
        shown, shown_limit = _show(rule, value, rules), _show(rule, limit, rules)
        if after > before:
            threshold = levels[after]
            if after is Level.CRITICAL:
                message = f"{label} {shown} reached the limit {shown_limit}"
                if rule is RuleName.DAILY_LOSS:
                    message += ": trading halted until an admin resumes the account"
            else:
                message = (
                    f"{label} {shown} reached the warning level {_show(rule, threshold, rules)} "
                    f"({rules.warning_at:.0%} of the limit {shown_limit})"
                )
        else:
            # Back under: the level re-arms. `after` is the level still in force.
            threshold = levels[Level.CRITICAL] if after is Level.WARNING else levels[Level.WARNING]
            message = (
                f"{label} {shown} is back under the "
                f"{'limit' if after is Level.WARNING else 'warning level'} "
                f"{_show(rule, threshold, rules)}"
            )
        if rule is RuleName.CONCENTRATION and metrics.concentration_symbol:
            message += f" (largest position: {metrics.concentration_symbol})"
        account.alerts_raised += 1
        severity: Severity = (
            "info" if after < before else "critical" if after is Level.CRITICAL else "warning"
        )
        return RiskOutput(
            subjects.risk_alert(severity),
            RiskAlert(
                ts=ts,
                alert_id=f"risk-alert:{account.account_id}:{account.alerts_raised}",
                account_id=account.account_id,
                rule=rule,
                severity=severity,
                value=value,
                limit=limit,
                threshold=threshold,
                message=message,
                symbol=metrics.concentration_symbol if rule is RuleName.CONCENTRATION else "",
            ),
            f"risk-alert:{account.account_id}:{account.alerts_raised}",
        )


def _show(rule: RuleName, value: Decimal, rules: RiskRules) -> str:
    if rule in (RuleName.CONCENTRATION, RuleName.DRAWDOWN):
        return f"{value:.2%}"
    if rule is RuleName.ORDER_RATE:
        return f"{value:.0f} per {rules.order_rate_window}s"
    return f"{value:.2f}"
