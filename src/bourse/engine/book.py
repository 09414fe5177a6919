"""A limit order book with price-time priority: the pure core of the matching engine.

Prices are integer ticks and quantities integer lots. Each side keeps its price levels in a
SortedDict (best first) and each level its orders in arrival order (a dict: FIFO iteration,
O(1) removal by id). Stop orders wait in their own books until the last trade price reaches
their trigger; triggering cascades (a triggered stop's trades may trigger more).

Every method returns the events it caused, in the order they happened; the book does no I/O
and reads no clock, so replaying the same calls gives the same events and state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from sortedcontainers import SortedDict

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


@dataclass(slots=True)
class RestingOrder:
    order_id: str
    account: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int
    stop: int
    qty: int
    remaining: int


class _Level:
    __slots__ = ("orders", "price", "qty")

    def __init__(self, price: int) -> None:
        self.price = price
        self.qty = 0
        self.orders: dict[str, RestingOrder] = {}


class OrderBook:
    def __init__(
        self,
        symbol: str,
        *,
        self_trade: SelfTradePrevention = SelfTradePrevention.CANCEL_RESTING,
    ) -> None:
        self.symbol = symbol
        self.self_trade = self_trade
        # Keys sort best first: asks by price, bids by negated price.
        self._asks: SortedDict = SortedDict()
        self._bids: SortedDict = SortedDict()
        # Untriggered stops: buys trigger at last >= stop (lowest first), sells at last <= stop.
        self._buy_stops: SortedDict = SortedDict()
        self._sell_stops: SortedDict = SortedDict()
        self._resting: dict[str, RestingOrder] = {}
        self._stops: dict[str, RestingOrder] = {}
        self.last_price = 0
        self.match_count = 0

    # ---- queries ----

    def _levels(self, side: Side) -> SortedDict:
        return self._bids if side is Side.BUY else self._asks

    @staticmethod
    def _key(side: Side, price: int) -> int:
        return -price if side is Side.BUY else price

    def best(self, side: Side) -> tuple[int, int] | None:
        """(price, quantity) of the best level on `side`, or None when it is empty."""
        levels = self._levels(side)
        if not levels:
            return None
        level: _Level = levels.peekitem(0)[1]
        return level.price, level.qty

    def depth(self, side: Side, levels: int = 10) -> list[tuple[int, int]]:
        """The best `levels` price levels on `side`, best first, as (price, quantity)."""
        book = self._levels(side)
        return [(lvl.price, lvl.qty) for lvl in book.values()[:levels]]

    def order(self, order_id: str) -> RestingOrder | None:
        return self._resting.get(order_id) or self._stops.get(order_id)

    def orders(self) -> Iterator[RestingOrder]:
        """Every working order: bids and asks in priority order, then stops."""
        for book in (self._bids, self._asks):
            for level in book.values():
                yield from level.orders.values()
        for stops in (self._buy_stops, self._sell_stops):
            for bucket in stops.values():
                yield from bucket.values()

    def __len__(self) -> int:
        return len(self._resting) + len(self._stops)

    def state_digest(self) -> str:
        """A hash of everything the book holds, in priority order (for replay checks)."""
        digest = hashlib.sha256(f"{self.symbol}|{self.last_price}|{self.match_count}".encode())
        for o in self.orders():
            digest.update(
                f"|{o.order_id},{o.account},{o.side},{o.type},{o.tif},"
                f"{o.price},{o.stop},{o.qty},{o.remaining}".encode()
            )
        return digest.hexdigest()

    # ---- commands ----

    def submit(self, order: NewOrder) -> list[EngineEvent]:
        events: list[EngineEvent] = []
        problem = self._check(order)
        if problem is not None:
            events.append(Rejected(order.order_id, *problem))
            return events
        events.append(Accepted(order.order_id))
        working = RestingOrder(
            order.order_id,
            order.account,
            order.side,
            order.type,
            order.tif,
            order.price,
            order.stop,
            order.qty,
            order.qty,
        )
        if order.type in (OrderType.STOP, OrderType.STOP_LIMIT) and not self._stop_reached(
            order.side, order.stop
        ):
            self._park_stop(working)
            return events
        self._execute(working, events)
        self._run_triggers(events)
        return events

    def cancel(self, order_id: str, account: str | None = None) -> list[EngineEvent]:
        """Cancel a working order; with `account`, only that account's (others look unknown)."""
        order = self.order(order_id)
        if order is None or (account is not None and order.account != account):
            return [Rejected(order_id, RejectReason.UNKNOWN_ORDER, "no such working order")]
        self._remove(order)
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
        """Replace a working order's total quantity and/or prices.

        As on real venues, only a quantity decrease at the same price keeps the order's place
        in the queue; a price change or a quantity increase sends it to the back (and it may
        trade at once if the new price crosses).
        """
        order = self.order(order_id)
        if order is None or (account is not None and order.account != account):
            return [Rejected(order_id, RejectReason.UNKNOWN_ORDER, "no such working order")]
        if new_order_id != order_id and self.order(new_order_id) is not None:
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
        new_remaining = qty - filled
        in_place = (
            order_id in self._resting
            and new_price == order.price
            and new_remaining <= order.remaining
        )
        if in_place:
            level: _Level = self._levels(order.side)[self._key(order.side, order.price)]
            level.qty -= order.remaining - new_remaining
            self._rename(level.orders, order, new_order_id)
            del self._resting[order_id]
            order.order_id = new_order_id
            self._resting[new_order_id] = order
            order.qty, order.remaining = qty, new_remaining
            return [Replaced(order_id, new_order_id, qty, new_price, new_stop, new_remaining, True)]
        was_waiting_stop = order_id in self._stops
        self._remove(order)
        order.order_id = new_order_id
        order.qty, order.remaining, order.price, order.stop = (
            qty,
            new_remaining,
            new_price,
            new_stop,
        )
        events: list[EngineEvent] = [
            Replaced(order_id, new_order_id, qty, new_price, new_stop, new_remaining, False)
        ]
        if was_waiting_stop:
            if not self._stop_reached(order.side, new_stop):
                self._park_stop(order)
                return events
            events.append(Triggered(new_order_id))
        self._execute(order, events)
        self._run_triggers(events)
        return events

    def expire(self, tif: TimeInForce = TimeInForce.DAY) -> list[EngineEvent]:
        """Cancel every working order with this time in force (DAY orders at the close)."""
        expiring = [o for o in self.orders() if o.tif is tif]
        events: list[EngineEvent] = []
        for order in expiring:
            self._remove(order)
            events.append(
                Cancelled(order.order_id, order.account, order.remaining, CancelReason.EXPIRED)
            )
        return events

    # ---- internals ----

    def _check(self, order: NewOrder) -> tuple[RejectReason, str] | None:
        if order.order_id in self._resting or order.order_id in self._stops:
            return RejectReason.DUPLICATE_ORDER_ID, "an order with this id is working"
        if order.qty <= 0:
            return RejectReason.INVALID_QUANTITY, "qty must be > 0"
        if order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and order.price <= 0:
            return RejectReason.INVALID_PRICE, "limit price must be > 0"
        if order.type in (OrderType.STOP, OrderType.STOP_LIMIT) and order.stop <= 0:
            return RejectReason.INVALID_PRICE, "stop price must be > 0"
        if order.price < 0:
            return RejectReason.INVALID_PRICE, "price must not be negative"
        return None

    def _stop_reached(self, side: Side, stop: int) -> bool:
        if self.last_price == 0:
            return False
        return self.last_price >= stop if side is Side.BUY else self.last_price <= stop

    def _park_stop(self, order: RestingOrder) -> None:
        stops = self._buy_stops if order.side is Side.BUY else self._sell_stops
        key = order.stop if order.side is Side.BUY else -order.stop
        bucket = stops.get(key)
        if bucket is None:
            bucket = stops[key] = {}
        bucket[order.order_id] = order
        self._stops[order.order_id] = order

    def _rest(self, order: RestingOrder) -> None:
        levels = self._levels(order.side)
        key = self._key(order.side, order.price)
        level = levels.get(key)
        if level is None:
            level = levels[key] = _Level(order.price)
        level.orders[order.order_id] = order
        level.qty += order.remaining
        self._resting[order.order_id] = order

    @staticmethod
    def _rename(orders: dict[str, RestingOrder], order: RestingOrder, new_id: str) -> None:
        # Keep the queue position: rebuild the level's dict with the new key in the same place.
        if new_id == order.order_id:
            return
        items = [(new_id if k == order.order_id else k, v) for k, v in orders.items()]
        orders.clear()
        orders.update(items)

    def _remove(self, order: RestingOrder) -> None:
        if self._resting.pop(order.order_id, None) is not None:
            levels = self._levels(order.side)
            key = self._key(order.side, order.price)
            level: _Level = levels[key]
            del level.orders[order.order_id]
            level.qty -= order.remaining
            if not level.orders:
                del levels[key]
            return
        if self._stops.pop(order.order_id, None) is not None:
            stops = self._buy_stops if order.side is Side.BUY else self._sell_stops
            key = order.stop if order.side is Side.BUY else -order.stop
            bucket = stops[key]
            del bucket[order.order_id]
            if not bucket:
                del stops[key]

    def _acceptable(self, side: Side, limit: int, price: int) -> bool:
        if limit == 0:
            return True
        return price <= limit if side is Side.BUY else price >= limit

    def _fillable(self, order: RestingOrder, limit: int) -> int:
        """How much `order` could fill now (for FOK), not counting its own account's orders."""
        available = 0
        level: _Level
        for level in self._levels(order.side.opposite).values():
            if not self._acceptable(order.side, limit, level.price):
                break
            for resting in level.orders.values():
                if resting.account != order.account:
                    available += resting.remaining
                    if available >= order.remaining:
                        return available
        return available

    def _execute(self, order: RestingOrder, events: list[EngineEvent]) -> None:
        # A limit order's price is its limit; a market order's is its protection price, the
        # worst it may trade at (0: none).
        limit = order.price
        if order.tif is TimeInForce.FOK and self._fillable(order, limit) < order.remaining:
            events.append(
                Cancelled(order.order_id, order.account, order.remaining, CancelReason.FOK_UNFILLED)
            )
            return
        opposite = self._levels(order.side.opposite)
        side = order.side
        stopped_by_self_trade = False
        while order.remaining > 0 and opposite and not stopped_by_self_trade:
            key, level = opposite.peekitem(0)
            if not self._acceptable(side, limit, level.price):
                break
            for resting in list(level.orders.values()):
                if resting.account == order.account:
                    stopped_by_self_trade = self._prevent_self_trade(resting, level, events)
                    if stopped_by_self_trade:
                        break
                    continue
                qty = min(order.remaining, resting.remaining)
                order.remaining -= qty
                resting.remaining -= qty
                level.qty -= qty
                self.match_count += 1
                self.last_price = level.price
                events.append(
                    Fill(
                        resting.order_id,
                        order.order_id,
                        resting.account,
                        order.account,
                        side,
                        level.price,
                        qty,
                        resting.remaining,
                        order.remaining,
                        self.match_count,
                    )
                )
                if resting.remaining == 0:
                    del level.orders[resting.order_id]
                    del self._resting[resting.order_id]
                if order.remaining == 0:
                    break
            if not level.orders:
                del opposite[key]
        if order.remaining == 0:
            return
        if stopped_by_self_trade:
            reason = CancelReason.SELF_TRADE
        elif order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and order.tif in (
            TimeInForce.DAY,
            TimeInForce.GTC,
        ):
            self._rest(order)
            return
        elif order.tif in (TimeInForce.IOC, TimeInForce.FOK):
            reason = CancelReason.IOC_REMAINDER
        else:
            reason = CancelReason.NO_LIQUIDITY  # a market order the book could not fill
        events.append(Cancelled(order.order_id, order.account, order.remaining, reason))

    def _prevent_self_trade(
        self, resting: RestingOrder, level: _Level, events: list[EngineEvent]
    ) -> bool:
        """Apply the self-trade policy to `resting`; True when the taker must stop matching."""
        policy = self.self_trade
        if policy is not SelfTradePrevention.CANCEL_TAKER:
            del level.orders[resting.order_id]
            del self._resting[resting.order_id]
            level.qty -= resting.remaining
            events.append(
                Cancelled(
                    resting.order_id, resting.account, resting.remaining, CancelReason.SELF_TRADE
                )
            )
        return policy is not SelfTradePrevention.CANCEL_RESTING

    def _run_triggers(self, events: list[EngineEvent]) -> None:
        """Trigger every stop the last price has reached, cascading, in a fixed order."""
        while True:
            order = self._next_triggered()
            if order is None:
                return
            self._remove(order)
            events.append(Triggered(order.order_id))
            self._execute(order, events)

    def _next_triggered(self) -> RestingOrder | None:
        if self.last_price == 0:
            return None
        # Buy stops first (lowest trigger), then sell stops (highest trigger): a fixed order
        # keeps replays identical.
        if self._buy_stops:
            key, bucket = self._buy_stops.peekitem(0)
            if self.last_price >= key:
                return next(iter(bucket.values()))  # type: ignore[no-any-return]
        if self._sell_stops:
            key, bucket = self._sell_stops.peekitem(0)
            if self.last_price <= -key:
                return next(iter(bucket.values()))  # type: ignore[no-any-return]
        return None
