"""The order desk: the gateway's one way onto the journal, and back.

A request is checked at the edge (symbol, quantity, prices on the tick and lot, a unique
client_order_id), so a refused request never reaches the journal and changes nothing. What
passes is published on ORDERS with a `Nats-Msg-Id` (for a new order `<account>:<client order
id>`, so two concurrent POSTs with one id, or a retry, make one order), and the desk waits
until the read model has applied the outcome: the accounts' decision, then the engine's
first word on the order. The answer is then read from the read model, so a client that GETs
the order right after its POST finds it as the POST described it.

Waiting is bounded: if the accounts service or the engine is slow or down, the order is on
the journal and will be processed; the client gets it as `pending_new` (or as far as it got).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import Error as JetStreamError

from bourse.accounts.readmodel import queries
from bourse.accounts.readmodel.database import Database
from bourse.accounts.readmodel.projector import ReadModelEvent, new_order_row
from bourse.accounts.readmodel.rows import Order
from bourse.analytics.reference import ReferencePrices
from bourse.bus.streams import ORDERS, POSITIONS
from bourse.gateway import errors
from bourse.model import orders, positions, subjects
from bourse.model.instruments import Instrument
from bourse.model.orders import RejectCode

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Reject codes that mean "you cannot afford this" answer 403, as Alpaca does; others 422.
_FORBIDDEN = {
    RejectCode.INSUFFICIENT_BUYING_POWER,
    RejectCode.INSUFFICIENT_POSITION,
    RejectCode.SHORTING_NOT_ALLOWED,
    RejectCode.TRADING_HALTED,
}


def order_ids(event: ReadModelEvent) -> tuple[str, ...]:
    """The order ids an ORDERS message is about (a replace concerns both); for account
    administration, `account:<id>`."""
    match event:
        case (
            orders.AccountOpened()
            | orders.CashDeposited()
            | orders.AssetDeposited()
            | orders.TradingHalted()
            | orders.TradingResumed()
        ):
            return (f"account:{event.account_id}",)
        case orders.OrderValidated():
            return (event.order.order_id,)
        case orders.ReplaceValidated():
            return (event.request.order_id, event.request.new_order_id)
        case orders.OrderReplaced():
            return (event.order_id, event.new_order_id)
        case (
            orders.OrderSubmitted()
            | orders.CancelRequested()
            | orders.ReplaceRequested()
            | orders.CancelValidated()
            | orders.OrderRejected()
            | orders.OrderAccepted()
            | orders.Execution()
            | orders.OrderCancelled()
        ):
            return (event.order_id,)
    return ()


def _forget(waiters: dict[str, list[_Waiter]], key: str, waiter: _Waiter) -> None:
    found = waiters.get(key)
    if found is not None:
        found.remove(waiter)
        if not found:
            del waiters[key]


@dataclass
class _Waiter:
    events: list[orders.OrdersEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # (symbol, match_id) of the positions the read model applied for the watching account
    positions: set[tuple[str, int]] = field(default_factory=set)

    def positions_applied(self, account_id: str) -> bool:
        """The read model holds the position after every fill of this account seen so far."""
        return all(
            (e.symbol, e.match_id) in self.positions
            for e in self.events
            if isinstance(e, orders.Execution) and e.account_id == account_id
        )

    async def until(self, done: Callable[[list[orders.OrdersEvent]], bool], timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                while not done(self.events):
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return done(self.events)
        return True


def _decided(events: list[orders.OrdersEvent]) -> bool:
    return any(isinstance(e, orders.OrderValidated | orders.OrderRejected) for e in events)


def _engine_spoke(events: list[orders.OrdersEvent]) -> bool:
    return any(
        isinstance(e, orders.OrderAccepted | orders.Execution | orders.OrderCancelled)
        or (isinstance(e, orders.OrderRejected) and e.source == "engine")
        for e in events
    )


def _only_accepted(events: list[orders.OrdersEvent]) -> bool:
    """The engine accepted the order and nothing after that was seen yet."""
    return any(isinstance(e, orders.OrderAccepted) for e in events) and not any(
        isinstance(e, orders.Execution | orders.OrderCancelled | orders.OrderRejected)
        for e in events
    )


def _rejection(events: list[orders.OrdersEvent]) -> orders.OrderRejected | None:
    for event in events:
        if isinstance(event, orders.OrderRejected):
            return event
    return None


def rejection_error(rejected: orders.OrderRejected) -> errors.ApiError:
    status = 403 if rejected.code in _FORBIDDEN else 422
    return errors.ApiError(status, rejected.message, reason=str(rejected.code))


@dataclass(frozen=True, slots=True)
class NewOrder:
    symbol: str
    side: orders.Side
    kind: orders.OrderKind
    time_in_force: orders.TimeInForce
    qty: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    client_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Replacement:
    qty: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: orders.TimeInForce | None = None
    client_order_id: str | None = None


class OrderDesk:
    def __init__(
        self,
        nc: NATS,
        db: Database,
        prices: ReferencePrices,
        instruments: Sequence[Instrument],
        *,
        decision_timeout: float = 10.0,
        engine_timeout: float = 2.0,
        publish_timeout: float = 5.0,
        sync: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=publish_timeout)
        self._db = db
        self.prices = prices
        self.instruments = {i.symbol: i for i in instruments}
        # Alpaca names crypto positions without a separator (BTCUSD); take that form too.
        self._aliases = {i.symbol.replace("-", ""): i for i in instruments if "-" in i.symbol}
        self._decision_timeout = decision_timeout
        self._engine_timeout = engine_timeout
        # Waits until the read model has applied ORDERS up to its end as of the call.
        self._sync = sync
        self._waiters: dict[str, list[_Waiter]] = {}
        self._position_waiters: dict[str, list[_Waiter]] = {}  # by account

    # ---- the read model tells the desk what it applied ----

    def on_applied(self, stream: str, events: Sequence[tuple[int, ReadModelEvent]]) -> None:
        if stream == POSITIONS.name and self._position_waiters:
            for _, event in events:
                if isinstance(event, positions.PositionChanged):
                    for waiter in self._position_waiters.get(event.account_id, ()):
                        waiter.positions.add((event.symbol, event.match_id))
                        waiter.changed.set()
            return
        if stream != ORDERS.name or not self._waiters:
            return
        for _, event in events:
            if not isinstance(event, orders.OrdersEvent):
                continue
            for order_id in order_ids(event):
                for waiter in self._waiters.get(order_id, ()):
                    waiter.events.append(event)
                    waiter.changed.set()

    def _watch(self, order_id: str) -> _Waiter:
        waiter = _Waiter()
        self._waiters.setdefault(order_id, []).append(waiter)
        return waiter

    def _unwatch(self, order_id: str, waiter: _Waiter) -> None:
        _forget(self._waiters, order_id, waiter)

    def _watch_positions(self, account_id: str, waiter: _Waiter) -> None:
        """Let `waiter` also collect the positions the read model applies for the account."""
        self._position_waiters.setdefault(account_id, []).append(waiter)

    def _unwatch_positions(self, account_id: str, waiter: _Waiter) -> None:
        _forget(self._position_waiters, account_id, waiter)

    async def _positions_of(self, waiter: _Waiter, account_id: str) -> None:
        """Until the read model holds the position after each of the account's fills that
        `waiter` has seen (bounded): they travel on POSITIONS, apart from ORDERS."""
        await waiter.until(lambda _: waiter.positions_applied(account_id), self._engine_timeout)

    # ---- reads ----

    async def read(self, query: Callable[..., _T], *args: object, **kwargs: object) -> _T:
        def run() -> _T:
            with self._db.read() as conn:
                return query(conn, *args, **kwargs)

        return await asyncio.to_thread(run)

    async def order(self, account_id: str, order_id: str) -> Order:
        found = await self.read(queries.get_order, account_id, order_id)
        if found is None:
            raise errors.not_found(f"order {order_id} not found")
        return found

    # ---- edge checks ----

    def instrument(self, symbol: str) -> Instrument:
        normalized = symbol.strip().upper().replace("/", "-")
        found = self.instruments.get(normalized) or self._aliases.get(normalized)
        if found is None:
            raise errors.unprocessable(
                f"asset {symbol!r} not found (tradable: {', '.join(sorted(self.instruments))})",
                reason=str(RejectCode.UNKNOWN_SYMBOL),
            )
        return found

    @staticmethod
    def check_qty(instrument: Instrument, qty: Decimal) -> None:
        if qty <= 0:
            raise errors.unprocessable(
                f"qty must be > 0, got {qty}", reason=str(RejectCode.INVALID_QUANTITY)
            )
        # Bounded on both sides before the modulo: the remainder of 1E+30 by a lot overflows
        # the decimal context, and that of 1E-9999999 underflows to 0 (a "multiple").
        if qty > Decimal(10) ** 12:
            raise errors.unprocessable(
                f"qty {qty} is beyond any order size", reason=str(RejectCode.INVALID_QUANTITY)
            )
        if qty < instrument.lot_size or qty % instrument.lot_size != 0:
            raise errors.unprocessable(
                f"qty {qty} is not a multiple of {instrument.symbol}'s lot size "
                f"{instrument.lot_size}",
                reason=str(RejectCode.INVALID_QUANTITY),
            )

    @staticmethod
    def check_price(instrument: Instrument, name: str, price: Decimal | None) -> None:
        if price is None:
            return
        if price <= 0:
            raise errors.unprocessable(
                f"{name} must be > 0, got {price}", reason=str(RejectCode.INVALID_PRICE)
            )
        if price > Decimal(10) ** 12:  # bounded before the modulo, as quantities are
            raise errors.unprocessable(
                f"{name} {price} is beyond any price", reason=str(RejectCode.INVALID_PRICE)
            )
        if price < instrument.tick_size or price % instrument.tick_size != 0:
            raise errors.unprocessable(
                f"{name} {price} is not a multiple of {instrument.symbol}'s tick size "
                f"{instrument.tick_size}",
                reason=str(RejectCode.INVALID_PRICE),
            )

    def _check_kind(
        self, kind: str, limit_price: Decimal | None, stop_price: Decimal | None
    ) -> None:
        needs_limit = kind in ("limit", "stop_limit")
        needs_stop = kind in ("stop", "stop_limit")
        if needs_limit and limit_price is None:
            raise errors.unprocessable(f"limit_price is required for {kind} orders")
        if not needs_limit and limit_price is not None:
            raise errors.unprocessable(f"limit_price is not allowed for {kind} orders")
        if needs_stop and stop_price is None:
            raise errors.unprocessable(f"stop_price is required for {kind} orders")
        if not needs_stop and stop_price is not None:
            raise errors.unprocessable(f"stop_price is not allowed for {kind} orders")

    async def _unused_client_order_id(self, account_id: str, client_order_id: str) -> None:
        existing = await self.read(queries.get_order_by_client_id, account_id, client_order_id)
        if existing is not None:
            raise errors.unprocessable(
                f"client_order_id must be unique (order {existing.id} has it)",
                reason=str(RejectCode.DUPLICATE_CLIENT_ORDER_ID),
            )

    # ---- requests ----

    async def submit(self, account_id: str, request: NewOrder) -> Order:
        instrument = self.instrument(request.symbol)
        self._check_kind(request.kind, request.limit_price, request.stop_price)
        self.check_qty(instrument, request.qty)
        self.check_price(instrument, "limit_price", request.limit_price)
        self.check_price(instrument, "stop_price", request.stop_price)
        if not request.client_order_id:
            client_order_id = str(uuid.uuid4())  # ours, new: no order can hold it yet
        else:
            client_order_id = request.client_order_id
            await self._unused_client_order_id(account_id, client_order_id)
        order_id = str(uuid.uuid4())
        event = orders.OrderSubmitted(
            ts=time.time_ns(),
            order_id=order_id,
            client_order_id=client_order_id,
            account_id=account_id,
            symbol=instrument.symbol,
            side=request.side,
            kind=request.kind,
            time_in_force=request.time_in_force,
            qty=request.qty,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            reference_price=self.prices.get(instrument.symbol),
        )
        waiter = self._watch(order_id)
        self._watch_positions(account_id, waiter)
        try:
            duplicate = await self._publish(
                subjects.ORDERS_NEW, orders.encode(event), f"{account_id}:{client_order_id}"
            )
            if duplicate:
                raise errors.unprocessable(
                    "client_order_id must be unique",
                    reason=str(RejectCode.DUPLICATE_CLIENT_ORDER_ID),
                )
            await waiter.until(_decided, self._decision_timeout)
            rejected = _rejection(waiter.events)
            if rejected is not None and rejected.source == "accounts":
                raise rejection_error(rejected)
            if _decided(waiter.events):
                await waiter.until(_engine_spoke, self._engine_timeout)
                if self._sync is not None and _only_accepted(waiter.events):
                    # The engine's fills for this order follow its acceptance on the journal
                    # and may sit in the read model's next batch: let it catch up, so the
                    # answer says `filled` when the order filled.
                    with contextlib.suppress(TimeoutError):
                        await self._sync(self._engine_timeout)
                if self._sync is not None:
                    # Read your writes: the positions its fills made are in the read model
                    # before the answer says filled (they travel on POSITIONS, apart).
                    await self._positions_of(waiter, account_id)
        finally:
            self._unwatch(order_id, waiter)
            self._unwatch_positions(account_id, waiter)
        found = await self.read(queries.get_order, account_id, order_id)
        if found is None:  # the read model is behind: the order is journaled all the same
            return _pending(event, instrument)
        return found

    async def cancel(self, account_id: str, order_id: str) -> Order:
        order = await self.order(account_id, order_id)
        if not order.is_open or order.status in ("pending_cancel", "pending_replace"):
            raise errors.unprocessable(
                f"order is {order.status}: it cannot be canceled",
                reason=str(RejectCode.NOT_REPLACEABLE),
            )
        request = orders.CancelRequested(
            ts=time.time_ns(), order_id=order_id, account_id=account_id
        )
        waiter = self._watch(order_id)
        try:
            await self._publish(
                subjects.ORDERS_CANCEL, orders.encode(request), f"cancel:{order_id}"
            )

            def finished(events: list[orders.OrdersEvent]) -> bool:
                return any(
                    isinstance(e, orders.OrderCancelled)
                    or (isinstance(e, orders.OrderRejected) and e.request == "cancel")
                    or (isinstance(e, orders.Execution) and e.leaves_qty == 0)
                    for e in events
                )

            await waiter.until(finished, self._decision_timeout)
            for event in waiter.events:
                if isinstance(event, orders.OrderRejected) and event.request == "cancel":
                    raise errors.unprocessable(event.message, reason=str(event.code))
        finally:
            self._unwatch(order_id, waiter)
        return await self.order(account_id, order_id)

    async def replace(self, account_id: str, order_id: str, change: Replacement) -> Order:
        order = await self.order(account_id, order_id)
        if not order.is_open or order.status in ("pending_cancel", "pending_replace"):
            raise errors.unprocessable(
                f"order is {order.status}: it cannot be replaced",
                reason=str(RejectCode.NOT_REPLACEABLE),
            )
        if change.qty is None and change.limit_price is None and change.stop_price is None:
            raise errors.unprocessable("nothing to replace: give qty, limit_price or stop_price")
        if change.time_in_force is not None and change.time_in_force != order.time_in_force:
            raise errors.unprocessable(
                "time_in_force cannot be changed by a replace on Bourse; cancel and submit anew",
                reason=str(RejectCode.NOT_REPLACEABLE),
            )
        instrument = self.instrument(order.symbol)
        if change.qty is not None:
            self.check_qty(instrument, change.qty)
        if change.limit_price is not None and order.type not in ("limit", "stop_limit"):
            raise errors.unprocessable(f"limit_price is not allowed for {order.type} orders")
        if change.stop_price is not None and order.type not in ("stop", "stop_limit"):
            raise errors.unprocessable(f"stop_price is not allowed for {order.type} orders")
        self.check_price(instrument, "limit_price", change.limit_price)
        self.check_price(instrument, "stop_price", change.stop_price)
        new_client_order_id = change.client_order_id or str(uuid.uuid4())
        await self._unused_client_order_id(account_id, new_client_order_id)
        new_order_id = str(uuid.uuid4())
        request = orders.ReplaceRequested(
            ts=time.time_ns(),
            order_id=order_id,
            new_order_id=new_order_id,
            new_client_order_id=new_client_order_id,
            account_id=account_id,
            qty=change.qty,
            limit_price=change.limit_price,
            stop_price=change.stop_price,
            reference_price=self.prices.get(order.symbol),
        )
        waiter = self._watch(new_order_id)
        self._watch_positions(account_id, waiter)
        old = self._watch(order_id)
        try:
            duplicate = await self._publish(
                subjects.ORDERS_REPLACE,
                orders.encode(request),
                f"{account_id}:{new_client_order_id}",
            )
            if duplicate:
                raise errors.unprocessable(
                    "client_order_id must be unique",
                    reason=str(RejectCode.DUPLICATE_CLIENT_ORDER_ID),
                )

            def finished(events: list[orders.OrdersEvent]) -> bool:
                return any(
                    isinstance(e, orders.OrderReplaced)
                    or (isinstance(e, orders.OrderRejected) and e.request == "replace")
                    for e in events
                )

            await waiter.until(finished, self._decision_timeout)
            for event in waiter.events + old.events:
                if isinstance(event, orders.OrderRejected) and event.request == "replace":
                    raise rejection_error(event)
            if self._sync is not None and finished(waiter.events):
                # A replacement that crosses fills right after it is booked: as for a new
                # order, the answer shows its fills and their positions.
                with contextlib.suppress(TimeoutError):
                    await self._sync(self._engine_timeout)
                await self._positions_of(waiter, account_id)
        finally:
            self._unwatch(new_order_id, waiter)
            self._unwatch_positions(account_id, waiter)
            self._unwatch(order_id, old)
        found = await self.read(queries.get_order, account_id, new_order_id)
        if found is None:
            return await self.order(account_id, order_id)  # still pending_replace
        return found

    async def publish_admin(self, event: orders.OrdersEvent, msg_id: str) -> None:
        await self._publish(subjects.ORDERS_ADMIN, orders.encode(event), msg_id)

    async def publish_admin_and_wait(
        self, account_id: str, events: Sequence[tuple[orders.OrdersEvent, str]]
    ) -> bool:
        """Publish administration events; wait (bounded) until the read model has them all."""
        key = f"account:{account_id}"
        waiter = self._watch(key)
        try:
            for event, msg_id in events:
                await self.publish_admin(event, msg_id)
            # These very events: another about the account (a risk halt) may land meanwhile.
            return await waiter.until(
                lambda seen: all(wanted in seen for wanted, _ in events), self._decision_timeout
            )
        finally:
            self._unwatch(key, waiter)

    async def _publish(self, subject: str, payload: bytes, msg_id: str) -> bool:
        """Publish on the journal; True when JetStream says it is a duplicate."""
        try:
            ack = await self._js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
        except (NatsError, JetStreamError, TimeoutError) as error:
            log.warning("journal publish on %s failed: %s", subject, error)
            raise errors.unavailable(
                f"the order journal is unavailable ({type(error).__name__}); nothing was "
                "submitted, retry with the same client_order_id"
            ) from error
        return bool(ack.duplicate)


def _pending(event: orders.OrderSubmitted, instrument: Instrument) -> Order:
    return new_order_row(event, instrument.asset_class.value)
