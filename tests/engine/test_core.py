from __future__ import annotations

from decimal import Decimal as D

from bourse.engine.core import MatchingEngine
from bourse.model import marketdata, orders
from bourse.model.instruments import DEFAULT_UNIVERSE


def submitted(
    oid: str,
    account: str,
    side: str,
    qty: str,
    limit: str | None = None,
    kind: str = "limit",
    tif: str = "gtc",
    symbol: str = "AAPL",
) -> orders.OrderSubmitted:
    return orders.OrderSubmitted(
        ts=1,
        order_id=oid,
        client_order_id=f"c-{oid}",
        account_id=account,
        symbol=symbol,
        side=side,
        kind=kind,
        time_in_force=tif,
        qty=D(qty),  # type: ignore[arg-type]
        limit_price=D(limit) if limit else None,
    )


def validated(
    order: orders.OrderSubmitted, ts: int, protection: str | None = None
) -> orders.OrderValidated:
    return orders.OrderValidated(
        ts=ts, order=order, protection_price=D(protection) if protection else None
    )


def test_a_market_buy_fills_against_a_resting_sell_with_decimal_outputs() -> None:
    engine = MatchingEngine(DEFAULT_UNIVERSE)
    resting = engine.apply(validated(submitted("s", "maker", "sell", "10", "190.05"), ts=10))
    assert [subject for subject, _ in resting] == [
        "orders.accepted.s",
        "md.bourse.AAPL",
    ]
    out = engine.apply(
        validated(
            submitted("b", "taker", "buy", "4", kind="market", tif="day"), 20, protection="199.00"
        )
    )
    executions = [m for _, m in out if isinstance(m, orders.Execution)]
    assert [
        (e.order_id, e.account_id, e.side, e.price, e.qty, e.leaves_qty, e.liquidity)
        for e in executions
    ] == [
        ("s", "maker", "sell", D("190.05"), D("4"), D("6"), "maker"),
        ("b", "taker", "buy", D("190.05"), D("4"), D("0"), "taker"),
    ]
    assert executions[0].match_id == executions[1].match_id == 1
    assert all(m.ts == 20 for _, m in out)
    trades = [m for _, m in out if isinstance(m, marketdata.Trade)]
    assert (
        trades[0].price == D("190.05") and trades[0].side == "buy" and trades[0].venue == "bourse"
    )
    depth = [m for _, m in out if isinstance(m, marketdata.Depth)][-1]
    assert depth.asks == [(D("190.05"), D("6"))] and depth.bids == []


def test_quotes_appear_once_both_sides_rest_and_sequence_has_no_gaps() -> None:
    engine = MatchingEngine(DEFAULT_UNIVERSE)
    out = engine.apply(
        validated(submitted("b", "x", "buy", "0.5", "64000.00", symbol="BTC-USD"), 1)
    )
    out += engine.apply(
        validated(submitted("s", "y", "sell", "0.25", "64010.00", symbol="BTC-USD"), 2)
    )
    md = [m for _, m in out if not isinstance(m, orders._Event)]  # type: ignore[attr-defined]
    quotes = [m for m in md if isinstance(m, marketdata.Quote)]
    assert len(quotes) == 1
    assert (quotes[0].bid, quotes[0].ask, quotes[0].bid_size, quotes[0].ask_size) == (
        D("64000.00"),
        D("64010.00"),
        D("0.5000"),
        D("0.2500"),
    )
    assert [m.seq for m in md] == list(range(1, len(md) + 1))


def test_cancel_by_someone_else_is_rejected_and_changes_nothing() -> None:
    engine = MatchingEngine(DEFAULT_UNIVERSE)
    engine.apply(validated(submitted("o", "owner", "buy", "1", "100.00"), 1))
    before = engine.state_digest()
    out = engine.apply(
        orders.CancelValidated(ts=2, order_id="o", account_id="thief", symbol="AAPL")
    )
    assert len(out) == 1
    rejected = out[0][1]
    assert isinstance(rejected, orders.OrderRejected)
    assert rejected.code is orders.RejectCode.UNKNOWN_ORDER and rejected.account_id == "thief"
    assert engine.state_digest() == before
    out = engine.apply(
        orders.CancelValidated(ts=3, order_id="o", account_id="owner", symbol="AAPL")
    )
    assert isinstance(out[0][1], orders.OrderCancelled) and out[0][0] == "orders.cancelled.o"


def test_replace_reports_old_and_new_ids() -> None:
    engine = MatchingEngine(DEFAULT_UNIVERSE)
    engine.apply(validated(submitted("o", "a", "buy", "10", "100.00"), 1))
    request = orders.ReplaceRequested(
        ts=2, order_id="o", new_order_id="o2", new_client_order_id="c2", account_id="a", qty=D("5")
    )
    out = engine.apply(
        orders.ReplaceValidated(
            ts=2, request=request, symbol="AAPL", qty=D("5"), limit_price=None, stop_price=None
        )
    )
    replaced = out[0][1]
    assert isinstance(replaced, orders.OrderReplaced)
    assert (replaced.order_id, replaced.new_order_id, replaced.qty, replaced.kept_priority) == (
        "o",
        "o2",
        D("5"),
        True,
    )
    assert engine.book("AAPL").order("o2") is not None


def test_the_book_now_is_the_last_depth_published_and_orders_after_every_one() -> None:
    engine = MatchingEngine(DEFAULT_UNIVERSE)
    published: list[marketdata.MarketData] = []
    for n, (side, price) in enumerate([("buy", "189.90"), ("sell", "190.10"), ("buy", "189.95")]):
        order = submitted(f"o{n}", "maker", side, "5", price)
        published += [
            m for _, m in engine.apply(validated(order, ts=10 + n)) if hasattr(m, "venue")
        ]
    last = [m for m in published if isinstance(m, marketdata.Depth)][-1]
    now = engine.depth_now("AAPL", ts=99)
    assert now is not None
    assert (now.bids, now.asks) == (last.bids, last.asks)
    assert now.bids == [(D("189.95"), D(5)), (D("189.90"), D(5))]
    assert now.seq == max(m.seq for m in published)  # no depth published so far is newer
    # A book nobody traded is empty; a symbol nobody lists has none.
    empty = engine.depth_now("MSFT", ts=99)
    assert empty is not None and (empty.bids, empty.asks) == ([], [])
    assert engine.depth_now("NOPE", ts=99) is None
