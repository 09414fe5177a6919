"""Reference prices followed live from md.*.* on a real nats-server."""

from __future__ import annotations

import time
from decimal import Decimal

from nats.aio.client import Client as NATS

from bourse.analytics.reference import ReferencePrices, follow_reference
from bourse.model import marketdata, subjects
from tests.conftest import eventually


def _quote(venue: str, bid: str, ask: str) -> marketdata.Quote:
    return marketdata.Quote(
        symbol="AAPL",
        venue=venue,
        bid=Decimal(bid),
        ask=Decimal(ask),
        bid_size=Decimal(100),
        ask_size=Decimal(100),
        last=Decimal(bid),
        last_size=Decimal(1),
        volume=Decimal(1000),
        ts=time.time_ns(),
        seq=1,
    )


async def test_the_reference_follows_external_venues_and_skips_our_own(nc: NATS) -> None:
    prices = ReferencePrices()
    follower = await follow_reference(nc, prices)
    try:
        # Our own venue's quote (and anything else it prints, even undecodable) is skipped
        # before decoding; a malformed external message is skipped too; neither stops the
        # follower.
        await nc.publish(
            subjects.market_data("bourse", "AAPL"),
            marketdata.encode(_quote("bourse", "50.00", "50.02")),
        )
        await nc.publish(subjects.market_data("bourse", "AAPL"), b"not json")
        await nc.publish(subjects.market_data("nyse", "AAPL"), b'{"type": "quote"}')
        await nc.publish(
            subjects.market_data("nyse", "AAPL"),
            marketdata.encode(_quote("nyse", "99.98", "100.02")),
        )
        await eventually(lambda: prices.get("AAPL") is not None)
        assert prices.get("AAPL") == Decimal("100.00")
        assert prices.updates == 1
        assert prices.follows("nyse") and not prices.follows("bourse")
    finally:
        await follower.unsubscribe()
