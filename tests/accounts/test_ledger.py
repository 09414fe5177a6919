from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bourse.accounts.ledger import Ledger


def test_buy_then_sell_realizes_pnl_and_nets_to_flat() -> None:
    ledger = Ledger("a", cash=D("10000"))
    ledger.reserve("b1", "AAPL", +1, D("10"), D("100.00"))
    assert ledger.buying_power == D("9000.00")
    ledger.apply_fill("b1", "AAPL", +1, D("4"), D("99.50"))
    assert ledger.cash == D("10000") - D("398.00")
    assert ledger.buying_power == ledger.cash - D("600.00")  # 6 still reserved at 100
    ledger.apply_fill("b1", "AAPL", +1, D("6"), D("100.00"))
    assert ledger.reservations == {}
    assert ledger.position("AAPL").qty == D("10")
    assert ledger.position("AAPL").avg_entry_price == D("99.80")
    realized = ledger.apply_fill("s1", "AAPL", -1, D("10"), D("101.00"))
    assert realized == D("12.00")
    assert ledger.realized_pnl == D("12.00")
    assert "AAPL" not in ledger.positions
    assert ledger.cash == D("10012.00")


def test_sells_reserve_shares_so_a_position_cannot_be_sold_twice() -> None:
    ledger = Ledger("a", cash=D("0"))
    ledger.apply_fill("b", "AAPL", +1, D("5"), D("1"))
    ledger.cash = D("0")
    ledger.reserve("s1", "AAPL", -1, D("3"), D("2"))
    assert ledger.sellable("AAPL") == D("2")
    ledger.release("s1")
    assert ledger.sellable("AAPL") == D("5")


def test_short_sale_reserves_margin_cash() -> None:
    ledger = Ledger("a", cash=D("1000"), shorting_enabled=True)
    ledger.reserve("s", "TSLA", -1, D("2"), D("250"))
    assert ledger.buying_power == D("500")
    ledger.apply_fill("s", "TSLA", -1, D("2"), D("250"))
    assert ledger.position("TSLA").qty == D("-2")
    assert ledger.cash == D("1500")


def test_flipping_a_position_opens_the_rest_at_the_fill_price() -> None:
    ledger = Ledger("a", cash=D("1000"), shorting_enabled=True)
    ledger.apply_fill("b", "X", +1, D("2"), D("10"))
    realized = ledger.apply_fill("s", "X", -1, D("5"), D("12"))
    assert realized == D("4")
    assert ledger.position("X").qty == D("-3")
    assert ledger.position("X").avg_entry_price == D("12")


def test_deposits_must_be_positive_and_finite() -> None:
    ledger = Ledger("a")
    for bad in (D("0"), D("-1"), D("NaN"), D("Infinity")):
        with pytest.raises(ValueError, match="positive"):
            ledger.deposit(bad)
    assert ledger.cash == 0


trades = st.lists(
    st.tuples(
        st.integers(0, 3),  # buyer
        st.integers(0, 3),  # seller
        st.sampled_from(["AAPL", "BTC-USD"]),
        st.decimals(min_value=D("0.0001"), max_value=D("50"), places=4),
        st.decimals(min_value=D("0.01"), max_value=D("70000"), places=2),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(trades=trades)
def test_cash_and_positions_are_conserved_across_accounts(trades: list) -> None:  # type: ignore[type-arg]
    ledgers = [Ledger(f"a{i}", cash=D("1000000"), shorting_enabled=True) for i in range(4)]
    last_price: dict[str, D] = {}
    for n, (buyer, seller, symbol, qty, price) in enumerate(trades):
        if buyer == seller:
            continue
        ledgers[buyer].apply_fill(f"b{n}", symbol, +1, qty, price)
        ledgers[seller].apply_fill(f"s{n}", symbol, -1, qty, price)
        last_price[symbol] = price
    assert sum(ledger.cash for ledger in ledgers) == 4 * D("1000000")
    for symbol in last_price:
        assert sum(ledger.position(symbol).qty for ledger in ledgers) == 0
    # Valued at the last trade price, total equity is what was deposited: nothing is created.
    assert sum(ledger.equity(last_price) for ledger in ledgers) == 4 * D("1000000")
