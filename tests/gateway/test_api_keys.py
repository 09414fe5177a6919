"""API keys: an admin makes another key for an account, lists them, revokes one; a revoked
key is refused at once, by this gateway and (told over NATS) by every other, and its
/stream connections are closed."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bourse.accounts.readmodel import api_keys
from bourse.model import subjects
from tests.conftest import eventually
from tests.gateway.conftest import ExchangeStack, Trader
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
