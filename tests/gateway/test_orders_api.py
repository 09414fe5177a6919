"""POST/GET/DELETE /v2/orders through the gateway, against the real services."""

from __future__ import annotations

import asyncio

from tests.gateway.conftest import ExchangeStack, Trader


def limit(symbol: str, side: str, qty: str, price: str, **extra: str) -> dict[str, str]:
    return {
        "symbol": symbol,
        "qty": qty,
        "side": side,
        "type": "limit",
        "time_in_force": "gtc",
        "limit_price": price,
        **extra,
    }


async def test_crossing_limit_orders_fill_and_move_cash_and_positions(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    seller = await exchange.trader(shorting=True)
    buyer = await exchange.trader("10000")

    resting = await seller.http.post("/v2/orders", json=limit("AAPL", "sell", "10", "190.00"))
    assert resting.status_code == 200, resting.text
    assert resting.json()["status"] == "new"
    taking = await buyer.http.post("/v2/orders", json=limit("AAPL", "buy", "10", "190.00"))
    assert taking.status_code == 200, taking.text
    assert taking.json()["status"] == "filled"
    assert taking.json()["filled_avg_price"] == "190.00"

    account = (await buyer.http.get("/v2/account")).json()
    assert account["cash"] == "8100.00"
    positions = (await buyer.http.get("/v2/positions")).json()
    assert [(p["symbol"], p["qty"]) for p in positions] == [("AAPL", "10")]
    order_id = resting.json()["id"]
    seen = (await seller.http.get(f"/v2/orders/{order_id}")).json()
    assert seen["status"] == "filled"


async def test_someone_elses_order_is_not_found(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")
    alice, bob = await exchange.trader(), await exchange.trader()
    placed = await alice.http.post("/v2/orders", json=limit("AAPL", "buy", "1", "100.00"))
    order_id = placed.json()["id"]
    assert (await bob.http.get(f"/v2/orders/{order_id}")).status_code == 404
    assert (await bob.http.delete(f"/v2/orders/{order_id}")).status_code == 404
    assert (await alice.http.get(f"/v2/orders/{order_id}")).json()["status"] == "new"


async def test_concurrent_posts_with_one_client_order_id_make_one_order(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader()
    body = limit("AAPL", "buy", "1", "100.00", client_order_id="once")
    answers = await asyncio.gather(*(alice.http.post("/v2/orders", json=body) for _ in range(10)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [422] * 9, [a.text for a in answers]
    listed = (await alice.http.get("/v2/orders", params={"status": "all"})).json()
    assert len(listed) == 1
    assert listed[0]["client_order_id"] == "once"


async def test_insufficient_buying_power_is_403_and_changes_nothing(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader("100")
    refused = await alice.http.post("/v2/orders", json=limit("AAPL", "buy", "10", "190.00"))
    assert refused.status_code == 403
    assert refused.json()["code"] == 40310000
    assert refused.json()["reason"] == "insufficient_buying_power"
    account = (await alice.http.get("/v2/account")).json()
    assert account["buying_power"] == "100"
    assert (await alice.http.get("/v2/orders")).json() == []


async def test_cancel_then_cancel_again(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader()
    placed = (await alice.http.post("/v2/orders", json=limit("AAPL", "buy", "1", "100.00"))).json()
    assert (await alice.http.delete(f"/v2/orders/{placed['id']}")).status_code == 204
    assert (await alice.http.get(f"/v2/orders/{placed['id']}")).json()["status"] == "canceled"
    again = await alice.http.delete(f"/v2/orders/{placed['id']}")
    assert again.status_code == 422
    account = (await alice.http.get("/v2/account")).json()
    assert account["buying_power"] == account["cash"]


async def test_orders_can_be_listed_by_side(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader(shorting=True)
    await alice.http.post("/v2/orders", json=limit("AAPL", "buy", "1", "100.00"))
    await alice.http.post("/v2/orders", json=limit("AAPL", "sell", "1", "200.00"))
    sells = (await alice.http.get("/v2/orders", params={"side": "sell"})).json()
    assert [o["side"] for o in sells] == ["sell"]
    bad = await alice.http.get("/v2/orders", params={"side": "short"})
    assert bad.status_code == 422


async def test_a_body_sent_as_a_form_or_untyped_is_read_as_json(exchange: ExchangeStack) -> None:
    """curl -d sends application/x-www-form-urlencoded; Alpaca reads the JSON all the same."""
    import json

    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader()
    body = json.dumps(limit("AAPL", "buy", "1", "100.00")).encode()
    for content_type in ("application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        answer = await alice.http.post("/v2/orders", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
    text = await alice.http.post("/v2/orders", content=body, headers={"content-type": "text/plain"})
    assert text.status_code == 400


async def test_fills_are_listed_as_alpaca_account_activities_page_by_page(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    seller = await exchange.trader(shorting=True)
    buyer = await exchange.trader("10000")
    resting = await seller.http.post("/v2/orders", json=limit("AAPL", "sell", "10", "190.00"))
    order_id = resting.json()["id"]
    for qty in ("4", "6"):
        taking = await buyer.http.post("/v2/orders", json=limit("AAPL", "buy", qty, "190.00"))
        assert taking.json()["status"] == "filled", taking.text

    async def fills(query: str = "", who: Trader = seller) -> list[dict[str, str]]:
        answer = await who.http.get(f"/v2/account/activities{query}")
        assert answer.status_code == 200, answer.text
        found: list[dict[str, str]] = answer.json()
        return found

    newest_first = await fills()
    assert [
        (a["activity_type"], a["type"], a["qty"], a["cum_qty"], a["leaves_qty"], a["order_status"])
        for a in newest_first
    ] == [
        ("FILL", "fill", "6", "10", "0", "filled"),
        ("FILL", "partial_fill", "4", "4", "6", "partially_filled"),
    ]
    assert {(a["order_id"], a["side"], a["symbol"], a["price"]) for a in newest_first} == {
        (order_id, "sell", "AAPL", "190.00")
    }
    assert all(a["id"].split("::")[0].isdigit() for a in newest_first)
    assert await fills("/FILL") == newest_first
    assert await fills("?direction=asc") == newest_first[::-1]

    # Page by page: a page token is the last id of the page before.
    first = await fills("?page_size=1")
    second = await fills(f"?page_size=1&page_token={first[0]['id']}")
    third = await fills(f"?page_size=1&page_token={second[0]['id']}")
    assert [*first, *second, *third] == newest_first

    # By time: today's, none before today, none with a type Bourse has none of.
    today = newest_first[0]["transaction_time"][:10]
    assert await fills(f"?date={today}") == newest_first
    assert await fills(f"?until={today}") == []
    assert await fills("?after=9999-12-31") == []  # beyond 64-bit nanoseconds: still a bound
    assert await fills("?activity_types=DIV,CSD") == []
    # Each account sees its own: the buyer's two orders each filled once.
    assert [a["side"] for a in await fills(who=buyer)] == ["buy", "buy"]

    assert await fills("?date=2300-01-01") == []  # a day past 64-bit nanoseconds: none
    for query, says in [
        ("/BOGUS", "'BOGUS'"),
        ("?page_token=nope", "page_token"),
        ("?page_token=1::%C2%B2", "page_token"),  # a digit to str.isdigit, not to int()
        ("?date=yesterday", "date"),
        ("?page_size=0", "page_size"),
    ]:
        refused = await seller.http.get(f"/v2/account/activities{query}")
        assert refused.status_code == 422, (query, refused.text)
        assert says in refused.json()["message"], (query, refused.json())


async def test_a_replacement_orders_fills_count_what_its_predecessor_filled(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    buyer = await exchange.trader("10000")
    seller = await exchange.trader(shorting=True)
    first = await buyer.http.post("/v2/orders", json=limit("AAPL", "buy", "10", "189.00"))
    assert first.json()["status"] == "new", first.text
    sold = await seller.http.post("/v2/orders", json=limit("AAPL", "sell", "4", "189.00"))
    assert sold.json()["status"] == "filled", sold.text
    replaced = await buyer.http.patch(
        f"/v2/orders/{first.json()['id']}", json={"limit_price": "189.50"}
    )
    assert replaced.status_code == 200, replaced.text
    second = replaced.json()
    assert (second["qty"], second["filled_qty"]) == ("10", "4")
    more = await seller.http.post("/v2/orders", json=limit("AAPL", "sell", "3", "189.50"))
    assert more.json()["status"] == "filled", more.text

    found = (await buyer.http.get("/v2/account/activities/FILL")).json()
    assert [(a["order_id"], a["qty"], a["cum_qty"], a["leaves_qty"]) for a in found] == [
        (second["id"], "3", "7", "3"),  # 4 on the order it replaced, 3 on this one
        (first.json()["id"], "4", "4", "6"),
    ]
