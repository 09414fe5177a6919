"""Who is calling: API keys checked against their scrypt hashes, remembered briefly, and a
request budget per key.

scrypt costs tens of milliseconds on purpose, so a verified key is remembered for `ttl`
seconds as the SHA-256 of its secret (compared in constant time): a bot calling many times a
second pays scrypt once a minute. A revoked key stops working within `ttl`. Failed
verifications are not remembered, so they always cost the full scrypt. Requests that arrive
with the same key and secret while a check of them runs wait for that check instead of
starting their own: a bot with 32 requests in flight when its entry expires (or on its first
burst) pays one scrypt, not 32 (before, such a herd took half the gateway's CPU in the orders
benchmark's HTTP steps).

The rate limit is a token bucket per key id: `burst` requests at once, refilled at `rate`
per second; a request over budget is told how long to wait (429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bourse.accounts.readmodel.api_keys import verify_api_key
from bourse.accounts.readmodel.database import Database
from bourse.accounts.readmodel.rows import Role

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    account_id: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Authenticator:
    def __init__(self, db: Database, *, ttl: float = 60.0, max_entries: int = 10_000) -> None:
        self._db = db
        self._ttl = ttl
        self._max_entries = max_entries
        self._cache: OrderedDict[str, tuple[bytes, Principal, float]] = OrderedDict()
        # Checks running, by key id and the SHA-256 of the secret they check.
        self._checking: dict[tuple[str, bytes], asyncio.Future[Principal | None]] = {}
        self.verifications = 0  # full scrypt checks done (for tests and metrics)
        # Revocations seen, per key: a check that ran across one counts for nothing.
        self._revocations: dict[str, int] = {}
        self._revoked_listeners: list[Callable[[str], None]] = []

    async def authenticate(self, key_id: str, secret: str) -> Principal | None:
        revocations = self._revocations.get(key_id, 0)
        digest = hashlib.sha256(secret.encode()).digest()
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and cached[2] > now and hmac.compare_digest(cached[0], digest):
            return cached[1]
        running = self._checking.get((key_id, digest))
        if running is None:
            running = self._checking[(key_id, digest)] = asyncio.ensure_future(
                self._check(key_id, secret, digest)
            )
            running.add_done_callback(lambda done: self._done_checking(key_id, digest, done))
        # Shielded: a caller that gives up (a client gone) does not cancel the others' check.
        principal = await asyncio.shield(running)
        if self._revocations.get(key_id, 0) != revocations:
            return None  # revoked while this caller waited
        return principal

    def _done_checking(self, key_id: str, digest: bytes, done: asyncio.Future[Any]) -> None:
        if self._checking.get((key_id, digest)) is done:
            del self._checking[(key_id, digest)]

    async def _check(self, key_id: str, secret: str, digest: bytes) -> Principal | None:
        self.verifications += 1
        revocations = self._revocations.get(key_id, 0)
        principal = await asyncio.to_thread(self._verify, key_id, secret)
        if principal is None or self._revocations.get(key_id, 0) != revocations:
            return None  # a key revoked while its row was being checked is not remembered
        self._cache[key_id] = (digest, principal, time.monotonic() + self._ttl)
        self._cache.move_to_end(key_id)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop the key's cached check, as its expiry would: the next request checks again."""
        self._cache.pop(key_id, None)

    def revoked(self, key_id: str) -> None:
        """The key was revoked: refuse it from now on, checks in flight included, and tell
        the listeners (the WebSocket endpoints close its connections)."""
        self._revocations[key_id] = self._revocations.get(key_id, 0) + 1
        self.forget(key_id)
        for checking in [c for c in self._checking if c[0] == key_id]:
            del self._checking[checking]  # a request from now on checks afresh
        for listener in self._revoked_listeners:
            try:
                listener(key_id)
            except Exception:
                log.exception("a listener for revoked key %s failed", key_id)

    def on_revoked(self, listener: Callable[[str], None]) -> None:
        """Call `listener(key_id)` whenever a key is revoked (in the event loop; keep it short)."""
        self._revoked_listeners.append(listener)

    def _verify(self, key_id: str, secret: str) -> Principal | None:
        with self._db.read() as conn:
            key = verify_api_key(conn, key_id, secret)
        if key is None:
            return None
        return Principal(key_id=key.key_id, account_id=key.account_id, role=key.role)


class RateLimiter:
    """Token buckets per key; `check()` answers None (go) or the seconds to wait."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, key: str, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return None

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
