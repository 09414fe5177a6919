"""What the gateway's routes do, as Alpaca's do: replace, cancel all, closing positions,
administration, rate limits, the key cache and the filters of GET /v2/orders."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bourse.gateway.auth import RateLimiter
from tests.conftest import eventually
from tests.gateway.conftest import ExchangeStack, Trader
from tests.gateway.test_orders_api import limit


async def _post(trader: Trader, body: dict[str, str]) -> dict[str, Any]:
    answer = await trader.http.post("/v2/orders", json=body)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def _order(trader: Trader, order_id: str) -> dict[str, Any]:
    answer = await trader.http.get(f"/v2/orders/{order_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def _positions(trader: Trader) -> dict[str, str]:
    return {p["symbol"]: p["qty"] for p in (await trader.http.get("/v2/positions")).json()}


async def _reaches(trader: Trader, order_id: str, status: str) -> dict[str, Any]:
    """An order's answer may precede its fills (the engine's first word is enough for the
    desk), so a fill is awaited on the read model."""
    last: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal last
        last = await _order(trader, order_id)
        return last["status"] == status

    await eventually(check, message=f"order {order_id} never became {status} (last {last})")
    return last


async def _buying_power_becomes(trader: Trader, expected: Decimal) -> None:
    """Cash and buying power come from the accounts service, which follows the journal on its
    own: it may be a message behind the read model that answered the request."""
    last: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal last
        last = (await trader.http.get("/v2/account")).json()
        return Decimal(last["buying_power"]) == expected

    await eventually(check, message=f"buying power never became {expected} (last {last})")


async def _settles(trader: Trader, expected: dict[str, str]) -> None:
    """Positions come from the read model, which may be a batch behind the order's answer."""
    last: dict[str, str] = {}

    async def check() -> bool:
        nonlocal last
        last = await _positions(trader)
        return last == expected

    await eventually(check, message=f"positions never became {expected} (last {last})")


# ---- replace ----


async def test_replacing_qty_keeps_the_price_and_answers_the_new_order(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader("100000")
    old = await _post(alice, limit("AAPL", "buy", "10", "180.00"))

    answer = await alice.http.patch(f"/v2/orders/{old['id']}", json={"qty": "5"})

    assert answer.status_code == 200, answer.text
    new = answer.json()
    assert new["id"] != old["id"]
    assert new["replaces"] == old["id"]
    assert new["client_order_id"] != old["client_order_id"]
    assert (new["symbol"], new["side"], new["type"], new["time_in_force"]) == (
        "AAPL",
        "buy",
        "limit",
        "gtc",
    )
    assert (new["qty"], new["limit_price"], new["status"]) == ("5", "180.00", "new")
    replaced = await _order(alice, old["id"])
    assert replaced["status"] == "replaced"
    assert replaced["replaced_by"] == new["id"]
    assert replaced["replaced_at"] is not None
    listed = (await alice.http.get("/v2/orders")).json()
    assert [o["id"] for o in listed] == [new["id"]]
    await _buying_power_becomes(alice, Decimal(100000) - 5 * Decimal("180.00"))


async def test_replacing_the_price_keeps_the_qty_and_a_chosen_client_order_id(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader("100000")
    old = await _post(alice, limit("AAPL", "buy", "10", "180.00"))

    answer = await alice.http.patch(
        f"/v2/orders/{old['id']}", json={"limit_price": "181.50", "client_order_id": "v2"}
    )

    assert answer.status_code == 200, answer.text
    new = answer.json()
    assert (new["qty"], new["limit_price"], new["client_order_id"]) == ("10", "181.50", "v2")
    assert new["replaces"] == old["id"]
    by_client_id = await alice.http.get(
        "/v2/orders:by_client_order_id", params={"client_order_id": "v2"}
    )
    assert by_client_id.json()["id"] == new["id"]
    await _buying_power_becomes(alice, Decimal(100000) - 10 * Decimal("181.50"))


async def test_a_partly_filled_order_is_replaced_with_its_fills_counted(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader("100000")
    maker = await exchange.trader("100000", shorting=True)
    old = await _post(alice, limit("AAPL", "buy", "10", "189.00"))
    await _post(maker, limit("AAPL", "sell", "4", "189.00"))
    await _reaches(alice, old["id"], "partially_filled")

    answer = await alice.http.patch(f"/v2/orders/{old['id']}", json={"qty": "6"})

    assert answer.status_code == 200, answer.text
    new = answer.json()
    # Alpaca's qty is the order's whole size: 4 filled before the replace, 2 still working.
    assert (new["qty"], new["filled_qty"], new["replaces"]) == ("6", "4", old["id"])
    await _post(maker, limit("AAPL", "sell", "5", "189.00"))
    await _reaches(alice, new["id"], "filled")
    await _settles(alice, {"AAPL": "6"})


async def test_changing_time_in_force_by_replace_is_refused_and_changes_nothing(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader("100000")
    old = await _post(alice, limit("AAPL", "buy", "10", "180.00"))

    answer = await alice.http.patch(
        f"/v2/orders/{old['id']}", json={"qty": "5", "time_in_force": "day"}
    )

    assert answer.status_code == 422, answer.text
    assert "time_in_force" in answer.json()["message"]
    unchanged = await _order(alice, old["id"])
    assert (unchanged["status"], unchanged["qty"], unchanged["replaced_by"]) == ("new", "10", None)


async def test_a_replace_without_changes_or_of_a_closed_order_is_refused(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    alice = await exchange.trader("100000")
    old = await _post(alice, limit("AAPL", "buy", "10", "180.00"))

    nothing = await alice.http.patch(f"/v2/orders/{old['id']}", json={})
    assert nothing.status_code == 422
    assert "qty, limit_price or stop_price" in nothing.json()["message"]
    new = (await alice.http.patch(f"/v2/orders/{old['id']}", json={"qty": "5"})).json()
    again = await alice.http.patch(f"/v2/orders/{old['id']}", json={"qty": "4"})
    assert again.status_code == 422
    assert "replaced" in again.json()["message"]
    assert (await _order(alice, new["id"]))["qty"] == "5"


# ---- cancel all ----


async def test_cancel_all_answers_one_result_per_open_order_and_leaves_none(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    await exchange.reference("MSFT", "400.00")
    alice = await exchange.trader("100000")
    working = [
        await _post(alice, limit("AAPL", "buy", "1", "180.00")),
        await _post(alice, limit("AAPL", "buy", "2", "181.00")),
        await _post(alice, limit("MSFT", "buy", "1", "390.00")),
    ]
    done = await _post(alice, limit("MSFT", "buy", "1", "391.00"))
    assert (await alice.http.delete(f"/v2/orders/{done['id']}")).status_code == 204

    answer = await alice.http.delete("/v2/orders")

    assert answer.status_code == 207, answer.text
    results = answer.json()
    assert sorted(r["id"] for r in results) == sorted(o["id"] for o in working)
    assert {r["status"] for r in results} == {200}
    assert {r["body"]["status"] for r in results} == {"canceled"}
    assert (await alice.http.get("/v2/orders")).json() == []
    await _buying_power_becomes(alice, Decimal(100000))
    assert (await alice.http.get("/v2/account")).json()["cash"] == "100000"
    again = await alice.http.delete("/v2/orders")
    assert (again.status_code, again.json()) == (207, [])


# ---- positions ----


async def _long_aapl_and_msft(exchange: ExchangeStack) -> Trader:
    """A trader long 10 AAPL and 5 MSFT, with a maker's bids below to sell into."""
    await exchange.reference("AAPL", "190.00")
    await exchange.reference("MSFT", "400.00")
    alice = await exchange.trader("100000")
    maker = await exchange.trader("1000000", shorting=True)
    await _post(maker, limit("AAPL", "sell", "10", "190.00"))
    await _post(maker, limit("MSFT", "sell", "5", "400.00"))
    await _post(alice, limit("AAPL", "buy", "10", "190.00"))
    await _post(alice, limit("MSFT", "buy", "5", "400.00"))
    await _post(maker, limit("AAPL", "buy", "20", "189.90"))
    await _post(maker, limit("MSFT", "buy", "20", "399.90"))
    await _settles(alice, {"AAPL": "10", "MSFT": "5"})
    return alice


async def test_closing_part_of_a_position_by_qty_and_by_percentage(
    exchange: ExchangeStack,
) -> None:
    alice = await _long_aapl_and_msft(exchange)

    by_qty = await alice.http.delete("/v2/positions/AAPL", params={"qty": "3"})

    assert by_qty.status_code == 200, by_qty.text
    sold = by_qty.json()
    assert (sold["symbol"], sold["side"], sold["type"], sold["qty"]) == (
        "AAPL",
        "sell",
        "market",
        "3",
    )
    assert (await _reaches(alice, sold["id"], "filled"))["filled_avg_price"] == "189.90"
    await _settles(alice, {"AAPL": "7", "MSFT": "5"})

    # 50% of 7 is 3.5 shares; a share is the lot, so 3 are sold.
    by_percentage = await alice.http.delete("/v2/positions/AAPL", params={"percentage": "50"})

    assert by_percentage.status_code == 200, by_percentage.text
    assert by_percentage.json()["qty"] == "3"
    await _settles(alice, {"AAPL": "4", "MSFT": "5"})
    too_many = await alice.http.delete("/v2/positions/AAPL", params={"qty": "5"})
    assert too_many.status_code == 422
    assert "at most 4" in too_many.json()["message"]
    position = (await alice.http.get("/v2/positions/AAPL")).json()
    assert (position["qty"], position["side"]) == ("4", "long")


async def test_closing_every_position_answers_one_result_per_position(
    exchange: ExchangeStack,
) -> None:
    alice = await _long_aapl_and_msft(exchange)

    answer = await alice.http.delete("/v2/positions")

    assert answer.status_code == 207, answer.text
    results = {r["symbol"]: r for r in answer.json()}
    assert set(results) == {"AAPL", "MSFT"}
    assert {r["status"] for r in results.values()} == {200}
    assert (results["AAPL"]["body"]["qty"], results["MSFT"]["body"]["qty"]) == ("10", "5")
    assert {r["body"]["side"] for r in results.values()} == {"sell"}
    await _settles(alice, {})
    gone = await alice.http.delete("/v2/positions/AAPL")
    assert gone.status_code == 404


# ---- administration ----


async def test_an_admin_opens_an_account_whose_key_works_and_funds_it(
    exchange: ExchangeStack,
) -> None:
    made = await exchange.admin.http.post(
        "/admin/accounts", json={"cash": "2500", "shorting_enabled": True}
    )

    assert made.status_code == 201, made.text
    credentials = made.json()
    assert set(credentials) == {"account_id", "key_id", "secret"}
    owner = exchange.client(
        {"APCA-API-KEY-ID": credentials["key_id"], "APCA-API-SECRET-KEY": credentials["secret"]}
    )
    account: dict[str, Any] = {}

    async def opened() -> bool:
        nonlocal account
        account = (await owner.get("/v2/account")).json()
        return account.get("cash") == "2500"

    # The accounts service, which answers for cash, follows the journal on its own.
    await eventually(opened, message="the account never had its cash")
    assert account["id"] == credentials["account_id"]
    assert account["shorting_enabled"] is True
    listed = (await exchange.admin.http.get("/admin/accounts")).json()
    mine = [a for a in listed if a["id"] == credentials["account_id"]]
    assert len(mine) == 1 and mine[0]["cash"] == "2500"

    deposit = await exchange.admin.http.post(
        f"/admin/accounts/{credentials['account_id']}/deposits", json={"amount": "500.25"}
    )

    assert deposit.status_code == 200, deposit.text
    assert deposit.json() == {"account_id": credentials["account_id"], "amount": "500.25"}

    async def funded() -> bool:
        return (await owner.get("/v2/account")).json()["cash"] == "3000.25"

    await eventually(funded, message="the deposit never reached the account")
    refused = await exchange.admin.http.post(
        f"/admin/accounts/{credentials['account_id']}/deposits", json={"amount": "-1"}
    )
    assert refused.status_code == 422
    assert "amount" in refused.json()["message"]
    assert (await owner.get("/v2/account")).json()["cash"] == "3000.25"


async def test_coins_transferred_in_by_an_admin_are_a_position_that_can_be_sold(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("BTC-USD", "65000.00")
    owner = await exchange.trader("1000")
    moved = await exchange.admin.http.post(
        f"/admin/accounts/{owner.account_id}/assets",
        json={"symbol": "BTC/USD", "qty": "0.5", "price": "60000"},
    )
    assert moved.status_code == 200, moved.text
    assert moved.json() == {
        "account_id": owner.account_id,
        "symbol": "BTC-USD",
        "qty": "0.5",
        "price": "60000",
    }
    positions: list[dict[str, Any]] = []

    async def held() -> bool:
        nonlocal positions
        positions = (await owner.http.get("/v2/positions")).json()
        return bool(positions)

    await eventually(held, message="the coins never showed as a position")
    [btc] = positions
    assert (btc["symbol"], btc["qty"], btc["avg_entry_price"]) == ("BTC-USD", "0.5", "60000")
    assert btc["cost_basis"] == "30000.0"
    account = (await owner.http.get("/v2/account")).json()
    assert account["cash"] == "1000"  # a transfer of coins moves no cash
    # One position by any of its names: ours, Alpaca's for orders, Alpaca's for positions.
    for name in ("BTC-USD", "BTC/USD", "btcusd"):
        one = await owner.http.get(f"/v2/positions/{name}")
        assert one.status_code == 200, (name, one.text)
        assert one.json()["qty"] == "0.5"
    asset = await owner.http.get("/v2/assets/BTC/USD")
    assert asset.status_code == 200 and asset.json()["symbol"] == "BTC-USD", asset.text

    sell = await owner.http.post(
        "/v2/orders",
        json={
            "symbol": "BTC/USD",
            "qty": "0.5",
            "side": "sell",
            "type": "limit",
            "limit_price": "66000",
            "time_in_force": "gtc",
        },
    )
    assert sell.status_code == 200, sell.text
    assert sell.json()["status"] in ("new", "accepted")


async def test_an_admin_key_made_by_an_admin_administers(exchange: ExchangeStack) -> None:
    made = (await exchange.admin.http.post("/admin/accounts", json={"role": "admin"})).json()
    operator = exchange.client(
        {"APCA-API-KEY-ID": made["key_id"], "APCA-API-SECRET-KEY": made["secret"]}
    )
    assert (await operator.get("/admin/accounts")).status_code == 200


# ---- rate limits and keys ----


async def test_over_budget_is_429_with_retry_after_and_other_keys_go_on(
    exchange: ExchangeStack,
) -> None:
    assert exchange.gateway.context is not None
    alice, bob = await exchange.trader(), await exchange.trader()
    # A token every 10 s: the third request is over budget however slow the machine is.
    exchange.gateway.context.limiter = RateLimiter(rate=0.1, burst=2)

    assert (await alice.http.get("/v2/account")).status_code == 200
    assert (await alice.http.get("/v2/orders")).status_code == 200
    refused = await alice.http.get("/v2/account")

    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == 42910000
    assert refused.json()["reason"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 10
    assert (await bob.http.get("/v2/account")).status_code == 200
    assert (await bob.http.get("/v2/account")).status_code == 200
    assert (await alice.http.get("/v2/clock")).status_code == 200  # no key, no budget


async def test_a_wrong_secret_for_a_cached_key_is_refused_and_the_key_still_works(
    exchange: ExchangeStack,
) -> None:
    assert exchange.gateway.context is not None
    auth = exchange.gateway.context.auth
    alice = await exchange.trader()
    assert (await alice.http.get("/v2/account")).status_code == 200
    verified = auth.verifications
    assert (await alice.http.get("/v2/account")).status_code == 200
    assert auth.verifications == verified  # served from the cache

    wrong_secrets = ["x", alice.secret[:-1], alice.secret + "x", alice.secret[::-1]]
    for wrong in wrong_secrets:
        impostor = exchange.client({**alice.headers, "APCA-API-SECRET-KEY": wrong})
        answer = await impostor.get("/v2/account")
        assert answer.status_code == 401, (wrong, answer.text)
        assert answer.json()["reason"] == "unauthorized"
    # Each wrong secret missed the cache and paid the full check; the right one still hits it.
    assert auth.verifications == verified + len(wrong_secrets)
    assert (await alice.http.get("/v2/account")).status_code == 200
    assert auth.verifications == verified + len(wrong_secrets)


# ---- GET /v2/orders filters ----


async def test_listing_orders_filters_by_status_symbol_time_and_direction(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")
    await exchange.reference("MSFT", "400.00")
    alice = await exchange.trader("100000")
    start = datetime.now(UTC)
    first = await _post(alice, limit("AAPL", "buy", "1", "180.00"))
    between_1_2 = datetime.now(UTC)
    second = await _post(alice, limit("MSFT", "buy", "1", "390.00"))
    between_2_3 = datetime.now(UTC)
    third = await _post(alice, limit("AAPL", "buy", "1", "181.00"))
    assert (await alice.http.delete(f"/v2/orders/{third['id']}")).status_code == 204

    async def ids(**params: str) -> list[str]:
        answer = await alice.http.get("/v2/orders", params=params)
        assert answer.status_code == 200, answer.text
        return [o["id"] for o in answer.json()]

    a, b, c = first["id"], second["id"], third["id"]
    assert await ids() == [b, a]  # open, newest first
    assert await ids(status="open") == [b, a]
    assert await ids(status="closed") == [c]
    assert await ids(status="all") == [c, b, a]
    assert await ids(status="all", direction="asc") == [a, b, c]
    assert await ids(status="all", limit="2") == [c, b]
    assert await ids(status="all", direction="asc", limit="1") == [a]
    assert await ids(status="all", symbols="AAPL") == [c, a]
    assert await ids(status="all", symbols="msft") == [b]
    assert await ids(status="all", symbols="AAPL,MSFT") == [c, b, a]
    assert await ids(status="all", after=between_1_2.isoformat()) == [c, b]
    assert await ids(status="all", until=between_2_3.isoformat()) == [b, a]
    window = {"after": between_1_2.isoformat(), "until": between_2_3.isoformat()}
    assert await ids(status="all", **window) == [b]
    zulu = between_2_3.replace(tzinfo=None).isoformat() + "Z"
    assert await ids(status="all", after=zulu) == [c]
    assert await ids(status="all", after=(start - timedelta(days=1)).date().isoformat()) == [
        c,
        b,
        a,
    ]
    assert await ids(status="all", after=(start + timedelta(days=1)).date().isoformat()) == []


async def test_requests_arriving_together_share_one_check_of_their_key(
    exchange: ExchangeStack,
) -> None:
    # A bot's burst on a key not checked yet (or whose cached check just expired) pays one
    # scrypt, not one per request in flight; the same wrong secret sent together also pays
    # one, and is refused every time; a different secret never rides on another's check.
    assert exchange.gateway.context is not None
    auth = exchange.gateway.context.auth
    alice = await exchange.trader()
    auth.forget(alice.key_id)
    before = auth.verifications

    answers = await asyncio.gather(*(alice.http.get("/v2/account") for _ in range(20)))

    assert [a.status_code for a in answers] == [200] * 20
    assert {a.json()["id"] for a in answers} == {alice.account_id}
    assert auth.verifications == before + 1

    impostor = exchange.client({**alice.headers, "APCA-API-SECRET-KEY": alice.secret[::-1]})
    other = exchange.client({**alice.headers, "APCA-API-SECRET-KEY": "x" + alice.secret[1:]})
    refused = await asyncio.gather(
        *(impostor.get("/v2/account") for _ in range(10)), other.get("/v2/account")
    )
    assert [a.status_code for a in refused] == [401] * 11
    assert auth.verifications == before + 3
    assert (await alice.http.get("/v2/account")).status_code == 200
    assert auth.verifications == before + 3  # still cached
