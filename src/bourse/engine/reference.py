"""A deliberately naive order book: the oracle in tests and the peer in `bourse bench engine`.

Same rules and events as OrderBook, written as plainly as possible: every working order in
one list, rescanned and re-sorted on every command. Slow on purpose; obviously right.
"""

from __future__ import annotations

from dataclasses import dataclass

from bourse.engine.types import (
    Accepted,
    Cancelled,
    CancelReason,
    EngineEvent,
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


@dataclass
class _Order:
    order_id: str
    account: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int
    stop: int
    qty: int
    remaining: int
    arrival: int
    waiting_stop: bool


class ReferenceBook:
    def __init__(
        self, symbol: str, *, self_trade: SelfTradePrevention = SelfTradePrevention.CANCEL_RESTING
    ) -> None:
        self.symbol = symbol
        self.self_trade = self_trade
        self.working: list[_Order] = []
        self.last_price = 0
        self.match_count = 0
        self._arrivals = 0

    def _arrival(self) -> int:
        self._arrivals += 1
        return self._arrivals

    def _find(self, order_id: str) -> _Order | None:
        for order in self.working:
            if order.order_id == order_id:
                return order
        return None

    def best(self, side: Side) -> tuple[int, int] | None:
        prices = [o.price for o in self.working if o.side is side and not o.waiting_stop]
        if not prices:
            return None
        price = max(prices) if side is Side.BUY else min(prices)
        qty = sum(
            o.remaining
            for o in self.working
            if o.side is side and not o.waiting_stop and o.price == price
        )
        return price, qty

    def submit(self, new: NewOrder) -> list[EngineEvent]:
        if self._find(new.order_id) is not None:
            return [
                Rejected(
                    new.order_id,
                    RejectReason.DUPLICATE_ORDER_ID,
                    "an order with this id is working",
                )
            ]
        if new.qty <= 0:
            return [Rejected(new.order_id, RejectReason.INVALID_QUANTITY, "qty must be > 0")]
        is_limit = new.type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        is_stop = new.type in (OrderType.STOP, OrderType.STOP_LIMIT)
        if is_limit and new.price <= 0:
            return [Rejected(new.order_id, RejectReason.INVALID_PRICE, "limit price must be > 0")]
        if is_stop and new.stop <= 0:
            return [Rejected(new.order_id, RejectReason.INVALID_PRICE, "stop price must be > 0")]
        if new.price < 0:
            return [
                Rejected(new.order_id, RejectReason.INVALID_PRICE, "price must not be negative")
            ]
        order = _Order(
            new.order_id,
            new.account,
            new.side,
            new.type,
            new.tif,
            new.price,
            new.stop,
            new.qty,
            new.qty,
            self._arrival(),
            False,
        )
        events: list[EngineEvent] = [Accepted(new.order_id)]
        if is_stop and not self._reached(order):
            order.waiting_stop = True
            self.working.append(order)
            return events
        self._match(order, events)
        self._triggers(events)
        return events

    def cancel(self, order_id: str, account: str | None = None) -> list[EngineEvent]:
        order = self._find(order_id)
        if order is None or (account is not None and order.account != account):
            return [Rejected(order_id, RejectReason.UNKNOWN_ORDER, "no such working order")]
        self.working.remove(order)
        return [Cancelled(order_id, order.account, order.remaining, CancelReason.REQUESTED)]

    def replace(
        self,
        order_id: str,
        new_order_id: str,
        *,
        qty: int,
        price: int | None = None,
        stop: int | None = None,
        account: str | None = None,
    ) -> list[EngineEvent]:
        order = self._find(order_id)
        if order is None or (account is not None and order.account != account):
            return [Rejected(order_id, RejectReason.UNKNOWN_ORDER, "no such working order")]
        if new_order_id != order_id and self._find(new_order_id) is not None:
            return [Rejected(order_id, RejectReason.DUPLICATE_ORDER_ID, new_order_id)]
        filled = order.qty - order.remaining
        new_price = order.price if price is None else price
        new_stop = order.stop if stop is None else stop
        if qty <= filled:
            return [
                Rejected(
                    order_id,
                    RejectReason.INVALID_REPLACE,
                    f"qty {qty} must exceed the {filled} already filled",
                )
            ]
        if order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and new_price <= 0:
            return [Rejected(order_id, RejectReason.INVALID_PRICE, "limit price must be > 0")]
        if order.type in (OrderType.STOP, OrderType.STOP_LIMIT) and new_stop <= 0:
            return [Rejected(order_id, RejectReason.INVALID_PRICE, "stop price must be > 0")]
        remaining = qty - filled
        if not order.waiting_stop and new_price == order.price and remaining <= order.remaining:
            order.order_id, order.qty, order.remaining = new_order_id, qty, remaining
            return [Replaced(order_id, new_order_id, qty, new_price, new_stop, remaining, True)]
        self.working.remove(order)
        order.order_id, order.qty, order.remaining = new_order_id, qty, remaining
        order.price, order.stop, order.arrival = new_price, new_stop, self._arrival()
        events: list[EngineEvent] = [
            Replaced(order_id, new_order_id, qty, new_price, new_stop, remaining, False)
        ]
        if order.waiting_stop:
            if not self._reached(order):
                self.working.append(order)
                return events
            order.waiting_stop = False
            order.arrival = self._arrival()
            events.append(Triggered(new_order_id))
        self._match(order, events)
        self._triggers(events)
        return events

    def expire(self, tif: TimeInForce = TimeInForce.DAY) -> list[EngineEvent]:
        # In OrderBook.orders() order: bids, asks (each by priority), buy stops by trigger
        # ascending, sell stops by trigger descending (ties by arrival).
        def rank(o: _Order) -> tuple[int, int, int]:
            if o.waiting_stop:
                group = 2 if o.side is Side.BUY else 3
                return group, o.stop if o.side is Side.BUY else -o.stop, o.arrival
            group = 0 if o.side is Side.BUY else 1
            return group, -o.price if o.side is Side.BUY else o.price, o.arrival

        expiring = sorted((o for o in self.working if o.tif is tif), key=rank)
        for order in expiring:
            self.working.remove(order)
        return [
            Cancelled(o.order_id, o.account, o.remaining, CancelReason.EXPIRED) for o in expiring
        ]

    def _reached(self, order: _Order) -> bool:
        if self.last_price == 0:
            return False
        if order.side is Side.BUY:
            return self.last_price >= order.stop
        return self.last_price <= order.stop

    def _acceptable(self, taker: _Order, price: int) -> bool:
        if taker.price == 0:
            return True
        return price <= taker.price if taker.side is Side.BUY else price >= taker.price

    def _queue(self, taker: _Order) -> list[_Order]:
        """The opposite side in priority order: best price, then arrival."""
        side = taker.side.opposite
        candidates = [o for o in self.working if o.side is side and not o.waiting_stop]
        sign = -1 if side is Side.BUY else 1
        return sorted(candidates, key=lambda o: (sign * o.price, o.arrival))

    def _match(self, taker: _Order, events: list[EngineEvent]) -> None:
        if taker.tif is TimeInForce.FOK:
            available = sum(
                o.remaining
                for o in self._queue(taker)
                if o.account != taker.account and self._acceptable(taker, o.price)
            )
            if available < taker.remaining:
                events.append(
                    Cancelled(
                        taker.order_id, taker.account, taker.remaining, CancelReason.FOK_UNFILLED
                    )
                )
                return
        self_traded = False
        for maker in self._queue(taker):
            if taker.remaining == 0 or not self._acceptable(taker, maker.price):
                break
            if maker.account == taker.account:
                if self.self_trade is not SelfTradePrevention.CANCEL_TAKER:
                    self.working.remove(maker)
                    events.append(
                        Cancelled(
                            maker.order_id, maker.account, maker.remaining, CancelReason.SELF_TRADE
                        )
                    )
                if self.self_trade is not SelfTradePrevention.CANCEL_RESTING:
                    self_traded = True
                    break
                continue
            qty = min(taker.remaining, maker.remaining)
            taker.remaining -= qty
            maker.remaining -= qty
            self.match_count += 1
            self.last_price = maker.price
            events.append(
                Fill(
                    maker.order_id,
                    taker.order_id,
                    maker.account,
                    taker.account,
                    taker.side,
                    maker.price,
                    qty,
                    maker.remaining,
                    taker.remaining,
                    self.match_count,
                )
            )
            if maker.remaining == 0:
                self.working.remove(maker)
        if taker.remaining == 0:
            return
        if self_traded:
            reason = CancelReason.SELF_TRADE
        elif taker.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and taker.tif in (
            TimeInForce.DAY,
            TimeInForce.GTC,
        ):
            self.working.append(taker)
            return
        elif taker.tif in (TimeInForce.IOC, TimeInForce.FOK):
            reason = CancelReason.IOC_REMAINDER
        else:
            reason = CancelReason.NO_LIQUIDITY
        events.append(Cancelled(taker.order_id, taker.account, taker.remaining, reason))

    def _triggers(self, events: list[EngineEvent]) -> None:
        while True:
            waiting = [o for o in self.working if o.waiting_stop and self._reached(o)]
            if not waiting:
                return
            buys = sorted((o for o in waiting if o.side is Side.BUY), key=lambda o: o.stop)
            sells = sorted((o for o in waiting if o.side is Side.SELL), key=lambda o: -o.stop)
            # Lowest buy trigger first, then highest sell; ties by arrival (stable sort above
            # keeps list order, which is arrival order for waiting stops).
            order = buys[0] if buys else sells[0]
            self.working.remove(order)
            order.waiting_stop = False
            order.arrival = self._arrival()  # a triggered stop queues from its trigger time
            events.append(Triggered(order.order_id))
            self._match(order, events)
