"""Operations: `/metrics` and `/readyz` for every service of the process (`/healthz`, the
liveness check, is in app.py: the process answers).

    ops = Ops(nc, MonitorConfig())            # the gateway makes one; the platform adds to it:
    ops.watch_fold(accounts)                  # a fold service: metrics, and ready once caught up
    ops.watch_publisher("feed", lambda: feed.publisher.stats)
    register_ops(app, ops)                    # the routes
    ops.start(); ...; await ops.stop()        # the JetStream sampler (lag warnings)

`/readyz` answers 200 when every check passes and 503 otherwise, with a JSON body naming each
check and what is wrong with those that fail:

    {"status": "not ready", "checks": {"nats": "ok", "streams": "ok", "accounts": "catching up
     (...)", ...}, "not_ready": {"accounts": "catching up (...)"}}

The checks: NATS connected; every platform stream provisioned; each watched service running
and caught up with its stream once since it started (a service under load later is still
ready: it is working, not broken); the read model's database answering. Neither route needs
an API key: bind the API to a private address, or put a proxy in front, to keep them in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from sqlalchemy import text
from starlette.responses import JSONResponse, Response

from bourse.bus import pull
from bourse.bus.publisher import PublisherStats
from bourse.bus.streams import ALERTS, MARKET_DATA, PLATFORM_STREAMS, StreamSpec
from bourse.errors import BrokerError
from bourse.gateway.metrics import (
    FoldFigures,
    HttpStats,
    MetricSources,
    MonitorConfig,
    PlatformCollector,
    StreamsSampler,
)

if TYPE_CHECKING:
    from bourse.accounts.readmodel.database import Database
    from bourse.accounts.readmodel.service import ReadModelService
    from bourse.alerts.service import AlertsService
    from bourse.alerts.view import AlertsView
    from bourse.bus.fold import FoldService

log = logging.getLogger(__name__)

OK = "ok"
CHECK_TIMEOUT = 2.0  # seconds a readiness check may take before it counts as failed
CATCH_UP_PROBE = 0.5  # seconds a not-yet-ready service is given to show it has caught up
_PROBE_TURNS = 10
SAMPLE_MAX_AGE = 0.0  # a scrape samples JetStream afresh: the figures are as of the scrape

Check = Callable[[], Awaitable[str | None]]  # None when ready, else what is wrong


class CaughtUp:
    """Ready once `wait_caught_up` has succeeded since the start, then as long as `running`."""

    def __init__(
        self,
        wait_caught_up: Callable[[float], Awaitable[None]],
        running: Callable[[], Awaitable[str | None]],
    ) -> None:
        self._wait_caught_up = wait_caught_up
        self._running = running
        self.caught_up = False

    async def __call__(self) -> str | None:
        if not self.caught_up:
            try:
                await self._wait_caught_up(CATCH_UP_PROBE)
            except TimeoutError as error:
                return f"catching up ({error})"
            self.caught_up = True
        return await self._running()


async def _join_probe(join: Callable[[], Awaitable[None]]) -> str | None:
    """Whether a service whose `join()` waits for its end is still running."""
    task = asyncio.ensure_future(join())
    # A service that ended (or never started) returns within a few turns of the loop.
    for _ in range(_PROBE_TURNS):
        await asyncio.sleep(0)
        if task.done():
            break
    if not task.done():
        task.cancel()  # cancels the wait, not the service
        await asyncio.gather(task, return_exceptions=True)
        return None
    error = task.exception()
    return "stopped" if error is None else f"failed: {error}"


class Ops:
    """The metrics registry, the JetStream sampler and the readiness checks of one gateway."""

    def __init__(
        self,
        nc: NATS,
        config: MonitorConfig | None = None,
        *,
        streams: Iterable[StreamSpec] = PLATFORM_STREAMS,
    ) -> None:
        self._nc = nc
        self.config = config or MonitorConfig()
        self.sampler = StreamsSampler(nc, self.config)
        self.sources = MetricSources(sampler=self.sampler)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PlatformCollector(self.sources))
        ProcessCollector(registry=self.registry)
        self._streams = tuple(spec.name for spec in streams)
        self._checks: dict[str, Check] = {"nats": self._nats, "streams": self._provisioned}
        self._websockets: dict[str, tuple[Callable[[], int], dict[str, Callable[[], int]]]] = {}
        self.add_gauges(self._websocket_families)

    @property
    def http(self) -> HttpStats:
        return self.sources.http

    # ---- what the services add ----

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def add_gauges(self, gauges: Callable[[], Iterable[Metric]]) -> None:
        """More families, read at each scrape (e.g. a WebSocket endpoint's clients)."""
        self.sources.gauges.append(gauges)

    def watch_publisher(self, name: str, stats: Callable[[], PublisherStats]) -> None:
        self.sources.publishers[name] = stats

    def watch_websocket(
        self,
        endpoint: str,
        connections: Callable[[], int],
        listeners: dict[str, Callable[[], int]],
    ) -> None:
        """A WebSocket endpoint: its connections, and its listeners per stream."""
        self._websockets[endpoint] = (connections, listeners)

    def _websocket_families(self) -> list[Metric]:
        clients = GaugeMetricFamily(
            "bourse_websocket_connections", "Open WebSocket connections", labels=("endpoint",)
        )
        listening = GaugeMetricFamily(
            "bourse_websocket_listeners",
            "WebSocket connections listening to a stream",
            labels=("endpoint", "stream"),
        )
        for endpoint, (connections, listeners) in sorted(self._websockets.items()):
            clients.add_metric((endpoint,), connections())
            for stream, count in listeners.items():
                listening.add_metric((endpoint, stream), count())
        return [clients, listening]

    def watch_fold(self, service: FoldService[Any]) -> None:
        """A fold service: its progress and publisher in the metrics, and a readiness check."""

        def figures() -> Iterator[FoldFigures]:
            stats = service.stats
            yield FoldFigures(
                service=service.name,
                stream=service.stream,
                applied_seq=service.last_seq,
                inputs=stats.applied,
                outputs=stats.published,
                suppressed=stats.suppressed,
                skipped=stats.skipped,
                snapshots=stats.snapshots,
                resets=stats.resets,
                consumer_prefix=f"{service.name}_" if len(service.filter_subjects) == 1 else None,
            )

        self.sources.folds.append(figures)
        self.watch_publisher(service.name, lambda: service.publisher_stats)
        self.add_check(
            service.name,
            CaughtUp(
                lambda timeout: service.wait_caught_up(timeout), lambda: _join_probe(service.join)
            ),
        )

    def watch_alerts(self, service: AlertsService) -> None:
        """The alerts service: its two inputs, its publisher, a readiness check."""

        def figures() -> Iterator[FoldFigures]:
            stats = service.stats
            yield FoldFigures(
                service=service.name,
                stream=MARKET_DATA.name,
                applied_seq=service.md_seq,
                inputs=stats.quotes,
                outputs=stats.fired,
                suppressed=stats.suppressed,
                skipped=stats.skipped,
                snapshots=stats.snapshots,
                running=service.running,
            )
            yield FoldFigures(
                service=service.name,
                stream=ALERTS.name,
                applied_seq=service.requests_seq,
                inputs=stats.requests,
                consumer_prefix=f"{service.name}_requests_",
                running=service.running,
            )

        async def running() -> str | None:
            return None if service.running else "stopped"

        self.sources.folds.append(figures)
        self.watch_publisher(service.name, lambda: service.publisher_stats)
        self.add_gauges(
            lambda: [
                GaugeMetricFamily(
                    "bourse_alerts_watched",
                    "Alerts the alerts service evaluates",
                    len(service.book),
                )
            ]
        )
        self.add_check(
            service.name, CaughtUp(lambda timeout: service.wait_caught_up(timeout), running)
        )

    def watch_alerts_view(self, view: AlertsView) -> None:
        def figures() -> Iterator[FoldFigures]:
            yield FoldFigures(
                service=view.name,
                stream=ALERTS.name,
                applied_seq=view.applied_seq,
                inputs=view.applied,
                skipped=view.malformed,
                running=view.running,
            )

        async def running() -> str | None:
            return None if view.running else "stopped"

        self.sources.folds.append(figures)
        self.add_check(view.name, CaughtUp(lambda timeout: view.wait_caught_up(timeout), running))

    def watch_readmodel(self, readmodel: ReadModelService, db: Database) -> None:
        """The read model: its progress per stream, and its database answering."""

        def figures() -> Iterator[FoldFigures]:
            for stats in readmodel.stats.values():
                yield FoldFigures(
                    service=readmodel.name,
                    stream=stats.stream,
                    applied_seq=stats.last_sequence,
                    inputs=stats.applied,
                    skipped=stats.malformed,
                    resets=stats.resubscribes,
                )

        def select_one() -> None:
            with db.read() as conn:
                conn.execute(text("SELECT 1"))

        async def answering() -> str | None:
            try:
                await asyncio.to_thread(select_one)
            except Exception as error:  # any driver's error: the database does not answer
                return f"database unavailable ({type(error).__name__}: {error})"
            return None

        self.sources.folds.append(figures)
        self.add_check(
            readmodel.name,
            CaughtUp(lambda timeout: readmodel.wait_caught_up(timeout), answering),
        )

    # ---- lifecycle ----

    def start(self) -> None:
        """Sample JetStream every `config.interval` seconds (lag warnings)."""
        self.sampler.start()

    async def stop(self) -> None:
        await self.sampler.stop()

    # ---- answers ----

    async def metrics(self) -> bytes:
        """The text exposition of every family, JetStream sampled no more than a second ago."""
        await self.sampler.fresh(SAMPLE_MAX_AGE)
        return generate_latest(self.registry)

    async def readiness(self) -> dict[str, str]:
        """Each check's answer: "ok" or what is wrong."""
        names = list(self._checks)
        answers = await asyncio.gather(*(self._run(self._checks[n]) for n in names))
        return dict(zip(names, answers, strict=True))

    async def _run(self, check: Check) -> str:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                problem = await check()
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT:g}s"
        except Exception as error:
            return f"failed: {error}"
        return OK if problem is None else problem

    async def _nats(self) -> str | None:
        if self._nc.is_connected:
            return None
        return "reconnecting" if self._nc.is_reconnecting else "disconnected"

    async def _provisioned(self) -> str | None:
        missing = []
        for name in self._streams:
            try:
                await pull.stream_info(self._nc, name, timeout=CHECK_TIMEOUT / 2)
            except pull.JetStreamApiError:
                missing.append(name)
            except (BrokerError, NatsError) as error:
                return f"JetStream does not answer ({error})"
        return f"missing: {', '.join(missing)}" if missing else None


def register_ops(app: FastAPI, ops: Ops) -> None:
    """Serve `/metrics` (Prometheus text format) and `/readyz`."""

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(await ops.metrics(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        checks = await ops.readiness()
        failing = {name: answer for name, answer in checks.items() if answer != OK}
        body: dict[str, Any] = {"status": "not ready" if failing else "ready", "checks": checks}
        if failing:
            body["not_ready"] = failing
        return JSONResponse(body, status_code=503 if failing else 200)
