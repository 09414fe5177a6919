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
    first = (await kv.get("history")).revision or 0

    async def renewed_twice() -> bool:
        return ((await kv.get("history")).revision or 0) >= first + 2

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


async def test_a_lease_that_expired_unheld_is_taken_again_at_the_next_renewal(nc: NATS) -> None:
    lease = await Lease.acquire(nc, "makers")
    kv = await nc.jetstream().key_value(BUCKET)
    await kv.delete("makers")  # expired while this process was cut off; nobody took it
    await lease.renew()
    with pytest.raises(LeaseHeld):
        await Lease.acquire(nc, "makers")
    await lease.release()


async def test_a_renewal_whose_answer_was_lost_is_recognised_as_its_own(nc: NATS) -> None:
    lease = await Lease.acquire(nc, "alerts")
    kv = await nc.jetstream().key_value(BUCKET)
    entry = await kv.get("alerts")
    assert entry.value is not None and entry.revision is not None
    # The server stored a renewal whose answer never came back: the lease's revision is stale.
    await kv.update("alerts", entry.value, last=entry.revision)
    await lease.renew()
    await lease.renew()  # and it goes on from the revision it found
    await lease.release()
    taken = await Lease.acquire(nc, "alerts")  # released: the key was its own
    await taken.release()


async def test_a_lease_survives_the_broker_losing_its_bucket(nc: NATS) -> None:
    lease = await Lease.acquire(nc, "analytics")
    await nc.jetstream().delete_key_value(BUCKET)  # as a restarted broker forgets memory
    await lease.renew()
    with pytest.raises(LeaseHeld):
        await Lease.acquire(nc, "analytics")
    await lease.release()
