"""The `risk` stream of `/stream` and `GET /v2/risk/alerts`: a `RiskAlert` published on
`risk.alerts.<severity>` (as the risk service encodes it) reaches the WebSockets of its own
account and no other's, and is listed, newest first, for its account only."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from bourse.model import subjects
from bourse.risk import messages
from bourse.risk.messages import RiskAlert, Severity
from bourse.risk.rules import RuleName
from tests.conftest import eventually
from tests.gateway.conftest import ExchangeStack, Trader

_numbers = itertools.count(1)


def _alert(account_id: str, severity: Severity = "warning") -> RiskAlert:
    n = next(_numbers)
    return RiskAlert(
        ts=1_718_000_000_250_000_000,
        alert_id=f"risk-alert:{account_id}:{n}",
        account_id=account_id,
        rule=RuleName.DAILY_LOSS,
        severity=severity,
        value=Decimal("850.00"),
        limit=Decimal("1000"),
        threshold=Decimal("800"),
        message=f"daily loss 850.00 passed 80% of the limit 1000 ({n})",
    )


async def _publish(exchange: ExchangeStack, alert: RiskAlert) -> None:
    await exchange.nc.publish(subjects.risk_alert(alert.severity), messages.encode(alert))


async def _connected(exchange: ExchangeStack, trader: Trader) -> ClientConnection:
    ws = await connect(exchange.url.replace("http", "ws") + "/stream")
    await ws.send(
        msgspec.json.encode({"action": "auth", "key": trader.key_id, "secret": trader.secret})
    )
    assert msgspec.json.decode(await ws.recv())["data"]["status"] == "authorized"
    return ws


async def _listen(ws: ClientConnection, streams: Any) -> dict[str, Any]:
    await ws.send(msgspec.json.encode({"action": "listen", "data": {"streams": streams}}))
    answer: dict[str, Any] = msgspec.json.decode(await ws.recv())
    return answer


async def _next_risk(ws: ClientConnection) -> dict[str, Any]:
    """The next frame of the risk stream (other streams' frames, if any, are passed over)."""
    while True:
        frame = msgspec.json.decode(await ws.recv())
        if frame["stream"] == "risk":
            data: dict[str, Any] = frame["data"]
            return data


async def test_a_listener_gets_its_own_accounts_risk_alerts_only(exchange: ExchangeStack) -> None:
    feed = exchange.gateway.risk
    assert feed is not None
    alice, bob = await exchange.trader(), await exchange.trader()
    alice_ws, bob_ws = await _connected(exchange, alice), await _connected(exchange, bob)
    try:
        assert await _listen(alice_ws, ["trade_updates", "alerts", "risk"]) == {
            "stream": "listening",
            "data": {"streams": ["trade_updates", "alerts", "risk"]},
        }
        assert (await _listen(bob_ws, ["risk"]))["data"] == {"streams": ["risk"]}
        assert feed.listening == 2

        # Bob's alert goes first, and a message that is not a RiskAlert is passed over.
        bobs = _alert(bob.account_id)
        await _publish(exchange, bobs)
        await exchange.nc.publish(subjects.risk_alert("warning"), b'{"type": "nonsense"}')
        alices = _alert(alice.account_id)
        await _publish(exchange, alices)

        # Alice's first risk frame is her own: Bob's, published before, never came to her.
        assert await _next_risk(alice_ws) == {
            "alert_id": alices.alert_id,
            "rule": "daily_loss",
            "severity": "warning",
            "message": alices.message,
            "value": "850.00",
            "limit": "1000",
            "threshold": "800",
            "symbol": "",
            "timestamp": "2024-06-10T06:13:20.250000Z",
        }
        assert (await _next_risk(bob_ws))["alert_id"] == bobs.alert_id

        # Again, the other way round, and with a critical one.
        critical = _alert(bob.account_id, "critical")
        await _publish(exchange, _alert(alice.account_id))
        await _publish(exchange, critical)
        bob_next = await _next_risk(bob_ws)
        assert (bob_next["alert_id"], bob_next["severity"]) == (critical.alert_id, "critical")
        assert feed.malformed == 1

        # The recent list: the account's own, newest first.
        answer = await alice.http.get("/v2/risk/alerts")
        assert answer.status_code == 200, answer.text
        listed = answer.json()
        assert [a["alert_id"] for a in listed][1:] == [alices.alert_id]
        assert all(a["alert_id"].startswith(f"risk-alert:{alice.account_id}:") for a in listed)
        bob_listed = (await bob.http.get("/v2/risk/alerts", params={"limit": 1})).json()
        assert [a["alert_id"] for a in bob_listed] == [critical.alert_id]
    finally:
        await alice_ws.close()
        await bob_ws.close()
    await eventually(lambda: feed.listening == 0, message="closed connections still listen")


async def test_a_replayed_alert_is_told_once(exchange: ExchangeStack) -> None:
    alice = await exchange.trader()
    ws = await _connected(exchange, alice)
    try:
        assert (await _listen(ws, ["risk"]))["data"] == {"streams": ["risk"]}
        first, second = _alert(alice.account_id), _alert(alice.account_id, "info")
        await _publish(exchange, first)
        await _publish(exchange, first)  # the risk service replaying after a restart
        await _publish(exchange, second)
        assert (await _next_risk(ws))["alert_id"] == first.alert_id
        assert (await _next_risk(ws))["alert_id"] == second.alert_id
        listed = (await alice.http.get("/v2/risk/alerts")).json()
        assert [a["alert_id"] for a in listed] == [second.alert_id, first.alert_id]
    finally:
        await ws.close()


async def test_bad_listen_payloads_answer_as_before_and_risk_can_be_left(
    exchange: ExchangeStack,
) -> None:
    alice = await exchange.trader()
    async with connect(exchange.url.replace("http", "ws") + "/stream") as ws:
        # Before authenticating: refused on the authorization stream, the connection open.
        refused = await _listen(ws, ["risk"])
        assert refused["stream"] == "authorization"
        assert (refused["data"]["status"], refused["data"]["action"]) == ("unauthorized", "listen")
    ws = await _connected(exchange, alice)
    try:
        for bad in ("risk", [1, 2], {"risk": True}):
            answer = await _listen(ws, bad)
            assert answer["stream"] == "error", answer
            assert "invalid message" in answer["data"]["error"]
        await ws.send(b"not json")
        assert msgspec.json.decode(await ws.recv())["stream"] == "error"
        # Unknown names are ignored.
        assert (await _listen(ws, ["risk", "nope"]))["data"] == {"streams": ["risk"]}
        # Leaving the risk stream: an alert meanwhile is not sent, the next one after is.
        assert (await _listen(ws, ["trade_updates"]))["data"] == {"streams": ["trade_updates"]}
        unheard = _alert(alice.account_id)
        await _publish(exchange, unheard)
        assert exchange.gateway.risk is not None
        await eventually(
            lambda: bool(exchange.gateway.risk and exchange.gateway.risk.recent(alice.account_id)),
            message="the gateway never received the alert",
        )
        assert (await _listen(ws, ["risk"]))["data"] == {"streams": ["risk"]}
        heard = _alert(alice.account_id)
        await _publish(exchange, heard)
        assert (await _next_risk(ws))["alert_id"] == heard.alert_id
    finally:
        await ws.close()


async def test_the_recent_list_needs_a_key_and_a_sane_limit(exchange: ExchangeStack) -> None:
    alice = await exchange.trader()
    assert (await alice.http.get("/v2/risk/alerts")).json() == []
    assert (await exchange.client().get("/v2/risk/alerts")).status_code == 401
    for limit in ("0", "101", "ten"):
        answer = await alice.http.get("/v2/risk/alerts", params={"limit": limit})
        assert answer.status_code == 422, answer.text
        assert "limit" in answer.json()["message"]
