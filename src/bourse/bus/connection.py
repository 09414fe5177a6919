"""Connecting to NATS: reconnect with backoff, logged callbacks, bounded buffers, drain."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.client import Server

from bourse.errors import BrokerError

log = logging.getLogger(__name__)

# The client's outgoing buffer: a publisher that outruns the socket blocks (flushes) instead
# of growing memory; 8 MiB absorbs bursts of a few thousand ticks.
PENDING_BYTES = 8 * 1024 * 1024
INITIAL_ATTEMPTS = 3


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter, 0.1 s doubling to 5 s, for reconnect attempts."""
    base: float = min(5.0, 0.1 * 2 ** min(attempt, 6))
    return base * (0.5 + random.random() / 2)


async def connect(url: str | list[str], *, name: str, connect_timeout: int = 5) -> NATS:
    """Connect with unlimited reconnects and log every connection event.

    `url` may be a comma-separated list (a cluster); the client fails over between them.
    """
    servers = url if isinstance(url, list) else [u.strip() for u in url.split(",") if u.strip()]

    async def on_error(exc: Exception) -> None:
        # Failures of the first connect are reported once, by the BrokerError below.
        if nc.is_connected or nc.is_reconnecting:
            log.warning("nats %s: %s", name, exc)

    async def on_disconnected() -> None:
        if nc.is_closed or nc.is_draining:
            log.debug("nats %s: disconnected on close", name)
        else:
            log.warning("nats %s: disconnected; reconnecting", name)

    async def on_reconnected() -> None:
        log.info("nats %s: reconnected to %s", name, nc.connected_url)

    async def on_closed() -> None:
        log.debug("nats %s: connection closed", name)

    def next_server(servers: list[Server], _info: dict[str, Any]) -> tuple[Server, float]:
        # Fail over to the least-tried server, backing off as its failures mount.
        server = min(servers, key=lambda s: s.reconnects)
        return server, _backoff(server.reconnects)

    nc = NATS()
    try:
        await nc.connect(
            servers=servers,
            name=name,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            closed_cb=on_closed,
            # A bounded first connect, so a wrong URL fails fast with a clear error; once
            # connected, reconnects are unlimited (set below).
            max_reconnect_attempts=INITIAL_ATTEMPTS,
            reconnect_time_wait=1,
            connect_timeout=connect_timeout,
            pending_size=PENDING_BYTES,
            allow_reconnect=True,
            reconnect_to_server_handler=next_server,
        )
    except Exception as exc:  # nats raises several unrelated types on a failed connect
        raise BrokerError(f"cannot connect to NATS at {', '.join(servers)}: {exc}") from exc
    nc.options["max_reconnect_attempts"] = -1
    return nc


@asynccontextmanager
async def connected(url: str | list[str], *, name: str) -> AsyncIterator[NATS]:
    """A connection that drains (finishes in-flight work) when the block ends."""
    nc = await connect(url, name=name)
    try:
        yield nc
    finally:
        if not nc.is_closed:
            try:
                await nc.drain()
            except Exception:
                log.exception("nats %s: drain failed; closing", name)
                await nc.close()


__all__ = ["NATS", "connect", "connected", "nats"]
