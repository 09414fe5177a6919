"""The market-data API in Alpaca's dialect, over HTTP: shapes, pagination, parameters,
errors. (alpaca-py's own clients against it: test_alpaca_data_sdk.py.)"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.analytics.factories import S, trade
from tests.gateway.conftest import ExchangeStack, Trader, exchange  # noqa: F401
from tests.history.marketdata import MARKET, START, T0, record


@pytest.fixture
async def trader(exchange: ExchangeStack) -> Trader:  # noqa: F811
    await record(exchange.js, exchange.history, MARKET)
    return await exchange.trader()


async def get(trader: Trader, path: str, **params: str) -> httpx.Response:
    return await trader.http.get(path, params=params)


async def test_bars_of_one_stock(trader: Trader) -> None:
    found = await get(trader, "/v2/stocks/AAPL/bars", timeframe="1Min", start=START)
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["symbol"] == "AAPL" and body["next_page_token"] is None
    day_before, first, second = body["bars"]
    assert day_before["t"] == "2023-11-13T22:14:00Z"
    assert first == {
        "t": "2023-11-14T22:14:00Z",
        "o": 180.0,
        "h": 180.2,
        "l": 180.0,
        "c": 180.2,
        "v": 15,
        "n": 2,
        "vw": 180.066667,
    }
    assert second["c"] == 180.5 and second["n"] == 1
    # exact decimals, written as JSON numbers
    assert '"o":180.00' in found.text and '"vw":180.066667' in found.text


async def test_bars_of_several_stocks_and_per_venue(trader: Trader) -> None:
    found = await get(trader, "/v2/stocks/bars", symbols="AAPL,MSFT", timeframe="1Min", start=START)
    body = found.json()
    assert set(body["bars"]) == {"AAPL", "MSFT"}
    assert body["bars"]["MSFT"][0]["n"] == 0  # no trade: quote mids
    assert body["bars"]["MSFT"][0]["o"] == 300.0 and body["bars"]["MSFT"][0]["vw"] is None
    nyse = await get(trader, "/v2/stocks/AAPL/bars", timeframe="1Min", start=START, venue="nyse")
    assert [b["c"] for b in nyse.json()["bars"]] == [179.0, 180.0]


async def test_feed_iex_is_the_bourse_venue_as_on_the_live_stream(
    exchange: ExchangeStack,  # noqa: F811
    trader: Trader,
) -> None:
    await record(exchange.js, exchange.history, [trade("181.00", 7, T0 + 3 * S, venue="bourse")])
    iex = (await get(trader, "/v2/stocks/AAPL/trades", start=START, feed="iex")).json()
    assert [(t["p"], t["s"]) for t in iex["trades"]] == [(181.0, 7)]
    sip = (await get(trader, "/v2/stocks/AAPL/trades", start=START, feed="sip")).json()
    assert len(sip["trades"]) == 5  # every venue's, the bourse's among them
    bars = await get(trader, "/v2/stocks/AAPL/bars", timeframe="1Min", start=START, feed="iex")
    assert [(b["c"], b["v"]) for b in bars.json()["bars"]] == [(181.0, 7)]
    clash = await get(trader, "/v2/stocks/AAPL/trades", start=START, feed="iex", venue="nyse")
    assert clash.status_code == 400 and "contradicts" in clash.json()["message"]


async def test_trades_and_quotes(trader: Trader) -> None:
    trades = (await get(trader, "/v2/stocks/AAPL/trades", start=START)).json()["trades"]
    assert trades[1] == {
        "t": "2023-11-14T22:14:02Z",
        "x": "N",
        "p": 180.0,
        "s": 10,
        "c": [],
        "i": trades[1]["i"],
    }
    assert trades[2]["t"] == "2023-11-14T22:14:02.123456789Z" and trades[2]["x"] == "Q"
    assert len({t["i"] for t in trades}) == len(trades)
    quotes = (await get(trader, "/v2/stocks/quotes", symbols="AAPL", start=START)).json()
    assert quotes["quotes"]["AAPL"][0] == {
        "t": "2023-11-13T22:14:00Z",
        "bp": 179.9,
        "bs": 100,
        "ap": 180.1,
        "as": 100,
        "bx": "N",
        "ax": "N",
        "c": [],
    }


async def test_pages_follow_the_token(trader: Trader) -> None:
    seen, token, pages = [], None, 0
    while True:
        params = {"symbols": "AAPL,MSFT", "start": START, "limit": "2"}
        if token:
            params["page_token"] = token
        body = (await get(trader, "/v2/stocks/quotes", **params)).json()
        pages += 1
        page = [(s, q["t"]) for s, quotes in body["quotes"].items() for q in quotes]
        assert len(page) <= 2
        seen += page
        token = body["next_page_token"]
        if token is None:
            break
    assert pages == 2  # four quotes: the second page knows it is the last
    assert seen == [
        ("AAPL", "2023-11-13T22:14:00Z"),
        ("AAPL", "2023-11-14T22:14:01Z"),
        ("AAPL", "2023-11-14T22:15:01Z"),
        ("MSFT", "2023-11-14T22:14:03Z"),
    ]
    newest = await get(trader, "/v2/stocks/AAPL/trades", start=START, sort="desc", limit="1")
    assert newest.json()["trades"][0]["p"] == 180.5


async def test_latest_and_snapshots(trader: Trader) -> None:
    one = (await get(trader, "/v2/stocks/AAPL/trades/latest")).json()
    assert one["symbol"] == "AAPL" and one["trade"]["p"] == 180.5
    many = (await get(trader, "/v2/stocks/quotes/latest", symbols="AAPL,MSFT,TSLA")).json()
    assert set(many["quotes"]) == {"AAPL", "MSFT"}
    bar = (await get(trader, "/v2/stocks/bars/latest", symbols="AAPL")).json()
    assert bar["bars"]["AAPL"]["t"] == "2023-11-14T22:15:00Z"
    missing = await get(trader, "/v2/stocks/TSLA/trades/latest")
    assert missing.status_code == 404 and "no trade found for TSLA" in missing.json()["message"]
    snapshot = (await get(trader, "/v2/stocks/AAPL/snapshot")).json()
    assert snapshot["symbol"] == "AAPL"
    assert snapshot["latestTrade"]["p"] == 180.5 and snapshot["latestQuote"]["bp"] == 180.0
    assert snapshot["minuteBar"]["t"] == "2023-11-14T22:15:00Z"
    assert snapshot["dailyBar"]["t"] == "2023-11-14T00:00:00Z" and snapshot["dailyBar"]["n"] == 3
    assert snapshot["prevDailyBar"]["t"] == "2023-11-13T00:00:00Z"
    several = (await get(trader, "/v2/stocks/snapshots", symbols="AAPL,TSLA")).json()
    assert several["TSLA"] == {
        "latestTrade": None,
        "latestQuote": None,
        "minuteBar": None,
        "dailyBar": None,
        "prevDailyBar": None,
    }


async def test_crypto_in_alpacas_spelling_and_ours(trader: Trader) -> None:
    bars = (
        await get(
            trader, "/v1beta3/crypto/us/bars", symbols="BTC/USD", timeframe="1Min", start=START
        )
    ).json()
    assert list(bars["bars"]) == ["BTC/USD"] and bars["bars"]["BTC/USD"][0]["v"] == 0.0123
    ours = (await get(trader, "/v1beta3/crypto/us/trades", symbols="BTC-USD", start=START)).json()
    (only,) = ours["trades"]["BTC-USD"]
    assert set(only) == {"t", "p", "s", "i", "tks"} and only["tks"] == "B"
    quotes = (await get(trader, "/v1beta3/crypto/us/latest/quotes", symbols="BTC/USD")).json()
    assert set(quotes["quotes"]["BTC/USD"]) == {"t", "bp", "bs", "ap", "as"}
    snapshots = (await get(trader, "/v1beta3/crypto/us/snapshots", symbols="BTC/USD")).json()
    assert snapshots["snapshots"]["BTC/USD"]["latestTrade"]["p"] == 60000.0


async def test_the_default_start_is_the_beginning_of_today(trader: Trader) -> None:
    body = (await get(trader, "/v2/stocks/AAPL/trades")).json()  # the data is from 2023
    assert body == {"trades": [], "symbol": "AAPL", "next_page_token": None}


@pytest.mark.parametrize(
    ("path", "params", "status", "says"),
    [
        ("/v2/stocks/AAPL/bars", {}, 400, "timeframe is required"),
        ("/v2/stocks/AAPL/bars", {"timeframe": "1Week"}, 400, "weeks and months"),
        ("/v2/stocks/AAPL/bars", {"timeframe": "1Min", "start": "soon"}, 400, "RFC 3339"),
        (
            "/v2/stocks/AAPL/trades",
            {"start": "2024-01-02", "end": "2024-01-01"},
            422,
            "end must not be before start",
        ),
        ("/v2/stocks/AAPL/trades", {"limit": "0"}, 422, "limit"),
        ("/v2/stocks/AAPL/trades", {"limit": "10001"}, 422, "limit"),
        ("/v2/stocks/AAPL/trades", {"limit": "many"}, 422, "limit"),
        ("/v2/stocks/AAPL/trades", {"sort": "up"}, 422, "sort"),
        ("/v2/stocks/AAPL/trades", {"page_token": "nonsense"}, 400, "page_token"),
        ("/v2/stocks/AAPL/trades", {"feed": "nasdaq"}, 400, "invalid feed"),
        ("/v2/stocks/AAPL/trades", {"currency": "EUR"}, 400, "invalid currency"),
        ("/v2/stocks/AAPL/trades", {"venue": "NYSE!"}, 400, "invalid venue"),
        ("/v2/stocks/trades", {}, 400, "symbols is required"),
        ("/v2/stocks/trades", {"symbols": " , "}, 400, "at least one symbol"),
        ("/v2/stocks/trades", {"symbols": "AAPL,NO WAY"}, 400, "invalid symbol"),
        ("/v2/stocks/AAPL,MSFT/trades", {}, 400, "one symbol in the path"),
        ("/v2/stocks/news/latest", {"symbols": "AAPL"}, 422, "kind"),
        ("/v1beta3/crypto/eu/trades", {"symbols": "BTC/USD"}, 404, "unknown crypto location"),
    ],
)
async def test_bad_parameters_say_what_is_wrong(
    trader: Trader, path: str, params: dict[str, str], status: int, says: str
) -> None:
    found = await trader.http.get(path, params=params)
    assert found.status_code == status, found.text
    body = found.json()
    assert set(body) >= {"code", "message"} and body["code"] == status * 100_000 + 10_000
    assert says in body["message"]


async def test_keys_are_required(exchange: ExchangeStack) -> None:  # noqa: F811
    found = await exchange.client().get("/v2/stocks/AAPL/trades")
    assert found.status_code == 401
    crypto = await exchange.client().get("/v1beta3/crypto/us/bars?symbols=BTC/USD&timeframe=1Min")
    assert crypto.status_code == 401


async def test_without_the_history_service_it_is_unavailable(
    exchange: ExchangeStack,  # noqa: F811
) -> None:
    trader = await exchange.trader()
    await exchange.history.stop()
    found = await trader.http.get("/v2/stocks/AAPL/trades")
    assert found.status_code == 503 and found.headers["retry-after"] == "1"
    assert "no history service" in json.loads(found.text)["message"]
