"""One running instance per service name on a NATS: a lease in a KV bucket, kept while held.

    lease = await Lease.acquire(nc, "engine")   # LeaseHeld if another process holds it
    ...                                         # `await lease.keep()` renews it (a task)
    await lease.release()

The platform's single writers (the fold services, the session clock, the market makers, the
history recorder, the feed) must each run once: two engines would both match every order. A
process takes a lease per service before starting it. The lease is a key of the
`bourse_leases` bucket (memory storage, entries age out after `ttl`), created only if absent
and renewed every `ttl / 3` with a compare-and-set on its revision. A process that dies stops
renewing and its leases expire after `ttl`, so a restart after a crash may be refused for a
few seconds (it says so). A renewal that finds the key changed or gone takes it again if
nobody holds it (it expired while this process was cut off, the broker restarted and lost the
memory bucket, or the answer to its own last renewal was lost) and raises `LeaseLost` if
another process does: the holder must stop. Like any lease, it bounds, and does not exclude,
the time two holders may overlap (a process frozen past `ttl` still runs until its next
renewal fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import Error as JetStreamError
from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
)
from nats.js.kv import KeyValue

from bourse.bus.streams import key_value
from bourse.errors import BourseError

log = logging.getLogger(__name__)

BUCKET = "bourse_leases"
TTL = 6.0  # seconds a lease outlives its last renewal


class Holder(msgspec.Struct, frozen=True):
    """Who holds a lease: shown to whoever is refused."""

    host: str
    pid: int
    since: float  # Unix seconds

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.since))
        return f"pid {self.pid} on {self.host}, since {started} UTC"


class LeaseHeld(BourseError):
    def __init__(self, name: str, holder: Holder | None, ttl: float) -> None:
        self.name = name
        self.holder = holder
        who = holder.describe() if holder is not None else "another process"
        super().__init__(
            f"{name} already runs on this NATS ({who}); run each of it once. If that process "
            f"died, its lease ends within {ttl:g} s"
        )


class LeaseLost(BourseError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"the lease on {name} was lost (it expired while this process was cut off, and "
            "another may run it now): stopping"
        )


async def _bucket(nc: NATS, ttl: float, replicas: int) -> KeyValue:
    return await key_value(
        nc.jetstream(),
        KeyValueConfig(
            bucket=BUCKET,
            description="bourse: which process runs each single-writer service",
            history=1,
            ttl=ttl,
            storage=StorageType.MEMORY,
            replicas=replicas,
        ),
    )


class Lease:
    """A held lease; see the module docstring."""

    def __init__(
        self,
        nc: NATS,
        kv: KeyValue,
        name: str,
        revision: int,
        holder: Holder,
        *,
        ttl: float,
        replicas: int,
    ) -> None:
        self._nc = nc
        self._replicas = replicas
        self._kv = kv
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self._value = msgspec.json.encode(holder)
        self._revision = revision
        self._released = asyncio.Event()

    @classmethod
    async def acquire(cls, nc: NATS, name: str, *, ttl: float = TTL, replicas: int = 1) -> Lease:
        """Take the lease on `name`, or raise LeaseHeld naming its holder."""
        kv = await _bucket(nc, ttl, replicas)
        holder = Holder(host=socket.gethostname(), pid=os.getpid(), since=time.time())
        try:
            revision = await kv.create(name, msgspec.json.encode(holder))
        except KeyWrongLastSequenceError:
            raise LeaseHeld(name, await _holder(kv, name), ttl) from None
        log.debug("lease on %s taken (revision %d)", name, revision)
        return cls(nc, kv, name, revision, holder, ttl=ttl, replicas=replicas)

    async def renew(self) -> None:
        """Renew once. If the key is not at this lease's last revision, or the bucket is gone
        (a broker restart loses a memory bucket), take the key again if nobody holds it;
        LeaseLost if somebody does."""
        try:
            self._revision = await self._kv.update(self.name, self._value, last=self._revision)
        except (KeyWrongLastSequenceError, NoStreamResponseError):
            await self._reclaim()

    async def _reclaim(self) -> None:
        self._kv = await _bucket(self._nc, self.ttl, self._replicas)
        try:
            self._revision = await self._kv.create(self.name, self._value)
        except KeyWrongLastSequenceError:
            entry = await _entry(self._kv, self.name)
            if entry is None or entry.value != self._value or entry.revision is None:
                raise LeaseLost(self.name) from None
            self._revision = entry.revision  # our own renewal, whose answer was lost
            return
        log.warning("lease on %s: taken again (it had expired, or the broker lost it)", self.name)

    async def keep(self) -> None:
        """Renew every `ttl / 3` until released (it returns then); raise LeaseLost when it is
        lost. A renewal that cannot reach the broker is tried again at the next tick (the
        lease holds for `ttl`)."""
        while not self._released.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ttl / 3):
                    await self._released.wait()
            if self._released.is_set():
                return
            try:
                await self.renew()
            except (NatsError, JetStreamError, TimeoutError) as error:
                log.warning("lease on %s: cannot renew (%s); trying again", self.name, error)

    async def release(self) -> None:
        """Give the lease up (only if it is still this one)."""
        if self._released.is_set():
            return
        self._released.set()  # ends keep()
        try:
            await self._kv.delete(self.name, last=self._revision)
        except (NatsError, JetStreamError, TimeoutError) as error:
            log.info("lease on %s: not released (%s); it expires by itself", self.name, error)


async def _entry(kv: KeyValue, name: str) -> KeyValue.Entry | None:
    try:
        return await kv.get(name)
    except (KeyNotFoundError, KeyDeletedError):
        return None


async def _holder(kv: KeyValue, name: str) -> Holder | None:
    entry = await _entry(kv, name)
    if entry is None:
        return None
    try:
        return msgspec.json.decode(entry.value or b"", type=Holder)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
