"""An account's live updates over the gateway's `/stream` WebSocket, as typed messages.

    endpoint = resolve_endpoint()                  # the running platform's demo account
    async for update in updates(endpoint):         # reconnects until the caller stops
        match update:
            case TradeUpdate(event="fill"):   ...  # the order as it is, price, qty, position
            case AlertFired():                ...  # one of the account's price alerts
            case RiskAlert():                 ...  # the risk engine about this account
            case Connected():                 ...  # listening (again, after a Reconnecting)
            case Reconnecting():              ...  # the connection dropped; trying again

It speaks Alpaca's trade_updates protocol (docs/trading-api.md): authenticate, listen to
`trade_updates` and Bourse's `alerts` and `risk`. Wrong credentials raise `ApiError` (401);
any other loss of the connection (the platform restarting, a slow-consumer close) is
reported as `Reconnecting` and the stream is opened again after a short, growing delay.
Updates sent while it was away are not replayed: read `/v2/orders` for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Final

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from bourse.client import ApiError, ApiUnreachable, Endpoint, Order

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


class _Frame(msgspec.Struct, frozen=True):
    stream: str
    data: msgspec.Raw = msgspec.Raw(b"null")


_frame = msgspec.json.Decoder(_Frame)
_DATA: Final[dict[str, msgspec.json.Decoder[TradeUpdate | AlertFired | RiskAlert]]] = {
    "trade_updates": msgspec.json.Decoder(TradeUpdate),
    "alerts": msgspec.json.Decoder(AlertFired),
    "risk": msgspec.json.Decoder(RiskAlert),
}


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
        try:
            ws = await _open(url, endpoint, streams)
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
                problem = "the server closed the connection"
            except websockets.ConnectionClosed as e:
                problem = e.rcvd.reason if e.rcvd and e.rcvd.reason else str(e)
            except (OSError, msgspec.DecodeError) as e:
                problem = str(e) or type(e).__name__
            finally:
                await ws.close()
        if not reconnect:
            return
        delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
        failures += 1
        yield Reconnecting(problem=problem, delay=delay)
        await asyncio.sleep(delay)
