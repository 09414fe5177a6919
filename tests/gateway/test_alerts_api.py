"""`/v2/alerts` and the `alerts` stream of `/stream`, end to end: the gateway journals the
request, the alerts service fires, the firing reaches the account's WebSocket (and no other
account's), and the alert shows as triggered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect

from bourse.alerts.service import AlertsService
from bourse.gateway.alerts import MAX_ALERTS_PER_ACCOUNT
from tests.gateway.conftest import ExchangeStack, Trader

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
async def alerts_service(exchange: ExchangeStack) -> AsyncIterator[AlertsService]:
    service = await AlertsService(exchange.nc).start()
    yield service
    await service.stop()


async def _create(trader: Trader, **body: Any) -> dict[str, Any]:
    answer = await trader.http.post("/v2/alerts", json=body)
    assert answer.status_code == 200, answer.text
    made: dict[str, Any] = answer.json()
    return made


async def _alert(trader: Trader, alert_id: str) -> dict[str, Any]:
    answer = await trader.http.get(f"/v2/alerts/{alert_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def _listening(
    exchange: ExchangeStack, trader: Trader, streams: list[str]
) -> ClientConnection:
    ws = await connect(exchange.url.replace("http", "ws") + "/stream")
    await ws.send(
        msgspec.json.encode({"action": "auth", "key": trader.key_id, "secret": trader.secret})
    )
    assert msgspec.json.decode(await ws.recv())["data"]["status"] == "authorized"
    await ws.send(msgspec.json.encode({"action": "listen", "data": {"streams": streams}}))
    return ws


async def _next_alert(ws: ClientConnection) -> dict[str, Any]:
    """The next frame of the alerts stream (trade updates, if any, are passed over)."""
    while True:
        frame = msgspec.json.decode(await ws.recv())
        if frame["stream"] == "alerts":
            data: dict[str, Any] = frame["data"]
            return data


async def test_an_alert_is_created_listed_read_and_deleted(exchange: ExchangeStack) -> None:
    alice = await exchange.trader()
    made = await _create(alice, symbol="btc/usd", condition="crosses", price="65000.50")
    assert made == {
        "id": made["id"],
        "symbol": "BTC-USD",
        "condition": "crosses",
        "price": "65000.50",
        "recurring": False,
        "hysteresis": "0",
        "status": "active",
        "fire_count": 0,
        "last_fired_at": None,
        "last_fired_price": None,
        "created_at": made["created_at"],
    }
    # Read your writes: the journal, then the gateway's view, before the answer.
    assert await _alert(alice, made["id"]) == made
    other = await _create(alice, symbol="AAPL", condition="below", price=150, recurring=True)
    listed = (await alice.http.get("/v2/alerts")).json()
    assert [a["id"] for a in listed] == [made["id"], other["id"]]
    assert (await alice.http.get("/v2/alerts", params={"status": "triggered"})).json() == []
    deleted = await alice.http.delete(f"/v2/alerts/{made['id']}")
    assert deleted.status_code == 204
    assert (await alice.http.get(f"/v2/alerts/{made['id']}")).status_code == 404
    assert [a["id"] for a in (await alice.http.get("/v2/alerts")).json()] == [other["id"]]


async def test_a_firing_reaches_the_accounts_websocket_only_and_the_alert_is_triggered(
    exchange: ExchangeStack, alerts_service: AlertsService
) -> None:
    await exchange.reference("AAPL", "190.00")
    alice, bob = await exchange.trader(), await exchange.trader()
    alice_ws = await _listening(exchange, alice, ["trade_updates", "alerts"])
    bob_ws = await _listening(exchange, bob, ["alerts"])
    try:
        assert msgspec.json.decode(await alice_ws.recv()) == {
            "stream": "listening",
            "data": {"streams": ["trade_updates", "alerts"]},
        }
        assert msgspec.json.decode(await bob_ws.recv())["data"] == {"streams": ["alerts"]}
        up = await _create(alice, symbol="AAPL", condition="above", price="191.00")
        later = await _create(bob, symbol="AAPL", condition="above", price="195.00")
        await alerts_service.wait_caught_up()

        await exchange.reference("AAPL", "191.50")
        fired = await _next_alert(alice_ws)
        assert fired == {
            "event": "fired",
            "alert_id": up["id"],
            "symbol": "AAPL",
            "condition": "above",
            "price": "191.00",
            "market_price": "191.50",
            "direction": "up",
            "fire_count": 1,
            "recurring": False,
            "status": "triggered",
            "timestamp": fired["timestamp"],
        }
        found = await _alert(alice, up["id"])
        assert (found["status"], found["fire_count"], found["last_fired_price"]) == (
            "triggered",
            1,
            "191.50",
        )
        # Bob's first alerts frame is his own alert's, later: Alice's never came to him.
        await exchange.reference("AAPL", "196.00")
        assert (await _next_alert(bob_ws))["alert_id"] == later["id"]
        assert (await _alert(alice, up["id"]))["fire_count"] == 1  # once per crossing
    finally:
        await alice_ws.close()
        await bob_ws.close()


async def test_a_recurring_alert_fires_again_after_going_back_across(
    exchange: ExchangeStack, alerts_service: AlertsService
) -> None:
    await exchange.reference("ETH-USD", "3000.00")
    alice = await exchange.trader()
    ws = await _listening(exchange, alice, ["alerts"])
    try:
        made = await _create(
            alice, symbol="ETH-USD", condition="below", price="2990.00", recurring=True
        )
        await alerts_service.wait_caught_up()
        for price in ("2980.00", "2995.00", "2985.00"):
            await exchange.reference("ETH-USD", price)
        counts = [(await _next_alert(ws))["fire_count"] for _ in range(2)]
        assert counts == [1, 2]
        found = await _alert(alice, made["id"])
        assert (found["status"], found["fire_count"]) == ("active", 2)
    finally:
        await ws.close()


async def test_another_accounts_alert_is_not_found(exchange: ExchangeStack) -> None:
    alice, bob = await exchange.trader(), await exchange.trader()
    made = await _create(alice, symbol="MSFT", condition="above", price="500")
    for method in ("GET", "DELETE"):
        answer = await bob.http.request(method, f"/v2/alerts/{made['id']}")
        assert answer.status_code == 404 and answer.json()["reason"] == "not_found"
    assert (await bob.http.get("/v2/alerts")).json() == []
    assert (await alice.http.get(f"/v2/alerts/{UNKNOWN_ID}")).status_code == 404
    assert (await alice.http.get("/v2/alerts/not-an-id")).status_code == 404
    assert (await exchange.client().get("/v2/alerts")).status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"symbol": "NOPE", "condition": "above", "price": "1"}, "asset 'NOPE' not found"),
        ({"symbol": "AAPL", "condition": "above", "price": "NaN"}, "price must be finite"),
        ({"symbol": "AAPL", "condition": "above", "price": "Infinity"}, "price must be finite"),
        ({"symbol": "AAPL", "condition": "above", "price": "-5"}, "price must be > 0"),
        ({"symbol": "AAPL", "condition": "above", "price": 0}, "price must be > 0"),
        ({"symbol": "AAPL", "condition": "above", "price": "1e13"}, "at most 1000000000000"),
        ({"symbol": "AAPL", "condition": "above", "price": "190.005"}, "tick size 0.01"),
        ({"symbol": "AAPL", "condition": "above", "price": "abc"}, "decimal number"),
        ({"symbol": "AAPL", "condition": "above", "price": True}, "decimal number"),
        ({"symbol": "AAPL", "condition": "sideways", "price": "1"}, "condition: Input should be"),
        ({"symbol": "AAPL", "price": "1"}, "condition: Field required"),
        ({"symbol": "AAPL", "condition": "above", "price": "1", "side": "buy"}, "side: unknown"),
        (
            {"symbol": "AAPL", "condition": "above", "price": "1", "recurring": "yes"},
            "recurring: Input should be a valid boolean",
        ),
        (
            {"symbol": "AAPL", "condition": "above", "price": "10", "hysteresis": "-1"},
            "hysteresis must be 0 or more",
        ),
        (
            {"symbol": "AAPL", "condition": "above", "price": "10", "hysteresis": "10"},
            "below the price 10",
        ),
        (
            {"symbol": "AAPL", "condition": "above", "price": "10", "hysteresis": "0.001"},
            "hysteresis must be",
        ),
    ],
)
async def test_bad_alerts_get_a_precise_422_and_change_nothing(
    exchange: ExchangeStack, body: dict[str, Any], message: str
) -> None:
    alice = await exchange.trader()
    answer = await alice.http.post("/v2/alerts", json=body)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["message"], answer.json()
    assert (await alice.http.get("/v2/alerts")).json() == []


async def test_an_account_has_at_most_its_limit_of_alerts(exchange: ExchangeStack) -> None:
    alice = await exchange.trader()
    body = {"symbol": "TSLA", "condition": "above", "price": "900"}
    for _ in range(MAX_ALERTS_PER_ACCOUNT):
        await _create(alice, **body)
    refused = await alice.http.post("/v2/alerts", json=body)
    assert refused.status_code == 422 and refused.json()["reason"] == "too_many_alerts"
    first = (await alice.http.get("/v2/alerts")).json()[0]["id"]
    assert (await alice.http.delete(f"/v2/alerts/{first}")).status_code == 204
    await _create(alice, **body)  # room again


async def test_bad_json_and_non_objects_are_400(exchange: ExchangeStack) -> None:
    alice = await exchange.trader()
    broken = await alice.http.post(
        "/v2/alerts", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and "malformed JSON" in broken.json()["message"]
    listed = await alice.http.post("/v2/alerts", json=[1, 2])
    assert listed.status_code == 400
