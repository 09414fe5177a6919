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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from bourse.accounts.readmodel.api_keys import create_api_key, get_api_key, verify_api_key
from bourse.accounts.readmodel.database import Database
from bourse.accounts.readmodel.queries import get_account
from bourse.accounts.service import accounts_service, serve_queries
from bourse.agents.config import MarketMakersConfig
from bourse.agents.recovery import OrderRegistry
from bourse.agents.service import MarketMakers
from bourse.alerts.service import AlertsService
from bourse.analytics.pipeline import AnalyticsConfig
from bourse.analytics.service import AnalyticsService
from bourse.bus.connection import connect
from bourse.bus.fold import FoldService
from bourse.bus.lease import Lease, LeaseHeld
from bourse.bus.server import NatsServer
from bourse.bus.streams import provision_streams
from bourse.engine.service import engine_service, serve_depth_queries
from bourse.engine.session import SessionClock
from bourse.errors import BourseError, ConfigError
from bourse.feed.runner import FeedRunner, simulated_batches
from bourse.feed.simulator import Simulator
from bourse.gateway.app import open_account
from bourse.gateway.metrics import MonitorConfig
from bourse.gateway.ops import OK, Ops
from bourse.gateway.opsserver import OpsServer
from bourse.gateway.server import DEFAULT_PORT, Gateway, GatewayConfig
from bourse.history.service import HistoryService
from bourse.history.store import open_store
from bourse.model.instruments import DEFAULT_UNIVERSE
from bourse.risk.rules import RiskConfig
from bourse.risk.service import default_config, risk_service
from bourse.runtime import (
    Runtime,
    read_live_runtime,
    refuse_if_running,
    remove_runtime,
    write_runtime,
)
from bourse.workers import Worker, WorkerError, WorkerSpec

log = logging.getLogger(__name__)

MARKET_MAKER = "mm-1"  # the market makers' account

# What a platform process can run, in the order it starts them. `bourse up` runs them all;
# `bourse run NAME...` some of them, beside other processes on one NATS (README, Deployment).
# Each but the gateway is a single writer: a process takes its lease (bus/lease.py) first.
SERVICES: tuple[str, ...] = (
    "accounts",  # validates orders, keeps the ledgers; answers ledger queries
    "engine",  # matches
    "risk",  # post-trade risk, the kill switch
    "analytics",  # bars, VWAP, NBBO, arbitrage
    "alerts",  # price alerts
    "history",  # the tick and bar store, its queries
    "session",  # the trading day's close (DAY orders expire)
    "makers",  # market makers quoting on the bourse venue
    "gateway",  # read model, REST and WebSocket APIs, dashboard; the demo account
    "feed",  # the simulated market-data feed
)
# How `bourse up --processes N` spreads them: the first N - 1 groups each in a worker process
# of their own, the rest (the gateway always) in `bourse up`'s. The exchange's folds, on every
# order's path, first; then what reads the market and trades on it.
PROCESS_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"accounts", "engine", "risk", "session"}),
    frozenset({"analytics", "alerts", "history", "makers", "feed"}),
)
MAX_PROCESSES = len(PROCESS_GROUPS) + 1
WORKER_CHECK_TIMEOUT = 1.5  # seconds for a worker's /readyz to answer (ops allows a check 2)


@dataclass(frozen=True, kw_only=True)
class PlatformConfig:
    home: Path
    nats_url: str | None = None  # None: start an embedded nats-server
    nats_port: int = 0  # embedded server's client port; 0 = a free one
    replicas: int | None = None  # None: 3 on a cluster, 1 standalone
    feed_rate: float = 500.0  # simulated messages per second; 0 disables the feed
    seed: int = 0
    api_host: str = "127.0.0.1"
    api_port: int = DEFAULT_PORT  # 0: a free one
    database_url: str | None = None  # None: SQLite in the home directory
    # The history store (docs/history.md). None: the PostgreSQL of database_url if it is
    # one, else DuckDB at <home>/history.duckdb.
    history_url: str | None = None
    demo_cash: Decimal = Decimal(100_000)
    market_makers: bool = True  # liquidity on the bourse venue around the feed's prices
    risk: RiskConfig | None = None  # None: risk.service.default_config, market makers exempt
    # None: no analytics service (bars, VWAP, NBBO, arbitrage on ANALYTICS; docs/analytics.md)
    analytics: AnalyticsConfig | None = field(default_factory=AnalyticsConfig)
    alerts: bool = True  # the price alerts service (docs/alerts.md)
    # JetStream sampling and consumer lag warnings (docs/monitoring.md)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    # The services this process runs (SERVICES); the others run elsewhere, or not at all.
    services: frozenset[str] = frozenset(SERVICES)
    # Child processes this one starts (once the broker is up) and stops: `bourse up
    # --processes` (bourse/workers.py).
    workers: tuple[WorkerSpec, ...] = ()

    def __post_init__(self) -> None:
        unknown = self.services - set(SERVICES)
        if unknown or not self.services:
            raise ConfigError("services", " ".join(sorted(unknown)), ", ".join(SERVICES))

    def runs(self, service: str) -> bool:
        """Whether this process starts `service`: named in `services`, and not switched off
        (no feed at rate 0, no market makers, analytics or alerts when disabled)."""
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}")
        switched_on = {
            "feed": self.feed_rate > 0,
            "makers": self.market_makers,
            "analytics": self.analytics is not None,
            "alerts": self.alerts,
        }
        return service in self.services and switched_on.get(service, True)


class Credentials(msgspec.Struct, kw_only=True):
    """The demo account's and the admin's keys, kept across restarts (`credentials.json`,
    0600): the database holds only their hashes."""

    account_id: str
    key_id: str
    secret: str
    admin_key_id: str
    admin_secret: str


def history_url(config: PlatformConfig) -> str | None:
    """The history store: `history_url`, else the read model's PostgreSQL, else None (DuckDB
    in the home directory)."""
    if config.history_url:
        return config.history_url
    if config.database_url and config.database_url.startswith(("postgresql", "postgres:")):
        return config.database_url
    return None


def clustered(nc: NATS) -> bool:
    """Whether the server we are connected to is part of a cluster (it names one)."""
    return bool(nc._server_info.get("cluster"))


class StopFailed(BourseError):
    """The platform stopped, but some of its steps failed (each is in the log)."""


def worker_ready(worker: Worker, client: httpx.AsyncClient) -> Callable[[], Awaitable[str | None]]:
    """A readiness check: the worker's own /readyz, None when it answers 200. `client` is
    the platform's one for all its workers (kept-alive connections, not one per probe)."""

    async def check() -> str | None:
        if worker.ops_url is None:
            return "no operations endpoints"
        try:
            answer = await client.get(f"{worker.ops_url}/readyz")
        except httpx.HTTPError as error:
            return f"unreachable at {worker.ops_url} ({type(error).__name__})"
        if answer.status_code == 200:
            return None
        try:
            checks = answer.json()["checks"]
            failing = ", ".join(f"{name}: {said}" for name, said in checks.items() if said != OK)
        except (ValueError, KeyError, AttributeError):
            failing = f"HTTP {answer.status_code}"
        return f"not ready ({failing})"

    return check


@dataclass
class Platform:
    config: PlatformConfig
    server: NatsServer | None = None
    nc: NATS | None = None
    feed: FeedRunner | None = None
    services: list[FoldService[Any]] = field(default_factory=list)
    gateway: Gateway | None = None
    credentials: Credentials | None = None
    _queries: Subscription | None = None
    _depth_queries: Subscription | None = None
    session: SessionClock | None = None
    makers: MarketMakers | None = None
    history: HistoryService | None = None
    analytics: AnalyticsService | None = None
    alerts: AlertsService | None = None
    ops_server: OpsServer | None = None  # without a gateway: /healthz, /readyz, /metrics
    workers: list[Worker] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)  # of stop(): what did not stop well
    nats_url: str = ""
    _tasks: list[asyncio.Task[object]] = field(default_factory=list)
    _leases: list[Lease] = field(default_factory=list)
    _probes: httpx.AsyncClient | None = None  # asks the workers' /readyz

    async def start(self) -> None:
        config = self.config
        config.home.mkdir(parents=True, exist_ok=True)  # with --nats nothing else makes it
        if config.runs("gateway"):
            refuse_if_running(config.home)  # the gateway's process owns runtime.json
        nats_url = config.nats_url
        local_cluster = read_live_runtime(config.home, "cluster")
        if nats_url is None and local_cluster is not None:
            log.info("joining the local cluster started by `bourse cluster up`")
            nats_url = local_cluster.nats_url
        if nats_url is None:
            self.server = NatsServer(
                store_dir=config.home / "nats",
                port=config.nats_port,
                log_path=config.home / "nats-server.log",
            )
            await self.server.start()
            self.nats_url = self.server.url
        else:
            self.nats_url = nats_url
        self.nc = await connect(self.nats_url, name=f"bourse-{self._role()}")
        replicas = config.replicas or (3 if clustered(self.nc) else 1)
        await provision_streams(self.nc.jetstream(), replicas=replicas)
        # Workers first, in order: the exchange is up before what trades on it.
        for spec in config.workers:
            worker = Worker(spec)
            self.workers.append(worker)
            await worker.start(self.nats_url)
            self._tasks.append(asyncio.create_task(worker.join(), name=f"worker {spec.name}"))
        await self._take_leases(replicas)
        # The exchange: accounts validate and keep the ledger, the engine matches, risk
        # watches and halts. Each is a fold over the ORDERS journal that resumes from its
        # snapshot.
        accounts = accounts_service(self.nc) if config.runs("accounts") else None
        if accounts is not None:
            self.services.append(accounts)
        engine = engine_service(self.nc) if config.runs("engine") else None
        if engine is not None:
            self.services.append(engine)
        if config.runs("risk"):
            risk = config.risk if config.risk is not None else default_config([MARKET_MAKER])
            self.services.append(risk_service(self.nc, config=risk))
        for service in self.services:
            await service.start()
            self._tasks.append(asyncio.create_task(service.join(), name=service.name))
        if accounts is not None:
            self._queries = await serve_queries(self.nc, accounts)
        if engine is not None:
            self._depth_queries = await serve_depth_queries(self.nc, engine)
        if config.runs("analytics"):
            # Bars, VWAP, NBBO and arbitrage from MARKET_DATA onto ANALYTICS; resumes from
            # its snapshot.
            self.analytics = await AnalyticsService(self.nc, config.analytics).start()
            self._tasks.append(asyncio.create_task(self.analytics.join(), name="analytics"))
        if config.runs("alerts"):
            # Price alerts: the accounts' requests on ALERTS against the quotes on
            # MARKET_DATA; resumes from its snapshot without firing twice.
            self.alerts = await AlertsService(self.nc).start()
            self._tasks.append(asyncio.create_task(self.alerts.join(), name="alerts"))
        if config.runs("history"):
            # History: MARKET_DATA into the store, and its queries (history.query.*) for the
            # gateway's market-data API; resumes after what it acknowledged.
            store = await asyncio.to_thread(open_store, history_url(config), home=config.home)
            self.history = await HistoryService(self.nc, store).start()
        if config.runs("session"):
            self.session = await SessionClock(self.nc).start()  # DAY orders expire at midnight
        if config.runs("makers"):
            # Re-quote on a 5 bp move at most once a second per symbol: a realistic book
            # without journaling a dozen orders per tick of a fast simulated feed.
            self.makers = await MarketMakers(
                self.nc,
                account_id=MARKET_MAKER,
                config=MarketMakersConfig(
                    requote_threshold_bps=Decimal(5), min_requote_interval=1.0
                ),
                registry=OrderRegistry(self.nc, replicas=replicas),
            ).start()
        if config.runs("gateway"):
            ops = await self._start_gateway()
        else:
            # No gateway here: the operations endpoints on their own, at --api-host/--api-port.
            self.ops_server = OpsServer(
                self.nc, host=config.api_host, port=config.api_port, monitor=config.monitor
            )
            ops = self.ops_server.ops
            self._watch(ops)
            await self.ops_server.start()
            self._tasks.append(asyncio.create_task(self.ops_server.join(), name="ops"))
        if config.runs("feed"):
            simulator = Simulator(DEFAULT_UNIVERSE, seed=config.seed)
            self.feed = FeedRunner(self.nc, simulated_batches(simulator, rate=config.feed_rate))
            publisher = self.feed.publisher
            ops.watch_publisher("feed", lambda: publisher.stats)
            self._tasks.append(asyncio.create_task(self.feed.run(), name="feed"))
        if self.gateway is not None and self.credentials is not None:
            write_runtime(
                Runtime(
                    nats_url=self.nats_url,
                    pid=os.getpid(),
                    started_at=datetime.now(UTC).isoformat(),
                    monitor_url=self.server.monitor_url if self.server else None,
                    cluster=clustered(self.nc),
                    http_url=self.gateway.url,
                    account_id=self.credentials.account_id,
                    api_key_id=self.credentials.key_id,
                    api_secret_key=self.credentials.secret,
                    admin_key_id=self.credentials.admin_key_id,
                    admin_secret_key=self.credentials.admin_secret,
                ),
                config.home,
            )

    async def _take_leases(self, replicas: int) -> None:
        """A lease per single-writer service of this process (every one but the gateway):
        LeaseHeld, before anything starts, if one runs elsewhere on this NATS."""
        assert self.nc is not None
        try:
            for name in SERVICES:
                if name != "gateway" and self.config.runs(name):
                    self._leases.append(await Lease.acquire(self.nc, name, replicas=replicas))
        except LeaseHeld:
            await self._release_leases()
            raise
        for lease in self._leases:
            # A lost lease ends wait() with LeaseLost; a released one ends its keep().
            self._tasks.append(asyncio.create_task(lease.keep(), name=f"lease-{lease.name}"))

    async def _release_leases(self) -> None:
        for lease in self._leases:
            await lease.release()

    def _role(self) -> str:
        """How this process names itself to NATS: `up` for every service, else the list."""
        if self.config.services == frozenset(SERVICES):
            return "up"
        return "+".join(name for name in SERVICES if name in self.config.services)

    async def _start_gateway(self) -> Ops:
        """The gateway: read model, Alpaca-compatible REST API, dashboard; the demo keys."""
        assert self.nc is not None
        self.gateway = Gateway(
            self.nc,
            GatewayConfig(
                host=self.config.api_host,
                port=self.config.api_port,
                database_url=self.config.database_url,
                monitor=self.config.monitor,
            ),
            home=self.config.home,
        )
        self._watch(self.gateway.ops)
        await self.gateway.start()
        self._tasks.append(asyncio.create_task(self.gateway.join(), name="gateway"))
        self.credentials = await self._credentials()
        return self.gateway.ops

    def _watch(self, ops: Ops) -> None:
        """/metrics and /readyz (and the dashboard's health cards) cover every service of
        this process."""
        for service in self.services:
            ops.watch_fold(service)
        if self.alerts is not None:
            ops.watch_alerts(self.alerts)
        tasks = {task.get_name(): task for task in self._tasks}
        analytics = tasks.get("analytics")
        if analytics is not None:

            async def analytics_running() -> str | None:
                return "stopped" if analytics.done() else None

            ops.add_check("analytics", analytics_running)
        history = self.history
        if history is not None:

            async def history_answering() -> str | None:
                return None if history.answering else "not answering queries"

            ops.add_check("history", history_answering)
        if self.workers and self._probes is None:
            self._probes = httpx.AsyncClient(timeout=WORKER_CHECK_TIMEOUT)
        for worker in self.workers:
            # This process's /readyz answers for its workers too (each one's own endpoints
            # give the detail, and its /metrics).
            assert self._probes is not None
            ops.add_check(f"worker {worker.spec.name}", worker_ready(worker, self._probes))

    async def _credentials(self) -> Credentials:
        """The demo account and admin key: those of an earlier run if the database still
        knows them, else new ones (the demo account opened and funded on the journal)."""
        assert self.gateway is not None and self.gateway.context is not None
        path = self.config.home / "credentials.json"
        db = self.gateway.context.db
        if path.exists():
            try:
                known = msgspec.json.decode(path.read_bytes(), type=Credentials)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.warning("ignoring unreadable %s; making new demo keys", path)
            else:

                def still_valid() -> bool:
                    with db.read() as conn:
                        return (
                            verify_api_key(conn, known.key_id, known.secret) is not None
                            and verify_api_key(conn, known.admin_key_id, known.admin_secret)
                            is not None
                        )

                if await asyncio.to_thread(still_valid):
                    return known
                renewed = await asyncio.to_thread(_renew_revoked_keys, db, known)
                if renewed is not None:
                    _write_credentials(path, renewed)
                    log.warning("a demo key was revoked: new keys, same accounts, in %s", path)
                    return renewed
                log.warning("the demo keys in %s are not in the database; making new ones", path)
        context = self.gateway.context
        admin = await open_account(context, cash=Decimal(0), role="admin")
        demo = await open_account(context, cash=self.config.demo_cash, shorting_enabled=True)
        made = Credentials(
            account_id=demo["account_id"],
            key_id=demo["key_id"],
            secret=demo["secret"],
            admin_key_id=admin["key_id"],
            admin_secret=admin["secret"],
        )
        _write_credentials(path, made)
        log.info("opened the demo account %s with %s", made.account_id, self.config.demo_cash)
        return made

    async def wait(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set or a service fails (its error is raised)."""
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in done:
            error = None if task is stopper else task.exception()
            if error is None:
                continue
            if stop.is_set() and isinstance(error, WorkerError) and error.code == 0:
                continue  # signalled with us (a supervisor's SIGTERM to all of our processes)
            raise error

    async def _step(self, what: str, stop: Callable[[], Awaitable[object]]) -> None:
        """One step of `stop()`: logged with its duration; a failure is logged and noted in
        `failed_steps`, not raised, so the next steps still run."""
        started = time.monotonic()
        log.info("stopping %s", what)
        try:
            await stop()
        except Exception:
            log.exception("stopping %s failed", what)
            self.failed_steps.append(what)
        else:
            log.info("stopped %s in %.1fs", what, time.monotonic() - started)

    async def stop(self) -> None:
        """Stop in order; each step is logged with its duration, so a slow one shows."""
        if self.feed is not None:
            self.feed.stop()
        if self.gateway is not None:
            await self._step("the gateway", self.gateway.stop)  # finishes requests in flight
        if self.ops_server is not None:
            await self._step("the operations endpoints", self.ops_server.stop)
        if self.history is not None:
            history = self.history

            async def stop_history() -> None:
                try:
                    await history.stop()  # stores and acknowledges the batch in hand
                finally:
                    await asyncio.to_thread(history.store.close)

            await self._step("the history service", stop_history)
        if self.makers is not None:
            # Cancels its quotes while the services still run.
            await self._step("the market makers", self.makers.stop)
        if self.session is not None:
            await self._step("the session clock", self.session.stop)
        for worker in reversed(self.workers):
            # The feed and the market makers before the exchange they trade on.
            await self._step(f"worker {worker.spec.name}", worker.stop)
        if self._probes is not None:
            await self._probes.aclose()
        if self._queries is not None:
            await self._step("the ledger queries", self._queries.unsubscribe)
        if self._depth_queries is not None:
            await self._step("the depth queries", self._depth_queries.unsubscribe)
        if self.alerts is not None:
            # Waits for its firings' acks, writes a snapshot.
            await self._step("the alerts service", self.alerts.stop)
        for service in reversed(self.services):
            # Finishes in-flight publishes, writes a snapshot.
            await self._step(f"the {service.name} service", service.stop)
        if self.analytics is not None:
            # Publishes what is due, writes a snapshot.
            await self._step("the analytics service", self.analytics.stop)
        if self._leases:
            await self._step("the services' leases", self._release_leases)
        # Failures were reported by wait(); here only the orderly end matters.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.nc is not None and not self.nc.is_closed:
            await self._step("the NATS connection", self.nc.drain)
        if self.server is not None:
            await self._step("nats-server", self.server.stop)
        remove_runtime(self.config.home, pid=os.getpid())


def _write_credentials(path: Path, credentials: Credentials) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(credentials)))
    tmp.chmod(0o600)
    tmp.replace(path)


def _renew_revoked_keys(db: Database, known: Credentials) -> Credentials | None:
    """New keys for the demo account and the operator where an admin revoked theirs (keys are
    rotated so): the same account and its money, not a new one. None if the demo account or
    the admin key's owner is not in the database at all."""
    with db.write() as conn:
        admin_key = get_api_key(conn, known.admin_key_id)
        if get_account(conn, known.account_id) is None or admin_key is None:
            return None
        key_id, secret = known.key_id, known.secret
        if verify_api_key(conn, key_id, secret) is None:
            key_id, secret = create_api_key(conn, known.account_id, "trader")
        admin_key_id, admin_secret = known.admin_key_id, known.admin_secret
        if verify_api_key(conn, admin_key_id, admin_secret) is None:
            admin_key_id, admin_secret = create_api_key(conn, admin_key.account_id, "admin")
    return Credentials(
        account_id=known.account_id,
        key_id=key_id,
        secret=secret,
        admin_key_id=admin_key_id,
        admin_secret=admin_secret,
    )
