"""Day orders expire when the session clock closes the trading day on the journal."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from bourse.engine.session import SessionClock, day_to_close, next_midnight
from bourse.model import subjects
from tests.conftest import eventually
from tests.gateway.conftest import ExchangeStack

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_the_day_to_close_is_the_last_one_that_ended_and_was_not_closed() -> None:
    assert day_to_close(None, NOON, None) == date(2026, 3, 9)
    assert day_to_close(date(2026, 3, 9), NOON, None) is None
    assert day_to_close(date(2026, 3, 5), NOON, None) == date(2026, 3, 9)
    # A journal that began today has no ended day to close.
    assert day_to_close(None, NOON, date(2026, 3, 10)) is None
    assert day_to_close(None, NOON, date(2026, 3, 9)) == date(2026, 3, 9)


def test_next_midnight_is_utc() -> None:
    assert next_midnight(NOON) == datetime(2026, 3, 11, tzinfo=UTC)
    assert next_midnight(datetime(2026, 3, 10, tzinfo=UTC)) == datetime(2026, 3, 11, tzinfo=UTC)


async def test_closing_the_day_expires_day_orders_only(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader("10000")
    body = {"symbol": "AAPL", "qty": "5", "side": "buy", "type": "limit", "limit_price": "100.00"}
    day = (await alice.http.post("/v2/orders", json={**body, "time_in_force": "day"})).json()
    gtc = (await alice.http.post("/v2/orders", json={**body, "time_in_force": "gtc"})).json()
    assert (await alice.http.get("/v2/account")).json()["buying_power"] == "9000.00"

    tomorrow = datetime.now(UTC) + timedelta(days=1)
    clock = SessionClock(exchange.nc, clock=lambda: tomorrow)
    closed = await clock.catch_up()
    assert closed == datetime.now(UTC).date()
    assert await clock.catch_up() is None, "a day is closed once"

    async def status(order_id: str) -> str:
        answer = await alice.http.get(f"/v2/orders/{order_id}")
        return str(answer.json()["status"])

    async def expired() -> bool:
        return await status(day["id"]) == "expired"

    await eventually(expired, message="the DAY order never expired")
    assert await status(gtc["id"]) == "new"
    account = (await alice.http.get("/v2/account")).json()
    assert account["buying_power"] == "9500.00"


async def test_a_session_close_naming_no_day_does_not_stop_the_clock(
    exchange: ExchangeStack,
) -> None:
    # Anyone may publish on orders.session; the clock reads the last close when it starts.
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    for day in ("2026-13-45", "tomorrow"):
        payload = b'{"type": "session_closed", "ts": 1, "trading_day": "%s"}' % day.encode()
        await exchange.js.publish(subjects.ORDERS_SESSION, payload)
        closed = await SessionClock(exchange.nc, clock=lambda: tomorrow).catch_up()
        assert closed == datetime.now(UTC).date()
