"""Leases on a real nats-server: one holder per name, renewed while held, lost when taken."""

from __future__ import annotations

import asyncio
import os

import pytest
from nats.aio.client import Client as NATS

from bourse.bus.lease import BUCKET, Lease, LeaseHeld, LeaseLost
from tests.conftest import eventually


async def test_a_second_holder_is_refused_with_the_first_ones_name(nc: NATS) -> None:
    first = await Lease.acquire(nc, "engine")
    with pytest.raises(LeaseHeld) as refused:
        await Lease.acquire(nc, "engine")
    assert refused.value.holder == first.holder
    assert f"engine already runs on this NATS (pid {os.getpid()} on " in str(refused.value)
    other = await Lease.acquire(nc, "accounts")  # another name is another lease
    await other.release()
    await first.release()


async def test_a_released_lease_can_be_taken_again(nc: NATS) -> None:
    first = await Lease.acquire(nc, "risk")
    await first.release()
    second = await Lease.acquire(nc, "risk")
    with pytest.raises(LeaseHeld):
        await Lease.acquire(nc, "risk")
    await second.release()


async def test_an_unrenewed_lease_expires_and_another_process_takes_it(nc: NATS) -> None:
    await Lease.acquire(nc, "session", ttl=1.0)  # never renewed: as if its process died

    async def taken() -> bool:
        try:
            lease = await Lease.acquire(nc, "session", ttl=1.0)
        except LeaseHeld:
            return False
        await lease.release()
        return True

    await eventually(taken, timeout=15, interval=0.2, message="the lease never expired")


async def test_a_kept_lease_stays_held_past_its_ttl(nc: NATS) -> None:
    lease = await Lease.acquire(nc, "history", ttl=0.9)
    keeper = asyncio.create_task(lease.keep())
    kv = await nc.jetstream().key_value(BUCKET)
    first = (await kv.get("history")).revision

    async def renewed_twice() -> bool:
        return (await kv.get("history")).revision >= first + 2

    await eventually(renewed_twice, timeout=15, message="the lease was not renewed")
    # Two renewals later, more than its ttl after it was taken, it is still held.
    with pytest.raises(LeaseHeld):
        await Lease.acquire(nc, "history", ttl=0.9)
    await lease.release()
    await asyncio.wait_for(keeper, 5)  # release ends the keeping


async def test_a_lease_taken_over_meanwhile_is_lost_at_the_next_renewal(nc: NATS) -> None:
    lease = await Lease.acquire(nc, "feed")
    kv = await nc.jetstream().key_value(BUCKET)
    await kv.delete("feed")  # as if it had expired while this process was frozen
    usurper = await Lease.acquire(nc, "feed")
    with pytest.raises(LeaseLost):
        await lease.renew()
    await lease.release()  # releases nothing: the key is the usurper's now
    with pytest.raises(LeaseHeld):
        await Lease.acquire(nc, "feed")
    await usurper.release()
