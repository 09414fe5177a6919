"""Units transferred into an account (`AssetDeposited`): the position grows at the cost basis,
cash does not move, and the coins can then be sold though crypto is never sold short."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from bourse.accounts import snapshot
from bourse.accounts.core import AccountsCore
from bourse.model import orders, positions
from bourse.model.instruments import DEFAULT_UNIVERSE
from bourse.model.orders import RejectCode


def core_with(cash: str = "1000") -> AccountsCore:
    core = AccountsCore(DEFAULT_UNIVERSE)
    core.apply(orders.AccountOpened(ts=0, account_id="a"))
    core.apply(orders.CashDeposited(ts=0, account_id="a", amount=D(cash)))
    return core


def coins(
    qty: str, price: str, *, account: str = "a", symbol: str = "BTC-USD"
) -> orders.AssetDeposited:
    return orders.AssetDeposited(
        ts=5, account_id=account, symbol=symbol, qty=D(qty), price=D(price)
    )


def sell(qty: str, price: str, oid: str = "o1") -> orders.OrderSubmitted:
    return orders.OrderSubmitted(
        ts=6,
        order_id=oid,
        client_order_id=f"c-{oid}",
        account_id="a",
        symbol="BTC-USD",
        side="sell",
        kind="limit",
        time_in_force="gtc",
        qty=D(qty),
        limit_price=D(price),
        reference_price=D(price),
    )


def test_a_deposit_of_coins_is_a_position_at_its_cost_basis_and_moves_no_cash() -> None:
    core = core_with("1000")
    out = core.apply(coins("0.5", "60000"))
    assert len(out) == 1
    subject, change = out[0]
    assert subject == "positions.a.BTC-USD"
    assert change == positions.PositionChanged(
        ts=5,
        account_id="a",
        symbol="BTC-USD",
        qty=D("0.5"),
        avg_entry_price=D(60000),
        realized_pnl=D(0),
        cash=D(1000),
        match_id=0,  # not after a fill
    )
    # A second one averages in, as a buy at that price would.
    core.apply(coins("0.5", "70000"))
    position = core.ledgers["a"].position("BTC-USD")
    assert (position.qty, position.avg_entry_price) == (D(1), D(65000))
    assert core.ledgers["a"].cash == D(1000)


def test_deposited_coins_can_be_sold_and_no_more() -> None:
    core = core_with()
    [(_, refused)] = core.apply(sell("0.1", "65000"))
    assert isinstance(refused, orders.OrderRejected)
    assert refused.code is RejectCode.INSUFFICIENT_POSITION

    core = core_with()
    core.apply(coins("0.1", "60000"))
    [(_, validated)] = core.apply(sell("0.1", "65000"))
    assert isinstance(validated, orders.OrderValidated)
    assert core.ledgers["a"].sellable("BTC-USD") == 0  # held for the order now
    [(_, again)] = core.apply(sell("0.0001", "65000", oid="o2"))
    assert isinstance(again, orders.OrderRejected)
    assert again.code is RejectCode.INSUFFICIENT_POSITION


@pytest.mark.parametrize(
    "event",
    [
        coins("1", "60000", account="nobody"),
        coins("1", "60000", symbol="NOPE"),
        coins("0", "60000"),
        coins("-1", "60000"),
        coins("NaN", "60000"),
        coins("Infinity", "60000"),
        coins("1", "0"),
        coins("1", "-5"),
        coins("1", "NaN"),
    ],
    ids=lambda e: f"{e.account_id}-{e.symbol}-{e.qty}-{e.price}",
)
def test_an_invalid_deposit_changes_nothing(event: orders.AssetDeposited) -> None:
    core = core_with()
    before = core.state_digest()
    assert core.apply(event) == []
    assert core.state_digest() == before


def test_the_deposit_survives_a_snapshot() -> None:
    core = core_with()
    core.apply(coins("0.25", "64000.5"))
    again = snapshot.load(snapshot.dump(core), DEFAULT_UNIVERSE)
    assert again.state_digest() == core.state_digest()
    assert again.ledgers["a"].position("BTC-USD").qty == D("0.25")
