"""bourse.updates: an account's live updates over `/stream`, typed, and reconnecting."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from bourse.client import ApiError, ApiUnreachable, Endpoint, Order
from bourse.gateway.auth import RateLimiter
from bourse.updates import (
    Connected,
    OrderSession,
    RateLimited,
    Reconnecting,
    TradeUpdate,
    Update,
    stream_url,
    updates,
)
from tests.gateway.conftest import ExchangeStack
from tests.gateway.test_orders_api import limit


async def _next(stream: AsyncIterator[Update]) -> Update:
    return await anext(stream)


async def test_the_accounts_updates_from_the_real_gateway(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader()
    stream = updates(Endpoint(url=exchange.url, key_id=alice.key_id, secret=alice.secret))
    try:
        connected = await _next(stream)
        assert isinstance(connected, Connected)
        assert connected.url == stream_url(exchange.url)
        placed = await alice.http.post("/v2/orders", json=limit("AAPL", "buy", "3", "150.00"))
        update = await _next(stream)
        assert isinstance(update, TradeUpdate)
        assert (update.event, update.order.id) == ("new", placed.json()["id"])
        assert update.order.limit_price is not None and update.order.limit_price == 150
    finally:
        await stream.aclose()


async def test_a_wrong_secret_is_an_api_error_not_a_reconnection(exchange: ExchangeStack) -> None:
    alice = await exchange.trader()
    stream = updates(Endpoint(url=exchange.url, key_id=alice.key_id, secret="wrong"))
    with pytest.raises(ApiError, match=f"refused the API key {alice.key_id}"):
        await _next(stream)


async def test_nothing_listening_is_unreachable() -> None:
    stream = updates(Endpoint(url="http://127.0.0.1:1", key_id="PK", secret="s"))
    with pytest.raises(
        ApiUnreachable, match=re.escape("cannot reach the Bourse API at ws://127.0.0.1:1/stream")
    ):
        await _next(stream)


async def test_streams_are_checked() -> None:
    with pytest.raises(ValueError, match="streams must be some of"):
        await _next(updates(Endpoint(url="http://x", key_id="PK", secret="s"), ["orders"]))
    assert stream_url("https://bourse.example/") == "wss://bourse.example/stream"


async def _let_in(ws: ServerConnection) -> None:
    """Authorize the connection and take its listen, as the gateway does."""
    await ws.send(json.dumps({"stream": "authorization", "data": {"status": "authorized"}}))
    streams = json.loads(await ws.recv())["data"]["streams"]
    await ws.send(json.dumps({"stream": "listening", "data": {"streams": streams}}))


async def _first_updates(
    handler: Callable[[ServerConnection], Awaitable[None]], n: int
) -> list[Update]:
    """The first `n` updates from a server speaking the protocol through `handler`."""
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        stream = updates(Endpoint(url=f"http://127.0.0.1:{port}", key_id="PK", secret="s"))
        try:
            return [await _next(stream) for _ in range(n)]
        finally:
            await stream.aclose()


def _update(n: int) -> dict[str, Any]:
    order = {
        "id": f"order-{n}",
        "client_order_id": f"c{n}",
        "symbol": "AAPL",
        "side": "buy",
        "type": "market",
        "time_in_force": "day",
        "qty": "1",
        "status": "new",
    }
    return {"stream": "trade_updates", "data": {"event": "new", "order": order}}


async def test_a_dropped_connection_is_reported_and_opened_again() -> None:
    """A server (speaking the protocol, as the gateway does) that closes the first connection
    the way the gateway closes a slow consumer's."""
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        assert json.loads(await ws.recv())["action"] == "auth"
        await _let_in(ws)
        await ws.send(json.dumps(_update(connections)))
        if connections == 1:
            await ws.close(1008, "slow consumer: 1000 frames behind")
        else:
            await ws.wait_closed()

    seen = await _first_updates(handler, 5)
    kinds = [type(u).__name__ for u in seen]
    assert kinds == ["Connected", "TradeUpdate", "Reconnecting", "Connected", "TradeUpdate"]
    dropped = seen[2]
    assert isinstance(dropped, Reconnecting)
    assert dropped.problem == "slow consumer: 1000 frames behind"
    assert [u.order.id for u in seen if isinstance(u, TradeUpdate)] == ["order-1", "order-2"]


async def test_an_order_session_trades_and_hears_its_updates(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")
    seller = await exchange.trader(shorting=True)
    alice = await exchange.trader("10000")
    endpoint = Endpoint(url=exchange.url, key_id=alice.key_id, secret=alice.secret)
    async with await OrderSession.open(endpoint, ["trade_updates"]) as session:
        resting = await session.submit("AAPL", "buy", Decimal(3), limit_price=Decimal("150.00"))
        assert (resting.status, resting.qty, resting.type) == ("new", 3, "limit")
        replaced = await session.replace(resting.id, qty=Decimal(5))
        assert (replaced.replaces, replaced.qty) == (resting.id, 5)
        canceled = await session.cancel(replaced.id)
        assert (canceled.id, canceled.status) == (replaced.id, "canceled")
        await seller.http.post("/v2/orders", json=limit("AAPL", "sell", "2", "190.00"))
        # Two at once from two tasks: each gets its own answer.
        taken, refused = await asyncio.gather(
            session.submit("AAPL", "buy", Decimal(2), limit_price=Decimal("190.00")),
            session.submit("AAPL", "buy", Decimal(0), limit_price=Decimal("190.00")),
            return_exceptions=True,
        )
        assert isinstance(taken, Order) and taken.status == "filled"
        assert isinstance(refused, ApiError)
        assert (refused.status, refused.reason) == (422, "invalid_quantity")
        events = []
        async for update in session.updates():
            assert isinstance(update, TradeUpdate)
            events.append((update.event, update.order.id))
            if update.event == "fill":
                break
    assert events == [
        ("new", resting.id),
        ("replaced", resting.id),
        ("new", replaced.id),
        ("canceled", replaced.id),
        ("new", taken.id),
        ("fill", taken.id),
    ]


async def test_an_order_session_whose_connection_drops_fails_what_is_in_flight() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await _let_in(ws)
        await ws.recv()  # an order: the server goes away instead of answering
        await ws.close(1001, "going away")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        endpoint = Endpoint(url=f"http://127.0.0.1:{port}", key_id="PK", secret="s")
        session = await OrderSession.open(endpoint)
        with pytest.raises(ApiUnreachable, match="going away"):
            await session.submit("AAPL", "buy", Decimal(1))
        assert [u async for u in session.updates()] == []
        await session.close()


async def test_a_rate_limited_first_connection_says_so(
    exchange: ExchangeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await exchange.trader()
    assert exchange.gateway.context is not None
    monkeypatch.setattr(exchange.gateway.context, "limiter", RateLimiter(0.01, 1))
    assert (await alice.http.get("/v2/account")).status_code == 200  # the key's one token
    stream = updates(Endpoint(url=exchange.url, key_id=alice.key_id, secret=alice.secret))
    with pytest.raises(RateLimited, match="rate limit exceeded") as refused:
        await _next(stream)
    # One token per 100 s, the last one taken just now (a second or two may have passed).
    assert refused.value.status == 429 and 90 <= refused.value.retry_after <= 100


async def test_a_rate_limited_reconnection_waits_and_tries_again() -> None:
    """A server that restarts, then refuses the key's reconnection for its rate limit (as the
    gateway words it), then lets it in."""
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.recv()
        if connections == 2:
            refusal = {"status": "unauthorized", "message": "rate limit exceeded; retry in 1s"}
            await ws.send(json.dumps({"stream": "authorization", "data": refusal}))
            await ws.close(1013, "rate limit exceeded; retry in 1s")
            return
        await _let_in(ws)
        if connections == 1:
            await ws.close(1012, "service restart")
        else:
            await ws.wait_closed()

    seen = await _first_updates(handler, 4)
    assert [type(u).__name__ for u in seen] == [
        "Connected",
        "Reconnecting",
        "Reconnecting",
        "Connected",
    ]
    restarted, limited = seen[1], seen[2]
    assert isinstance(restarted, Reconnecting) and restarted.problem == "service restart"
    assert isinstance(limited, Reconnecting)
    assert (limited.problem, limited.delay) == ("rate limit exceeded; retry in 1s", 1.0)
