"""A small market to ask the market-data API about: AAPL and MSFT on two venues, BTC-USD."""

from __future__ import annotations

from decimal import Decimal

from nats.js import JetStreamContext

from bourse.history.service import HistoryService
from bourse.model import marketdata, subjects
from bourse.model.marketdata import MarketData, Trade
from tests.analytics.factories import S, quote, trade
from tests.conftest import eventually

T0 = 1_700_000_040 * S  # 2023-11-14T22:14:00Z, a minute's start
MINUTE = 60 * S
DAY = 86_400 * S
START = "2023-11-13T00:00:00Z"

MARKET: list[MarketData] = [
    quote("179.90", "180.10", T0 - DAY, venue="nyse"),  # the day before
    trade("179.00", 100, T0 - DAY + S, venue="nyse"),
    quote("179.90", "180.10", T0 + S, venue="nyse"),
    trade("180.00", 10, T0 + 2 * S, venue="nyse"),
    trade("180.20", 5, T0 + 2 * S + 123_456_789, venue="nasdaq"),
    quote("180.00", "180.30", T0 + MINUTE + S, venue="nasdaq"),
    trade("180.50", 30, T0 + MINUTE + 2 * S, venue="nasdaq"),
    quote("299.00", "301.00", T0 + 3 * S, symbol="MSFT", venue="nyse"),
    quote("59990.00", "60010.00", T0 + S, symbol="BTC-USD", venue="coinbase"),
    Trade(
        symbol="BTC-USD",
        venue="coinbase",
        price=Decimal("60000.00"),
        size=Decimal("0.0123"),
        side="buy",
        ts=T0 + 2 * S,
        seq=1,
    ),
]


async def record(js: JetStreamContext, history: HistoryService, messages: list[MarketData]) -> None:
    """Publish `messages` on MARKET_DATA and wait until the history service stored them."""
    before = history.ingested.stored
    for m in messages:
        await js.publish(subjects.market_data(m.venue, m.symbol), marketdata.encode(m))
    await eventually(
        lambda: history.ingested.stored >= before + len(messages),
        message="the history service did not store what was published",
    )
