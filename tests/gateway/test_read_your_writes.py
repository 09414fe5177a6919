"""An order's answer and the reads after it agree: what it filled is in the positions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from bourse.accounts.readmodel.projector import ReadModelEvent
from bourse.bus.streams import ORDERS, POSITIONS
from bourse.model import orders
from tests.gateway.conftest import ExchangeStack
from tests.gateway.test_orders_api import limit


async def _readmodel_consumer(exchange: ExchangeStack, stream: str) -> str:
    found = [
        c.name
        for c in await exchange.js.consumers_info(stream)
        if (c.config.description or "").startswith("bourse read model")
    ]
    assert len(found) == 1, found
    assert found[0] is not None
    return found[0]


@contextlib.asynccontextmanager
async def positions_held_until_a_fill(exchange: ExchangeStack) -> AsyncIterator[None]:
    """The read model's POSITIONS reader is held back (its consumer paused) from the block's
    start until the read model has applied a fill on ORDERS after the block."""
    assert exchange.gateway.readmodel is not None
    consumer = await _readmodel_consumer(exchange, POSITIONS.name)
    await exchange.js.pause_consumer(POSITIONS.name, consumer, "2999-01-01T00:00:00Z")
    filled = asyncio.get_running_loop().create_future()

    def on_applied(stream: str, events: Sequence[tuple[int, ReadModelEvent]]) -> None:
        fills = stream == ORDERS.name and any(isinstance(e, orders.Execution) for _, e in events)
        if fills and not filled.done():
            filled.set_result(None)

    exchange.gateway.readmodel.add_listener(on_applied)
    try:
        yield
        await asyncio.wait_for(filled, 10)
    finally:
        await exchange.js.resume_consumer(POSITIONS.name, consumer)


async def test_a_filled_answer_waits_for_its_positions(exchange: ExchangeStack) -> None:
    """The positions travel on POSITIONS, apart from the fills on ORDERS: with the read
    model's POSITIONS reader held back until the fill is in its orders, an answer that does
    not wait for the positions comes back without them."""
    await exchange.reference("AAPL", "190.00")
    seller = await exchange.trader(shorting=True)
    buyer = await exchange.trader("10000")
    resting = await seller.http.post("/v2/orders", json=limit("AAPL", "sell", "10", "190.00"))
    assert resting.json()["status"] == "new"
    async with positions_held_until_a_fill(exchange):
        taking = asyncio.create_task(
            buyer.http.post("/v2/orders", json=limit("AAPL", "buy", "10", "190.00"))
        )
    answer = await taking
    assert answer.json()["status"] == "filled", answer.text
    positions = (await buyer.http.get("/v2/positions")).json()
    assert [(p["symbol"], p["qty"]) for p in positions] == [("AAPL", "10")]


async def test_a_replacement_that_fills_answers_with_its_fill_and_position(
    exchange: ExchangeStack,
) -> None:
    """As for a new order: a PATCH whose new price crosses answers `filled`, its position
    already in the read model (the POSITIONS reader held back as above)."""
    await exchange.reference("AAPL", "190.00")
    seller = await exchange.trader(shorting=True)
    buyer = await exchange.trader("10000")
    await seller.http.post("/v2/orders", json=limit("AAPL", "sell", "10", "190.00"))
    resting = await buyer.http.post("/v2/orders", json=limit("AAPL", "buy", "10", "189.00"))
    assert resting.json()["status"] == "new", resting.text
    async with positions_held_until_a_fill(exchange):
        patching = asyncio.create_task(
            buyer.http.patch(f"/v2/orders/{resting.json()['id']}", json={"limit_price": "190.00"})
        )
    answer = await patching
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["filled_qty"]) == ("filled", "10")
    positions = (await buyer.http.get("/v2/positions")).json()
    assert [(p["symbol"], p["qty"]) for p in positions] == [("AAPL", "10")]


async def test_account_equity_counts_a_fill_once(exchange: ExchangeStack) -> None:
    """Cash and positions in /v2/account come from one source: with the read model's
    positions held back, equity is still cash plus the new position, not the cash alone."""
    await exchange.reference("AAPL", "190.00")
    seller = await exchange.trader(shorting=True)
    buyer = await exchange.trader("10000")
    await seller.http.post("/v2/orders", json=limit("AAPL", "sell", "10", "190.00"))
    consumer = await _readmodel_consumer(exchange, POSITIONS.name)
    await exchange.js.pause_consumer(POSITIONS.name, consumer, "2999-01-01T00:00:00Z")
    try:
        answer = await buyer.http.post("/v2/orders", json=limit("AAPL", "buy", "10", "190.00"))
        assert answer.json()["status"] == "filled", answer.text
        account = (await buyer.http.get("/v2/account")).json()
        assert account["cash"] == "8100.00"
        assert account["long_market_value"] == "1900.00"
        assert account["equity"] == "10000.00"
    finally:
        await exchange.js.resume_consumer(POSITIONS.name, consumer)
