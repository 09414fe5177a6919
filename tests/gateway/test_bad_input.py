"""Every bad request gets a precise 4xx in Alpaca's shape and changes nothing.

Each case sends one bad request and then checks that the account's cash and buying power, its
orders and the ORDERS journal are as they were: a refusal happens at the edge, before anything
is published.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pytest

from bourse.gateway.app import MAX_BODY
from tests.conftest import eventually
from tests.gateway.conftest import ExchangeStack, Trader
from tests.gateway.test_stream_orders import order_action, stream_session

ORDER: dict[str, Any] = {
    "symbol": "AAPL",
    "qty": "1",
    "side": "buy",
    "type": "limit",
    "time_in_force": "day",
    "limit_price": "100.00",
}
MARKET: dict[str, Any] = {
    "symbol": "AAPL",
    "qty": "1",
    "side": "buy",
    "type": "market",
    "time_in_force": "day",
}
UNSET: Any = object()
NOT_A_UUID = "not-a-uuid"
UNKNOWN_ID = "0b6a5b3e-2f3c-4a43-9c1f-1c0e4e2a9d11"

Key = Literal["trader", "admin", "none", "unknown key", "wrong secret"]


def order(**changes: Any) -> dict[str, Any]:
    """The valid limit order with `changes`; a value of UNSET removes the field."""
    body = {**ORDER, **changes}
    return {k: v for k, v in body.items() if v is not UNSET}


def raw(text: str) -> bytes:
    return text.encode()


@dataclass(frozen=True)
class Bad:
    method: str
    path: str  # "{other}" is another account's open order, "{me}" the caller's account
    status: int
    says: tuple[str, ...]  # fragments the error message must contain
    json: Any = UNSET
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    key: Key = "trader"
    chunked: bool = False


def case(
    name: str, method: str, path: str, status: int, *says: str, **options: Any
) -> Any:  # pytest's ParameterSet is not public
    return pytest.param(Bad(method, path, status, says, **options), id=name)


JSON_TYPE = {"content-type": "application/json"}

CASES = [
    # ---- the body is not the JSON object it should be ----
    case(
        "malformed JSON",
        "POST",
        "/v2/orders",
        400,
        "malformed JSON",
        content=raw('{"symbol": "AAPL", "qty": '),
        headers=JSON_TYPE,
    ),
    case(
        "JSON nested too deep to parse",
        "POST",
        "/v2/orders",
        400,
        "body",
        content=raw("[" * 30_000 + "]" * 30_000),
        headers=JSON_TYPE,
    ),
    case("body is a list", "POST", "/v2/orders", 400, "JSON object", json=[ORDER]),
    case("body is a string", "POST", "/v2/orders", 400, "JSON object", json="AAPL"),
    case("body is a number", "POST", "/v2/orders", 400, "JSON object", json=1),
    case("body is null", "POST", "/v2/orders", 400, "JSON object", json=None),
    case("body is empty", "POST", "/v2/orders", 400, "JSON object", content=b""),
    case(
        "body is not JSON",
        "POST",
        "/v2/orders",
        400,
        "JSON object",
        content=raw(json.dumps(ORDER)),
        headers={"content-type": "text/plain"},
    ),
    # ---- wrong types ----
    case("qty is a list", "POST", "/v2/orders", 422, "qty", "decimal", json=order(qty=[1])),
    case("qty is a boolean", "POST", "/v2/orders", 422, "qty", "decimal", json=order(qty=True)),
    case("qty is a word", "POST", "/v2/orders", 422, "qty", "'ten'", json=order(qty="ten")),
    case("side is a number", "POST", "/v2/orders", 422, "side", "'buy'", json=order(side=5)),
    case("type is unknown", "POST", "/v2/orders", 422, "type", "'limit'", json=order(type="x")),
    case(
        "time_in_force is unknown",
        "POST",
        "/v2/orders",
        422,
        "time_in_force",
        "'gtc'",
        json=order(time_in_force="forever"),
    ),
    case("symbol is a number", "POST", "/v2/orders", 422, "symbol", json=order(symbol=7)),
    # ---- not finite ----
    case(
        "qty is NaN",
        "POST",
        "/v2/orders",
        422,
        "qty",
        "finite",
        content=raw(json.dumps(ORDER).replace('"qty": "1"', '"qty": NaN')),
        headers=JSON_TYPE,
    ),
    case(
        "limit_price is Infinity",
        "POST",
        "/v2/orders",
        422,
        "limit_price",
        "finite",
        content=raw(
            json.dumps(ORDER).replace('"limit_price": "100.00"', '"limit_price": Infinity')
        ),
        headers=JSON_TYPE,
    ),
    case(
        "qty is -Infinity",
        "POST",
        "/v2/orders",
        422,
        "qty",
        "finite",
        content=raw(json.dumps(ORDER).replace('"qty": "1"', '"qty": -Infinity')),
        headers=JSON_TYPE,
    ),
    case("qty is 'NaN'", "POST", "/v2/orders", 422, "qty", "finite", json=order(qty="NaN")),
    # ---- quantities and prices ----
    case("qty is zero", "POST", "/v2/orders", 422, "qty", "> 0", json=order(qty="0")),
    case("qty is negative", "POST", "/v2/orders", 422, "qty", "> 0", json=order(qty=-5)),
    case("qty is 1e30", "POST", "/v2/orders", 422, "qty", "1E+30", json=order(qty=1e30)),
    case(
        "qty is 1e999999",
        "POST",
        "/v2/orders",
        422,
        "qty",
        "beyond",
        json=order(qty="1e999999"),
    ),
    case(
        "qty is 1e-9999999",
        "POST",
        "/v2/orders",
        422,
        "qty 1E-9999999",
        "lot size 1",
        json=order(qty="1e-9999999"),
    ),
    case(
        "limit_price is 1e-9999999",
        "POST",
        "/v2/orders",
        422,
        "limit_price 1E-9999999",
        "tick size 0.01",
        json=order(limit_price="1e-9999999"),
    ),
    case(
        "limit_price is 1e30",
        "POST",
        "/v2/orders",
        422,
        "limit_price",
        "beyond",
        json=order(limit_price="1e30"),
    ),
    case(
        "limit_price is negative",
        "POST",
        "/v2/orders",
        422,
        "limit_price",
        "> 0",
        json=order(limit_price="-100.00"),
    ),
    case(
        "price off the tick",
        "POST",
        "/v2/orders",
        422,
        "limit_price 190.001",
        "tick size 0.01",
        json=order(limit_price="190.001"),
    ),
    case(
        "fractional share",
        "POST",
        "/v2/orders",
        422,
        "qty 0.5",
        "lot size 1",
        json=order(qty="0.5"),
    ),
    case(
        "crypto qty off the lot",
        "POST",
        "/v2/orders",
        422,
        "qty 0.00005",
        "BTC-USD",
        "lot size 0.0001",
        json=order(symbol="BTC-USD", qty="0.00005", time_in_force="gtc", limit_price="100.00"),
    ),
    # ---- what the order is ----
    case("unknown symbol", "POST", "/v2/orders", 422, "'ZZZZ'", json=order(symbol="ZZZZ")),
    case("empty symbol", "POST", "/v2/orders", 422, "symbol", json=order(symbol="")),
    case("unknown field", "POST", "/v2/orders", 422, "colour", "unknown", json=order(colour="red")),
    case("missing side", "POST", "/v2/orders", 422, "side", "required", json=order(side=UNSET)),
    case("missing symbol", "POST", "/v2/orders", 422, "symbol", json=order(symbol=UNSET)),
    case("missing qty", "POST", "/v2/orders", 422, "qty", "required", json=order(qty=UNSET)),
    case(
        "limit without limit_price",
        "POST",
        "/v2/orders",
        422,
        "limit_price is required",
        json=order(limit_price=UNSET),
    ),
    case(
        "market with limit_price",
        "POST",
        "/v2/orders",
        422,
        "limit_price is not allowed",
        json={**MARKET, "limit_price": "190.00"},
    ),
    case(
        "stop without stop_price",
        "POST",
        "/v2/orders",
        422,
        "stop_price is required",
        json={**MARKET, "type": "stop"},
    ),
    case(
        "notional",
        "POST",
        "/v2/orders",
        422,
        "notional",
        json={**MARKET, "qty": None, "notional": "100"},
    ),
    case(
        "client_order_id too long",
        "POST",
        "/v2/orders",
        422,
        "client_order_id",
        "128",
        json=order(client_order_id="x" * 129),
    ),
    case(
        # It travels in the journal message's Nats-Msg-Id header: a line break would end
        # the header there and start another.
        "client_order_id with a line break",
        "POST",
        "/v2/orders",
        422,
        "client_order_id",
        "control",
        json=order(client_order_id="abc\r\nNats-Expected-Stream: NOPE"),
    ),
    case(
        # nats-py trims header values: "abc " would take the Nats-Msg-Id of "abc".
        "client_order_id ending with a space",
        "POST",
        "/v2/orders",
        422,
        "client_order_id",
        "space",
        json=order(client_order_id="abc "),
    ),
    case(
        "client_order_id with a control character",
        "POST",
        "/v2/orders",
        422,
        "client_order_id",
        "control",
        json=order(client_order_id="abc\x00def"),
    ),
    # ---- too large ----
    case(
        "oversized body with Content-Length",
        "POST",
        "/v2/orders",
        413,
        str(MAX_BODY),
        json=order(client_order_id="x" * (MAX_BODY + 1)),
    ),
    case(
        "oversized chunked body",
        "POST",
        "/v2/orders",
        413,
        str(MAX_BODY),
        content=raw(json.dumps(order(client_order_id="x" * (MAX_BODY + 1)))),
        headers=JSON_TYPE,
        chunked=True,
    ),
    # ---- orders that are not yours, or not orders ----
    case("GET another's order", "GET", "/v2/orders/{other}", 404, "{other}", "not found"),
    case(
        "PATCH another's order",
        "PATCH",
        "/v2/orders/{other}",
        404,
        "{other}",
        "not found",
        json={"qty": "2"},
    ),
    case("DELETE another's order", "DELETE", "/v2/orders/{other}", 404, "{other}", "not found"),
    case("GET unknown order", "GET", f"/v2/orders/{UNKNOWN_ID}", 404, UNKNOWN_ID),
    case("GET non-UUID order", "GET", f"/v2/orders/{NOT_A_UUID}", 404, NOT_A_UUID),
    case(
        "PATCH non-UUID order",
        "PATCH",
        f"/v2/orders/{NOT_A_UUID}",
        404,
        NOT_A_UUID,
        json={"qty": "2"},
    ),
    case("DELETE non-UUID order", "DELETE", f"/v2/orders/{NOT_A_UUID}", 404, NOT_A_UUID),
    # two faults at once: the body is checked before the order id
    case(
        "PATCH non-UUID order with an unknown field",
        "PATCH",
        f"/v2/orders/{NOT_A_UUID}",
        422,
        "bogus: unknown field",
        json={"bogus": 1},
    ),
    case(
        "PATCH another's order with a list body",
        "PATCH",
        "/v2/orders/{other}",
        400,
        "JSON object",
        json=[{"qty": "2"}],
    ),
    case(
        "unknown client_order_id",
        "GET",
        "/v2/orders:by_client_order_id?client_order_id=nope",
        404,
        "'nope'",
    ),
    # ---- who is calling ----
    case("no API key", "GET", "/v2/account", 401, "APCA-API-KEY-ID", key="none"),
    case("unknown API key", "GET", "/v2/account", 401, "API key", key="unknown key"),
    case("wrong secret", "GET", "/v2/account", 401, "secret", key="wrong secret"),
    case(
        "no API key on POST /v2/orders",
        "POST",
        "/v2/orders",
        401,
        "APCA-API-KEY-ID",
        json=ORDER,
        key="none",
    ),
    case(
        "trader key creates an account",
        "POST",
        "/admin/accounts",
        403,
        "admin key",
        json={"cash": "1000000"},
    ),
    case("trader key lists accounts", "GET", "/admin/accounts", 403, "admin key"),
    case(
        "trader key deposits",
        "POST",
        "/admin/accounts/{me}/deposits",
        403,
        "admin key",
        json={"amount": "1000000"},
    ),
    # ---- administration, with an admin key ----
    case(
        "deposit to an unknown account",
        "POST",
        f"/admin/accounts/{UNKNOWN_ID}/deposits",
        404,
        UNKNOWN_ID,
        json={"amount": "100"},
        key="admin",
    ),
    case(
        "negative deposit",
        "POST",
        "/admin/accounts/{me}/deposits",
        422,
        "amount",
        "cents from 0.01",
        "-100",
        json={"amount": "-100"},
        key="admin",
    ),
    case(
        "absurd deposit",
        "POST",
        "/admin/accounts/{me}/deposits",
        422,
        "amount",
        "1E+999999",
        json={"amount": "1e999999"},
        key="admin",
    ),
    case(
        "deposit of a tenth of a cent",
        "POST",
        "/admin/accounts/{me}/deposits",
        422,
        "amount",
        "cents",
        json={"amount": "0.001"},
        key="admin",
    ),
    case(
        "NaN deposit",
        "POST",
        "/admin/accounts/{me}/deposits",
        422,
        "amount",
        "finite",
        json={"amount": "NaN"},
        key="admin",
    ),
    case(
        "trader key transfers coins in",
        "POST",
        "/admin/accounts/{me}/assets",
        403,
        "admin key",
        json={"symbol": "BTC/USD", "qty": "1", "price": "60000"},
    ),
    case(
        "transfer into an unknown account",
        "POST",
        f"/admin/accounts/{UNKNOWN_ID}/assets",
        404,
        UNKNOWN_ID,
        json={"symbol": "BTC/USD", "qty": "1", "price": "60000"},
        key="admin",
    ),
    case(
        "transfer of an unknown asset",
        "POST",
        "/admin/accounts/{me}/assets",
        422,
        "'DOGE/USD'",
        "not found",
        json={"symbol": "DOGE/USD", "qty": "1", "price": "1"},
        key="admin",
    ),
    case(
        "transfer off the lot size",
        "POST",
        "/admin/accounts/{me}/assets",
        422,
        "0.00005",
        "lot size 0.0001",
        json={"symbol": "BTC-USD", "qty": "0.00005", "price": "60000"},
        key="admin",
    ),
    case(
        "transfer of zero coins",
        "POST",
        "/admin/accounts/{me}/assets",
        422,
        "qty must be > 0",
        json={"symbol": "BTC-USD", "qty": "0", "price": "60000"},
        key="admin",
    ),
    case(
        "transfer at a negative price",
        "POST",
        "/admin/accounts/{me}/assets",
        422,
        "price must be > 0",
        json={"symbol": "BTC-USD", "qty": "1", "price": "-60000"},
        key="admin",
    ),
    case(
        "transfer at a NaN price",
        "POST",
        "/admin/accounts/{me}/assets",
        422,
        "price",
        "finite",
        json={"symbol": "BTC-USD", "qty": "1", "price": "NaN"},
        key="admin",
    ),
    case(
        "transfer with an unknown field",
        "POST",
        "/admin/accounts/{me}/assets",
        422,
        "wallet",
        json={"symbol": "BTC-USD", "qty": "1", "price": "60000", "wallet": "x"},
        key="admin",
    ),
    case(
        "transfer without a price",
        "POST",
        "/admin/accounts/{me}/assets",
        422,
        "price",
        json={"symbol": "BTC-USD", "qty": "1"},
        key="admin",
    ),
    case(
        "account with negative cash",
        "POST",
        "/admin/accounts",
        422,
        "cash",
        json={"cash": "-1"},
        key="admin",
    ),
    case(
        "account with 1E-9999999 cash",
        "POST",
        "/admin/accounts",
        422,
        "cash",
        "1E-9999999",
        json={"cash": "1e-9999999"},
        key="admin",
    ),
    case(
        "account with an unknown role",
        "POST",
        "/admin/accounts",
        422,
        "role",
        json={"role": "root"},
        key="admin",
    ),
    # ---- query parameters of GET /v2/orders ----
    case("status=bogus", "GET", "/v2/orders?status=bogus", 422, "status", "'open'"),
    case("after year 1", "GET", "/v2/orders?after=0001-01-01", 422, "after", "1970-01-01"),
    case(
        "until year 1",
        "GET",
        "/v2/orders?until=0001-01-01T00:00:00Z",
        422,
        "until",
        "1970-01-01",
    ),
    case(
        "fills until year 1",
        "GET",
        "/v2/account/activities?until=0001-01-01",
        422,
        "until",
        "1970-01-01",
    ),
    case("limit=0", "GET", "/v2/orders?limit=0", 422, "limit", "1"),
    case("limit=501", "GET", "/v2/orders?limit=501", 422, "limit", "500"),
    case("limit=ten", "GET", "/v2/orders?limit=ten", 422, "limit", "integer"),
    case("after=not-a-date", "GET", "/v2/orders?after=not-a-date", 422, "after", "'not-a-date'"),
    case("until=2024-13-01", "GET", "/v2/orders?until=2024-13-01", 422, "until", "2024-13-01"),
    case("direction=sideways", "GET", "/v2/orders?direction=sideways", 422, "direction", "'asc'"),
    case("symbols=ZZZZ", "GET", "/v2/orders?symbols=ZZZZ", 422, "'ZZZZ'"),
    # ---- positions ----
    case("close a position you lack", "DELETE", "/v2/positions/AAPL", 404, "AAPL"),
    case("get a position you lack", "GET", "/v2/positions/AAPL", 404, "AAPL"),
    case("close an unknown asset", "DELETE", "/v2/positions/ZZZZ", 422, "'ZZZZ'"),
    case(
        "close percentage=150",
        "DELETE",
        "/v2/positions/AAPL?percentage=150",
        422,
        "percentage",
        "150",
    ),
    case(
        "close percentage=NaN",
        "DELETE",
        "/v2/positions/AAPL?percentage=NaN",
        422,
        "percentage",
        "finite",
    ),
    case("close qty=-1", "DELETE", "/v2/positions/AAPL?qty=-1", 422, "qty", "-1"),
    case("close qty=abc", "DELETE", "/v2/positions/AAPL?qty=abc", 422, "qty", "'abc'"),
    case(
        "close with qty and percentage",
        "DELETE",
        "/v2/positions/AAPL?qty=1&percentage=50",
        422,
        "qty or percentage",
    ),
    # ---- routes ----
    case("unknown endpoint", "GET", "/v2/nowhere", 404, "endpoint"),
    case("PUT on /v2/orders", "PUT", "/v2/orders", 405, "Method Not Allowed", json=ORDER),
    case("unknown asset", "GET", "/v2/assets/ZZZZ", 404, "ZZZZ"),
]


async def _chunks(payload: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


async def _snapshot(exchange: ExchangeStack, http: Any) -> tuple[Any, ...]:
    account = (await http.get("/v2/account")).json()
    listed = await http.get("/v2/orders", params={"status": "all"})
    journal = await exchange.js.stream_info("ORDERS")
    return account["cash"], account["buying_power"], listed.json(), journal.state.last_seq


async def _funded_snapshot(exchange: ExchangeStack, alice: Trader) -> tuple[Any, ...]:
    """Alice's snapshot once her 10,000 shows: the accounts service, which answers for cash,
    follows the journal on its own."""
    before: tuple[Any, ...] = ()

    async def funded() -> bool:
        nonlocal before
        before = await _snapshot(exchange, alice.http)
        return before[:3] == ("10000", "10000", [])

    await eventually(funded, message="alice's account never showed its cash")
    return before


@pytest.mark.parametrize("bad", CASES)
async def test_a_bad_request_is_refused_precisely_and_changes_nothing(
    exchange: ExchangeStack, bad: Bad
) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader("10000")
    path = bad.path.replace("{me}", alice.account_id)
    says = tuple(s.replace("{me}", alice.account_id) for s in bad.says)
    if "{other}" in bad.path:
        bob = await exchange.trader("10000")
        placed = await bob.http.post("/v2/orders", json=ORDER)
        assert placed.status_code == 200, placed.text
        path = path.replace("{other}", placed.json()["id"])
        says = tuple(s.replace("{other}", placed.json()["id"]) for s in says)
    before = await _funded_snapshot(exchange, alice)

    headers = {
        "trader": alice.headers,
        "admin": exchange.admin.headers,
        "none": {},
        "unknown key": {"APCA-API-KEY-ID": "PKNOSUCHKEY", "APCA-API-SECRET-KEY": "x" * 40},
        "wrong secret": {**alice.headers, "APCA-API-SECRET-KEY": "x" * 40},
    }[bad.key]
    http = exchange.client({**headers, **bad.headers})
    content: Any = bad.content
    if bad.chunked:
        assert bad.content is not None
        content = _chunks(bad.content)
    if bad.json is not UNSET:
        answer = await http.request(bad.method, path, json=bad.json)
    else:
        answer = await http.request(bad.method, path, content=content)

    assert answer.status_code == bad.status, answer.text
    body = answer.json()
    assert set(body) == {"code", "message", "reason"}, body
    assert body["code"] == bad.status * 100_000 + 10_000
    for fragment in says:
        assert fragment in body["message"], (fragment, body["message"])
    assert await _snapshot(exchange, alice.http) == before


# ---- the same requests as order actions on the /stream WebSocket ----


def _as_action(bad: Bad) -> tuple[str, Any] | None:
    """The order action and data that ask what `bad` asks over REST (None: no such action)."""
    if bad.key != "trader" or bad.headers or bad.content is not None:
        return None
    if (bad.method, bad.path) == ("POST", "/v2/orders") and bad.json is not UNSET:
        return "submit_order", bad.json
    if bad.path.startswith("/v2/orders/") and "?" not in bad.path:
        order_id = bad.path.removeprefix("/v2/orders/")
        if bad.method == "DELETE":
            return "cancel_order", {"order_id": order_id}
        if bad.method == "PATCH" and isinstance(bad.json, dict):
            return "replace_order", {"order_id": order_id, **bad.json}
        if bad.method == "PATCH" and bad.json is not UNSET:
            return "replace_order", bad.json  # not an object: nowhere to put the id
    return None


def _fits_a_frame(bad: Bad) -> bool:
    """A frame over MAX_BODY is refused before its request_id is read: test_stream_orders.py."""
    action = _as_action(bad)
    return action is not None and len(json.dumps(action[1])) <= MAX_BODY


STREAM_CASES = [(c.id, c.values[0]) for c in CASES if _fits_a_frame(c.values[0])]


async def test_order_actions_on_the_stream_are_answered_as_rest_answers_them(
    exchange: ExchangeStack,
) -> None:
    """Each request of CASES that an order action can make: the same status, code, message
    and reason as the REST endpoint, and nothing changes (one account, case after case)."""
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader("10000")
    bob = await exchange.trader("10000")
    placed = await bob.http.post("/v2/orders", json=ORDER)
    assert placed.status_code == 200, placed.text
    before = await _funded_snapshot(exchange, alice)
    assert len(STREAM_CASES) >= 40
    async with stream_session(exchange, alice) as ws:
        for name, bad in STREAM_CASES:
            path = bad.path.replace("{other}", placed.json()["id"])
            action = _as_action(replace(bad, path=path))
            assert action is not None
            rest = await alice.http.request(
                bad.method, path, **({} if bad.json is UNSET else {"json": bad.json})
            )
            assert rest.status_code == bad.status, (name, rest.text)
            answer = await order_action(ws, action[0], action[1], request_id=name)
            assert answer == {
                "request_id": name,
                "action": action[0],
                "status": rest.status_code,
                **rest.json(),
            }, name
    assert await _snapshot(exchange, alice.http) == before
