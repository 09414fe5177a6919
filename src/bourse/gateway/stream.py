"""`/stream`: Alpaca's `trade_updates` WebSocket, so alpaca-py's `TradingStream` works as is.

The protocol, as Alpaca documents it (every frame one message; JSON unless the upgrade
request says `Content-Type: application/msgpack`; Bourse sends binary frames, as Alpaca's
trading stream does, and reads text or binary):

    -> {"action": "auth", "key": KEY_ID, "secret": SECRET}
       (or {"action": "authenticate", "data": {"key_id": ..., "secret_key": ...}})
    <- {"stream": "authorization", "data": {"status": "authorized", "action": "authenticate"}}
    -> {"action": "listen", "data": {"streams": ["trade_updates"]}}
    <- {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    <- {"stream": "trade_updates", "data": {"event": "fill", "order": {...}, ...}}

Bourse adds two streams to Alpaca's: `alerts`, the firings of the account's own price alerts
(`/v2/alerts`, docs/alerts.md), as they are published on `alerts.fired.<account>.<id>`:

    -> {"action": "listen", "data": {"streams": ["trade_updates", "alerts"]}}
    <- {"stream": "listening", "data": {"streams": ["trade_updates", "alerts"]}}
    <- {"stream": "alerts", "data": {"event": "fired", "alert_id": ..., "symbol": "AAPL",
        "condition": "above", "price": "200", "market_price": "200.01", ...}}

and `risk`, the account's own risk alerts (`RiskAlert`s of the risk service, published on
`risk.alerts.<severity>`; `GET /v2/risk/alerts` lists the recent ones, gateway/riskfeed.py):

    -> {"action": "listen", "data": {"streams": ["trade_updates", "alerts", "risk"]}}
    <- {"stream": "risk", "data": {"alert_id": "risk-alert:<account>:3", "rule": "daily_loss",
        "severity": "critical", "message": ..., "value": "1050.00", "limit": "1000",
        "threshold": "1000", "symbol": "", "timestamp": "2024-06-10T06:13:20Z"}}

The gateway holds one subscription for each of them, whatever the number of clients, and
hands each message to the connections of its own account only.

Orders can be sent on the same connection (Bourse's own: Alpaca's stream only listens),
without an HTTP request per order. Each action's `data` is the REST endpoint's body, checked
by the same code, and is answered on `order_responses` with the REST endpoint's status and
its order, or its error (`code`, `message`, `reason`; `retry_after` for 429):

    -> {"action": "submit_order", "request_id": 7, "data": {POST /v2/orders's body}}
    -> {"action": "replace_order", "request_id": 8, "data": {"order_id": ..., PATCH's body}}
    -> {"action": "cancel_order", "request_id": 9, "data": {"order_id": ...}}
    <- {"stream": "order_responses", "data": {"request_id": 7, "action": "submit_order",
        "status": 200, "order": {...}}}
    <- {"stream": "order_responses", "data": {"request_id": 9, "action": "cancel_order",
        "status": 404, "code": 40410000, "message": "order ... not found", "reason": ...}}

`request_id` (a string of at most 64 characters, or an integer of at most 2**53 either way)
is the client's, echoed; `data` is parsed as the REST endpoint parses its body. The
actions of one connection are answered concurrently, so answers can come in another order
than the requests, and a trade update can come before its order's answer. A connection with
MAX_IN_FLIGHT actions unanswered is not read until one is answered. An action before
authenticating is answered 401; a frame over MAX_BODY bytes, or one that is not an action,
on the `error` stream. An order sent before the client left is still placed: the connection
is read up to the client's close (ORDER_GRACE at most).

Each `listen` names every stream wanted (one left out is no longer sent); unknown names are
ignored, and the answer lists the streams the connection now gets.

Wrong credentials are answered `"status": "unauthorized"` and the connection is closed
(1008); so is a connection that has not authenticated within `auth_timeout`. Listening
before authenticating is answered `unauthorized` on the `authorization` stream; a frame that
is not one of the messages above is answered on the `error` stream. Both leave the
connection open.

Events come from the read model, after each committed batch (`TradeUpdates.on_applied` is a
read-model listener), so an update's `order` is what GET /v2/orders/{id} answers at that
moment, and an account only ever hears of its own orders:

    OrderAccepted                 new
    Execution                     partial_fill, or fill when nothing is left
    OrderCancelled                canceled, or expired (reason "expired")
    OrderReplaced                 replaced (the old order), then new (its replacement)
    OrderRejected (a new order)   rejected

A batch can hold several events of one order, and the rows are read once it is committed
(later batches may be in them too), so each update's order is wound back to the event:
its status is the event's, fills with a later stream sequence (the `fills` table records
each one's) are taken out of `filled_qty` and `filled_avg_price`, and the final-state times
(`filled_at`, `canceled_at`, ...) are cleared for an event that left the order working. An
event that ends the order needs no winding back: the read model never changes an ended order.

`position_qty` of a fill is the account's position right after that fill. The accounts
service computes it and publishes it on POSITIONS (`PositionChanged`, naming the match);
the read model applies POSITIONS apart from ORDERS, so either can come first. A fill waits
for its PositionChanged up to `position_wait` seconds after its batch was committed; if the
accounts service is further behind than that, the fill goes out with the read model's
position as it then stands, which does not yet count this fill (logged).

A slow client does not hold anyone up: each connection has a queue of `queue_size` frames,
and a connection whose queue is full is closed (1008, "slow consumer ..."). Its client
reconnects and re-reads its orders over REST, as after any disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from fastapi import FastAPI, WebSocket
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, select
from starlette.websockets import WebSocketDisconnect

from bourse.accounts.readmodel import queries, schema
from bourse.accounts.readmodel.database import Database
from bourse.accounts.readmodel.projector import ReadModelEvent
from bourse.accounts.readmodel.rows import Fill, Order, OrderStatus
from bourse.bus.streams import ORDERS, POSITIONS
from bourse.gateway import alpaca, errors
from bourse.gateway.alerts import fired_json
from bourse.gateway.app import (
    MAX_BODY,
    GatewayContext,
    invalid_request,
    new_order,
    order_id_of,
    rate_limited,
    replacement,
)
from bourse.gateway.auth import Principal, RateLimiter
from bourse.gateway.riskfeed import RISK, risk_json
from bourse.model import orders, positions

log = logging.getLogger(__name__)

TRADE_UPDATES = "trade_updates"
ALERTS = "alerts"  # Bourse's own: firings of the account's price alerts
# RISK = "risk" (gateway/riskfeed.py), Bourse's own too: the account's risk alerts
POLICY_VIOLATION = 1008  # the WebSocket close code for auth failures and slow consumers
_EXECUTION_NAMESPACE = uuid.UUID("9a3c1f52-6d0e-4b8f-a2c7-5e4d3b2a1f60")
_AVERAGE = Context(prec=28)  # as the projector computes filled_avg_price
_ZERO = Decimal(0)

# ---- what a client sends: one tagged union, one decoder per codec ----


class _Credentials(msgspec.Struct, frozen=True):
    key_id: str = ""
    secret_key: str = ""


class _Streams(msgspec.Struct, frozen=True):
    streams: list[str] = []


class Auth(msgspec.Struct, frozen=True, tag_field="action", tag="auth"):
    key: str = ""
    secret: str = ""


class Authenticate(msgspec.Struct, frozen=True, tag_field="action", tag="authenticate"):
    data: _Credentials = _Credentials()


class Listen(msgspec.Struct, frozen=True, tag_field="action", tag="listen"):
    data: _Streams = _Streams()


# An integer request id stays within what a JSON double holds exactly (and msgpack encodes).
RequestId = (
    Annotated[str, msgspec.Meta(max_length=64)]
    | Annotated[int, msgspec.Meta(ge=-(2**53), le=2**53)]
    | None
)
_NO_DATA = msgspec.Raw(b"null")

# `data` is kept raw and parsed as the REST endpoint parses its body (json.loads for JSON), so
# the same bytes get the same answer either way, and a request id is read even when its data
# is what the endpoint refuses.


class SubmitOrder(msgspec.Struct, frozen=True, tag_field="action", tag="submit_order"):
    request_id: RequestId = None
    data: msgspec.Raw = _NO_DATA  # POST /v2/orders's body


class ReplaceOrder(msgspec.Struct, frozen=True, tag_field="action", tag="replace_order"):
    request_id: RequestId = None
    data: msgspec.Raw = _NO_DATA  # {"order_id": ...} and PATCH /v2/orders/{id}'s body


class CancelOrder(msgspec.Struct, frozen=True, tag_field="action", tag="cancel_order"):
    request_id: RequestId = None
    data: msgspec.Raw = _NO_DATA  # {"order_id": ...}


OrderAction = SubmitOrder | ReplaceOrder | CancelOrder
ClientMessage = Auth | Authenticate | Listen | SubmitOrder | ReplaceOrder | CancelOrder
ACTIONS = "auth, authenticate, listen, submit_order, replace_order or cancel_order"
ORDER_RESPONSES = "order_responses"  # Bourse's own: the answers to the order actions
MAX_IN_FLIGHT = 64  # order actions one connection may have unanswered; then it is not read
ORDER_GRACE = 15.0  # seconds a closed connection's order actions may still take to be placed

_json_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_msgpack_decoder: msgspec.msgpack.Decoder[ClientMessage] = msgspec.msgpack.Decoder(ClientMessage)
_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()

Codec = Literal["json", "msgpack"]
Frame = dict[str, Any]


def decode_message(payload: bytes | str, codec: Codec) -> ClientMessage:
    if codec == "msgpack" and isinstance(payload, bytes):
        return _msgpack_decoder.decode(payload)
    return _json_decoder.decode(payload)


def encode_frame(frame: Frame, codec: Codec) -> bytes:
    return _msgpack_encoder.encode(frame) if codec == "msgpack" else _json_encoder.encode(frame)


def authorization(status: str, action: str = "authenticate", message: str | None = None) -> Frame:
    data: dict[str, str] = {"status": status, "action": action}
    if message is not None:
        data["message"] = message
    return {"stream": "authorization", "data": data}


def error_frame(message: str) -> Frame:
    return {"stream": "error", "data": {"error": message}}


_Model = TypeVar("_Model", bound=BaseModel)


def _validated(model: type[_Model], data: Any) -> _Model:
    """An order action's data checked as the REST endpoint checks its body (same answers)."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise invalid_request(error) from None


def _order_id(data: Any) -> str:
    if not isinstance(data, dict) or not isinstance(data.get("order_id"), str):
        raise errors.bad_request('give the order as data: {"order_id": "<its id>", ...}')
    return order_id_of(data["order_id"])


# ---- one connection's outgoing frames ----


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


class Outbox:
    """The frames waiting to go to one connection; never blocks the one putting them.

    When the queue is full the connection is ended at once (`ended`, `close`): its client
    is not reading, and what it missed cannot be told to it any more."""

    def __init__(self, account_id: str, size: int) -> None:
        self.account_id = account_id
        self._queue: asyncio.Queue[Frame | _Close] = asyncio.Queue(size)
        self.ended = asyncio.Event()
        self.close: _Close | None = None

    def put(self, frame: Frame) -> None:
        if self.ended.is_set():
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.end(
                POLICY_VIOLATION,
                f"slow consumer: {self._queue.maxsize} messages were waiting to be sent",
            )

    def finish(self, code: int, reason: str) -> None:
        """Close once the frames already queued are sent."""
        try:
            self._queue.put_nowait(_Close(code, reason))
        except asyncio.QueueFull:
            self.end(code, reason)

    def end(self, code: int, reason: str) -> None:
        """Close now, dropping what is queued."""
        if not self.ended.is_set():
            self.close = _Close(code, reason)
            self.ended.set()

    async def get(self) -> Frame | _Close:
        return await self._queue.get()


# ---- the read model's batches into trade updates ----


# The ORDERS messages that make trade updates.
Tracked = (
    orders.OrderAccepted
    | orders.Execution
    | orders.OrderCancelled
    | orders.OrderReplaced
    | orders.OrderRejected
)
_TRACKED = (
    orders.OrderAccepted,
    orders.Execution,
    orders.OrderCancelled,
    orders.OrderReplaced,
    orders.OrderRejected,
)


@dataclass(frozen=True, slots=True)
class _Batch:
    events: tuple[tuple[int, Tracked], ...]
    committed_at: float  # loop time


@dataclass(frozen=True, slots=True)
class _Rows:
    orders: dict[str, Order]
    later_fills: dict[str, list[Fill]]  # by order id, fills of the batch's orders
    positions: dict[tuple[str, str], Decimal]  # (account, symbol) -> qty, as read


class TradeUpdates:
    """The trade_updates of every listening connection, made from the read model's batches.

    Register `on_applied` as a read-model listener; `stop()` when the gateway stops."""

    def __init__(
        self,
        db: Database,
        *,
        queue_size: int = 1024,
        position_wait: float = 2.0,
        max_batches: int = 10_000,
    ) -> None:
        self._db = db
        self.queue_size = queue_size
        self._position_wait = position_wait
        self._max_batches = max_batches
        self._listeners: dict[str, set[Outbox]] = {}
        self._batches: deque[_Batch] = deque()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._last_seq = 0
        # PositionChanged of listening accounts, by (account, symbol, match id), oldest first.
        self._positions: OrderedDict[tuple[str, str, int], tuple[Decimal, float]] = OrderedDict()
        self._positions_seen = asyncio.Event()
        self._stopped = False
        self.connections = 0  # open /stream connections (metrics)

    # ---- connections ----

    def listen(self, outbox: Outbox) -> None:
        self._listeners.setdefault(outbox.account_id, set()).add(outbox)

    def unlisten(self, outbox: Outbox) -> None:
        found = self._listeners.get(outbox.account_id)
        if found is not None:
            found.discard(outbox)
            if not found:
                del self._listeners[outbox.account_id]

    @property
    def listening(self) -> int:
        return sum(len(found) for found in self._listeners.values())

    def _deliver(self, account_id: str, frame: Frame) -> None:
        for outbox in list(self._listeners.get(account_id, ())):
            outbox.put(frame)
            if outbox.ended.is_set():
                self.unlisten(outbox)

    # ---- the read-model listener (in the event loop: no I/O here) ----

    def on_applied(self, stream: str, events: Sequence[tuple[int, ReadModelEvent]]) -> None:
        if self._stopped or not events:
            return
        now = asyncio.get_running_loop().time()
        if stream == POSITIONS.name and self._listeners:
            self._remember_positions(events, now)
        elif stream == ORDERS.name:
            # A batch read again (after a gap the read model re-reads) is not told twice.
            last, self._last_seq = self._last_seq, max(self._last_seq, events[-1][0])
            wanted = tuple(
                (seq, event)
                for seq, event in events
                if seq > last
                and isinstance(event, _TRACKED)
                and event.account_id in self._listeners
            )
            if wanted:
                self._queue(_Batch(wanted, now))

    def _remember_positions(self, events: Sequence[tuple[int, ReadModelEvent]], now: float) -> None:
        for _, event in events:
            if isinstance(event, positions.PositionChanged) and event.account_id in self._listeners:
                key = (event.account_id, event.symbol, event.match_id)
                self._positions[key] = (event.qty, now)
                self._positions.move_to_end(key)
        horizon = now - max(60.0, 10 * self._position_wait)
        while self._positions:
            key, (_, seen) = next(iter(self._positions.items()))
            if seen >= horizon:
                break
            del self._positions[key]
        self._positions_seen.set()
        self._positions_seen = asyncio.Event()

    def _queue(self, batch: _Batch) -> None:
        if len(self._batches) >= self._max_batches:
            # The database cannot keep up with the listeners; better to say so than to drop
            # updates silently.
            log.error(
                "trade updates fell %d batches behind; closing every stream", self._max_batches
            )
            self._batches.clear()
            self._drop(self._listeners, 1013, "the server fell behind")
            return
        self._batches.append(batch)
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="trade-updates")

    def _drop(self, account_ids: Iterable[str], code: int, why: str) -> None:
        """End the streams of these accounts: they missed updates and must re-read."""
        for account_id in list(account_ids):
            for outbox in self._listeners.pop(account_id, set()):
                outbox.end(code, f"{why}; reconnect and re-read your orders")

    async def stop(self) -> None:
        self._stopped = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    # ---- the worker: one batch at a time, in stream order ----

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._batches:
                batch = self._batches[0]
                try:
                    await self._publish(batch)
                except Exception:
                    log.exception("trade updates for %d events failed", len(batch.events))
                    self._drop({e.account_id for _, e in batch.events}, 1011, "internal error")
                if self._batches and self._batches[0] is batch:
                    self._batches.popleft()

    async def _publish(self, batch: _Batch) -> None:
        rows = await asyncio.to_thread(self._read, batch)
        for seq, event in batch.events:
            for kind, order in _updates(seq, event, rows):
                data: dict[str, Any] = {
                    "event": kind,
                    "timestamp": alpaca.rfc3339(event.ts),
                    "order": alpaca.order_json(order),
                }
                if isinstance(event, orders.Execution):
                    position = await self._position_after(event, batch.committed_at, rows)
                    data.update(
                        execution_id=execution_id(event),
                        price=_text(event.price),
                        qty=_text(event.qty),
                        position_qty=_text(position),
                    )
                self._deliver(order.account_id, {"stream": TRADE_UPDATES, "data": data})

    def _read(self, batch: _Batch) -> _Rows:
        ids: set[str] = set()
        holdings: set[tuple[str, str]] = set()
        for _, event in batch.events:
            ids.add(event.order_id)
            if isinstance(event, orders.OrderReplaced):
                ids.add(event.new_order_id)
            if isinstance(event, orders.Execution):
                holdings.add((event.account_id, event.symbol))
        first = batch.events[0][0]
        with self._db.read() as conn:
            return _Rows(
                orders=_orders(conn, ids),
                later_fills=_fills_after(conn, ids, first),
                positions={
                    (account, symbol): _held(conn, account, symbol) for account, symbol in holdings
                },
            )

    async def _position_after(
        self, event: orders.Execution, committed_at: float, rows: _Rows
    ) -> Decimal:
        key = (event.account_id, event.symbol, event.match_id)
        loop = asyncio.get_running_loop()
        deadline = committed_at + self._position_wait
        while True:
            seen = self._positions_seen
            found = self._positions.pop(key, None)
            if found is not None:
                return found[0]
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await seen.wait()
        log.info(
            "no position yet for %s %s after match %d; sending the read model's",
            event.account_id,
            event.symbol,
            event.match_id,
        )
        return rows.positions.get((event.account_id, event.symbol), _ZERO)


def execution_id(event: orders.Execution) -> str:
    """A stable UUID per fill (Alpaca's execution ids are UUIDs)."""
    return str(uuid.uuid5(_EXECUTION_NAMESPACE, f"{event.order_id}:{event.match_id}"))


def _text(value: Decimal) -> str:
    return format(value, "f")


def _orders(conn: Connection, ids: set[str]) -> dict[str, Order]:
    table = schema.orders
    rows = conn.execute(select(table).where(table.c.id.in_(sorted(ids))))
    return {order.id: order for order in map(schema.order_from_db, rows)}


def _fills_after(conn: Connection, ids: set[str], seq: int) -> dict[str, list[Fill]]:
    table = schema.fills
    found: dict[str, list[Fill]] = {}
    query = select(table).where(table.c.order_id.in_(sorted(ids)), table.c.seq >= seq)
    for row in conn.execute(query):
        fill = schema.from_db(Fill, row)
        found.setdefault(fill.order_id, []).append(fill)
    return found


def _held(conn: Connection, account_id: str, symbol: str) -> Decimal:
    position = queries.get_position(conn, account_id, symbol)
    return _ZERO if position is None else position.qty


def _updates(seq: int, event: Tracked, rows: _Rows) -> list[tuple[str, Order]]:
    """The trade updates one applied event makes, each with its order as of the event."""

    def own(order_id: str) -> Order | None:
        order = rows.orders.get(order_id)
        return order if order is not None and order.account_id == event.account_id else None

    def working(order: Order, status: OrderStatus | None) -> Order:
        return _as_of(order, seq, event.ts, status, rows.later_fills.get(order.id, ()))

    match event:
        case orders.OrderAccepted(order_id=order_id):
            order = own(order_id)
            return [] if order is None else [("new", working(order, "new"))]
        case orders.Execution(order_id=order_id, leaves_qty=leaves):
            order = own(order_id)
            if order is None:
                return []
            if leaves == 0:
                return [("fill", order)]
            return [("partial_fill", working(order, "partially_filled"))]
        case orders.OrderCancelled(order_id=order_id, reason=reason):
            order = own(order_id)
            status = "expired" if reason == "expired" else "canceled"
            if order is None or order.status != status:
                return []  # the read model did not apply it (the order had ended)
            return [(status, order)]
        case orders.OrderReplaced(order_id=order_id, new_order_id=new_order_id):
            old, new = own(order_id), own(new_order_id)
            if old is None or old.status != "replaced" or old.replaced_by != new_order_id:
                return []
            out = [("replaced", old)]
            if new is not None:
                out.append(("new", working(new, None)))
            return out
        case orders.OrderRejected(order_id=order_id, request="new"):
            order = own(order_id)
            if order is None or order.status != "rejected":
                return []
            return [("rejected", order)]
    return []


def _as_of(
    order: Order, seq: int, ts: int, status: OrderStatus | None, later: Sequence[Fill]
) -> Order:
    """`order` (read after `seq`) as it stood right after the event at `seq`, still working:
    later fills taken out; `status` None means new or partially_filled, by what is filled."""
    undone = [fill for fill in later if fill.seq > seq]
    filled_qty, notional, average = order.filled_qty, order.filled_notional, order.filled_avg_price
    if undone:
        filled_qty -= sum((fill.qty for fill in undone), _ZERO)
        notional -= sum((fill.qty * fill.price for fill in undone), _ZERO)
        average = _AVERAGE.divide(notional, filled_qty) if filled_qty else None
    if status is None:
        status = "partially_filled" if filled_qty > 0 else "new"
    return msgspec.structs.replace(
        order,
        status=status,
        filled_qty=filled_qty,
        filled_notional=notional,
        filled_avg_price=average,
        updated_at=ts,
        filled_at=None,
        canceled_at=None,
        expired_at=None,
        replaced_at=None,
        failed_at=None,
        replaced_by=None,
    )


# ---- the WebSocket endpoint ----


class _Session:
    def __init__(
        self,
        websocket: WebSocket,
        ctx: GatewayContext,
        updates: TradeUpdates,
        *,
        auth_timeout: float,
        close_timeout: float,
    ) -> None:
        self.websocket = websocket
        self.ctx = ctx
        self.updates = updates
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._order_tasks: set[asyncio.Task[None]] = set()
        content_type = websocket.headers.get("content-type", "")
        self.codec: Codec = "msgpack" if "msgpack" in content_type.lower() else "json"
        self.outbox = Outbox("", updates.queue_size)
        self.principal: Principal | None = None
        self._stop_alerts: Callable[[], None] | None = None
        self._stop_risk: Callable[[], None] | None = None
        self.auth_timeout = auth_timeout
        self.close_timeout = close_timeout
        self.closing = False

    async def run(self) -> None:
        await self.websocket.accept()
        reader = asyncio.create_task(self._read())
        writer = asyncio.create_task(self._write())
        ended = asyncio.create_task(self.outbox.ended.wait())
        try:
            await asyncio.wait({reader, writer, ended}, return_when=asyncio.FIRST_COMPLETED)
            for finished in (writer, ended):
                finished.cancel()
            if self.outbox.close is not None:  # ours (a slow consumer): it reads no more
                await self._close(self.outbox.close)
            elif not reader.done():
                # The client left (the writer found it gone): what it sent before that is still
                # read, up to the close, and its orders placed. It cannot tell whether an
                # order it sent was placed otherwise (their answers go nowhere).
                await asyncio.wait({reader}, timeout=ORDER_GRACE)
            if self._order_tasks:
                await asyncio.wait(self._order_tasks, timeout=ORDER_GRACE)
        finally:
            self.updates.unlisten(self.outbox)
            self._listen_alerts(False)
            self._listen_risk(False)
            tasks: list[asyncio.Task[Any]] = [reader, writer, ended, *self._order_tasks]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _close(self, close: _Close) -> None:
        # A client that does not read may never take the close frame: do not wait forever.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.close_timeout):
                await self.websocket.close(close.code, close.reason)

    async def _write(self) -> None:
        while True:
            item = await self.outbox.get()
            if isinstance(item, _Close):
                await self._close(item)
                return
            try:
                frame = encode_frame(item, self.codec)
            except (OverflowError, TypeError) as error:  # a bug, not the client's doing
                log.error("a %s frame could not be encoded (%s): %r", self.codec, error, item)
                continue
            await self.websocket.send_bytes(frame)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.auth_timeout
        while True:
            waiting = self.principal is None and not self.closing
            try:
                async with asyncio.timeout_at(deadline if waiting else None):
                    message = await self.websocket.receive()
            except TimeoutError:
                self._refuse(f"no authentication within {self.auth_timeout:g}s")
                continue
            if message["type"] == "websocket.disconnect":
                return
            payload = message.get("bytes")
            if payload is None:
                payload = message.get("text")
            if payload is None or self.closing:
                continue
            if len(payload) > MAX_BODY:
                self.outbox.put(
                    error_frame(f"message too large: {len(payload)} bytes, at most {MAX_BODY}")
                )
                continue
            try:
                request = decode_message(payload, self.codec)
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                self.outbox.put(
                    error_frame(f"invalid message ({error}); send an object with action {ACTIONS}")
                )
                continue
            if isinstance(request, OrderAction):
                # Answered concurrently, as many HTTP requests would be; past MAX_IN_FLIGHT
                # unanswered the connection is not read until one is (TCP pushes back).
                await self._in_flight.acquire()
                task = asyncio.create_task(self._order(request))
                self._order_tasks.add(task)
                task.add_done_callback(self._order_done)
                continue
            await self._handle(request)

    def _order_done(self, task: asyncio.Task[None]) -> None:
        self._order_tasks.discard(task)
        self._in_flight.release()

    async def _order(self, request: OrderAction) -> None:
        """Answer one order action on ORDER_RESPONSES, as the REST endpoint would."""
        action = type(request).__struct_config__.tag
        data: dict[str, Any] = {"request_id": request.request_id, "action": action}
        try:
            order = await self._execute(request)
        except errors.ApiError as error:
            data |= {"status": error.status, **error.body()}
            if "Retry-After" in error.headers:
                data["retry_after"] = int(error.headers["Retry-After"])
        except Exception:
            log.exception("%s on /stream failed", action)
            failed = errors.ApiError(500, "internal error", reason="internal")
            data |= {"status": 500, **failed.body()}
        else:
            data |= {"status": 200, "order": alpaca.order_json(order)}
        self.outbox.put({"stream": ORDER_RESPONSES, "data": data})

    async def _execute(self, request: OrderAction) -> Order:
        who = self.principal
        if who is None:
            raise errors.unauthorized(
                'authenticate first: send {"action": "auth", "key": ..., "secret": ...}'
            )
        wait = self.ctx.limiter.check(who.key_id)
        if wait is not None:
            raise rate_limited(wait)
        desk = self.ctx.desk
        data = self._data(request.data)
        match request:
            case SubmitOrder():
                order = new_order(_validated(alpaca.OrderRequest, data))
                return await desk.submit(who.account_id, order)
            case CancelOrder():
                return await desk.cancel(who.account_id, _order_id(data))
            case ReplaceOrder():
                # The body is checked before the order id, as FastAPI checks PATCH's.
                fields = data
                if isinstance(data, dict):
                    fields = {k: v for k, v in data.items() if k != "order_id"}
                change = replacement(_validated(alpaca.ReplaceOrderRequest, fields))
                return await desk.replace(who.account_id, _order_id(data), change)
        raise AssertionError(f"unhandled order action {request!r}")

    def _data(self, raw: msgspec.Raw) -> Any:
        if self.codec == "msgpack":
            return msgspec.msgpack.decode(raw)
        return json.loads(bytes(raw))  # as Starlette's request.json() reads a REST body

    async def _handle(self, request: ClientMessage) -> None:
        match request:
            case Auth(key=key_id, secret=secret):
                await self._authenticate(key_id, secret)
            case Authenticate(data=_Credentials(key_id=key_id, secret_key=secret)):
                await self._authenticate(key_id, secret)
            case Listen(data=_Streams(streams=streams)):
                self._listen(streams)

    async def _authenticate(self, key_id: str, secret: str) -> None:
        if self.principal is not None:
            if key_id == self.principal.key_id:
                self.outbox.put(authorization("authorized"))
            else:
                self.outbox.put(
                    error_frame("already authenticated; open another connection for another key")
                )
            return
        if not key_id or not secret:
            self._refuse("give key and secret (or data.key_id and data.secret_key)")
            return
        wait = self.ctx.limiter.check(key_id)
        if wait is not None:
            self._refuse(
                f"rate limit exceeded; retry in {RateLimiter.retry_after(wait)}s", code=1013
            )
            return
        found = await self.ctx.auth.authenticate(key_id, secret)
        if found is None:
            self._refuse("unknown API key or wrong secret")
            return
        self.principal = found
        self.outbox.account_id = found.account_id
        self.outbox.put(authorization("authorized"))

    def _refuse(self, message: str, *, code: int = POLICY_VIOLATION) -> None:
        self.outbox.put(authorization("unauthorized", message=message))
        self.outbox.finish(code, message[:120])
        self.closing = True

    def _listen(self, streams: list[str]) -> None:
        if self.principal is None:
            self.outbox.put(
                authorization(
                    "unauthorized",
                    action="listen",
                    message='authenticate first: send {"action": "auth", "key": ..., '
                    '"secret": ...}',
                )
            )
            return
        offered = (
            TRADE_UPDATES,
            *((ALERTS,) if self.ctx.alerts is not None else ()),
            *((RISK,) if self.ctx.risk is not None else ()),
        )
        wanted = [name for name in offered if name in streams]
        # The reply goes first, so no update can overtake it.
        self.outbox.put({"stream": "listening", "data": {"streams": wanted}})
        if TRADE_UPDATES in wanted:
            self.updates.listen(self.outbox)
        else:
            self.updates.unlisten(self.outbox)
        self._listen_alerts(ALERTS in wanted)
        self._listen_risk(RISK in wanted)

    def _listen_alerts(self, wanted: bool) -> None:
        view = self.ctx.alerts
        if not wanted or view is None or self.principal is None:
            if self._stop_alerts is not None:
                self._stop_alerts()
                self._stop_alerts = None
            return
        if self._stop_alerts is None:
            outbox = self.outbox
            self._stop_alerts = view.listen(
                self.principal.account_id,
                lambda event, record: outbox.put(
                    {"stream": ALERTS, "data": fired_json(event, record)}
                ),
            )

    def _listen_risk(self, wanted: bool) -> None:
        feed = self.ctx.risk
        if not wanted or feed is None or self.principal is None:
            if self._stop_risk is not None:
                self._stop_risk()
                self._stop_risk = None
            return
        if self._stop_risk is None:
            outbox = self.outbox
            self._stop_risk = feed.listen(
                self.principal.account_id,
                lambda alert: outbox.put({"stream": RISK, "data": risk_json(alert)}),
            )


def register_stream(
    app: FastAPI,
    ctx: GatewayContext,
    updates: TradeUpdates,
    *,
    auth_timeout: float = 30.0,
    close_timeout: float = 5.0,
) -> None:
    """Serve `updates` at `/stream`, authenticating with the gateway's API keys."""

    sessions: set[_Session] = set()

    def key_revoked(key_id: str) -> None:
        for session in sessions:
            if session.principal is not None and session.principal.key_id == key_id:
                session.outbox.end(POLICY_VIOLATION, "API key revoked")

    ctx.auth.on_revoked(key_revoked)

    @app.websocket("/stream")
    async def stream(websocket: WebSocket) -> None:
        session = _Session(
            websocket, ctx, updates, auth_timeout=auth_timeout, close_timeout=close_timeout
        )
        updates.connections += 1
        sessions.add(session)
        try:
            with contextlib.suppress(WebSocketDisconnect):
                await session.run()
        finally:
            sessions.discard(session)
            updates.connections -= 1
