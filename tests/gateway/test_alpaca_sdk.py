"""The official alpaca-py SDK, unchanged, against Bourse's gateway and its services.

alpaca-py is synchronous (requests), so every call goes through `asyncio.to_thread` and the
in-process gateway keeps serving meanwhile. `TradingClient(url_override=...)` and
`TradingStream(url_override=...)` point it at the gateway; nothing else is patched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import AssetClass, OrderSide, OrderStatus, OrderType, TimeInForce
from alpaca.trading.models import Order, TradeUpdate
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetAssetsRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopOrderRequest,
)
from alpaca.trading.stream import TradingStream
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bourse.gateway.stream import Outbox
from bourse.model import orders, subjects
from tests.conftest import eventually
from tests.gateway.conftest import ExchangeStack, Trader

_T = TypeVar("_T")


async def call(function: Callable[..., _T | dict[str, Any]], *args: Any) -> _T:
    """Run an SDK call in a thread; its models, never raw dicts (raw_data is off)."""
    result = await asyncio.to_thread(function, *args)
    assert not isinstance(result, dict)
    return result


def sdk(exchange: ExchangeStack, trader: Trader) -> TradingClient:
    return TradingClient(trader.key_id, trader.secret, paper=True, url_override=exchange.url)


def limit(
    side: OrderSide, qty: int, price: str, symbol: str = "AAPL", **extra: Any
) -> LimitOrderRequest:
    return LimitOrderRequest(
        symbol=symbol,
        qty=qty,
        side=side,
        time_in_force=TimeInForce.GTC,
        limit_price=float(price),
        **extra,
    )


async def submit(client: TradingClient, request: Any) -> Order:
    return await call(client.submit_order, request)


async def api_error(function: Callable[..., Any], *args: Any) -> APIError:
    with pytest.raises(APIError) as raised:
        await call(function, *args)
    return raised.value


# ---- REST ----


async def test_account_clock_and_assets(exchange: ExchangeStack) -> None:
    alice = sdk(exchange, await exchange.trader("25000"))

    account = await call(alice.get_account)
    assert account.cash == "25000" and account.buying_power == "25000"
    clock = await call(alice.get_clock)
    assert clock.is_open

    assets = await call(alice.get_all_assets)
    symbols = {asset.symbol for asset in assets}
    assert "AAPL" in symbols
    equities = await call(alice.get_all_assets, GetAssetsRequest(asset_class=AssetClass.US_EQUITY))
    assert equities and all(a.asset_class is AssetClass.US_EQUITY for a in equities)
    apple = await call(alice.get_asset, "AAPL")
    assert apple.symbol == "AAPL" and apple.tradable
    by_id = await call(alice.get_asset, apple.id)
    assert by_id.symbol == "AAPL"
    assert (await api_error(alice.get_asset, "NOSUCH")).status_code == 404


async def test_orders_submit_find_replace_and_cancel(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = sdk(exchange, await exchange.trader())

    placed = await submit(alice, limit(OrderSide.BUY, 5, "185.00", client_order_id="dip-1"))
    assert placed.status is OrderStatus.NEW and placed.type is OrderType.LIMIT
    # alpaca-py sends prices as floats (185.0); Bourse keeps the number as given.
    assert Decimal(placed.limit_price or "") == 185 and placed.client_order_id == "dip-1"
    found = await call(alice.get_order_by_id, placed.id)
    assert found.id == placed.id and found.status is OrderStatus.NEW
    by_client = await call(alice.get_order_by_client_id, "dip-1")
    assert by_client.id == placed.id

    replaced = await call(
        alice.replace_order_by_id, placed.id, ReplaceOrderRequest(qty=3, limit_price=185.5)
    )
    assert isinstance(replaced, Order)
    assert replaced.id != placed.id and replaced.replaces == placed.id
    assert Decimal(replaced.qty or "") == 3 and Decimal(replaced.limit_price or "") == 185.5
    old = await call(alice.get_order_by_id, placed.id)
    assert old.status is OrderStatus.REPLACED and old.replaced_by == replaced.id

    stop = await submit(
        alice,
        StopOrderRequest(
            symbol="AAPL", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, stop_price=200
        ),
    )
    assert stop.type is OrderType.STOP and Decimal(stop.stop_price or "") == 200
    assert stop.status in (OrderStatus.NEW, OrderStatus.ACCEPTED)

    await call(alice.cancel_order_by_id, replaced.id)
    canceled = await call(alice.get_order_by_id, replaced.id)
    assert canceled.status is OrderStatus.CANCELED

    other = await submit(alice, limit(OrderSide.BUY, 1, "150.00"))
    results = await call(alice.cancel_orders)
    assert sorted((str(r.id), r.status) for r in results) == sorted(
        [(str(stop.id), 200), (str(other.id), 200)]
    )
    left = await call(alice.get_orders)
    assert left == []


async def test_market_order_fills_and_positions_close(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")
    dealer = sdk(exchange, await exchange.trader("1000000", shorting=True))
    alice = sdk(exchange, await exchange.trader())

    await submit(dealer, limit(OrderSide.SELL, 10, "190.00"))  # resting liquidity
    bought = await submit(
        alice,
        MarketOrderRequest(
            symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
        ),
    )

    async def filled() -> bool:
        order = await call(alice.get_order_by_id, bought.id)
        return order.status is OrderStatus.FILLED

    # The POST answers once the engine has spoken; its fill may be applied a moment later.
    await eventually(filled, message="the market order never filled")
    bought = await call(alice.get_order_by_id, bought.id)
    assert Decimal(bought.filled_qty or "") == 10 and bought.filled_avg_price == "190.00"

    async def held() -> str | None:
        found = await call(alice.get_all_positions)
        return next((p.qty for p in found if p.symbol == "AAPL"), None)

    async def holds(qty: str | None) -> bool:
        return await held() == qty

    await eventually(lambda: holds("10"), message="the position never showed 10")
    position = await call(alice.get_open_position, "AAPL")
    assert position.qty == "10" and position.avg_entry_price == "190.00"

    await submit(dealer, limit(OrderSide.BUY, 10, "189.90"))  # someone to sell to
    closed = await call(alice.close_position, "AAPL", ClosePositionRequest(qty="4"))
    assert closed.side is OrderSide.SELL and closed.qty == "4"
    await eventually(lambda: holds("6"), message="the position never went to 6")
    half = await call(alice.close_position, "AAPL", ClosePositionRequest(percentage="50"))
    assert half.qty == "3"
    await eventually(lambda: holds("3"), message="the position never went to 3")

    results = await call(alice.close_all_positions)
    assert [(r.symbol, r.status) for r in results] == [("AAPL", 200)]
    await eventually(lambda: holds(None), message="the position never closed")
    assert (await api_error(alice.get_open_position, "AAPL")).status_code == 404


async def test_errors_are_alpaca_api_errors(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")
    poor = sdk(exchange, await exchange.trader("100"))
    bob = sdk(exchange, await exchange.trader())

    refused = await api_error(poor.submit_order, limit(OrderSide.BUY, 10, "190.00"))
    assert refused.status_code == 403 and refused.code == 40310000
    assert "buying power" in refused.message

    mine = await submit(bob, limit(OrderSide.BUY, 1, "150.00"))
    assert (await api_error(poor.get_order_by_id, mine.id)).status_code == 404
    assert (await api_error(poor.cancel_order_by_id, mine.id)).status_code == 404
    assert (await api_error(poor.get_order_by_client_id, mine.client_order_id)).status_code == 404
    unknown = await api_error(poor.submit_order, limit(OrderSide.BUY, 1, "1.00", symbol="NOPE"))
    assert unknown.status_code == 422


# ---- the trade_updates stream ----


@asynccontextmanager
async def trading_stream(
    exchange: ExchangeStack, trader: Trader, updates: list[TradeUpdate]
) -> AsyncIterator[TradingStream]:
    """alpaca-py's TradingStream, run in this event loop, listening until the block ends."""
    assert exchange.gateway.trade_updates is not None
    before = exchange.gateway.trade_updates.listening
    stream = TradingStream(
        trader.key_id, trader.secret, url_override=exchange.url.replace("http", "ws") + "/stream"
    )

    async def handler(update: TradeUpdate) -> None:
        updates.append(update)

    stream.subscribe_trade_updates(handler)
    # `run()` would start a loop of its own; its coroutine runs in the test's loop instead.
    task = asyncio.create_task(stream._run_forever())  # type: ignore[no-untyped-call]
    try:
        await eventually(
            lambda: (
                exchange.gateway.trade_updates is not None
                and exchange.gateway.trade_updates.listening > before
            ),
            message="the stream never started listening",
        )
        yield stream
    finally:
        await stream.stop_ws()
        await stream.close()  # so it need not wait out its 5 s receive timeout
        await asyncio.wait_for(task, 10)


def seen(updates: list[TradeUpdate]) -> list[tuple[str, str]]:
    return [(str(u.event), str(u.order.id)) for u in updates]


async def test_trade_updates_tell_each_account_of_its_own_orders(
    exchange: ExchangeStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bourse.gateway.stream")
    await exchange.reference("AAPL", "190.00")
    alice_keys, bob_keys = await exchange.trader(), await exchange.trader(shorting=True)
    alice, bob = sdk(exchange, alice_keys), sdk(exchange, bob_keys)
    to_alice: list[TradeUpdate] = []
    to_bob: list[TradeUpdate] = []
    async with (
        trading_stream(exchange, alice_keys, to_alice),
        trading_stream(exchange, bob_keys, to_bob),
    ):
        ask = await submit(bob, limit(OrderSide.SELL, 3, "190.00"))
        bid = await submit(alice, limit(OrderSide.BUY, 5, "190.00"))
        second_ask = await submit(bob, limit(OrderSide.SELL, 2, "190.00"))
        low = await submit(alice, limit(OrderSide.BUY, 1, "150.00"))
        raised = await call(alice.replace_order_by_id, low.id, ReplaceOrderRequest(limit_price=151))
        await call(alice.cancel_order_by_id, raised.id)

        mine = [
            ("new", str(bid.id)),
            ("partial_fill", str(bid.id)),
            ("fill", str(bid.id)),
            ("new", str(low.id)),
            ("replaced", str(low.id)),
            ("new", str(raised.id)),
            ("canceled", str(raised.id)),
        ]
        theirs = [
            ("new", str(ask.id)),
            ("fill", str(ask.id)),
            ("new", str(second_ask.id)),
            ("fill", str(second_ask.id)),
        ]
        await eventually(lambda: seen(to_alice) == mine, message=f"alice saw {seen(to_alice)}")
        await eventually(lambda: seen(to_bob) == theirs, message=f"bob saw {seen(to_bob)}")

    new, partial, fill = to_alice[:3]
    assert new.order.status is OrderStatus.NEW and new.order.filled_qty == "0"
    # The partial fill's order is as it stood then, though the read model had moved on.
    assert partial.order.status is OrderStatus.PARTIALLY_FILLED
    assert (partial.qty, partial.price, partial.position_qty) == (3, 190, 3)
    assert partial.order.filled_qty == "3" and partial.order.filled_avg_price == "190.00"
    assert fill.order.status is OrderStatus.FILLED and fill.order.filled_qty == "5"
    assert (fill.qty, fill.position_qty) == (2, 5)
    assert partial.execution_id is not None and fill.execution_id is not None
    assert partial.execution_id != fill.execution_id
    replaced, successor, canceled = to_alice[4:]
    assert replaced.order.status is OrderStatus.REPLACED
    assert str(replaced.order.replaced_by) == str(successor.order.id)
    assert Decimal(successor.order.limit_price or "") == 151
    assert successor.order.status is OrderStatus.NEW
    assert canceled.order.status is OrderStatus.CANCELED
    assert [u.position_qty for u in to_bob if u.event == "fill"] == [-3, -5]
    # Every position_qty came from the accounts service's PositionChanged of that match.
    assert "no position yet" not in caplog.text


async def test_each_fill_of_a_sweep_carries_the_order_as_it_stood(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    alice_keys = await exchange.trader()
    alice, dealer = sdk(exchange, alice_keys), sdk(exchange, await exchange.trader(shorting=True))
    await submit(dealer, limit(OrderSide.SELL, 2, "190.00"))
    await submit(dealer, limit(OrderSide.SELL, 3, "190.02"))
    updates: list[TradeUpdate] = []
    async with trading_stream(exchange, alice_keys, updates):
        # One order takes both asks: its events are journaled (and mostly applied) together.
        sweep = await submit(alice, limit(OrderSide.BUY, 5, "190.02"))
        expected = [
            ("new", str(sweep.id)),
            ("partial_fill", str(sweep.id)),
            ("fill", str(sweep.id)),
        ]
        await eventually(lambda: seen(updates) == expected, message=f"saw {seen(updates)}")
    new, partial, fill = updates
    assert new.order.status is OrderStatus.NEW and new.order.filled_qty == "0"
    assert new.order.filled_avg_price is None and new.order.filled_at is None
    assert partial.order.status is OrderStatus.PARTIALLY_FILLED
    assert partial.order.filled_qty == "2" and partial.order.filled_avg_price == "190.00"
    assert (partial.qty, partial.price, partial.position_qty) == (2, 190.0, 2)
    assert fill.order.status is OrderStatus.FILLED and fill.order.filled_qty == "5"
    assert Decimal(fill.order.filled_avg_price or "") == Decimal("190.012")
    assert (fill.qty, fill.price, fill.position_qty) == (3, 190.02, 5)


async def test_trade_updates_report_rejections_cancellations_and_expiry(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    keys = await exchange.trader("1000")
    alice = sdk(exchange, keys)
    updates: list[TradeUpdate] = []
    async with trading_stream(exchange, keys, updates):
        await api_error(alice.submit_order, limit(OrderSide.BUY, 10, "190.00"))  # 403
        ioc = await submit(
            alice,
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.IOC,
                limit_price=150,
            ),
        )
        day = await submit(
            alice,
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                limit_price=150,
            ),
        )
        # What the session clock publishes at midnight UTC: DAY orders expire.
        closed = orders.SessionClosed(ts=time.time_ns(), trading_day="2030-01-01")
        await exchange.js.publish(subjects.ORDERS_SESSION, orders.encode(closed))
        expected = ["rejected", "new", "canceled", "new", "expired"]
        await eventually(
            lambda: [str(u.event) for u in updates] == expected, message=f"saw {seen(updates)}"
        )
    rejected, _, canceled, _, expired = updates
    assert rejected.order.status is OrderStatus.REJECTED
    assert canceled.order.id == ioc.id and canceled.order.status is OrderStatus.CANCELED
    assert expired.order.id == day.id and expired.order.status is OrderStatus.EXPIRED
    assert expired.order.expired_at is not None


async def test_a_slow_listener_is_cut_off_without_holding_up_others(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    keys = await exchange.trader()
    alice = sdk(exchange, keys)
    updates = exchange.gateway.trade_updates
    assert updates is not None
    stuck = Outbox(keys.account_id, 1)  # a connection whose client stopped reading
    received: list[TradeUpdate] = []
    async with trading_stream(exchange, keys, received):
        updates.listen(stuck)
        first = await submit(alice, limit(OrderSide.BUY, 1, "150.00"))
        second = await submit(alice, limit(OrderSide.BUY, 1, "151.00"))
        await eventually(
            lambda: seen(received) == [("new", str(first.id)), ("new", str(second.id))],
            message=f"saw {seen(received)}",
        )
    assert stuck.ended.is_set() and stuck.close is not None
    assert stuck.close.code == 1008 and stuck.close.reason.startswith("slow consumer")


# ---- the protocol underneath ----


def ws_url(exchange: ExchangeStack) -> str:
    return exchange.url.replace("http", "ws") + "/stream"


async def test_wrong_credentials_are_refused_and_the_connection_closed(
    exchange: ExchangeStack,
) -> None:
    keys = await exchange.trader()
    async with connect(ws_url(exchange)) as ws:
        await ws.send(msgspec.json.encode({"action": "auth", "key": keys.key_id, "secret": "no"}))
        answer = msgspec.json.decode(await ws.recv())
        assert answer == {
            "stream": "authorization",
            "data": {
                "status": "unauthorized",
                "action": "authenticate",
                "message": "unknown API key or wrong secret",
            },
        }
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_listening_needs_authentication_first(exchange: ExchangeStack) -> None:
    keys = await exchange.trader()
    listen = {"action": "listen", "data": {"streams": ["trade_updates"]}}
    async with connect(ws_url(exchange)) as ws:
        await ws.send(msgspec.json.encode(listen))
        refused = msgspec.json.decode(await ws.recv())
        assert refused["stream"] == "authorization"
        assert refused["data"]["status"] == "unauthorized"
        assert refused["data"]["action"] == "listen"
        await ws.send(msgspec.json.encode({"action": "subscribe"}))
        assert msgspec.json.decode(await ws.recv())["stream"] == "error"

        auth = {
            "action": "authenticate",
            "data": {"key_id": keys.key_id, "secret_key": keys.secret},
        }
        await ws.send(msgspec.json.encode(auth))
        assert msgspec.json.decode(await ws.recv()) == {
            "stream": "authorization",
            "data": {"status": "authorized", "action": "authenticate"},
        }
        await ws.send(msgspec.json.encode(listen))
        assert msgspec.json.decode(await ws.recv()) == {
            "stream": "listening",
            "data": {"streams": ["trade_updates"]},
        }


async def test_msgpack_clients_are_answered_in_msgpack(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")
    keys = await exchange.trader()
    headers = {"Content-Type": "application/msgpack"}
    async with connect(ws_url(exchange), additional_headers=headers) as ws:
        await ws.send(
            msgspec.msgpack.encode({"action": "auth", "key": keys.key_id, "secret": keys.secret})
        )
        answer = msgspec.msgpack.decode(await ws.recv(decode=False))
        assert answer["data"]["status"] == "authorized"
        await ws.send(
            msgspec.msgpack.encode({"action": "listen", "data": {"streams": ["trade_updates"]}})
        )
        assert msgspec.msgpack.decode(await ws.recv(decode=False))["stream"] == "listening"
        placed = await keys.http.post(
            "/v2/orders",
            json={
                "symbol": "AAPL",
                "qty": "1",
                "side": "buy",
                "type": "limit",
                "time_in_force": "gtc",
                "limit_price": "150.00",
            },
        )
        update = msgspec.msgpack.decode(await ws.recv(decode=False))
        assert update["stream"] == "trade_updates" and update["data"]["event"] == "new"
        # The order in the shape GET /v2/orders/{id} answers, as it stands (nothing moved since).
        found = await keys.http.get(f"/v2/orders/{placed.json()['id']}")
        assert update["data"]["order"] == found.json()
