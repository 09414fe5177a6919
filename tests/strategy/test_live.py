"""Live: the strategy opens its own account, follows md.nyse.AAPL on a real nats-server, and
trades through the exchange's HTTP API, against a counterparty's resting order."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from nats.js import JetStreamContext

from bourse.client import BourseClient
from bourse.model import marketdata, subjects
from bourse.strategy.config import StrategyConfig
from bourse.strategy.live import LiveStrategy, open_account
from tests.conftest import eventually
from tests.gateway.conftest import ExchangeStack
from tests.strategy.factories import AAPL

WAIT = 20.0


def _quote(mid: str, seq: int) -> bytes:
    center = Decimal(mid)
    return marketdata.encode(
        marketdata.Quote(
            symbol="AAPL",
            venue="nyse",
            bid=center - Decimal("0.02"),
            ask=center + Decimal("0.02"),
            bid_size=Decimal(100),
            ask_size=Decimal(100),
            last=center,
            last_size=Decimal(1),
            volume=Decimal(1000),
            ts=time.time_ns(),
            seq=seq,
        )
    )


async def test_a_live_run_buys_through_the_api_and_its_account_shows_it(
    exchange: ExchangeStack, js: JetStreamContext
) -> None:
    await exchange.reference("AAPL", "100.00")
    seller = await exchange.trader(cash="100000", shorting=True)
    resting = await seller.http.post(
        "/v2/orders",
        json={
            "symbol": "AAPL",
            "qty": "500",
            "side": "sell",
            "type": "limit",
            "limit_price": "100.10",
            "time_in_force": "gtc",
        },
    )
    assert resting.status_code == 200, resting.text

    # The strategy's own account, opened with the admin key (the gateway runs in this event
    # loop, so the synchronous client is called from threads).
    admin = BourseClient(exchange.url, exchange.admin.key_id, exchange.admin.secret)
    made = await asyncio.to_thread(open_account, admin, Decimal(100_000))
    admin.close()
    client = BourseClient(exchange.url, made.key_id, made.secret)
    strategy = LiveStrategy(exchange.nc, client, StrategyConfig(fast=2, slow=4), AAPL, venue="nyse")
    stop = asyncio.Event()
    running = asyncio.create_task(strategy.run(stop))
    try:
        await asyncio.wait_for(strategy.ready.wait(), WAIT)
        # Flat, then rising: the fast SMA crosses above the slow one on the fifth quote.
        for seq, mid in enumerate(("100.00",) * 4 + ("100.04", "100.08"), start=100):
            await js.publish(subjects.market_data("nyse", "AAPL"), _quote(mid, seq))

        def filled() -> bool:
            return strategy.strategy is not None and len(strategy.strategy.execution.fills) > 0

        await eventually(filled, timeout=WAIT, message="the strategy never traded")
    finally:
        stop.set()
        summary = await asyncio.wait_for(running, WAIT)

    # Kelly from the prior (0.55 wins, payoff 1) is 0.1 of 100,000: 99 shares at ~100.06,
    # bought IOC through the ask and filled at the seller's 100.10.
    assert summary.mode == "live" and summary.orders == 1 and summary.trades == 1
    fill = summary.fills[0]
    assert (fill.side, fill.qty, fill.price) == ("buy", Decimal(99), Decimal("100.10"))
    assert fill.client_order_id == f"{strategy.run_id}-1"
    assert summary.position == 99 and summary.ticks == 6

    positions = await asyncio.to_thread(client.positions)
    assert [(p.symbol, p.qty) for p in positions] == [("AAPL", Decimal(99))]
    orders = await asyncio.to_thread(client.orders, "closed")
    assert [(o.client_order_id, o.status, o.type, o.time_in_force) for o in orders] == [
        (fill.client_order_id, "filled", "limit", "ioc")
    ]
    account = await asyncio.to_thread(client.account)
    assert account.id == made.account_id
    assert account.cash == Decimal(100_000) - 99 * Decimal("100.10")
    client.close()
