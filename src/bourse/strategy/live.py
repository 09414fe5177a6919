"""Live: ticks from NATS as they are published, orders through the public API.

The intake is an ordered JetStream consumer on `md.<venue>.<symbol>` in MARKET_DATA, from new
messages on. Its callback hands each tick to the pipeline and waits while the pipeline is
full; nats-py then holds back the consumer's flow-control replies, so the server stops
sending instead of anyone dropping ticks. A strategy that falls behind therefore trades late
rather than on gaps (market data is not conflated); `max_tick_age_s` keeps it from trading
on a tick that has grown too old by the time its signal reaches execution.

Execution is an agent like any other client: `ApiBroker` trades its own account through
`BourseClient` (the REST client the CLI uses), with the key it is given, or with a new account
it opens with an admin key (`open_account`). Orders are IOC limits, `limit_bps` through the
quote; the gateway answers once the exchange has decided, and an answer that is not final yet
is followed (`GET /v2/orders/{id}`) for a bounded time. The account (cash, buying power,
position) is read back after each order, and that is what sizing sees next.

Stopping: the intake ends, the ticks already taken in are drained through the stages, then
any of this run's orders still open is cancelled. The position is left as it is (`bourse
close SYMBOL` flattens it).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from bourse.bus.streams import MARKET_DATA
from bourse.client import Account, ApiError, BourseClient, Credentials, Order
from bourse.errors import BrokerError
from bourse.model import marketdata, subjects
from bourse.model.instruments import Instrument
from bourse.strategy.config import StrategyConfig
from bourse.strategy.enrich import TickReader
from bourse.strategy.execution import Refusal
from bourse.strategy.performance import Summary
from bourse.strategy.sizing import TradeBook
from bourse.strategy.stages import StrategyRun
from bourse.strategy.types import Fill, OrderRequest, Portfolio, Tick

log = logging.getLogger(__name__)

FINAL_STATUSES = frozenset(
    {"filled", "canceled", "expired", "rejected", "done_for_day", "replaced"}
)
_HEARTBEAT = 2.0  # two missed: nats-py makes the ordered consumer anew where it left off
_ZERO = Decimal(0)


def open_account(admin: BourseClient, cash: Decimal) -> Credentials:
    """A new account for the strategy, opened with an admin key, with `cash` in it."""
    return admin.create_account(cash)


class ApiBroker:
    """Orders through the HTTP API for one account (its key is the client's)."""

    def __init__(
        self,
        client: BourseClient,
        instrument: Instrument,
        *,
        order_timeout: float = 10.0,
        poll_interval: float = 0.05,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._client = client
        self._instrument = instrument
        self._order_timeout = order_timeout
        self._poll_interval = poll_interval
        self._now = wall_clock_ns
        self.open_orders: set[str] = set()  # ids of this run's orders not known to be final

    async def portfolio(self, book: TradeBook) -> Portfolio:
        account, position, _ = await asyncio.to_thread(self._read_account)
        return Portfolio(
            cash=account.cash,
            buying_power=account.buying_power,
            position=position,
            stats=book.stats,
        )

    async def opening_book(self) -> TradeBook:
        """The record a run starts with: a position already held counts as an open trade."""
        _, position, avg_price = await asyncio.to_thread(self._read_account)
        return TradeBook(position=position, avg_price=avg_price, opened_ts=self._now())

    def _read_account(self) -> tuple[Account, Decimal, Decimal]:
        account = self._client.account()
        for held in self._client.positions():
            if held.symbol == self._instrument.symbol:
                return account, held.qty, held.avg_entry_price
        return account, _ZERO, _ZERO

    async def execute(self, order: OrderRequest) -> Fill | Refusal:
        try:
            placed = await asyncio.to_thread(
                self._client.submit,
                order.symbol,
                order.side,
                order.qty,
                type="limit",
                time_in_force="ioc",
                limit_price=order.limit_price,
                client_order_id=order.client_order_id,
            )
        except ApiError as error:
            return Refusal(reason=error.reason or f"http_{error.status}", message=error.message)
        placed = await self._until_final(placed)
        return Fill(
            client_order_id=order.client_order_id,
            order_id=placed.id,
            ts=self._now(),
            side=order.side,
            qty=placed.filled_qty,
            price=placed.filled_avg_price or _ZERO,
        )

    async def _until_final(self, order: Order) -> Order:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._order_timeout
        while order.status not in FINAL_STATUSES and loop.time() < deadline:
            await asyncio.sleep(self._poll_interval)  # the API has no long poll for one order
            order = await asyncio.to_thread(self._client.order, order.id)
        if order.status not in FINAL_STATUSES:
            self.open_orders.add(order.id)
        return order

    async def close(self) -> None:
        """Cancel this run's orders that were still open (IOC orders rarely are)."""
        for order_id in sorted(self.open_orders):
            try:
                await asyncio.to_thread(self._client.cancel, order_id)
            except ApiError as error:
                log.info("strategy: order %s not cancelled: %s", order_id, error.message)
        self.open_orders.clear()


async def follow_ticks(
    nc: NATS,
    reader: TickReader,
    put: Callable[[Tick], Awaitable[None]],
    *,
    ready: asyncio.Event | None = None,
) -> None:
    """Hand every new tick of the reader's symbol and venue to `put`, until cancelled."""

    async def on_message(msg: Msg) -> None:
        try:
            message = marketdata.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        tick = reader.read(message)
        if tick is not None:
            await put(tick)  # waits while the pipeline is full: backpressure to the server

    subject = subjects.market_data(reader.venue, reader.symbol)
    try:
        subscription = await nc.jetstream().subscribe(
            subject,
            stream=MARKET_DATA.name,
            cb=on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            idle_heartbeat=_HEARTBEAT,
        )
    except NotFoundError:
        raise BrokerError(
            f"cannot follow {subject}: no {MARKET_DATA.name} stream on this server "
            "(`bourse up` creates it)"
        ) from None
    try:
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()  # until the pipeline cancels the intake
    finally:
        await subscription.unsubscribe()


class LiveStrategy:
    """The strategy trading one account live; `await LiveStrategy(...).run(stop)`."""

    def __init__(
        self,
        nc: NATS,
        client: BourseClient,
        config: StrategyConfig,
        instrument: Instrument,
        *,
        venue: str,
        run_id: str | None = None,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._nc = nc
        self.config = config.check()
        self.instrument = instrument
        self.venue = venue
        self.run_id = run_id or f"st-{uuid.uuid4().hex[:8]}"
        self.broker = ApiBroker(client, instrument, wall_clock_ns=wall_clock_ns)
        self._now = wall_clock_ns
        self.ready = asyncio.Event()  # set once the intake is subscribed
        self.strategy: StrategyRun | None = None

    async def run(self, stop: asyncio.Event) -> Summary:
        """Trade until `stop` is set; then drain, cancel what is open, and summarize."""
        book = await self.broker.opening_book()
        self.strategy = strategy = StrategyRun(
            self.config,
            self.instrument,
            self.broker,
            await self.broker.portfolio(book),
            run_id=self.run_id,
            book=book,
            live=True,
            wall_clock_ns=self._now,
        )
        reader = TickReader(self.instrument.symbol, self.venue, self.config.price_source)
        started = time.perf_counter()

        async def feed(put: Callable[[Tick], Awaitable[None]]) -> None:
            await follow_ticks(self._nc, reader, put, ready=self.ready)

        await strategy.pipeline.run(feed, stop=stop)
        return strategy.summary(
            mode="live",
            venue=self.venue,
            source=subjects.market_data(self.venue, self.instrument.symbol),
            seed=None,
            elapsed_s=time.perf_counter() - started,
        )
