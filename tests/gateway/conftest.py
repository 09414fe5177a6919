"""The exchange behind its gateway, in-process, over a real nats-server and a real SQLite file.

async def test_x(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")              # the feed's price
    alice = await exchange.trader(cash="10000")              # an account with its key
    r = await alice.http.post("/v2/orders", json={...})     # httpx, authenticated
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from bourse.accounts.service import accounts_service, serve_queries
from bourse.analytics import messages as analytics_messages
from bourse.analytics.bars import Bar
from bourse.analytics.nbbo import Nbbo
from bourse.bus.fold import FoldService
from bourse.engine.service import engine_service, serve_depth_queries
from bourse.gateway.app import open_account
from bourse.gateway.mdstream import MarketDataConfig, MarketDataStream
from bourse.gateway.server import Gateway, GatewayConfig
from bourse.history.service import HistoryService
from bourse.history.store import open_store
from bourse.model import marketdata, orders, subjects
from tests.conftest import eventually


@dataclass
class Trader:
    account_id: str
    key_id: str
    secret: str
    http: httpx.AsyncClient

    @property
    def headers(self) -> dict[str, str]:
        return {"APCA-API-KEY-ID": self.key_id, "APCA-API-SECRET-KEY": self.secret}


@dataclass
class ExchangeStack:
    nc: NATS
    js: JetStreamContext
    gateway: Gateway
    accounts: FoldService[orders.OrdersEvent]
    engine: FoldService[Any]
    history: HistoryService  # MARKET_DATA recorded, for the market-data API (/v2/stocks/...)
    admin: Trader
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    _seq: int = 0

    @property
    def url(self) -> str:
        return self.gateway.url

    def client(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=self.url, headers=headers or {}, timeout=30)
        self.clients.append(client)
        return client

    async def trader(self, cash: str = "100000", *, shorting: bool = False) -> Trader:
        assert self.gateway.context is not None
        made = await open_account(
            self.gateway.context, cash=Decimal(cash), shorting_enabled=shorting
        )
        headers = {"APCA-API-KEY-ID": made["key_id"], "APCA-API-SECRET-KEY": made["secret"]}
        return Trader(made["account_id"], made["key_id"], made["secret"], self.client(headers))

    async def reference(self, symbol: str, mid: str, *, half_spread: str = "0.05") -> None:
        """Quote `symbol` around `mid` on two external venues; wait until the gateway has it."""
        instrument = self.gateway.desk.instruments[symbol]
        center, half = Decimal(mid), Decimal(half_spread)
        for venue in instrument.venues[:2]:
            self._seq += 1
            quote = marketdata.Quote(
                symbol=symbol,
                venue=venue,
                bid=center - half,
                ask=center + half,
                bid_size=Decimal(100),
                ask_size=Decimal(100),
                last=center,
                last_size=Decimal(1),
                volume=Decimal(1000),
                ts=time.time_ns(),
                seq=self._seq,
            )
            await self.nc.publish(subjects.market_data(venue, symbol), marketdata.encode(quote))
        await eventually(
            lambda: self.gateway.prices.get(symbol) == center,
            message=f"the gateway never saw {symbol} at {mid}",
        )


@pytest.fixture
async def exchange(nc: NATS, js: JetStreamContext, tmp_path: Path) -> AsyncIterator[ExchangeStack]:
    accounts = accounts_service(nc)
    engine = engine_service(nc)
    await accounts.start()
    await engine.start()
    queries: Subscription = await serve_queries(nc, accounts)
    depth_queries = await serve_depth_queries(nc, engine)
    history = await HistoryService(nc, open_store(None, home=tmp_path)).start()
    gateway = Gateway(nc, GatewayConfig(port=0, rate=1000, burst=2000), home=tmp_path)
    await gateway.start()
    assert gateway.context is not None
    made = await open_account(gateway.context, cash=Decimal(0), role="admin")
    admin_headers = {"APCA-API-KEY-ID": made["key_id"], "APCA-API-SECRET-KEY": made["secret"]}
    stack = ExchangeStack(
        nc=nc,
        js=js,
        gateway=gateway,
        accounts=accounts,
        engine=engine,
        history=history,
        admin=Trader(made["account_id"], made["key_id"], made["secret"], httpx.AsyncClient()),
    )
    stack.admin.http = stack.client(admin_headers)
    try:
        yield stack
    finally:
        for client in stack.clients:
            await client.aclose()
        await gateway.stop()
        await history.stop()
        history.store.close()
        await queries.unsubscribe()
        await depth_queries.unsubscribe()
        await engine.stop()
        await accounts.stop()


# ---- the market-data stream (gateway/mdstream.py) without the exchange behind it ----


@dataclass
class MarketDataGateway:
    """A gateway serving Alpaca's market-data stream, an API key for it, and publishers of
    what the stream carries (the feeds' and the analytics service's messages)."""

    nc: NATS
    gateway: Gateway
    key_id: str
    secret: str

    @property
    def stream(self) -> MarketDataStream:
        assert self.gateway.market_data is not None
        return self.gateway.market_data

    def url(self, path: str) -> str:
        return self.gateway.url.replace("http://", "ws://") + path

    @property
    def auth(self) -> dict[str, str]:
        return {"action": "auth", "key": self.key_id, "secret": self.secret}

    async def publish(self, message: marketdata.MarketData) -> None:
        await self.nc.publish(
            subjects.market_data(message.venue, message.symbol), marketdata.encode(message)
        )

    async def publish_nbbo(self, nbbo: Nbbo) -> None:
        await self.nc.publish(subjects.analytics_nbbo(nbbo.symbol), analytics_messages.encode(nbbo))

    async def publish_bar(self, bar: Bar) -> None:
        await self.nc.publish(
            subjects.analytics_bars(bar.timeframe, bar.venue, bar.symbol),
            analytics_messages.encode(bar),
        )


MarketDataFactory = Callable[..., Awaitable[MarketDataGateway]]


@pytest.fixture
async def market_data(
    nc: NATS, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[MarketDataFactory]:
    """`await market_data(max_symbols=3, ...)`: a gateway whose stream has that config."""
    started: list[Gateway] = []

    async def start(**settings: Any) -> MarketDataGateway:
        config = GatewayConfig(
            port=0, rate=1000, burst=2000, market_data=MarketDataConfig(**settings)
        )
        home = tmp_path / f"gateway{len(started)}"
        home.mkdir()
        gateway = await Gateway(nc, config, home=home).start()
        started.append(gateway)
        assert gateway.context is not None
        made = await open_account(gateway.context, cash=Decimal(0), role="admin")
        return MarketDataGateway(nc, gateway, made["key_id"], made["secret"])

    yield start
    for gateway in started:
        await gateway.stop()
