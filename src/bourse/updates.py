"""An account's live updates over the gateway's `/stream` WebSocket, as typed messages.

    endpoint = resolve_endpoint()                  # the running platform's demo account
    async for update in updates(endpoint):         # reconnects until the caller stops
        match update:
            case TradeUpdate(event="fill"):   ...  # the order as it is, price, qty, position
            case AlertFired():                ...  # one of the account's price alerts
            case RiskAlert():                 ...  # the risk engine about this account
            case Connected():                 ...  # listening (again, after a Reconnecting)
            case Reconnecting():              ...  # the connection dropped; trying again

`OrderSession` sends orders on one such connection, without an HTTP request per order, and
hears the updates on it too (docs/trading-api.md, "Orders over the stream"):

    async with await OrderSession.open(endpoint) as session:
        order = await session.submit("AAPL", "buy", Decimal(10), limit_price=Decimal("189.50"))
        async for update in session.updates():   # its own orders' updates, alerts, risk
            ...

`updates()` speaks Alpaca's trade_updates protocol (docs/trading-api.md): authenticate, listen to
`trade_updates` and Bourse's `alerts` and `risk`. Wrong credentials raise `ApiError` (401);
any other loss of the connection (the platform restarting, a slow-consumer close) is
reported as `Reconnecting` and the stream is opened again after a short, growing delay (or
as long as the key's rate limit asks, when a reconnection is refused for it; `RateLimited`,
a 429 `ApiError`, if the first connection is).
Updates sent while it was away are not replayed: read `/v2/orders` for them.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Final

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from bourse.client import (
    ApiError,
    ApiUnreachable,
    Endpoint,
    Order,
    OrderType,
    Side,
    TimeInForce,
    order_body,
)

STREAMS: Final = ("trade_updates", "alerts", "risk")
RETRY_DELAYS: Final = (0.5, 1.0, 2.0, 5.0)  # seconds before each reconnection, then the last
_HANDSHAKE_TIMEOUT: Final = 10.0


class TradeUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """new, fill, partial_fill, canceled, expired, replaced, rejected... for one order."""

    event: str
    order: Order
    timestamp: datetime | None = None
    price: Decimal | None = None  # of a fill
    qty: Decimal | None = None  # of a fill
    position_qty: Decimal | None = None  # the account's position right after a fill


class AlertFired(msgspec.Struct, frozen=True, kw_only=True):
    alert_id: str
    symbol: str
    condition: str
    price: Decimal
    market_price: Decimal | None = None
    recurring: bool = False
    fire_count: int = 1
    timestamp: datetime | None = None


class RiskAlert(msgspec.Struct, frozen=True, kw_only=True):
    alert_id: str
    rule: str
    severity: str
    message: str
    symbol: str = ""
    timestamp: datetime | None = None


class Connected(msgspec.Struct, frozen=True, kw_only=True):
    """Authenticated and listening to `streams` at `url`: updates from here on arrive."""

    url: str
    streams: list[str]


class Reconnecting(msgspec.Struct, frozen=True, kw_only=True):
    """The connection was lost (`problem`); the next try is in `delay` seconds."""

    problem: str
    delay: float


Update = TradeUpdate | AlertFired | RiskAlert | Connected | Reconnecting


class RateLimited(ApiError):
    """The key's requests came faster than its limit; try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(429, message, reason="rate_limited")
        self.retry_after = retry_after


_RATE_LIMITED = re.compile(r"rate limit exceeded; retry in (\d+)s")


class _Frame(msgspec.Struct, frozen=True):
    stream: str
    data: msgspec.Raw = msgspec.Raw(b"null")


_frame = msgspec.json.Decoder(_Frame)
_DATA: Final[dict[str, msgspec.json.Decoder[TradeUpdate | AlertFired | RiskAlert]]] = {
    "trade_updates": msgspec.json.Decoder(TradeUpdate),
    "alerts": msgspec.json.Decoder(AlertFired),
    "risk": msgspec.json.Decoder(RiskAlert),
}


def _closed_cleanly(ws: ClientConnection) -> str:
    """Why the server ended a connection that closed without an error."""
    if ws.close_reason:
        return f"closed by the server: {ws.close_reason}"
    return "the server closed the connection"


def _closed_by(error: websockets.ConnectionClosed) -> str:
    """Why a connection closed with an error: the server's reason, else the error."""
    return error.rcvd.reason if error.rcvd and error.rcvd.reason else str(error)


def stream_url(api_url: str) -> str:
    """The `/stream` WebSocket of an http(s) API URL."""
    scheme, rest = api_url.rstrip("/").split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/stream"


async def _expect(ws: ClientConnection, stream: str) -> msgspec.Raw:
    """The next frame, which must be on `stream`; its data."""
    frame = _frame.decode(await ws.recv())
    if frame.stream != stream:
        raise ConnectionError(f"expected a reply on {stream!r}, got one on {frame.stream!r}")
    return frame.data


async def _open(url: str, endpoint: Endpoint, streams: Sequence[str]) -> ClientConnection:
    ws = await websockets.connect(url, open_timeout=_HANDSHAKE_TIMEOUT, max_size=2**22)
    try:
        async with asyncio.timeout(_HANDSHAKE_TIMEOUT):
            auth = {"action": "auth", "key": endpoint.key_id, "secret": endpoint.secret}
            await ws.send(msgspec.json.encode(auth).decode())
            status = msgspec.json.decode(await _expect(ws, "authorization"))
            if not isinstance(status, dict) or status.get("status") != "authorized":
                message = str(status.get("message", "")) if isinstance(status, dict) else ""
                limited = _RATE_LIMITED.match(message)
                if limited:
                    raise RateLimited(message, float(limited.group(1)))
                raise ApiError(401, f"the stream refused the API key {endpoint.key_id}")
            listen = {"action": "listen", "data": {"streams": list(streams)}}
            await ws.send(msgspec.json.encode(listen).decode())
            await _expect(ws, "listening")
    except BaseException:
        await ws.close()
        raise
    return ws


async def updates(
    endpoint: Endpoint, streams: Sequence[str] = STREAMS, *, reconnect: bool = True
) -> AsyncIterator[Update]:
    """The account's updates as they arrive, until the caller stops iterating.

    The first connection must succeed (`ApiUnreachable` otherwise: nothing to watch); later
    losses yield `Reconnecting` and try again (with `reconnect`; else they end the stream).
    """
    unknown = sorted(set(streams) - set(STREAMS))
    if unknown or not streams:
        raise ValueError(f"streams must be some of {', '.join(STREAMS)}, got {list(streams)}")
    url = stream_url(endpoint.url)
    failures = 0
    connected_once = False
    while True:
        wait = 0.0  # at least this long before the next try
        try:
            ws = await _open(url, endpoint, streams)
        except RateLimited as e:
            if not connected_once:
                raise
            problem, wait = e.message, e.retry_after
        except ApiError:
            raise
        except (OSError, TimeoutError, websockets.WebSocketException, msgspec.DecodeError) as e:
            if not connected_once:
                raise ApiUnreachable(url, str(e) or type(e).__name__) from e
            problem = str(e) or type(e).__name__
        else:
            connected_once, failures = True, 0
            try:
                yield Connected(url=url, streams=list(streams))
                async for raw in ws:
                    frame = _frame.decode(raw)
                    decoder = _DATA.get(frame.stream)
                    if decoder is not None:
                        yield decoder.decode(frame.data)
                problem = _closed_cleanly(ws)
            except websockets.ConnectionClosed as e:
                problem = _closed_by(e)
            except (OSError, msgspec.DecodeError) as e:
                problem = str(e) or type(e).__name__
            finally:
                await ws.close()
        if not reconnect:
            return
        delay = max(wait, RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
        failures += 1
        yield Reconnecting(problem=problem, delay=delay)
        await asyncio.sleep(delay)


class _Answer(msgspec.Struct, frozen=True, kw_only=True):
    request_id: int
    status: int
    order: Order | None = None
    code: int | None = None
    message: str = ""
    reason: str | None = None


_answer = msgspec.json.Decoder(_Answer)


class OrderSession:
    """Orders over one authenticated `/stream` connection; updates on it as they come.

    Each call waits for its own answer (several may be in flight at once, from different
    tasks); a refusal raises `ApiError` as `BourseClient` does. A lost connection fails the
    calls in flight with `ApiUnreachable` and ends `updates()`: open a new session (an order
    sent just before is placed all the same: look it up by its client_order_id)."""

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self._ws = ws
        self._url = url
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[_Answer]] = {}
        self._updates: asyncio.Queue[TradeUpdate | AlertFired | RiskAlert | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, endpoint: Endpoint, streams: Sequence[str] = STREAMS) -> OrderSession:
        """Connect and authenticate; listen to `streams` (none: orders only)."""
        url = stream_url(endpoint.url)
        try:
            ws = await _open(url, endpoint, streams)
        except (OSError, TimeoutError, websockets.WebSocketException) as e:
            raise ApiUnreachable(url, str(e) or type(e).__name__) from e
        return cls(ws, url)

    async def __aenter__(self) -> OrderSession:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def submit(
        self,
        symbol: str,
        side: Side,
        qty: Decimal,
        *,
        type: OrderType | None = None,
        time_in_force: TimeInForce = "day",
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        """As `BourseClient.submit`: the order once the exchange has decided."""
        body = order_body(
            symbol,
            side,
            qty,
            type=type,
            time_in_force=time_in_force,
            limit_price=limit_price,
            stop_price=stop_price,
            client_order_id=client_order_id,
        )
        return await self._ask("submit_order", body)

    async def replace(
        self,
        order_id: str,
        *,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
    ) -> Order:
        """The replacement order (its `replaces` is `order_id`)."""
        data: dict[str, Any] = {"order_id": order_id}
        for name, value in (("qty", qty), ("limit_price", limit_price), ("stop_price", stop_price)):
            if value is not None:
                data[name] = format(value, "f")
        return await self._ask("replace_order", data)

    async def cancel(self, order_id: str) -> Order:
        """The order once canceled."""
        return await self._ask("cancel_order", {"order_id": order_id})

    async def updates(self) -> AsyncIterator[TradeUpdate | AlertFired | RiskAlert]:
        """The updates of the streams listened to, until the connection ends."""
        while (update := await self._updates.get()) is not None:
            yield update

    async def _ask(self, action: str, data: dict[str, Any]) -> Order:
        request_id = next(self._ids)
        answered: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answered
        try:
            frame = {"action": action, "request_id": request_id, "data": data}
            try:
                await self._ws.send(msgspec.json.encode(frame).decode())
            except websockets.ConnectionClosed as e:
                raise ApiUnreachable(self._url, f"connection closed ({e})") from None
            answer = await answered
        finally:
            self._waiting.pop(request_id, None)
        if answer.order is None:
            raise ApiError(answer.status, answer.message, code=answer.code, reason=answer.reason)
        return answer.order

    async def _read(self) -> None:
        problem = "the connection ended"
        try:
            async for raw in self._ws:
                frame = _frame.decode(raw)
                if frame.stream == "order_responses":
                    answer = _answer.decode(frame.data)
                    waiting = self._waiting.get(answer.request_id)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(answer)
                elif (decoder := _DATA.get(frame.stream)) is not None:
                    self._updates.put_nowait(decoder.decode(frame.data))
            problem = _closed_cleanly(self._ws)
        except websockets.ConnectionClosed as e:
            problem = _closed_by(e)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            problem = f"the server sent a frame that is not Bourse's protocol: {e}"
            await self._ws.close()
        finally:
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(ApiUnreachable(self._url, problem))
            self._updates.put_nowait(None)
