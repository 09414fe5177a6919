from __future__ import annotations

from decimal import Decimal as D

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bourse.accounts.ledger import ZERO, Ledger


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


def _amounts(low: str, high: str) -> st.SearchStrategy[D]:
    # Varied places, so the totals' exponents (their text: 100 or 100.00) are exercised too.
    return st.integers(0, 4).flatmap(
        lambda places: st.decimals(min_value=D(low), max_value=D(high), places=places)
    )


_order_ids = st.sampled_from([f"o{i}" for i in range(6)])
_operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("reserve"),
            _order_ids,
            st.sampled_from(["AAPL", "MSFT"]),
            st.sampled_from([1, -1]),
            _amounts("0.0001", "20"),
            _amounts("0.01", "500"),
        ),
        st.tuples(st.just("release"), _order_ids),
        st.tuples(st.just("rename"), _order_ids, _order_ids, _amounts("0.0001", "20")),
        st.tuples(
            st.just("fill"),
            _order_ids,
            st.sampled_from(["AAPL", "MSFT"]),
            st.sampled_from([1, -1]),
            _amounts("0.0001", "10"),
            _amounts("0.01", "500"),
        ),
        st.tuples(st.just("hold"), _order_ids, _amounts("0", "1000")),
        st.tuples(st.just("release_hold"), _order_ids),
    ),
    max_size=40,
)


def _summed_cash(ledger: Ledger) -> D:
    reserved = sum((r.cash for r in ledger.reservations.values()), ZERO)
    return reserved + sum(ledger.holds.values(), ZERO)


def _summed_shares(ledger: Ledger, symbol: str) -> D:
    return sum((r.shares for r in ledger.reservations.values() if r.symbol == symbol), ZERO)


def _assert_totals_are_the_sums(ledger: Ledger) -> None:
    # Equal as text, not only as numbers: 100.00 and 100 read differently in a message.
    assert str(ledger.reserved_cash) == str(_summed_cash(ledger))
    assert str(ledger.buying_power) == str(ledger.cash - _summed_cash(ledger))
    for symbol in ("AAPL", "MSFT"):
        assert str(ledger.reserved_shares(symbol)) == str(_summed_shares(ledger, symbol))
        long = max(ZERO, ledger.position(symbol).qty)
        assert str(ledger.sellable(symbol)) == str(long - _summed_shares(ledger, symbol))


@settings(max_examples=300, deadline=None)
@given(operations=_operations)
def test_running_totals_always_equal_the_sums_over_reservations_and_holds(
    operations: list,  # type: ignore[type-arg]
) -> None:
    ledger = Ledger("a", cash=D("100000"), shorting_enabled=True)
    for operation in operations:
        match operation:
            case ("reserve", order_id, symbol, side, qty, price):
                ledger.reserve(order_id, symbol, side, qty, price)
            case ("release", order_id):
                ledger.release(order_id)
            case ("rename", order_id, new_order_id, qty):
                if order_id in ledger.reservations:
                    price = ledger.reservations[order_id].price
                    ledger.rename_reservation(order_id, new_order_id, qty, price)
            case ("fill", order_id, symbol, side, qty, price):
                reservation = ledger.reservations.get(order_id)
                if reservation is not None:  # a fill is of the order's own symbol and side
                    symbol, side = reservation.symbol, reservation.side
                    qty = min(qty, reservation.remaining)
                ledger.apply_fill(order_id, symbol, side, qty, price)
            case ("hold", order_id, amount):
                ledger.hold(order_id, amount)
            case ("release_hold", order_id):
                ledger.release_hold(order_id)
        _assert_totals_are_the_sums(ledger)
    # A ledger decoded from a snapshot (msgpack, as accounts/snapshot.py stores it) rebuilds
    # the same totals from the reservations and holds it holds.
    restored = msgspec.msgpack.decode(msgspec.msgpack.encode(ledger), type=Ledger)
    assert restored == ledger
    _assert_totals_are_the_sums(restored)
    assert str(restored.reserved_cash) == str(ledger.reserved_cash)
