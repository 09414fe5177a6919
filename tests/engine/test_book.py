from __future__ import annotations

import pytest

from bourse.engine.book import OrderBook
from bourse.engine.types import (
    Accepted,
    Cancelled,
    CancelReason,
    Fill,
    NewOrder,
    OrderType,
    Rejected,
    RejectReason,
    Replaced,
    SelfTradePrevention,
    Side,
    TimeInForce,
    Triggered,
)

BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET, STOP, STOP_LIMIT = (
    OrderType.LIMIT,
    OrderType.MARKET,
    OrderType.STOP,
    OrderType.STOP_LIMIT,
)


def order(
    oid: str,
    side: Side,
    qty: int,
    price: int = 0,
    *,
    account: str = "a",
    type: OrderType = LIMIT,
    tif: TimeInForce = TimeInForce.GTC,
    stop: int = 0,
) -> NewOrder:
    return NewOrder(
        order_id=oid,
        account=account,
        side=side,
        type=type,
        tif=tif,
        qty=qty,
        price=price,
        stop=stop,
    )


def fills(events: list) -> list[tuple[str, str, int, int]]:  # type: ignore[type-arg]
    return [
        (e.maker_order_id, e.taker_order_id, e.price, e.qty) for e in events if isinstance(e, Fill)
    ]


def test_price_then_time_priority() -> None:
    book = OrderBook("X")
    book.submit(order("s1", SELL, 5, 101, account="m1"))
    book.submit(order("s2", SELL, 5, 100, account="m2"))
    book.submit(order("s3", SELL, 5, 100, account="m3"))
    events = book.submit(order("b", BUY, 12, 101, account="t"))
    assert fills(events) == [("s2", "b", 100, 5), ("s3", "b", 100, 5), ("s1", "b", 101, 2)]
    assert book.best(SELL) == (101, 3)
    assert book.best(BUY) is None


def test_partial_fill_rests_the_remainder_at_its_limit() -> None:
    book = OrderBook("X")
    book.submit(order("s", SELL, 3, 100, account="m"))
    events = book.submit(order("b", BUY, 10, 100, account="t"))
    assert isinstance(events[0], Accepted)
    fill = events[1]
    assert isinstance(fill, Fill) and fill.taker_remaining == 7 and fill.maker_remaining == 0
    assert book.best(BUY) == (100, 7)
    assert book.order("b") is not None and book.order("b").remaining == 7  # type: ignore[union-attr]


def test_market_order_walks_the_book_and_cancels_what_it_cannot_fill() -> None:
    book = OrderBook("X")
    book.submit(order("s1", SELL, 2, 100, account="m"))
    book.submit(order("s2", SELL, 2, 105, account="m"))
    events = book.submit(order("b", BUY, 6, type=MARKET, tif=TimeInForce.DAY, account="t"))
    assert fills(events) == [("s1", "b", 100, 2), ("s2", "b", 105, 2)]
    assert events[-1] == Cancelled("b", "t", 2, CancelReason.NO_LIQUIDITY)


def test_market_order_protection_price_stops_the_walk() -> None:
    book = OrderBook("X")
    book.submit(order("s1", SELL, 2, 100, account="m"))
    book.submit(order("s2", SELL, 2, 105, account="m"))
    events = book.submit(order("b", BUY, 4, 102, type=MARKET, tif=TimeInForce.DAY, account="t"))
    assert fills(events) == [("s1", "b", 100, 2)]
    assert book.best(SELL) == (105, 2)


def test_ioc_and_fok() -> None:
    book = OrderBook("X")
    book.submit(order("s", SELL, 5, 100, account="m"))
    ioc = book.submit(order("i", BUY, 8, 100, tif=TimeInForce.IOC, account="t"))
    assert fills(ioc) == [("s", "i", 100, 5)]
    assert ioc[-1] == Cancelled("i", "t", 3, CancelReason.IOC_REMAINDER)
    book.submit(order("s2", SELL, 5, 100, account="m"))
    fok = book.submit(order("f", BUY, 6, 100, tif=TimeInForce.FOK, account="t"))
    assert fills(fok) == [] and fok[-1] == Cancelled("f", "t", 6, CancelReason.FOK_UNFILLED)
    assert book.best(SELL) == (100, 5), "an unfilled FOK changes nothing"
    fok2 = book.submit(order("f2", BUY, 5, 100, tif=TimeInForce.FOK, account="t"))
    assert fills(fok2) == [("s2", "f2", 100, 5)]


@pytest.mark.parametrize(
    ("policy", "resting_cancelled", "taker_cancelled"),
    [
        (SelfTradePrevention.CANCEL_RESTING, True, False),
        (SelfTradePrevention.CANCEL_TAKER, False, True),
        (SelfTradePrevention.CANCEL_BOTH, True, True),
    ],
)
def test_self_trade_prevention(
    policy: SelfTradePrevention, resting_cancelled: bool, taker_cancelled: bool
) -> None:
    book = OrderBook("X", self_trade=policy)
    book.submit(order("own", SELL, 5, 100, account="a"))
    book.submit(order("other", SELL, 5, 101, account="b"))
    events = book.submit(order("b", BUY, 5, 101, account="a"))
    cancelled = {e.order_id for e in events if isinstance(e, Cancelled)}
    assert ("own" in cancelled) is resting_cancelled
    assert ("b" in cancelled) is taker_cancelled
    assert all(f.maker_account != f.taker_account for f in events if isinstance(f, Fill))
    if not taker_cancelled:
        assert fills(events) == [("other", "b", 101, 5)]


def test_cancel_only_by_owner() -> None:
    book = OrderBook("X")
    book.submit(order("o", BUY, 5, 100, account="a"))
    assert book.cancel("o", account="b") == [
        Rejected("o", RejectReason.UNKNOWN_ORDER, "no such working order")
    ]
    assert book.cancel("o", account="a") == [Cancelled("o", "a", 5, CancelReason.REQUESTED)]
    assert book.best(BUY) is None
    assert book.cancel("o")[0].reason is RejectReason.UNKNOWN_ORDER  # type: ignore[union-attr]


def test_replace_keeps_priority_only_for_a_quantity_decrease() -> None:
    book = OrderBook("X")
    book.submit(order("first", BUY, 10, 100, account="a"))
    book.submit(order("second", BUY, 10, 100, account="b"))
    kept = book.replace("first", "first-2", qty=6)
    assert kept == [Replaced("first", "first-2", 6, 100, 0, 6, True)]
    hit = book.submit(order("s", SELL, 1, 100, account="c"))
    assert fills(hit) == [("first-2", "s", 100, 1)]
    lost = book.replace("first-2", "first-3", qty=20)
    assert isinstance(lost[0], Replaced) and not lost[0].kept_priority
    hit = book.submit(order("s2", SELL, 1, 100, account="c"))
    assert fills(hit) == [("second", "s2", 100, 1)]


def test_replace_to_a_crossing_price_trades_at_once() -> None:
    book = OrderBook("X")
    book.submit(order("s", SELL, 5, 101, account="m"))
    book.submit(order("b", BUY, 5, 100, account="t"))
    events = book.replace("b", "b2", qty=5, price=101)
    assert fills(events) == [("s", "b2", 101, 5)]


def test_replace_below_filled_quantity_is_refused() -> None:
    book = OrderBook("X")
    book.submit(order("b", BUY, 10, 100, account="t"))
    book.submit(order("s", SELL, 4, 100, account="m"))
    events = book.replace("b", "b2", qty=4)
    assert isinstance(events[0], Rejected) and events[0].reason is RejectReason.INVALID_REPLACE


def test_stop_orders_trigger_on_the_last_trade_and_cascade() -> None:
    book = OrderBook("X")
    book.submit(order("s1", SELL, 1, 100, account="m"))
    book.submit(order("s2", SELL, 5, 103, account="m"))
    # A buy stop at 100 becomes a market order once something trades at 100 or above.
    parked = book.submit(
        order("stop", BUY, 2, type=STOP, stop=100, tif=TimeInForce.GTC, account="t")
    )
    assert parked == [Accepted("stop")]
    events = book.submit(order("b", BUY, 1, 100, account="u"))
    assert [type(e).__name__ for e in events] == ["Accepted", "Fill", "Triggered", "Fill"]
    assert fills(events) == [("s1", "b", 100, 1), ("s2", "stop", 103, 2)]
    assert isinstance(events[2], Triggered)


def test_stop_limit_rests_after_triggering() -> None:
    book = OrderBook("X")
    book.submit(order("b1", BUY, 1, 100, account="m"))
    book.submit(order("sl", SELL, 3, 99, type=STOP_LIMIT, stop=100, account="t"))
    book.submit(order("s", SELL, 1, 100, account="u"))  # trades at 100: the sell stop triggers
    assert book.best(SELL) == (99, 3)


def test_day_orders_expire_gtc_orders_stay() -> None:
    book = OrderBook("X")
    book.submit(order("d", BUY, 1, 100, tif=TimeInForce.DAY))
    book.submit(order("g", BUY, 1, 99, tif=TimeInForce.GTC))
    assert book.expire() == [Cancelled("d", "a", 1, CancelReason.EXPIRED)]
    assert book.best(BUY) == (99, 1)


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        (order("z", BUY, 0, 100), RejectReason.INVALID_QUANTITY),
        (order("z", BUY, -5, 100), RejectReason.INVALID_QUANTITY),
        (order("z", BUY, 5, 0), RejectReason.INVALID_PRICE),
        (order("z", BUY, 5, type=STOP, stop=0), RejectReason.INVALID_PRICE),
    ],
)
def test_invalid_orders_are_rejected_and_change_nothing(
    new: NewOrder, reason: RejectReason
) -> None:
    book = OrderBook("X")
    book.submit(order("keep", SELL, 1, 100, account="m"))
    before = book.state_digest()
    events = book.submit(new)
    assert len(events) == 1 and isinstance(events[0], Rejected) and events[0].reason is reason
    assert book.state_digest() == before


def test_duplicate_working_order_id_is_rejected() -> None:
    book = OrderBook("X")
    book.submit(order("o", BUY, 1, 100))
    events = book.submit(order("o", BUY, 1, 100))
    assert isinstance(events[0], Rejected) and events[0].reason is RejectReason.DUPLICATE_ORDER_ID
