"""alpaca-py's StockDataStream and CryptoDataStream, unchanged but for their URL, against the
gateway's market-data stream.

alpaca-py negotiates MessagePack, authenticates with a message, sends its subscriptions in
fragmented frames and parses what it gets into its models (`Trade`, `Quote`, `Bar`). Its
stream runs here as a task of the test's event loop (`_run_forever`, what `run()` wraps).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from alpaca.data.enums import DataFeed
from alpaca.data.live.crypto import CryptoDataStream
from alpaca.data.live.stock import StockDataStream
from alpaca.data.live.websocket import DataStream
from alpaca.data.models import Bar, Quote, Trade

from tests.conftest import eventually
from tests.gateway.conftest import MarketDataFactory, MarketDataGateway
from tests.gateway.test_mdstream import bar, nbbo, quote, trade

STAMP = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)


class Received:
    """What the stream's handlers were given, by kind."""

    def __init__(self) -> None:
        self.items: dict[str, list[Any]] = {"trades": [], "quotes": [], "bars": []}

    def handler(self, kind: str) -> Callable[[Any], Any]:
        async def handle(item: Any) -> None:
            self.items[kind].append(item)

        return handle

    async def one(self, kind: str) -> Any:
        await eventually(lambda: bool(self.items[kind]), message=f"no {kind} arrived")
        return self.items[kind].pop(0)


@asynccontextmanager
async def running(md: MarketDataGateway, stream: DataStream, feed: str) -> AsyncIterator[None]:
    task = asyncio.create_task(stream._run_forever())
    try:
        # Subscribed once the gateway lists the connection with its subscriptions.
        await eventually(
            lambda: any(c["feed"] == feed and c["subscriptions"] for c in md.stream.clients()),
            message=f"alpaca-py never subscribed on {feed}",
        )
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stream.close()


@pytest.mark.parametrize("feed", [DataFeed.SIP, DataFeed.IEX])
async def test_stock_data_stream(market_data: MarketDataFactory, feed: DataFeed) -> None:
    md = await market_data()
    stream = StockDataStream(
        md.key_id, md.secret, feed=feed, url_override=md.url(f"/v2/{feed.value}")
    )
    got = Received()
    stream.subscribe_trades(got.handler("trades"), "AAPL")
    stream.subscribe_quotes(got.handler("quotes"), "AAPL")
    stream.subscribe_bars(got.handler("bars"), "*")
    venue = "nyse" if feed is DataFeed.SIP else "bourse"
    bars_from = "consolidated" if feed is DataFeed.SIP else "bourse"
    async with running(md, stream, feed.value):
        await md.publish(trade(venue=venue, seq=42, price=Decimal("190.05")))
        if feed is DataFeed.SIP:
            await md.publish_nbbo(nbbo())
        else:
            await md.publish(
                quote(
                    bid=Decimal("190.01"),
                    ask=Decimal("190.03"),
                    bid_size=Decimal(500),
                    ask_size=Decimal(100),
                )
            )
        await md.publish_bar(bar(symbol="MSFT", venue=bars_from))

        traded = await got.one("trades")
        assert isinstance(traded, Trade)
        assert (traded.symbol, traded.price, traded.size, traded.id) == ("AAPL", 190.05, 100, 42)
        assert traded.timestamp == STAMP
        assert traded.exchange == ("N" if feed is DataFeed.SIP else "bourse")
        assert (traded.conditions, traded.tape) == (["@"], "C")

        quoted = await got.one("quotes")
        assert isinstance(quoted, Quote)
        assert (quoted.symbol, quoted.bid_price, quoted.bid_size) == ("AAPL", 190.01, 500)
        assert (quoted.ask_price, quoted.ask_size, quoted.timestamp) == (190.03, 100, STAMP)

        barred = await got.one("bars")
        assert isinstance(barred, Bar)
        assert (barred.symbol, barred.open, barred.high, barred.low, barred.close) == (
            "MSFT",
            190.0,
            190.5,
            189.75,
            190.25,
        )
        assert (barred.volume, barred.trade_count, barred.vwap) == (1200, 12, 190.1234)
        assert barred.timestamp == datetime(2026, 1, 1, tzinfo=UTC)


async def test_crypto_data_stream(market_data: MarketDataFactory) -> None:
    md = await market_data()
    stream = CryptoDataStream(md.key_id, md.secret, url_override=md.url("/v1beta3/crypto/us"))
    got = Received()
    stream.subscribe_trades(got.handler("trades"), "BTC/USD")
    stream.subscribe_quotes(got.handler("quotes"), "BTC/USD")
    stream.subscribe_bars(got.handler("bars"), "ETH/USD")
    async with running(md, stream, "crypto"):
        await md.publish(
            trade(
                symbol="BTC-USD",
                venue="kraken",
                price=Decimal("64000.5"),
                size=Decimal("0.0125"),
                side="sell",
            )
        )
        await md.publish_nbbo(nbbo("BTC-USD", bid=Decimal("63999.99"), ask=Decimal("64000.01")))
        await md.publish_bar(
            bar("ETH-USD", vwap=None, source="quotes", volume=Decimal(0), trade_count=0)
        )

        traded = await got.one("trades")
        assert (traded.symbol, traded.price, traded.size, traded.timestamp) == (
            "BTC/USD",
            64000.5,
            0.0125,
            STAMP,
        )
        quoted = await got.one("quotes")
        assert (quoted.symbol, quoted.bid_price, quoted.ask_price) == (
            "BTC/USD",
            63999.99,
            64000.01,
        )
        barred = await got.one("bars")
        assert (barred.symbol, barred.close, barred.vwap, barred.trade_count) == (
            "ETH/USD",
            190.25,
            None,
            0,
        )
