"""Orders over the /stream WebSocket: submit_order, replace_order and cancel_order, answered
on `order_responses` as the REST endpoints answer (their bad input: tests/gateway/
test_bad_input.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect

from bourse.gateway.app import MAX_BODY
from bourse.gateway.auth import RateLimiter
from bourse.gateway.stream import MAX_IN_FLIGHT
from tests.conftest import eventually
from tests.gateway.conftest import ExchangeStack, Trader
from tests.gateway.test_orders_api import limit


@contextlib.asynccontextmanager
async def stream_session(
    exchange: ExchangeStack, trader: Trader | None, *, listen: bool = False
) -> AsyncIterator[ClientConnection]:
    """A /stream connection, authenticated as `trader` (None: not at all)."""
    async with connect(exchange.url.replace("http", "ws") + "/stream") as ws:
        if trader is not None:
            auth = {"action": "auth", "key": trader.key_id, "secret": trader.secret}
            await ws.send(msgspec.json.encode(auth))
            assert msgspec.json.decode(await ws.recv())["data"]["status"] == "authorized"
        if listen:
            listening = {"action": "listen", "data": {"streams": ["trade_updates"]}}
            await ws.send(msgspec.json.encode(listening))
            assert msgspec.json.decode(await ws.recv())["stream"] == "listening"
        yield ws


@pytest.fixture
async def alice(exchange: ExchangeStack) -> Trader:
    """A funded trader, with AAPL priced at 190."""
    await exchange.reference("AAPL", "190.00")
    return await exchange.trader()


async def next_frame(ws: ClientConnection, stream: str) -> dict[str, Any]:
    """The data of the next frame on `stream` (frames of other streams are passed over)."""
    while True:
        frame = msgspec.json.decode(await ws.recv())
        if frame["stream"] == stream:
            data: dict[str, Any] = frame["data"]
            return data


async def send_action(
    ws: ClientConnection, action: str, data: Any, *, request_id: str | int | None = "r"
) -> None:
    await ws.send(msgspec.json.encode({"action": action, "request_id": request_id, "data": data}))


async def order_action(
    ws: ClientConnection, action: str, data: Any, *, request_id: str | int = "r"
) -> dict[str, Any]:
    """Send one order action; its answer (answers to other requests are passed over)."""
    await send_action(ws, action, data, request_id=request_id)
    while True:
        answer = await next_frame(ws, "order_responses")
        if answer["request_id"] == request_id:
            return answer


async def test_an_order_is_submitted_and_answered_with_the_order(
    exchange: ExchangeStack,
    alice: Trader,
) -> None:
    async with stream_session(exchange, alice) as ws:
        body = limit("AAPL", "buy", "3", "150.00")
        answer = await order_action(ws, "submit_order", body, request_id=7)
    assert (answer["request_id"], answer["action"], answer["status"]) == (7, "submit_order", 200)
    order = answer["order"]
    assert (order["status"], order["qty"], order["limit_price"]) == ("new", "3", "150.00")
    rest = (await alice.http.get(f"/v2/orders/{order['id']}")).json()
    assert rest == order


async def test_a_crossing_order_fills_and_its_position_is_there(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")
    seller = await exchange.trader(shorting=True)
    buyer = await exchange.trader("10000")
    await seller.http.post("/v2/orders", json=limit("AAPL", "sell", "10", "190.00"))
    async with stream_session(exchange, buyer) as ws:
        answer = await order_action(ws, "submit_order", limit("AAPL", "buy", "10", "190.00"))
    assert answer["status"] == 200, answer
    assert (answer["order"]["status"], answer["order"]["filled_avg_price"]) == ("filled", "190.00")
    positions = (await buyer.http.get("/v2/positions")).json()
    assert [(p["symbol"], p["qty"]) for p in positions] == [("AAPL", "10")]


async def test_replace_and_cancel_answer_with_the_order_as_it_became(
    exchange: ExchangeStack,
    alice: Trader,
) -> None:
    async with stream_session(exchange, alice) as ws:
        placed = await order_action(ws, "submit_order", limit("AAPL", "buy", "3", "150.00"))
        first = placed["order"]["id"]
        replaced = await order_action(
            ws, "replace_order", {"order_id": first, "qty": "5", "limit_price": "151.00"}
        )
        assert replaced["status"] == 200, replaced
        second = replaced["order"]
        assert (second["replaces"], second["qty"], second["limit_price"]) == (first, "5", "151.00")
        canceled = await order_action(ws, "cancel_order", {"order_id": second["id"]})
    assert canceled["status"] == 200, canceled
    assert (canceled["order"]["id"], canceled["order"]["status"]) == (second["id"], "canceled")
    listed = (await alice.http.get("/v2/orders?status=all")).json()
    statuses = {o["id"]: o["status"] for o in listed}
    assert statuses == {first: "replaced", second["id"]: "canceled"}


async def test_a_listener_hears_the_update_and_the_answer(
    exchange: ExchangeStack,
    alice: Trader,
) -> None:
    async with stream_session(exchange, alice, listen=True) as ws:
        await send_action(ws, "submit_order", limit("AAPL", "buy", "1", "150.00"))
        seen: dict[str, dict[str, Any]] = {}
        while len(seen) < 2:
            frame = msgspec.json.decode(await ws.recv())
            seen[frame["stream"]] = frame["data"]
    assert seen["trade_updates"]["event"] == "new"
    assert seen["trade_updates"]["order"]["id"] == seen["order_responses"]["order"]["id"]


async def test_many_orders_in_flight_on_one_connection_are_each_answered(
    exchange: ExchangeStack,
    alice: Trader,
) -> None:
    async with stream_session(exchange, alice) as ws:
        for n in range(20):
            body = limit("AAPL", "buy", "1", f"{140 + n}.00")
            await send_action(ws, "submit_order", body, request_id=n)
        answers = [await next_frame(ws, "order_responses") for _ in range(20)]
    assert sorted(a["request_id"] for a in answers) == list(range(20))
    assert {a["status"] for a in answers} == {200}
    by_request = {a["request_id"]: a["order"]["limit_price"] for a in answers}
    assert by_request == {n: f"{140 + n}.00" for n in range(20)}
    listed = (await alice.http.get("/v2/orders")).json()
    assert len(listed) == 20


async def test_one_client_order_id_sent_twice_at_once_makes_one_order(
    exchange: ExchangeStack,
    alice: Trader,
) -> None:
    body = limit("AAPL", "buy", "1", "150.00", client_order_id="only-once")
    async with stream_session(exchange, alice) as ws:
        for n in (1, 2):
            await send_action(ws, "submit_order", body, request_id=n)
        answers = sorted(
            [await next_frame(ws, "order_responses") for _ in (1, 2)], key=lambda a: a["status"]
        )
    assert [a["status"] for a in answers] == [200, 422]
    assert answers[1]["message"] == "client_order_id must be unique"
    assert len((await alice.http.get("/v2/orders")).json()) == 1


async def test_an_order_before_authenticating_is_refused_and_the_connection_stays(
    exchange: ExchangeStack,
    alice: Trader,
) -> None:
    journal = (await exchange.js.stream_info("ORDERS")).state.last_seq
    async with stream_session(exchange, None) as ws:
        answer = await order_action(ws, "submit_order", limit("AAPL", "buy", "1", "150.00"))
        assert (answer["status"], answer["reason"]) == (401, "unauthorized")
        assert "authenticate first" in answer["message"]
        auth = {"action": "auth", "key": alice.key_id, "secret": alice.secret}
        await ws.send(msgspec.json.encode(auth))
        assert (await next_frame(ws, "authorization"))["status"] == "authorized"
    assert (await exchange.js.stream_info("ORDERS")).state.last_seq == journal


async def test_frames_that_are_no_action_get_an_error_and_change_nothing(
    exchange: ExchangeStack,
    alice: Trader,
) -> None:
    journal = (await exchange.js.stream_info("ORDERS")).state.last_seq
    async with stream_session(exchange, alice) as ws:
        await ws.send('{"action": "submit_order", "data": {"symbol": ')
        error = (await next_frame(ws, "error"))["error"]
        assert "submit_order, replace_order or cancel_order" in error
        await ws.send(msgspec.json.encode({"action": "submit_order", "request_id": "x" * 65}))
        assert "request_id" in (await next_frame(ws, "error"))["error"]
        padded = {**limit("AAPL", "buy", "1", "150.00"), "pad": "x" * MAX_BODY}
        await send_action(ws, "submit_order", padded)
        assert "message too large" in (await next_frame(ws, "error"))["error"]
        answer = await order_action(ws, "cancel_order", "not an object")
        assert (answer["status"], answer["reason"]) == (400, "invalid_request")
        # and the connection still serves
        placed = await order_action(ws, "submit_order", limit("AAPL", "buy", "1", "150.00"))
        assert placed["status"] == 200
    assert (await exchange.js.stream_info("ORDERS")).state.last_seq > journal
    assert len((await alice.http.get("/v2/orders")).json()) == 1


async def test_the_key_rate_limit_applies_to_order_actions(
    exchange: ExchangeStack, alice: Trader, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert exchange.gateway.context is not None
    # Three tokens, refilled one per 100 s: the authentication and two orders use them.
    monkeypatch.setattr(exchange.gateway.context, "limiter", RateLimiter(0.01, 3))
    async with stream_session(exchange, alice) as ws:
        body = limit("AAPL", "buy", "1", "150.00")
        answers = [await order_action(ws, "submit_order", body, request_id=n) for n in range(3)]
    assert [a["status"] for a in answers] == [200, 200, 429]
    assert answers[2]["reason"] == "rate_limited" and answers[2]["retry_after"] >= 1
    monkeypatch.undo()
    assert len((await alice.http.get("/v2/orders")).json()) == 2


async def test_an_order_in_flight_when_the_client_leaves_is_still_placed(
    exchange: ExchangeStack,
    alice: Trader,
) -> None:
    """Leaving only ends the wait for the answer: the order, once sent, is on the journal."""
    async with stream_session(exchange, alice) as ws:
        body = limit("AAPL", "buy", "1", "150.00", client_order_id="left")
        await send_action(ws, "submit_order", body, request_id=None)

    async def placed() -> bool:
        found = await alice.http.get(
            "/v2/orders:by_client_order_id", params={"client_order_id": "left"}
        )
        return found.status_code == 200 and found.json()["status"] == "new"

    await eventually(placed, message="the order was never placed")


async def test_every_order_sent_before_leaving_is_placed_past_the_in_flight_window(
    exchange: ExchangeStack,
) -> None:
    """More orders than MAX_IN_FLIGHT, then the client leaves at once: those the gateway had
    not read yet are read after and placed too."""
    await exchange.reference("AAPL", "190.00")
    bob = await exchange.trader("10000000")
    count = MAX_IN_FLIGHT * 2 + 20
    async with stream_session(exchange, bob) as ws:
        for n in range(count):
            body = limit("AAPL", "buy", "1", "150.00", client_order_id=f"left-{n}")
            await send_action(ws, "submit_order", body, request_id=n)

    async def all_placed() -> bool:
        listed = await bob.http.get("/v2/orders", params={"limit": "500"})
        return len(listed.json()) == count

    await eventually(all_placed, timeout=60, message=f"not all {count} orders were placed")


async def test_request_ids_beyond_what_json_numbers_hold_are_refused_on_either_codec(
    exchange: ExchangeStack, alice: Trader
) -> None:
    """A msgpack connection may send JSON text frames too; a request id it could not echo back
    (2**64 does not fit msgpack) is refused up front, and the connection goes on."""
    url = exchange.url.replace("http", "ws") + "/stream"
    headers = {"Content-Type": "application/msgpack"}
    async with connect(url, additional_headers=headers) as ws:
        auth = {"action": "auth", "key": alice.key_id, "secret": alice.secret}
        await ws.send(msgspec.msgpack.encode(auth))
        assert msgspec.msgpack.decode(await ws.recv())["data"]["status"] == "authorized"
        body = limit("AAPL", "buy", "1", "150.00")
        for huge in (2**64, 2**53 + 1):
            await ws.send(json.dumps({"action": "submit_order", "request_id": huge, "data": body}))
            frame = msgspec.msgpack.decode(await ws.recv())
            assert frame["stream"] == "error" and "request_id" in frame["data"]["error"], frame
        await ws.send(
            msgspec.msgpack.encode({"action": "submit_order", "request_id": 2**53, "data": body})
        )
        frame = msgspec.msgpack.decode(await ws.recv())
        assert frame["stream"] == "order_responses"
        assert (frame["data"]["request_id"], frame["data"]["status"]) == (2**53, 200)
    assert len((await alice.http.get("/v2/orders")).json()) == 1


async def test_data_is_read_as_rest_reads_a_body(exchange: ExchangeStack, alice: Trader) -> None:
    """Numbers out of a double's range, which a strict parser refuses outright: the answer
    still comes with its request id, and says what REST says."""
    text = (
        '{"symbol": "AAPL", "qty": 1e400, "side": "buy", "type": "market", "time_in_force": "day"}'
    )
    rest = await alice.http.post(
        "/v2/orders", content=text, headers={"content-type": "application/json"}
    )
    async with stream_session(exchange, alice) as ws:
        await ws.send(f'{{"action": "submit_order", "request_id": "big", "data": {text}}}')
        answer = await next_frame(ws, "order_responses")
    assert rest.status_code == 422, rest.text
    assert answer == {"request_id": "big", "action": "submit_order", "status": 422, **rest.json()}
