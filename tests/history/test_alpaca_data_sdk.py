"""alpaca-py's historical data clients, unchanged, against the gateway (`url_override`).

`StockHistoricalDataClient` and `CryptoHistoricalDataClient` are synchronous (requests), so
each call runs in a thread while the in-process gateway and history service keep serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from alpaca.common.exceptions import APIError
from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
from alpaca.data.models import Bar, BarSet, Quote, QuoteSet, Snapshot, Trade, TradeSet
from alpaca.data.requests import (
    CryptoBarsRequest,
    CryptoLatestQuoteRequest,
    CryptoLatestTradeRequest,
    CryptoSnapshotRequest,
    StockBarsRequest,
    StockLatestBarRequest,
    StockLatestQuoteRequest,
    StockLatestTradeRequest,
    StockQuotesRequest,
    StockSnapshotRequest,
    StockTradesRequest,
)
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from tests.analytics.factories import S, quote
from tests.gateway.conftest import ExchangeStack, Trader, exchange  # noqa: F401
from tests.history.marketdata import MARKET, T0, record

_T = TypeVar("_T")
START = datetime(2023, 11, 13, tzinfo=UTC)


async def call(function: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.to_thread(function, *args)


@pytest.fixture
async def trader(exchange: ExchangeStack) -> Trader:  # noqa: F811
    await record(exchange.js, exchange.history, MARKET)
    return await exchange.trader()


def stocks(exchange: ExchangeStack, trader: Trader) -> StockHistoricalDataClient:  # noqa: F811
    return StockHistoricalDataClient(trader.key_id, trader.secret, url_override=exchange.url)


def crypto(exchange: ExchangeStack, trader: Trader) -> CryptoHistoricalDataClient:  # noqa: F811
    return CryptoHistoricalDataClient(trader.key_id, trader.secret, url_override=exchange.url)


async def test_stock_bars(exchange: ExchangeStack, trader: Trader) -> None:  # noqa: F811
    client = stocks(exchange, trader)
    request = StockBarsRequest(
        symbol_or_symbols=["AAPL", "MSFT"], timeframe=TimeFrame.Minute, start=START
    )
    bars = await call(client.get_stock_bars, request)
    assert isinstance(bars, BarSet)
    aapl = bars["AAPL"]
    assert [b.timestamp for b in aapl] == [
        datetime(2023, 11, 13, 22, 14, tzinfo=UTC),
        datetime(2023, 11, 14, 22, 14, tzinfo=UTC),
        datetime(2023, 11, 14, 22, 15, tzinfo=UTC),
    ]
    assert (aapl[1].open, aapl[1].high, aapl[1].close, aapl[1].volume) == (180.0, 180.2, 180.2, 15)
    assert aapl[1].trade_count == 2 and aapl[1].vwap == pytest.approx(180.066667)
    assert bars["MSFT"][0].trade_count == 0 and bars["MSFT"][0].vwap is None
    five = StockBarsRequest(
        symbol_or_symbols="AAPL", timeframe=TimeFrame(5, TimeFrameUnit.Minute), start=START
    )
    assert [b.timestamp.minute for b in (await call(client.get_stock_bars, five))["AAPL"]] == [
        10,
        10,
        15,
    ]
    daily = StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Day, start=START)
    assert [b.close for b in (await call(client.get_stock_bars, daily))["AAPL"]] == [179.0, 180.5]


async def test_stock_quotes_and_trades_follow_pages(
    exchange: ExchangeStack,  # noqa: F811
    trader: Trader,
) -> None:
    # More quotes than one of alpaca-py's pages (10,000): it follows next_page_token.
    many = [quote("100.00", "100.02", T0 + 10 * S + i, symbol="TSLA") for i in range(10_050)]
    await record(exchange.js, exchange.history, many)
    client = stocks(exchange, trader)
    quotes = await call(
        client.get_stock_quotes, StockQuotesRequest(symbol_or_symbols="TSLA", start=START)
    )
    assert isinstance(quotes, QuoteSet)
    assert len(quotes["TSLA"]) == 10_050
    assert quotes["TSLA"][0].bid_price == 100.0 and quotes["TSLA"][0].bid_exchange == "N"
    limited = await call(
        client.get_stock_quotes,
        StockQuotesRequest(symbol_or_symbols=["AAPL", "TSLA"], start=START, limit=5),
    )
    assert sum(len(q) for q in limited.data.values()) == 5
    trades = await call(
        client.get_stock_trades, StockTradesRequest(symbol_or_symbols="AAPL", start=START)
    )
    assert isinstance(trades, TradeSet)
    assert [t.price for t in trades["AAPL"]] == [179.0, 180.0, 180.2, 180.5]
    assert trades["AAPL"][2].timestamp == datetime(2023, 11, 14, 22, 14, 2, 123456, tzinfo=UTC)
    assert trades["AAPL"][2].exchange == "Q"


async def test_stock_latest_and_snapshot(exchange: ExchangeStack, trader: Trader) -> None:  # noqa: F811
    client = stocks(exchange, trader)
    symbols = ["AAPL", "MSFT"]
    quotes = await call(
        client.get_stock_latest_quote, StockLatestQuoteRequest(symbol_or_symbols=symbols)
    )
    assert isinstance(quotes["MSFT"], Quote) and quotes["MSFT"].ask_price == 301.0
    trades = await call(
        client.get_stock_latest_trade, StockLatestTradeRequest(symbol_or_symbols="AAPL")
    )
    assert isinstance(trades["AAPL"], Trade) and trades["AAPL"].price == 180.5
    bars = await call(client.get_stock_latest_bar, StockLatestBarRequest(symbol_or_symbols="AAPL"))
    assert isinstance(bars["AAPL"], Bar)
    assert bars["AAPL"].timestamp == datetime(2023, 11, 14, 22, 15, tzinfo=UTC)
    snapshots = await call(
        client.get_stock_snapshot, StockSnapshotRequest(symbol_or_symbols=["AAPL", "TSLA"])
    )
    aapl = snapshots["AAPL"]
    assert isinstance(aapl, Snapshot)
    assert aapl.latest_trade is not None and aapl.latest_trade.price == 180.5
    assert aapl.daily_bar is not None and aapl.daily_bar.trade_count == 3
    assert aapl.previous_daily_bar is not None and aapl.previous_daily_bar.close == 179.0
    assert snapshots["TSLA"].latest_trade is None


async def test_crypto_bars_and_latest(exchange: ExchangeStack, trader: Trader) -> None:  # noqa: F811
    client = crypto(exchange, trader)
    bars = await call(
        client.get_crypto_bars,
        CryptoBarsRequest(symbol_or_symbols="BTC/USD", timeframe=TimeFrame.Minute, start=START),
    )
    (bar,) = bars["BTC/USD"]
    assert (bar.close, bar.volume, bar.trade_count) == (60000.0, 0.0123, 1)
    trade = await call(
        client.get_crypto_latest_trade, CryptoLatestTradeRequest(symbol_or_symbols="BTC/USD")
    )
    assert trade["BTC/USD"].price == 60000.0 and trade["BTC/USD"].size == 0.0123
    latest_quote = await call(
        client.get_crypto_latest_quote, CryptoLatestQuoteRequest(symbol_or_symbols=["BTC/USD"])
    )
    assert latest_quote["BTC/USD"].bid_price == 59990.0
    snapshot = await call(
        client.get_crypto_snapshot, CryptoSnapshotRequest(symbol_or_symbols="BTC/USD")
    )
    assert snapshot["BTC/USD"].minute_bar is not None


async def test_a_bad_request_is_an_api_error(exchange: ExchangeStack, trader: Trader) -> None:  # noqa: F811
    client = stocks(exchange, trader)
    request = StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Week, start=START)
    with pytest.raises(APIError) as refused:
        await call(client.get_stock_bars, request)
    assert refused.value.status_code == 400
    assert "weeks and months" in str(refused.value)
