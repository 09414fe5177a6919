"""The kill switch, with the real accounts and engine cores: a losing strategy reaches its
daily loss limit, is halted exactly once, its next order is refused, and an admin resume
gives it back its trading and re-arms the switch."""

from __future__ import annotations

import itertools
from decimal import Decimal as D

from bourse.model import orders
from bourse.model.orders import RejectCode, Side, TimeInForce
from bourse.risk.core import RiskCore
from bourse.risk.rules import RiskConfig, RiskRules, RuleOverrides
from tests.risk.inputs import T0, Platform, alerts, halts, summary

REFERENCE = D("190.00")
_ids = itertools.count()


def limit_order(
    account: str, side: Side, price: str, qty: int = 100, tif: TimeInForce = "gtc"
) -> tuple[str, orders.OrdersEvent]:
    n = next(_ids)
    return (
        "orders.new",
        orders.OrderSubmitted(
            ts=T0 + n,
            order_id=f"{account}-{n}",
            client_order_id=f"{account}-{n}",
            account_id=account,
            symbol="AAPL",
            side=side,
            kind="limit",
            time_in_force=tif,
            qty=D(qty),
            limit_price=D(price),
            reference_price=REFERENCE,
        ),
    )


def admin(message: orders.OrdersEvent) -> tuple[str, orders.OrdersEvent]:
    return ("orders.admin", message)


def round_trip(platform: Platform) -> None:
    """The loser buys at 191 and sells at 189 from the maker: 200 lost each time."""
    platform.submit(limit_order("maker", "sell", "191.00"))
    platform.submit(limit_order("loser", "buy", "191.00", tif="ioc"))
    platform.submit(limit_order("maker", "buy", "189.00"))
    platform.submit(limit_order("loser", "sell", "189.00", tif="ioc"))


def platform_with_a_loser() -> Platform:
    config = RiskConfig(
        defaults=RiskRules(daily_loss_limit=D(1000)),
        accounts={"maker": RuleOverrides(daily_loss_limit=None)},
    )
    platform = Platform(RiskCore(config))
    platform.submit(
        admin(orders.AccountOpened(ts=T0, account_id="maker", shorting_enabled=True)),
        admin(orders.CashDeposited(ts=T0, account_id="maker", amount=D(1_000_000))),
        admin(orders.AccountOpened(ts=T0, account_id="loser")),
        admin(orders.CashDeposited(ts=T0, account_id="loser", amount=D(100_000))),
    )
    platform.mark("AAPL", REFERENCE, T0)
    return platform


def test_a_losing_strategy_is_halted_once_and_its_next_order_refused() -> None:
    platform = platform_with_a_loser()
    for _ in range(4):
        round_trip(platform)
    assert summary(platform.outputs) == [("warning", "daily_loss")]  # 800 lost
    assert not halts(platform.outputs)

    round_trip(platform)  # 1,000 lost: the limit
    assert summary(platform.outputs) == [
        ("warning", "daily_loss"),
        ("halt", "loser"),
        ("critical", "daily_loss"),
    ]
    [halt] = halts(platform.outputs)
    assert halt.reason == "risk: daily loss 1000.00 reached the limit 1000.00"
    assert platform.exchange.accounts.halted == {"loser": halt.reason}

    platform.submit(limit_order("maker", "sell", "191.00"))
    platform.submit(limit_order("loser", "buy", "191.00"))
    [refused] = platform.rejections("loser")
    assert refused.code is RejectCode.TRADING_HALTED
    assert refused.message == f"trading is halted for this account: {halt.reason}"

    # The risk engine and the accounts service agree on the money, fill by fill.
    ledger = platform.exchange.accounts.ledgers["loser"]
    metrics = platform.risk.metrics("loser")
    assert metrics is not None
    assert (metrics.cash, metrics.realized_pnl) == (ledger.cash, ledger.realized_pnl)
    assert metrics.daily_pnl == D(-1000)


def test_further_losses_while_halted_raise_no_new_halt() -> None:
    platform = platform_with_a_loser()
    for _ in range(4):
        round_trip(platform)
    platform.submit(limit_order("maker", "sell", "191.00"))
    platform.submit(limit_order("loser", "buy", "191.00", tif="ioc"))  # holds 100 at 191
    platform.mark("AAPL", "181.00", T0 + 10**9)  # 800 + 1,000 lost: halted
    assert len(halts(platform.outputs)) == 1
    for n, price in enumerate(["180.00", "170.00", "190.50", "175.00", "150.00"]):
        platform.mark("AAPL", price, T0 + 2 * 10**9 + n)
    assert len(halts(platform.outputs)) == 1
    # At 190.50 the loss is back to 850, under the limit less the hysteresis (950): the
    # alert re-arms, and fires again at 175; the switch stays tripped until an admin resumes.
    assert [a.severity for a in alerts(platform.outputs)] == [
        "warning",
        "critical",
        "info",
        "critical",
    ]


def test_an_admin_resume_restores_trading_and_re_arms_the_switch() -> None:
    platform = platform_with_a_loser()
    for _ in range(5):
        round_trip(platform)
    assert len(halts(platform.outputs)) == 1
    mark = len(platform.outputs)

    platform.submit(admin(orders.TradingResumed(ts=T0 + 10**9, account_id="loser")))
    assert platform.exchange.accounts.halted == {}
    # The day starts again from here: the loss so far is behind the account.
    assert summary(platform.outputs[mark:]) == [("info", "daily_loss")]
    metrics = platform.risk.metrics("loser")
    assert metrics is not None
    assert (metrics.daily_pnl, metrics.kill_switch_tripped) == (D(0), False)

    round_trip(platform)  # trading again: the orders fill
    assert platform.rejections("loser") == []
    for _ in range(4):
        round_trip(platform)  # another 1,000 lost: halted again, once
    assert summary(platform.outputs[mark:]) == [
        ("info", "daily_loss"),
        ("warning", "daily_loss"),
        ("halt", "loser"),
        ("critical", "daily_loss"),
    ]
    assert [o.msg_id for o in platform.outputs if o.subject == "orders.admin"] == [
        "risk-halt:loser:1",
        "risk-halt:loser:2",
    ]
    assert "loser" in platform.exchange.accounts.halted


def test_a_resume_before_the_halt_reaches_the_journal_does_not_re_arm_the_switch() -> None:
    core = RiskCore(RiskConfig(defaults=RiskRules(daily_loss_limit=D(100))))
    core.apply(orders.AccountOpened(ts=T0, account_id="a"))
    core.apply(orders.CashDeposited(ts=T0, account_id="a", amount=D(1000)))
    core.apply(
        orders.Execution(
            ts=T0,
            order_id="o",
            account_id="a",
            symbol="AAPL",
            side="buy",
            price=D(10),
            qty=D(100),
            leaves_qty=D(0),
            liquidity="taker",
            match_id=1,
        )
    )
    [halt, _] = core.on_mark("AAPL", D(9), T0 + 1)
    # An admin resumes before the risk engine's halt lands: accounts was not halted yet.
    assert core.apply(orders.TradingResumed(ts=T0 + 2, account_id="a")) == []
    assert core.on_mark("AAPL", D(8), T0 + 3) == []  # still tripped: no second halt
    assert isinstance(halt.message, orders.TradingHalted)
    core.apply(halt.message)  # the halt lands on the journal
    out = core.apply(orders.TradingResumed(ts=T0 + 4, account_id="a"))
    assert summary(out) == [("info", "daily_loss")]  # now re-armed, the day re-based
