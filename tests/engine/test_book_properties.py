"""Hypothesis: the book against the naive reference matcher, and its invariants."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bourse.engine.book import OrderBook
from bourse.engine.reference import ReferenceBook
from bourse.engine.types import (
    Fill,
    NewOrder,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
)

accounts = st.sampled_from(["a", "b", "c"])
sides = st.sampled_from([Side.BUY, Side.SELL])
prices = st.integers(95, 105)
quantities = st.integers(1, 20)


class BookVersusReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.policy = SelfTradePrevention.CANCEL_RESTING
        self.book = OrderBook("X", self_trade=self.policy)
        self.reference = ReferenceBook("X", self_trade=self.policy)
        self.ids: list[str] = []
        self.next_id = 0
        self.submitted: dict[str, int] = {}
        self.filled: dict[str, int] = {}

    def _id(self) -> str:
        self.next_id += 1
        return f"o{self.next_id}"

    def _apply(self, new: NewOrder) -> None:
        copy = NewOrder(**{f: getattr(new, f) for f in new.__dataclass_fields__})
        got = self.book.submit(new)
        expected = self.reference.submit(copy)
        assert got == expected
        self.ids.append(new.order_id)
        self.submitted[new.order_id] = new.qty
        self._count(got)

    def _count(self, events: list) -> None:  # type: ignore[type-arg]
        for event in events:
            if isinstance(event, Fill):
                assert event.maker_account != event.taker_account
                assert event.qty > 0
                for oid in (event.maker_order_id, event.taker_order_id):
                    self.filled[oid] = self.filled.get(oid, 0) + event.qty

    @rule(
        account=accounts,
        side=sides,
        price=prices,
        qty=quantities,
        tif=st.sampled_from([TimeInForce.GTC, TimeInForce.DAY, TimeInForce.IOC, TimeInForce.FOK]),
    )
    def limit(self, account: str, side: Side, price: int, qty: int, tif: TimeInForce) -> None:
        self._apply(
            NewOrder(
                order_id=self._id(),
                account=account,
                side=side,
                type=OrderType.LIMIT,
                tif=tif,
                qty=qty,
                price=price,
            )
        )

    @rule(account=accounts, side=sides, qty=quantities, protection=st.sampled_from([0, 98, 102]))
    def market(self, account: str, side: Side, qty: int, protection: int) -> None:
        self._apply(
            NewOrder(
                order_id=self._id(),
                account=account,
                side=side,
                type=OrderType.MARKET,
                tif=TimeInForce.DAY,
                qty=qty,
                price=protection,
            )
        )

    @rule(
        account=accounts, side=sides, qty=quantities, stop=prices, limit=st.sampled_from([0, 100])
    )
    def stop(self, account: str, side: Side, qty: int, stop: int, limit: int) -> None:
        kind = OrderType.STOP_LIMIT if limit else OrderType.STOP
        self._apply(
            NewOrder(
                order_id=self._id(),
                account=account,
                side=side,
                type=kind,
                tif=TimeInForce.GTC,
                qty=qty,
                price=limit,
                stop=stop,
            )
        )

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(self.ids))
        assert self.book.cancel(oid) == self.reference.cancel(oid)

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), qty=st.integers(1, 30), price=st.one_of(st.none(), prices))
    def replace(self, data: st.DataObject, qty: int, price: int | None) -> None:
        oid = data.draw(st.sampled_from(self.ids))
        new_id = self._id()
        got = self.book.replace(oid, new_id, qty=qty, price=price)
        assert got == self.reference.replace(oid, new_id, qty=qty, price=price)
        order = self.book.order(new_id)
        if order is not None:
            self.ids.append(new_id)
            # The replacement carries the old order's fills forward.
            self.submitted[new_id] = qty
            self.filled[new_id] = self.filled.get(oid, 0)
        self._count(got)

    @rule()
    def expire(self) -> None:
        assert self.book.expire() == self.reference.expire()

    @invariant()
    def never_crossed(self) -> None:
        bid, ask = self.book.best(Side.BUY), self.book.best(Side.SELL)
        if bid and ask:
            assert bid[0] < ask[0]

    @invariant()
    def same_top_of_book(self) -> None:
        assert self.book.best(Side.BUY) == self.reference.best(Side.BUY)
        assert self.book.best(Side.SELL) == self.reference.best(Side.SELL)

    @invariant()
    def filled_plus_remaining_is_original(self) -> None:
        for order in self.book.orders():
            assert self.filled.get(order.order_id, 0) + order.remaining == order.qty
            assert 0 < order.remaining <= order.qty


TestBookVersusReference = BookVersusReference.TestCase
TestBookVersusReference.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
