"""Accounts reacts to the engine's refusals only; its own refusals never release anything."""

from __future__ import annotations

from decimal import Decimal as D

from bourse.accounts.core import AccountsCore
from bourse.model import orders
from bourse.model.instruments import DEFAULT_UNIVERSE


def fold(core: AccountsCore, events: list[orders.OrdersEvent]) -> None:
    """Apply events, and feed accounts' own outputs back to it as the journal would."""
    queue = list(events)
    while queue:
        for _, output in core.apply(queue.pop(0)):
            if isinstance(output, orders.OrderRejected):
                queue.append(output)


def opened(cash: str) -> list[orders.OrdersEvent]:
    return [
        orders.AccountOpened(ts=0, account_id="a"),
        orders.CashDeposited(ts=0, account_id="a", amount=D(cash)),
    ]


def limit_buy(oid: str, client: str, qty: str, price: str) -> orders.OrderSubmitted:
    return orders.OrderSubmitted(
        ts=1,
        order_id=oid,
        client_order_id=client,
        account_id="a",
        symbol="AAPL",
        side="buy",
        kind="limit",
        time_in_force="gtc",
        qty=D(qty),
        limit_price=D(price),
        reference_price=D(price),
    )


def test_a_refused_second_replace_keeps_the_first_replaces_hold() -> None:
    core = AccountsCore(DEFAULT_UNIVERSE)
    fold(core, [*opened("20000"), limit_buy("o", "c", "10", "100.00")])
    first = orders.ReplaceRequested(
        ts=2,
        order_id="o",
        new_order_id="o2",
        new_client_order_id="c2",
        account_id="a",
        qty=D("100"),
    )
    fold(core, [first])  # validated: holds 9,000 more until the engine answers
    held = core.ledgers["a"].buying_power
    assert held == D("10000")
    second = orders.ReplaceRequested(
        ts=3,
        order_id="o",
        new_order_id="o3",
        new_client_order_id="c3",
        account_id="a",
        qty=D("500"),
    )
    fold(core, [second])  # refused for buying power
    assert core.ledgers["a"].buying_power == held


def test_a_reused_order_id_does_not_release_the_live_orders_reservation() -> None:
    core = AccountsCore(DEFAULT_UNIVERSE)
    fold(core, [*opened("20000"), limit_buy("o", "c", "100", "100.00")])
    assert core.ledgers["a"].buying_power == D("10000")
    fold(core, [limit_buy("o", "c", "100", "100.00")])  # duplicate client id: refused
    assert core.ledgers["a"].buying_power == D("10000")
    assert "o" in core.open_orders


def test_the_engines_refusal_of_a_new_order_releases_its_reservation() -> None:
    core = AccountsCore(DEFAULT_UNIVERSE)
    fold(core, [*opened("20000"), limit_buy("o", "c", "100", "100.00")])
    fold(
        core,
        [
            orders.OrderRejected(
                ts=2,
                order_id="o",
                account_id="a",
                request="new",
                code=orders.RejectCode.UNKNOWN_SYMBOL,
                message="x",
                source="engine",
            )
        ],
    )
    assert core.ledgers["a"].buying_power == D("20000")
