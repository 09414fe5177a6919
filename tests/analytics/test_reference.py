"""Reference prices followed live from md.*.* on a real nats-server."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from nats.aio.client import Client as NATS

from bourse.analytics import reference
from bourse.analytics.reference import ReferencePrices, follow_reference
from bourse.model import marketdata, subjects
from tests.analytics.factories import quote
from tests.conftest import eventually


async def test_the_reference_follows_external_venues_and_skips_our_own(
    nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Our own venue's messages (the engine's depth, quotes and trades) are skipped by their
    # subject, never decoded; a malformed external message is skipped too; neither stops
    # the follower.
    decoded: list[bytes] = []
    decode = marketdata.decode

    def counting_decode(data: bytes) -> marketdata.MarketData:
        decoded.append(data)
        return decode(data)

    monkeypatch.setattr(reference.marketdata, "decode", counting_decode)
    prices = ReferencePrices()
    follower = await follow_reference(nc, prices)
    try:
        now = time.time_ns()
        own = marketdata.encode(quote("50.00", "50.02", now, venue="bourse"))
        external = marketdata.encode(quote("99.98", "100.02", now, venue="nyse"))
        await nc.publish(subjects.market_data("bourse", "AAPL"), own)
        await nc.publish(subjects.market_data("bourse", "AAPL"), b"not json")
        await nc.publish(subjects.market_data("nyse", "AAPL"), b'{"type": "quote"}')
        await nc.publish(subjects.market_data("nyse", "AAPL"), external)
        await eventually(lambda: prices.get("AAPL") is not None)
        assert prices.get("AAPL") == Decimal("100.00")
        assert prices.updates == 1
        assert decoded == [b'{"type": "quote"}', external]  # nothing of our own venue
        assert prices.follows("nyse") and not prices.follows("bourse")
    finally:
        await follower.unsubscribe()
