"""API keys: an admin makes another key for an account, lists them, revokes one; a revoked
key is refused at once, by this gateway and (told over NATS) by every other, and its
/stream connections are closed."""

from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bourse.accounts.readmodel import api_keys
from bourse.accounts.readmodel.rows import ApiKey
from bourse.gateway.app import open_account
from bourse.gateway.auth import Principal
from bourse.model import subjects
from bourse.platform import Credentials, _renew_revoked_keys
from tests.conftest import eventually
from tests.gateway.conftest import ExchangeStack, MarketDataFactory, Trader
from tests.gateway.test_mdstream import authenticated, receive
from tests.gateway.test_stream_orders import stream_session


async def _rotated(exchange: ExchangeStack, alice: Trader) -> Trader:
    made = await exchange.admin.http.post(f"/admin/accounts/{alice.account_id}/keys")
    assert made.status_code == 201, made.text
    body = made.json()
    assert set(body) == {"account_id", "key_id", "secret"}
    assert body["account_id"] == alice.account_id and body["key_id"] != alice.key_id
    headers = {"APCA-API-KEY-ID": body["key_id"], "APCA-API-SECRET-KEY": body["secret"]}
    return Trader(alice.account_id, body["key_id"], body["secret"], exchange.client(headers))


async def test_a_key_is_rotated_and_the_old_one_revoked_everywhere_at_once(
    exchange: ExchangeStack,
) -> None:
    alice = await exchange.trader()
    assert (await alice.http.get("/v2/account")).status_code == 200  # its check is cached now
    fresh = await _rotated(exchange, alice)
    assert (await fresh.http.get("/v2/account")).json()["id"] == alice.account_id
    listed = (await exchange.admin.http.get(f"/admin/accounts/{alice.account_id}/keys")).json()
    assert [(k["key_id"], k["revoked_at"]) for k in listed] == [
        (alice.key_id, None),
        (fresh.key_id, None),
    ]
    assert all("secret" not in str(k).lower() for k in listed)

    async with stream_session(exchange, alice) as old_ws, stream_session(exchange, fresh) as ws:
        revoked = await exchange.admin.http.delete(f"/admin/keys/{alice.key_id}")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["key_id"] == alice.key_id and revoked.json()["revoked_at"]
        with pytest.raises(ConnectionClosed) as closed:
            await old_ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "API key revoked")
        # the other key's connection goes on
        await ws.send(msgspec.json.encode({"action": "listen", "data": {"streams": []}}))
        assert msgspec.json.decode(await ws.recv())["stream"] == "listening"

    refused = await alice.http.get("/v2/account")
    assert (refused.status_code, refused.json()["reason"]) == (401, "unauthorized")
    assert (await fresh.http.get("/v2/account")).status_code == 200
    again = await exchange.admin.http.delete(f"/admin/keys/{alice.key_id}")
    assert again.json() == revoked.json()  # revoking twice changes nothing
    listed = (await exchange.admin.http.get(f"/admin/accounts/{alice.account_id}/keys")).json()
    assert [k["revoked_at"] is None for k in listed] == [False, True]


async def test_a_key_revoked_by_another_gateway_is_refused_here_at_once(
    exchange: ExchangeStack,
) -> None:
    """Another gateway on the same database revokes the key and says so on NATS: this one's
    cached check (good for a minute) is dropped then, not a minute later."""
    alice = await exchange.trader()
    assert (await alice.http.get("/v2/account")).status_code == 200

    def revoke() -> bool:
        with exchange.gateway.db.write() as conn:
            return api_keys.revoke_api_key(conn, alice.key_id)

    assert await asyncio.to_thread(revoke)
    assert (await alice.http.get("/v2/account")).status_code == 200  # still cached here
    await exchange.nc.publish(subjects.API_KEY_REVOKED, alice.key_id.encode())

    async def refused() -> bool:
        return (await alice.http.get("/v2/account")).status_code == 401

    await eventually(refused, message="the revoked key was still accepted")


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        ("DELETE", "/admin/keys/PKNOSUCHKEY", 404, "API key PKNOSUCHKEY not found"),
        ("GET", "/admin/accounts/nobody/keys", 404, "account nobody not found"),
        ("POST", "/admin/accounts/nobody/keys", 404, "account nobody not found"),
        ("DELETE", "/admin/keys/{admin}", 409, "a key cannot revoke itself"),
    ],
)
async def test_key_administration_refusals(
    exchange: ExchangeStack, method: str, path: str, status: int, says: str
) -> None:
    answer = await exchange.admin.http.request(
        method, path.replace("{admin}", exchange.admin.key_id)
    )
    assert answer.status_code == status, answer.text
    assert says in answer.json()["message"]


async def test_a_trader_key_cannot_manage_keys(exchange: ExchangeStack) -> None:
    alice, bob = await exchange.trader(), await exchange.trader()
    for method, path in (
        ("GET", f"/admin/accounts/{alice.account_id}/keys"),
        ("POST", f"/admin/accounts/{alice.account_id}/keys"),
        ("DELETE", f"/admin/keys/{bob.key_id}"),
    ):
        answer = await alice.http.request(method, path)
        assert answer.status_code == 403, (path, answer.text)
    assert (await bob.http.get("/v2/account")).status_code == 200


async def test_a_revoked_key_cannot_open_a_stream(exchange: ExchangeStack) -> None:
    alice = await exchange.trader()
    await exchange.admin.http.delete(f"/admin/keys/{alice.key_id}")
    async with connect(exchange.url.replace("http", "ws") + "/stream") as ws:
        await ws.send(
            msgspec.json.encode({"action": "auth", "key": alice.key_id, "secret": alice.secret})
        )
        assert msgspec.json.decode(await ws.recv())["data"]["status"] == "unauthorized"


async def test_revoking_a_key_closes_its_market_data_and_dashboard_sockets(
    market_data: MarketDataFactory,
) -> None:
    md = await market_data()
    assert md.gateway.context is not None
    other = await open_account(md.gateway.context, cash=Decimal(0))
    data = await authenticated(md, "/v2/iex")
    dashboard = await connect(md.url("/dashboard/ws"))
    await dashboard.send(json.dumps({"action": "auth", "key": md.key_id, "secret": md.secret}))
    assert json.loads(await dashboard.recv()) == {"type": "authorized"}
    kept = await connect(md.url("/dashboard/ws"))
    await kept.send(
        json.dumps({"action": "auth", "key": other["key_id"], "secret": other["secret"]})
    )
    assert json.loads(await kept.recv()) == {"type": "authorized"}

    md.gateway.context.auth.revoked(md.key_id)  # as DELETE /admin/keys/{id} or NATS tells it

    assert await receive(data) == {
        "T": "error",
        "code": 402,
        "msg": "auth failed",
        "detail": "API key revoked",
    }
    await data.wait_closed()
    assert data.close_code == 1008
    assert json.loads(await dashboard.recv()) == {"type": "error", "message": "API key revoked"}
    await dashboard.wait_closed()
    assert (dashboard.close_code, dashboard.close_reason) == (1008, "API key revoked")
    assert kept.state is State.OPEN
    await kept.close()


async def test_a_check_in_flight_when_its_key_is_revoked_admits_no_one(
    exchange: ExchangeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check reads the key's row, then spends tens of milliseconds in scrypt: a revocation
    meanwhile must not let it answer yes, nor leave the key in the cache."""
    alice = await exchange.trader()
    assert exchange.gateway.context is not None
    auth = exchange.gateway.context.auth
    loop = asyncio.get_running_loop()
    in_scrypt, go_on = asyncio.Event(), threading.Event()
    verify = auth._verify

    def held_verify(key_id: str, secret: str) -> Principal | None:  # in the check's thread
        found = verify(key_id, secret)
        loop.call_soon_threadsafe(in_scrypt.set)
        go_on.wait(10)
        return found

    monkeypatch.setattr(auth, "_verify", held_verify)
    before = auth.verifications
    checking = asyncio.create_task(auth.authenticate(alice.key_id, alice.secret))
    joining = asyncio.create_task(auth.authenticate(alice.key_id, alice.secret))
    await in_scrypt.wait()
    auth.revoked(alice.key_id)
    go_on.set()
    assert await checking is None and await joining is None
    monkeypatch.undo()
    # Nothing was remembered: the next request checks again (the database still has the key
    # here, since only this gateway was told).
    assert await auth.authenticate(alice.key_id, alice.secret) is not None
    assert auth.verifications == before + 2  # one check for the two above, one now


async def test_the_revoking_gateway_tells_the_others_on_nats(exchange: ExchangeStack) -> None:
    alice = await exchange.trader()
    told = await exchange.nc.subscribe(subjects.API_KEY_REVOKED)
    assert (await exchange.admin.http.delete(f"/admin/keys/{alice.key_id}")).status_code == 200
    message = await told.next_msg(timeout=5)
    assert message.data.decode() == alice.key_id
    await told.unsubscribe()


async def test_an_operators_admin_keys_are_listed_and_rotated(exchange: ExchangeStack) -> None:
    admin = (await exchange.admin.http.get("/v2/account")).json()  # an operator, no account
    listed = await exchange.admin.http.get("/admin/accounts")
    assert admin.get("id") not in {a["id"] for a in listed.json()}
    found: ApiKey | None = await exchange.gateway.context.desk.read(  # type: ignore[union-attr]
        api_keys.get_api_key, exchange.admin.key_id
    )
    assert found is not None
    keys = await exchange.admin.http.get(f"/admin/accounts/{found.account_id}/keys")
    assert [(k["key_id"], k["role"]) for k in keys.json()] == [(exchange.admin.key_id, "admin")]
    made = await exchange.admin.http.post(f"/admin/accounts/{found.account_id}/keys")
    assert made.status_code == 201 and made.json()["key_id"].startswith("AK")
    second = {
        "APCA-API-KEY-ID": made.json()["key_id"],
        "APCA-API-SECRET-KEY": made.json()["secret"],
    }
    assert (await exchange.client(second).get("/admin/accounts")).status_code == 200


async def test_bourse_up_keeps_its_demo_account_when_its_keys_are_rotated(
    exchange: ExchangeStack,
) -> None:
    demo = await exchange.trader("5000")
    known = Credentials(
        account_id=demo.account_id,
        key_id=demo.key_id,
        secret=demo.secret,
        admin_key_id=exchange.admin.key_id,
        admin_secret=exchange.admin.secret,
    )
    db = exchange.gateway.db
    assert await asyncio.to_thread(_renew_revoked_keys, db, known) == known  # nothing revoked
    fresh = await _rotated(exchange, demo)
    assert (await exchange.admin.http.delete(f"/admin/keys/{demo.key_id}")).status_code == 200
    renewed = await asyncio.to_thread(_renew_revoked_keys, db, known)
    assert renewed is not None
    assert renewed.account_id == demo.account_id and renewed.key_id not in (
        demo.key_id,
        fresh.key_id,
    )
    assert renewed.admin_key_id == exchange.admin.key_id
    headers = {"APCA-API-KEY-ID": renewed.key_id, "APCA-API-SECRET-KEY": renewed.secret}
    assert (await exchange.client(headers).get("/v2/account")).json()["cash"] == "5000"
    gone = Credentials(**{**msgspec.structs.asdict(known), "account_id": "nobody"})
    assert await asyncio.to_thread(_renew_revoked_keys, db, gone) is None
