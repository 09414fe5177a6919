"""Shared fixtures: a real nats-server per test (free port, temporary store), no mock broker."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from bourse.bus.connection import connect
from bourse.bus.server import NatsServer
from bourse.bus.streams import provision_streams

_unique = itertools.count()


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    async with NatsServer(store_dir=tmp_path / "nats", server_name=f"test{next(_unique)}") as s:
        yield s


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await connect(nats_server.url, name="test")
    yield client
    if not client.is_closed:
        await client.close()


@pytest.fixture
async def js(nc: NATS) -> JetStreamContext:
    """A JetStream context on a server with the platform's streams provisioned."""
    context = nc.jetstream()
    await provision_streams(context)
    return context


async def eventually(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition never became true",
) -> None:
    """Poll `check` until it holds; the synchronization tests use instead of sleeping."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(message)
        await asyncio.sleep(interval)
