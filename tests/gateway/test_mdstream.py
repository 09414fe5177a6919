"""Alpaca's market-data stream protocol over the real gateway and a real nats-server.

Every test drives a WebSocket client against `/v2/iex`, `/v2/sip` or `/v1beta3/crypto/us`
and publishes what the feeds and the analytics service publish. Nothing is slept: a message
that must *not* arrive is shown absent by one that must, sent after it on the same path
(NATS keeps one publisher's order, the gateway keeps NATS's).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bourse.analytics.bars import Bar
from bourse.analytics.nbbo import Nbbo
from bourse.model.marketdata import Quote, Trade
from tests.conftest import eventually
from tests.gateway.conftest import MarketDataFactory, MarketDataGateway

T0 = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
MSGPACK = {"Content-Type": "application/msgpack"}


def trade(symbol: str = "AAPL", venue: str = "nyse", seq: int = 1, **fields: Any) -> Trade:
    values: dict[str, Any] = {"price": Decimal("190.05"), "size": Decimal(100), "ts": T0}
    values.update(fields)
    return Trade(symbol=symbol, venue=venue, seq=seq, **values)


def quote(symbol: str = "AAPL", venue: str = "bourse", seq: int = 1, **fields: Any) -> Quote:
    values: dict[str, Any] = {
        "bid": Decimal("190.00"),
        "ask": Decimal("190.10"),
        "bid_size": Decimal(300),
        "ask_size": Decimal(200),
        "last": Decimal("190.05"),
        "last_size": Decimal(10),
        "volume": Decimal(5000),
        "ts": T0,
    }
    values.update(fields)
    return Quote(symbol=symbol, venue=venue, seq=seq, **values)


def nbbo(symbol: str = "AAPL", **fields: Any) -> Nbbo:
    values: dict[str, Any] = {
        "ts": T0,
        "status": "normal",
        "bid": Decimal("190.01"),
        "bid_size": Decimal(500),
        "bid_venues": ["nyse"],
        "ask": Decimal("190.03"),
        "ask_size": Decimal(100),
        "ask_venues": ["nasdaq", "bourse"],
        "mid": Decimal("190.02"),
        "spread": Decimal("0.02"),
        "fresh_venues": ["bourse", "nasdaq", "nyse"],
        "stale_venues": [],
    }
    values.update(fields)
    return Nbbo(symbol=symbol, **values)


def bar(symbol: str = "AAPL", venue: str = "consolidated", **fields: Any) -> Bar:
    values: dict[str, Any] = {
        "timeframe": "1Min",
        "start_ts": 1_767_225_600_000_000_000,
        "end_ts": 1_767_225_660_000_000_000,
        "open": Decimal("190.00"),
        "high": Decimal("190.50"),
        "low": Decimal("189.75"),
        "close": Decimal("190.25"),
        "volume": Decimal(1200),
        "trade_count": 12,
        "vwap": Decimal("190.1234"),
        "source": "trades",
    }
    values.update(fields)
    return Bar(symbol=symbol, venue=venue, **values)


async def receive(ws: ClientConnection) -> dict[str, Any]:
    """One frame: a JSON (text) or MessagePack (binary) array of one message."""
    frame = await ws.recv()
    decoded = json.loads(frame) if isinstance(frame, str) else msgpack.unpackb(frame)
    assert isinstance(decoded, list) and len(decoded) == 1, decoded
    message: dict[str, Any] = decoded[0]
    return message


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def opened(md: MarketDataGateway, path: str, **headers: str) -> ClientConnection:
    ws = await connect(md.url(path), additional_headers=headers or None)
    assert await receive(ws) == {"T": "success", "msg": "connected"}
    return ws


async def authenticated(md: MarketDataGateway, path: str) -> ClientConnection:
    ws = await opened(md, path)
    await send(ws, md.auth)
    assert await receive(ws) == {"T": "success", "msg": "authenticated"}
    return ws


async def subscribed(ws: ClientConnection, **channels: list[str]) -> dict[str, Any]:
    await send(ws, {"action": "subscribe", **channels})
    reply = await receive(ws)
    assert reply["T"] == "subscription", reply
    return reply


async def refused(ws: ClientConnection, code: int) -> dict[str, Any]:
    reply = await receive(ws)
    assert reply["T"] == "error" and reply["code"] == code, reply
    assert reply["detail"]
    return reply


async def closed(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        await ws.recv()
    return ws.close_code


# ---- connecting and authenticating ----


async def test_sip_session_json(market_data: MarketDataFactory) -> None:
    md = await market_data()
    ws = await authenticated(md, "/v2/sip")
    reply = await subscribed(ws, trades=["AAPL"], quotes=["aapl"], bars=["AAPL"])
    assert reply == {
        "T": "subscription",
        "trades": ["AAPL"],
        "quotes": ["AAPL"],
        "bars": ["AAPL"],
        "updatedBars": [],
        "dailyBars": [],
        "statuses": [],
        "lulds": [],
        "corrections": ["AAPL"],
        "cancelErrors": ["AAPL"],
    }
    await md.publish(trade(seq=7))
    assert await receive(ws) == {
        "T": "t",
        "S": "AAPL",
        "i": 7,
        "x": "N",
        "p": 190.05,
        "s": 100,
        "c": ["@"],
        "t": "2026-01-01T00:00:00.123456789Z",
        "z": "C",
    }
    await md.publish_nbbo(nbbo())
    assert await receive(ws) == {
        "T": "q",
        "S": "AAPL",
        "bx": "N",
        "bp": 190.01,
        "bs": 500,
        "ax": "Q",
        "ap": 190.03,
        "as": 100,
        "c": ["R"],
        "t": "2026-01-01T00:00:00.123456789Z",
        "z": "C",
    }
    await md.publish_bar(bar())
    assert await receive(ws) == {
        "T": "b",
        "S": "AAPL",
        "o": 190.00,
        "h": 190.50,
        "l": 189.75,
        "c": 190.25,
        "v": 1200,
        "t": "2026-01-01T00:00:00.000000000Z",
        "n": 12,
        "vw": 190.1234,
    }
    await ws.close()


async def test_prices_are_written_exactly(market_data: MarketDataFactory) -> None:
    md = await market_data()
    ws = await authenticated(md, "/v2/sip")
    await subscribed(ws, trades=["AAPL"])
    await md.publish(trade(price=Decimal("0.10"), size=Decimal(3)))
    raw = await ws.recv()
    assert isinstance(raw, str) and '"p":0.10,' in raw and '"s":3,' in raw


async def test_feeds_carry_their_venues(market_data: MarketDataFactory) -> None:
    md = await market_data()
    iex = await authenticated(md, "/v2/iex")
    sip = await authenticated(md, "/v2/sip")
    await subscribed(iex, trades=["*"], quotes=["*"], bars=["*"])
    await subscribed(sip, trades=["*"], quotes=["*"], bars=["*"])
    await md.publish(trade(venue="nyse", seq=1))  # a venue of the consolidated tape only
    await md.publish(quote(venue="nyse"))  # not Bourse's book: on no feed
    await md.publish_bar(bar(venue="nyse"))  # a venue's bars: on no feed
    await md.publish(trade(venue="bourse", seq=2, symbol="MSFT"))  # Bourse's own: on both
    await md.publish(quote(venue="bourse", symbol="MSFT"))
    await md.publish_bar(bar(venue="bourse"))
    await md.publish_bar(bar(venue="consolidated", symbol="TSLA"))
    await md.publish(trade(symbol="BTC-USD", venue="coinbase"))  # crypto: on neither

    # Trades and quotes (one NATS subscription) keep their order; bars come on another
    # subscription, whose callback nats-py runs in a task of its own: anywhere among them.
    on_iex = [await receive(iex) for _ in range(3)]
    trade_and_quote = [m for m in on_iex if m["T"] != "b"]
    assert [(m["T"], m["S"]) for m in trade_and_quote] == [("t", "MSFT"), ("q", "MSFT")]
    assert trade_and_quote[0]["x"] == "bourse"
    assert (trade_and_quote[1]["bx"], trade_and_quote[1]["ax"]) == ("bourse", "bourse")
    assert [(m["T"], m["S"]) for m in on_iex if m["T"] == "b"] == [("b", "AAPL")]

    on_sip = [await receive(sip) for _ in range(3)]
    trades = [m for m in on_sip if m["T"] == "t"]
    assert [(m["S"], m["x"]) for m in trades] == [("AAPL", "N"), ("MSFT", "bourse")]
    assert [(m["T"], m["S"]) for m in on_sip if m["T"] != "t"] == [("b", "TSLA")]


async def test_auth_by_headers(market_data: MarketDataFactory) -> None:
    md = await market_data()
    ws = await opened(
        md, "/v2/sip", **{"APCA-API-KEY-ID": md.key_id, "APCA-API-SECRET-KEY": md.secret}
    )
    assert await receive(ws) == {"T": "success", "msg": "authenticated"}
    await subscribed(ws, trades=["AAPL"])


async def test_wrong_secret_is_402_and_the_connection_closes(
    market_data: MarketDataFactory,
) -> None:
    md = await market_data()
    ws = await opened(md, "/v2/sip")
    await send(ws, {"action": "auth", "key": md.key_id, "secret": "wrong"})
    reply = await refused(ws, 402)
    assert reply["msg"] == "auth failed"
    assert await closed(ws) == 1008


async def test_no_auth_in_time_is_404(market_data: MarketDataFactory) -> None:
    md = await market_data(auth_timeout=0.2)
    ws = await opened(md, "/v2/iex")
    reply = await refused(ws, 404)
    assert reply["msg"] == "auth timeout"
    assert await closed(ws) == 1008


async def test_subscribing_before_auth_is_401_and_the_connection_stays(
    market_data: MarketDataFactory,
) -> None:
    md = await market_data()
    ws = await opened(md, "/v2/sip")
    await send(ws, {"action": "subscribe", "trades": ["AAPL"]})
    assert (await refused(ws, 401))["msg"] == "not authenticated"
    await send(ws, md.auth)
    assert await receive(ws) == {"T": "success", "msg": "authenticated"}
    assert (await subscribed(ws, trades=["AAPL"]))["trades"] == ["AAPL"]


async def test_auth_twice_is_403(market_data: MarketDataFactory) -> None:
    md = await market_data()
    ws = await authenticated(md, "/v2/sip")
    await send(ws, md.auth)
    assert (await refused(ws, 403))["msg"] == "already authenticated"
    await subscribed(ws, quotes=["AAPL"])


async def test_messages_sent_with_the_auth_wait_for_it(market_data: MarketDataFactory) -> None:
    md = await market_data()
    ws = await opened(md, "/v2/sip")
    await send(ws, md.auth)
    await send(ws, {"action": "subscribe", "trades": ["AAPL"]})
    assert await receive(ws) == {"T": "success", "msg": "authenticated"}
    assert (await receive(ws))["trades"] == ["AAPL"]


async def test_connection_limit_is_406(market_data: MarketDataFactory) -> None:
    md = await market_data(max_connections_per_key=1)
    first = await authenticated(md, "/v2/sip")
    other_feed = await authenticated(md, "/v2/iex")  # the limit is per path
    second = await opened(md, "/v2/sip")
    await send(second, md.auth)
    assert (await refused(second, 406))["msg"] == "connection limit exceeded"
    assert await closed(second) == 1008
    await subscribed(first, trades=["AAPL"])
    await subscribed(other_feed, trades=["AAPL"])
    await first.close()
    await eventually(lambda: md.stream.metrics()["connections"].get("sip", 0) == 0)
    third = await authenticated(md, "/v2/sip")  # a closed connection frees its place
    await subscribed(third, trades=["AAPL"])


async def test_a_feed_bourse_does_not_serve_is_409(market_data: MarketDataFactory) -> None:
    md = await market_data()
    ws = await opened(md, "/v2/delayed_sip")
    await send(ws, md.auth)
    assert (await refused(ws, 409))["msg"] == "insufficient subscription"
    assert await closed(ws) == 1008


# ---- what a client may send ----


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", 400),
        ("[1, 2]", 400),
        ('{"action": "listen"}', 400),
        ('{"trades": ["AAPL"]}', 400),
        ('{"action": "subscribe", "trade": ["AAPL"]}', 400),
        ('{"action": "subscribe", "trades": "AAPL"}', 400),
        ('{"action": "subscribe", "trades": ["AAPL", 7]}', 400),
        ('{"action": "subscribe", "trades": ["BTC/USD"]}', 400),
        ('{"action": "subscribe", "trades": ["not a symbol"]}', 400),
        ('{"action": "subscribe", "dailyBars": ["AAPL"]}', 410),
        ('{"action": "subscribe", "trades": ["AAPL"], "orderbooks": ["AAPL"]}', 410),
    ],
)
async def test_bad_requests_are_answered_and_change_nothing(
    market_data: MarketDataFactory, message: str, code: int
) -> None:
    md = await market_data()
    ws = await authenticated(md, "/v2/sip")
    await subscribed(ws, quotes=["MSFT"])
    await ws.send(message)
    await refused(ws, code)
    reply = await subscribed(ws)  # an empty subscribe answers the current subscriptions
    assert (reply["trades"], reply["quotes"]) == ([], ["MSFT"])


async def test_symbol_limit_is_405_and_changes_nothing(market_data: MarketDataFactory) -> None:
    md = await market_data(max_symbols=3)
    ws = await authenticated(md, "/v2/sip")
    await subscribed(ws, trades=["AAPL", "MSFT"], quotes=["*"])  # `*` counts no symbol
    await send(ws, {"action": "subscribe", "quotes": ["TSLA", "AMZN"]})
    assert (await refused(ws, 405))["msg"] == "symbol limit exceeded"
    reply = await subscribed(ws, bars=["TSLA"])
    assert (reply["trades"], reply["quotes"], reply["bars"]) == (["AAPL", "MSFT"], ["*"], ["TSLA"])


async def test_subscribe_unsubscribe_and_star(market_data: MarketDataFactory) -> None:
    md = await market_data()
    ws = await authenticated(md, "/v2/sip")
    await subscribed(ws, trades=["*", "AAPL"])
    await md.publish(trade(symbol="AAPL", seq=1))
    await md.publish(trade(symbol="MSFT", seq=2))
    assert [(await receive(ws))["S"] for _ in range(2)] == ["AAPL", "MSFT"]  # AAPL once

    await send(ws, {"action": "unsubscribe", "trades": ["*"]})
    reply = await receive(ws)
    assert reply["T"] == "subscription" and reply["trades"] == ["AAPL"]
    await md.publish(trade(symbol="MSFT", seq=3))  # not subscribed any more
    await md.publish(trade(symbol="AAPL", seq=4))
    assert (await receive(ws))["i"] == 4

    await send(ws, {"action": "unsubscribe", "trades": ["AAPL"], "quotes": ["TSLA"]})
    assert (await receive(ws))["trades"] == []
    await md.publish(trade(symbol="AAPL", seq=5))  # nothing subscribed: not sent
    await subscribed(ws, trades=["GOOGL"])  # proves it: this reply comes first...
    await md.publish(trade(symbol="GOOGL", seq=6))
    assert (await receive(ws))["i"] == 6  # ...and then GOOGL's trade, not AAPL's


async def test_msgpack_is_negotiated_by_content_type(market_data: MarketDataFactory) -> None:
    md = await market_data()
    ws = await opened(md, "/v2/sip", **MSGPACK)
    await ws.send(msgpack.packb(md.auth))
    authenticated_frame = await ws.recv()
    assert isinstance(authenticated_frame, bytes)
    assert msgpack.unpackb(authenticated_frame) == [{"T": "success", "msg": "authenticated"}]
    await ws.send(msgpack.packb({"action": "subscribe", "trades": ["AAPL"]}))
    assert (await receive(ws))["trades"] == ["AAPL"]
    await md.publish(trade(seq=9, price=Decimal("190.07")))
    message = await receive(ws)
    stamp = message.pop("t")
    assert isinstance(stamp, msgpack.Timestamp)
    assert stamp.to_unix_nano() == T0
    assert stamp.to_datetime() == datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert message == {
        "T": "t",
        "S": "AAPL",
        "i": 9,
        "x": "N",
        "p": 190.07,
        "s": 100.0,
        "c": ["@"],
        "z": "C",
    }
    await ws.send('{"action": "subscribe", "quotes": ["MSFT"]}')  # JSON is read too
    assert (await receive(ws))["quotes"] == ["MSFT"]
    await ws.send(b"\xc1")  # never valid MessagePack
    assert (await refused(ws, 400))["msg"] == "invalid syntax"


# ---- crypto ----


async def test_crypto_symbols_in_either_form(market_data: MarketDataFactory) -> None:
    md = await market_data()
    ws = await authenticated(md, "/v1beta3/crypto/us")
    reply = await subscribed(ws, trades=["BTC/USD", "eth-usd"], quotes=["BTC/USD"], bars=["*"])
    assert reply == {
        "T": "subscription",
        "trades": ["BTC/USD", "ETH-USD"],
        "quotes": ["BTC/USD"],
        "orderbooks": [],
        "bars": ["*"],
        "updatedBars": [],
        "dailyBars": [],
    }
    await md.publish(
        trade(
            symbol="BTC-USD",
            venue="coinbase",
            price=Decimal("64000.5"),
            size=Decimal("0.25"),
            side="buy",
        )
    )
    await md.publish(trade(symbol="ETH-USD", venue="kraken", seq=3, side="sell"))
    await md.publish(trade(symbol="AAPL", venue="nyse"))  # a stock: not on the crypto feed
    await md.publish_nbbo(nbbo("BTC-USD", bid_venues=["kraken"], ask_venues=["coinbase"]))
    await md.publish_bar(bar("ETH-USD"))
    assert await receive(ws) == {
        "T": "t",
        "S": "BTC/USD",
        "p": 64000.5,
        "s": 0.25,
        "t": "2026-01-01T00:00:00.123456789Z",
        "i": 1,
        "x": "coinbase",
        "tks": "B",
    }
    eth = await receive(ws)
    assert (eth["S"], eth["tks"], eth["x"]) == ("ETH-USD", "S", "kraken")  # as it was written
    assert await receive(ws) == {
        "T": "q",
        "S": "BTC/USD",
        "bx": "kraken",
        "bp": 190.01,
        "bs": 500,
        "ax": "coinbase",
        "ap": 190.03,
        "as": 100,
        "t": "2026-01-01T00:00:00.123456789Z",
    }
    assert (await receive(ws))["S"] == "ETH/USD"  # `*` is answered in Alpaca's form

    await send(ws, {"action": "unsubscribe", "trades": ["BTC-USD"]})  # either form removes it
    assert (await receive(ws))["trades"] == ["ETH-USD"]
    await send(ws, {"action": "subscribe", "trades": ["AAPL"]})
    await refused(ws, 400)


async def test_a_one_sided_nbbo_is_a_zero_side(market_data: MarketDataFactory) -> None:
    md = await market_data()
    ws = await authenticated(md, "/v2/sip")
    await subscribed(ws, quotes=["AAPL"])
    await md.publish_nbbo(
        nbbo(
            status="one_sided", ask=None, ask_size=Decimal(0), ask_venues=[], mid=None, spread=None
        )
    )
    message = await receive(ws)
    assert (message["bp"], message["ax"], message["ap"], message["as"]) == (190.01, "", 0, 0)


# ---- the gateway around it ----


async def test_the_trading_stream_and_the_api_still_answer(market_data: MarketDataFactory) -> None:
    md = await market_data()
    async with connect(md.url("/stream")) as ws:
        await send(ws, {"action": "auth", "key": md.key_id, "secret": md.secret})
        reply = json.loads(await ws.recv())
        assert reply["data"]["status"] == "authorized"
    with pytest.raises(InvalidStatus):
        await connect(md.url("/v2/elsewhere"))


async def test_metrics_count_frames(market_data: MarketDataFactory) -> None:
    md = await market_data()
    ws = await authenticated(md, "/v2/sip")
    await subscribed(ws, trades=["AAPL"])
    for seq in range(1, 6):
        await md.publish(trade(seq=seq))
    for _ in range(5):
        await receive(ws)
    (client,) = md.stream.clients()
    assert client["sent"] == 8  # connected, authenticated, subscription, five trades
    assert (client["feed"], client["key_id"], client["codec"]) == ("sip", md.key_id, "json")
    metrics = md.stream.metrics()
    assert metrics["connections"] == {"sip": 1}
    assert metrics["frames_sent"] == 8 and metrics["frames_dropped"] == 0
    assert metrics["received"]["md"] >= 5
    async with httpx.AsyncClient(base_url=md.gateway.url) as http:
        scraped = (await http.get("/metrics")).text
    assert 'bourse_md_stream_frames_total{feed="sip",outcome="sent"} 8.0' in scraped
    assert 'bourse_md_stream_connections{feed="sip"} 1.0' in scraped
    await ws.close()
    await eventually(lambda: md.stream.metrics()["connections"] == {})
    assert md.stream.metrics()["frames_sent"] == 8  # closed connections still count


async def test_stopping_the_gateway_closes_the_streams(market_data: MarketDataFactory) -> None:
    md = await market_data()
    ws = await authenticated(md, "/v2/sip")
    async with asyncio.timeout(30):  # a hang guard: stop() must not wait for the client
        await md.gateway.stop()
    assert await closed(ws) == 1001
