"""The gateway as a platform service: the read model, reference prices and the HTTP server.

    gateway = Gateway(nc, GatewayConfig(port=0), home=Path(".bourse"))
    await gateway.start()          # migrates the database, catches up the read model, listens
    gateway.url                    # http://127.0.0.1:<port>
    await gateway.stop()

uvicorn serves the app inside the platform's event loop on a socket bound here (port 0 picks
a free one), and leaves signal handling to the platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from starlette.types import ASGIApp

from bourse.accounts.readmodel.database import Database
from bourse.accounts.readmodel.migrations import migrate
from bourse.accounts.readmodel.service import ReadModelService
from bourse.alerts.view import AlertsView
from bourse.analytics.reference import ReferencePrices, follow_reference
from bourse.bus.streams import ORDERS
from bourse.errors import ConfigError
from bourse.gateway.app import MAX_BODY, BodyLimit, GatewayContext, create_app
from bourse.gateway.auth import Authenticator, RateLimiter
from bourse.gateway.dashboard import MarketRelay, OpsSampler, register_dashboard
from bourse.gateway.desk import OrderDesk
from bourse.gateway.mdstream import MarketDataConfig, MarketDataStream
from bourse.gateway.metrics import HttpMetrics, MonitorConfig
from bourse.gateway.ops import Ops, register_ops
from bourse.gateway.riskfeed import RiskFeed
from bourse.gateway.stream import TradeUpdates, register_stream
from bourse.model import subjects
from bourse.model.instruments import DEFAULT_UNIVERSE, Instrument

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: a free port
    database_url: str | None = None  # None: SQLite at <home>/bourse.db
    rate: float = 200.0  # requests per second per API key, sustained
    burst: int = 400  # ... and at once
    max_body: int = MAX_BODY
    catch_up_timeout: float = 60.0
    # Alpaca's market-data stream at /v2/iex, /v2/sip, /v1beta3/crypto/us (mdstream.py)
    market_data: MarketDataConfig = field(default_factory=MarketDataConfig)
    # JetStream sampling and lag warnings (/metrics, docs/monitoring.md)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the platform owns SIGINT/SIGTERM and stops the gateway itself


@dataclass
class HttpServer:
    """A uvicorn server running in this event loop (`serve_http`)."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str

    async def join(self) -> None:
        await self.task

    async def stop(self) -> None:
        """Finish the requests in flight (uvicorn's graceful shutdown), then return."""
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await self.task


async def serve_http(
    app: ASGIApp, host: str, port: int, *, name: str, ws: Any = "auto"
) -> HttpServer:
    """Serve `app` with uvicorn in this event loop on `host:port` (0: a free port); return once
    it listens. ConfigError if the port is taken."""
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    server = _Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", ws=ws, timeout_graceful_shutdown=5)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]), name=name)
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError(f"the HTTP server of {name} stopped while starting")
        await asyncio.sleep(0.01)  # uvicorn offers no start event to wait on
    return HttpServer(server, task, f"http://{bound_host}:{bound_port}")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted connections
    # only for that protocol, and without it each response waits ~40 ms (Nagle against
    # the client's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError(
            "HTTP address",
            f"{host}:{port}",
            f"a free port ({error.strerror}; choose another with --api-port, 0 for any)",
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Gateway:
    def __init__(
        self,
        nc: NATS,
        config: GatewayConfig,
        *,
        home: Path,
        instruments: Sequence[Instrument] = DEFAULT_UNIVERSE,
    ) -> None:
        self.config = config
        self._nc = nc
        self._home = home
        self._instruments = tuple(instruments)
        self.prices = ReferencePrices(self._instruments)
        self.db: Database | None = None
        self.readmodel: ReadModelService | None = None
        self.trade_updates: TradeUpdates | None = None
        self.alerts: AlertsView | None = None
        self.risk: RiskFeed | None = None  # risk alerts by account (/stream, /v2/risk/alerts)
        # /metrics and /readyz; the platform adds its services (`ops.watch_fold(...)`).
        self.ops = Ops(nc, config.monitor)
        self.dashboard_relay: MarketRelay | None = None
        self.market_data: MarketDataStream | None = None
        self.context: GatewayContext | None = None
        self._prices_sub: Subscription | None = None
        self._revocations: Subscription | None = None
        self._http: HttpServer | None = None
        self.url = ""

    @property
    def desk(self) -> OrderDesk:
        if self.context is None:
            raise RuntimeError("the gateway is not started")
        return self.context.desk

    @property
    def database_url(self) -> str:
        return self.config.database_url or f"sqlite:///{self._home / 'bourse.db'}"

    async def start(self) -> Gateway:
        self.db = Database.open(self.database_url)
        version = await asyncio.to_thread(migrate, self.db)
        log.info(
            "read model at schema version %d (%s)", version, self.db.engine.url.render_as_string()
        )
        self._prices_sub = await follow_reference(self._nc, self.prices)
        desk = OrderDesk(
            self._nc, self.db, self.prices, self._instruments, sync=self._orders_applied
        )
        self.readmodel = ReadModelService(self._nc, self.db, instruments=self._instruments)
        self.readmodel.add_listener(desk.on_applied)
        self.trade_updates = TradeUpdates(self.db)
        self.readmodel.add_listener(self.trade_updates.on_applied)
        await self.readmodel.start()
        await self.readmodel.wait_caught_up(self.config.catch_up_timeout)
        self.alerts = await AlertsView(self._nc).start()
        await self.alerts.wait_caught_up(self.config.catch_up_timeout)
        self.risk = await RiskFeed(self._nc).start()
        self.context = GatewayContext(
            nc=self._nc,
            db=self.db,
            desk=desk,
            auth=Authenticator(self.db),
            limiter=RateLimiter(self.config.rate, self.config.burst),
            alerts=self.alerts,
            risk=self.risk,
        )
        api = create_app(self.context)
        register_stream(api, self.context, self.trade_updates)
        auth = self.context.auth

        async def on_key_revoked(msg: Msg) -> None:  # by an admin, on any gateway
            auth.revoked(msg.data.decode(errors="replace"))

        self._revocations = await self._nc.subscribe(subjects.API_KEY_REVOKED, cb=on_key_revoked)
        api.add_middleware(HttpMetrics, stats=self.ops.http)
        register_ops(api, self.ops)
        self.ops.watch_readmodel(self.readmodel, self.db)
        self.ops.watch_alerts_view(self.alerts)
        updates, alerts, risk = self.trade_updates, self.alerts, self.risk
        self.ops.watch_websocket(
            "/stream",
            lambda: updates.connections,
            {
                "trade_updates": lambda: updates.listening,
                "alerts": lambda: alerts.listening,
                "risk": lambda: risk.listening,
            },
        )
        self.ops.start()
        self.dashboard_relay = MarketRelay(self._nc, books=tuple(desk.instruments))
        register_dashboard(
            api,
            self.context,
            relay=self.dashboard_relay,
            ops=OpsSampler(self._nc),
            home=self._home,
            bound_host=self.config.host,
            readiness=self.ops.readiness,
        )
        # Alpaca's market-data stream is served beside the app, on uvicorn's upgraded sockets.
        self.market_data = await MarketDataStream(
            self._nc,
            self.context.auth,
            self.context.limiter,
            self.config.market_data,
            instruments=self._instruments,
        ).start()
        self.ops.add_gauges(self.market_data.metric_families)
        app = BodyLimit(api, self.config.max_body)
        self._http = await serve_http(
            app,
            self.config.host,
            self.config.port,
            name="gateway",
            ws=self.market_data.upgrades("websockets-sansio"),
        )
        self.url = self._http.url
        log.info("gateway listening on %s", self.url)
        return self

    async def _orders_applied(self, timeout: float) -> None:
        """Until the read model has applied ORDERS up to its end as of now."""
        if self.readmodel is not None:
            await self.readmodel.wait_caught_up(timeout, streams=(ORDERS.name,))

    async def join(self) -> None:
        if self._http is not None:
            await self._http.join()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.stop()
        if self.market_data is not None:
            await self.market_data.stop()
        if self.dashboard_relay is not None:
            await self.dashboard_relay.stop()
        await self.ops.stop()
        if self.trade_updates is not None:
            await self.trade_updates.stop()
        if self.alerts is not None:
            await self.alerts.stop()
        if self.risk is not None:
            await self.risk.stop()
        if self.readmodel is not None:
            await self.readmodel.stop()
        for subscription in (self._prices_sub, self._revocations):
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
        if self.db is not None:
            self.db.close()
