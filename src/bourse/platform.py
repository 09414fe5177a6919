"""The platform's kernel: every service of `bourse up` is wired here, and only here.

It starts the broker (embedded nats-server unless a URL is given), provisions the streams,
runs the services, publishes where it can be found (`.bourse/runtime.json`), and on stop
shuts down in order: services stop intake and finish in-flight work, the connection drains,
then the broker stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from bourse.accounts.service import accounts_service
from bourse.bus.connection import connect
from bourse.bus.fold import FoldService
from bourse.bus.server import NatsServer
from bourse.bus.streams import provision_streams
from bourse.engine.service import engine_service
from bourse.feed.runner import FeedRunner, simulated_batches
from bourse.feed.simulator import Simulator
from bourse.model.instruments import DEFAULT_UNIVERSE
from bourse.runtime import (
    Runtime,
    read_live_runtime,
    refuse_if_running,
    remove_runtime,
    write_runtime,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PlatformConfig:
    home: Path
    nats_url: str | None = None  # None: start an embedded nats-server
    nats_port: int = 0  # embedded server's client port; 0 = a free one
    replicas: int | None = None  # None: 3 on a cluster, 1 standalone
    feed_rate: float = 500.0  # simulated messages per second; 0 disables the feed
    seed: int = 0


def clustered(nc: NATS) -> bool:
    """Whether the server we are connected to is part of a cluster (it names one)."""
    return bool(nc._server_info.get("cluster"))


@dataclass
class Platform:
    config: PlatformConfig
    server: NatsServer | None = None
    nc: NATS | None = None
    feed: FeedRunner | None = None
    services: list[FoldService[Any]] = field(default_factory=list)
    nats_url: str = ""
    _tasks: list[asyncio.Task[object]] = field(default_factory=list)

    async def start(self) -> None:
        refuse_if_running(self.config.home)
        nats_url = self.config.nats_url
        local_cluster = read_live_runtime(self.config.home, "cluster")
        if nats_url is None and local_cluster is not None:
            log.info("joining the local cluster started by `bourse cluster up`")
            nats_url = local_cluster.nats_url
        if nats_url is None:
            self.server = NatsServer(
                store_dir=self.config.home / "nats",
                port=self.config.nats_port,
                log_path=self.config.home / "nats-server.log",
            )
            await self.server.start()
            self.nats_url = self.server.url
        else:
            self.nats_url = nats_url
        self.nc = await connect(self.nats_url, name="bourse-up")
        replicas = self.config.replicas or (3 if clustered(self.nc) else 1)
        await provision_streams(self.nc.jetstream(), replicas=replicas)
        # The exchange: accounts validate and keep the ledger, the engine matches. Each is a
        # fold over the ORDERS journal that resumes from its snapshot.
        self.services = [accounts_service(self.nc), engine_service(self.nc)]
        for service in self.services:
            await service.start()
            self._tasks.append(asyncio.create_task(service.join(), name=service.name))
        if self.config.feed_rate > 0:
            simulator = Simulator(DEFAULT_UNIVERSE, seed=self.config.seed)
            self.feed = FeedRunner(
                self.nc, simulated_batches(simulator, rate=self.config.feed_rate)
            )
            self._tasks.append(asyncio.create_task(self.feed.run(), name="feed"))
        write_runtime(
            Runtime(
                nats_url=self.nats_url,
                pid=os.getpid(),
                started_at=datetime.now(UTC).isoformat(),
                monitor_url=self.server.monitor_url if self.server else None,
                cluster=clustered(self.nc),
            ),
            self.config.home,
        )

    async def wait(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set or a service fails (its error is raised)."""
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def stop(self) -> None:
        if self.feed is not None:
            self.feed.stop()
        for service in reversed(self.services):
            try:
                await service.stop()  # finishes in-flight publishes, writes a snapshot
            except Exception:
                log.exception("stopping a service failed")
        # Failures were reported by wait(); here only the orderly end matters.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:
                log.exception("draining the connection failed")
        if self.server is not None:
            await self.server.stop()
        remove_runtime(self.config.home, pid=os.getpid())
