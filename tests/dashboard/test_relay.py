"""The dashboard's own endpoints without a browser: the market-data relay's conflation (pure),
its WebSocket, the operations figures and the demo keys, against a real gateway."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import websockets

from bourse.engine.service import UnknownBook, decode_depth
from bourse.gateway.dashboard import Conflation, kind_of, read_demo_keys
from bourse.model import marketdata, subjects
from tests.conftest import eventually
from tests.gateway.conftest import ExchangeStack


def quote(bid: str, seq: int, venue: str = "nyse") -> marketdata.Quote:
    return marketdata.Quote(
        symbol="AAPL",
        venue=venue,
        bid=Decimal(bid),
        ask=Decimal(bid) + Decimal("0.10"),
        bid_size=Decimal(100),
        ask_size=Decimal(100),
        last=Decimal(bid),
        last_size=Decimal(1),
        volume=Decimal(10),
        ts=time.time_ns(),
        seq=seq,
    )


def trade(price: str, seq: int) -> marketdata.Trade:
    return marketdata.Trade(
        symbol="AAPL", venue="nyse", price=Decimal(price), size=Decimal(1), ts=seq, seq=seq
    )


def test_quotes_are_conflated_per_subject_and_trades_bounded() -> None:
    page = Conflation(max_events=3)
    for seq in range(1, 101):
        page.offer("md.nyse.AAPL", "quote", marketdata.encode(quote(str(100 + seq), seq)))
    page.offer("md.nasdaq.AAPL", "quote", marketdata.encode(quote("150", 1, venue="nasdaq")))
    for seq in range(1, 6):
        page.offer("md.nyse.AAPL", "trade", marketdata.encode(trade(str(200 + seq), seq)))
    assert page.pending.is_set()
    frame = json.loads(page.take() or b"")
    quotes = [item for item in frame["items"] if item["type"] == "quote"]
    trades = [item for item in frame["items"] if item["type"] == "trade"]
    assert sorted(q["bid"] for q in quotes) == ["150", "200"]  # the latest per subject
    assert [t["price"] for t in trades] == ["203", "204", "205"]  # the newest 3, in order
    assert frame["dropped"] == 2
    assert page.take() is None and not page.pending.is_set()


def test_the_kind_of_a_message_is_its_type_field() -> None:
    assert kind_of(marketdata.encode(trade("1", 1))) == "trade"
    assert kind_of(b"not json") is None
    assert kind_of(b"[1, 2]") is None


def test_demo_keys_are_read_from_the_platforms_credentials(tmp_path: Path) -> None:
    assert read_demo_keys(tmp_path) is None
    (tmp_path / "credentials.json").write_bytes(
        msgspec.json.encode(
            {
                "account_id": "a",
                "key_id": "K",
                "secret": "S",
                "admin_key_id": "AK",
                "admin_secret": "AS",
            }
        )
    )
    keys = read_demo_keys(tmp_path)
    assert keys is not None and (keys.key_id, keys.secret) == ("K", "S")


async def test_the_market_websocket_authenticates_then_relays_market_data(
    exchange: ExchangeStack,
) -> None:
    alice = await exchange.trader()
    url = exchange.url.replace("http://", "ws://") + "/dashboard/ws"
    async with websockets.connect(url) as refused:
        await refused.send(json.dumps({"action": "auth", "key": alice.key_id, "secret": "x"}))
        answer = json.loads(await refused.recv())
        assert answer == {"type": "error", "message": "unknown API key or wrong secret"}
        await refused.wait_closed()
        assert refused.close_code == 1008

    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"action": "auth", "key": alice.key_id, "secret": alice.secret}))
        assert json.loads(await ws.recv()) == {"type": "authorized"}
        seen: list[dict[str, object]] = []
        seq = 0
        # Publish until the relay (subscribed once this page joined) has passed one on.
        while not seen:
            seq += 1
            await exchange.nc.publish(
                subjects.market_data("nyse", "AAPL"), marketdata.encode(quote("190.00", seq))
            )
            await exchange.nc.flush()
            try:
                frame = json.loads(await ws_recv(ws, 0.5))
            except TimeoutError:
                continue
            assert frame["type"] == "md"
            seen.extend(item for item in frame["items"] if item["type"] == "quote")
        assert seen[0]["symbol"] == "AAPL" and seen[0]["bid"] == "190.00"


async def test_a_page_that_joins_gets_the_bourse_book_without_waiting_for_a_change(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader()
    order = {
        "symbol": "AAPL",
        "qty": "3",
        "side": "buy",
        "type": "limit",
        "limit_price": "189.50",
        "time_in_force": "gtc",
    }
    placed = await alice.http.post("/v2/orders", json=order)
    assert placed.status_code == 200 and placed.json()["status"] == "new", placed.text

    # The engine answers for its book as it is now; a symbol it has no book of is an error.
    reply = await exchange.nc.request(subjects.engine_depth("AAPL"), b"", timeout=5)
    book = decode_depth(reply.data)
    assert (book.venue, book.bids, book.asks) == ("bourse", [(Decimal("189.50"), Decimal(3))], [])
    unknown = await exchange.nc.request(subjects.engine_depth("NOPE"), b"", timeout=5)
    with pytest.raises(UnknownBook, match="NOPE"):
        decode_depth(unknown.data)

    # Nothing changes on the book from here on: a page sees it only if it is sent on joining.
    url = exchange.url.replace("http://", "ws://") + "/dashboard/ws"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"action": "auth", "key": alice.key_id, "secret": alice.secret}))
        assert json.loads(await ws.recv()) == {"type": "authorized"}
        depths: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while not depths:  # frames of other data may come first; a missing book times out
            frame = json.loads(await ws_recv(ws, deadline - time.monotonic()))
            depths = [i for i in frame["items"] if i["type"] == "depth" and i["symbol"] == "AAPL"]
        assert [(d["bids"], d["asks"], d["seq"]) for d in depths] == [
            ([["189.50", "3"]], [], book.seq)
        ]


async def ws_recv(ws: websockets.ClientConnection, timeout: float) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), timeout)


async def test_ops_streams_needs_a_key_and_reports_rates(exchange: ExchangeStack) -> None:
    anonymous = exchange.client()
    assert (await anonymous.get("/v2/ops/streams")).status_code == 401
    alice = await exchange.trader()
    first = (await alice.http.get("/v2/ops/streams")).json()
    assert first["nats_connected"] is True
    assert first["services"]["nats"] == "ok" and first["services"]["readmodel"] == "ok"
    names = {s["stream"]["name"] for s in first["streams"]}
    assert {"MARKET_DATA", "ORDERS"} <= names
    orders = next(s for s in first["streams"] if s["stream"]["name"] == "ORDERS")
    assert orders["stream"]["messages"] >= 1  # the account opening was journaled
    await exchange.js.publish(
        subjects.market_data("nyse", "AAPL"), marketdata.encode(quote("190.00", 1))
    )
    market_data: dict[str, Any] = {}

    async def measured() -> bool:
        report = (await alice.http.get("/v2/ops/streams")).json()
        market_data.update(
            next(s for s in report["streams"] if s["stream"]["name"] == "MARKET_DATA")
        )
        return market_data["messages_per_s"] is not None

    await eventually(measured, message="the second sample never came")
    assert market_data["stream"]["messages"] == 1
    assert market_data["messages_per_s"] > 0


async def test_demo_keys_are_not_offered_without_credentials(exchange: ExchangeStack) -> None:
    # The exchange fixture's home has no credentials.json: nothing is offered.
    response = await exchange.client().get("/dashboard/demo-keys")
    assert response.status_code == 204
    page = await exchange.client().get("/")
    assert page.status_code == 200 and "<title>Bourse</title>" in page.text
    script = await exchange.client().get("/dashboard/static/js/main.js")
    assert script.status_code == 200


async def test_a_page_that_joins_gets_the_bourse_quote_without_waiting_for_a_change(
    exchange: ExchangeStack,
) -> None:
    """The venues table has a row for the bourse venue at once: its top of book is asked of
    the engine on joining (the makers may not re-quote for minutes)."""
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader(shorting=True)
    for side, price in (("buy", "189.50"), ("sell", "190.50")):
        order = {"symbol": "AAPL", "qty": "3", "side": side, "type": "limit"}
        order |= {"limit_price": price, "time_in_force": "gtc"}
        placed = await alice.http.post("/v2/orders", json=order)
        assert placed.status_code == 200 and placed.json()["status"] == "new", placed.text
    reply = await exchange.nc.request(subjects.engine_quote("AAPL"), b"", timeout=5)
    top = marketdata.decode(reply.data)
    assert isinstance(top, marketdata.Quote)
    assert (top.venue, top.bid, top.ask) == ("bourse", Decimal("189.50"), Decimal("190.50"))
    one_sided = await exchange.nc.request(subjects.engine_quote("MSFT"), b"", timeout=5)
    assert b"no two-sided book for 'MSFT'" in one_sided.data

    url = exchange.url.replace("http://", "ws://") + "/dashboard/ws"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"action": "auth", "key": alice.key_id, "secret": alice.secret}))
        assert json.loads(await ws.recv()) == {"type": "authorized"}
        quotes: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while not quotes:  # other data may come first; a missing quote times out
            frame = json.loads(await ws_recv(ws, deadline - time.monotonic()))
            quotes = [
                i
                for i in frame["items"]
                if i["type"] == "quote" and i["venue"] == "bourse" and i["symbol"] == "AAPL"
            ]
        assert [(q["bid"], q["ask"], q["seq"]) for q in quotes] == [("189.50", "190.50", top.seq)]
