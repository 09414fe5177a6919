"""The market makers: two-sided liquidity on the bourse venue around the reference price.

One `MarketMakers` instance trades one account on a set of symbols, through the same journal
every client uses (requests on `orders.new`, `orders.cancel`, `orders.admin`). It follows the
external venues' quotes into a reference price per symbol, and whenever a symbol's reference,
position or resting orders change it computes the ladder it wants (`market_maker.py`) and
sends the fewest cancels and new limit GTC orders that get there (`requote.py`), at most once
per `min_requote_interval` per symbol. Its orders and position are kept from its own order
events (`working.py`); what it reads back when it starts is in `recovery.py`.

    makers = await MarketMakers(nc, account_id="mm-1", symbols=["AAPL"]).start()
    ...
    await makers.stop()   # cancels its orders and waits (bounded) for the confirmations

Settings are in `config.py`. See docs/agents.md for the account, restarts, the coins
it is given for crypto and the subjects used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy

from bourse.agents.config import (
    DEFAULT_HOLDINGS,
    DEFAULT_SYMBOL_CONFIGS,
    MakerStats,
    MarketMakersConfig,
)
from bourse.agents.market_maker import Quote, WorkingOrder
from bourse.agents.recovery import OrderRegistry, published_ids, read_positions, read_view
from bourse.agents.requote import RequoteSchedule, moved_enough, requote
from bourse.agents.working import Outcome, WorkingOrders
from bourse.analytics.reference import DEFAULT_MAX_AGE_NS, ReferencePrices
from bourse.bus.publisher import AckedPublisher, PublishError
from bourse.bus.streams import MARKET_DATA, ORDERS, POSITIONS
from bourse.errors import ConfigError
from bourse.model import marketdata, orders, positions, subjects
from bourse.model.instruments import DEFAULT_UNIVERSE, Instrument
from bourse.model.orders import RejectCode

__all__ = ["DEFAULT_SYMBOL_CONFIGS", "MakerStats", "MarketMakers", "MarketMakersConfig"]

log = logging.getLogger(__name__)

# Heartbeats of the ordered consumers: two missed ones (a lost consumer, a broker restart)
# make nats-py create the consumer again from the message after the last one it delivered.
_HEARTBEAT = 2.0
_ACCOUNT = re.compile(r"^[A-Za-z0-9_-]{1,64}$(?!\n)")  # a subject token and a KV key


class MarketMakers:
    """Quote `symbols` for `account_id`; see the module docstring."""

    def __init__(
        self,
        nc: NATS,
        *,
        account_id: str = "mm-1",
        symbols: Iterable[str] | None = None,
        config: MarketMakersConfig | None = None,
        instruments: tuple[Instrument, ...] = DEFAULT_UNIVERSE,
        registry: OrderRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if not _ACCOUNT.match(account_id):
            raise ConfigError(
                "account_id", account_id, "letters, digits, '-' and '_' (up to 64), e.g. mm-1"
            )
        known = {i.symbol: i for i in instruments}
        wanted = (
            list(known)
            if symbols is None
            else list(dict.fromkeys(subjects.normalize_symbol(s) for s in symbols))
        )
        self.config = config or MarketMakersConfig()
        # The built-in crypto ladders may name symbols a smaller universe does not have.
        configured = [s for s in self.config.per_symbol if s not in DEFAULT_SYMBOL_CONFIGS]
        configured += [s for s in self.config.holdings if s not in DEFAULT_HOLDINGS]
        for symbol in [*wanted, *configured]:
            if symbol not in known:
                raise ConfigError("symbol", symbol, f"one of {', '.join(sorted(known))}")
        for symbol, qty in self.config.holdings.items():
            if symbol in known and qty % known[symbol].lot_size != 0:
                raise ConfigError(
                    f"holdings[{symbol}]",
                    qty,
                    f"a multiple of the lot size {known[symbol].lot_size}",
                )
        if not wanted:
            raise ConfigError("symbols", wanted, "at least one symbol")
        self._nc = nc
        self.account_id = account_id
        self.symbols = tuple(wanted)
        self._instruments = {s: known[s] for s in wanted}
        self._registry = registry or OrderRegistry(nc)
        self._clock = clock
        self._wall_clock = wall_clock
        self._run = uuid.uuid4().hex[:12]  # tells this run's cancels from an earlier run's
        self._book = WorkingOrders(account_id)
        self._prices = ReferencePrices(self._instruments.values())
        self._quoted_at: dict[str, Decimal] = {}
        self._schedule = RequoteSchedule(
            self.config.min_requote_interval,
            self.config.refusal_backoff,
            self.config.max_refusal_backoff,
        )
        self._reported: set[tuple[str, str, str]] = set()
        self._registered: set[str] = set()  # symbols with ids in the registry
        self._owed: set[str] = set()  # symbols whose starting holding is still to be deposited
        self._wake = asyncio.Event()  # something to quote
        self._changed = asyncio.Event()  # an order event was applied
        self._publisher: AckedPublisher | None = None
        self._subscriptions: list[Subscription] = []
        self._market_data: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        self.stats = MakerStats()

    # ---- queries ----

    def resting(self, symbol: str) -> list[WorkingOrder]:
        """The orders of `symbol` that rest (or are on their way), not being cancelled."""
        return self._book.live(symbol)

    def position(self, symbol: str) -> Decimal:
        return self._book.position(symbol)

    def reference(self, symbol: str) -> Decimal | None:
        return self._prices.get(symbol)

    @property
    def open_orders(self) -> int:
        """Orders not yet known to be finished (cancels in flight included)."""
        return len(self._book)

    # ---- life cycle ----

    async def start(self) -> MarketMakers:
        """Open and fund the account (once ever), read back positions, cancel what an earlier
        run left resting, then quote every symbol as soon as it has a reference price."""
        if self._publisher is not None:
            raise RuntimeError(f"market maker {self.account_id} is running already")
        self._publisher = await AckedPublisher(self._nc).start()
        try:
            await self._start()
        except BaseException:
            await self._close()
            raise
        log.info("market maker %s quoting %s", self.account_id, ", ".join(self.symbols))
        return self

    async def _start(self) -> None:
        js = self._nc.jetstream()
        # Listen before sending anything, so no answer to this run's requests is missed.
        self._subscriptions.append(
            await js.subscribe(
                subjects.order_outcome("*", "*"),
                stream=ORDERS.name,
                cb=self._on_order_event,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                idle_heartbeat=_HEARTBEAT,
            )
        )
        await self._open_account()
        reports, follow_from = await read_positions(self._nc, self.account_id)
        for report in reports:
            self._book.position_reported(report.symbol, report.qty, report.match_id)
        # A position report for a symbol means its coins came (or it traded them) already,
        # also when the deposit's message has aged out of ORDERS (kept 30 days).
        self._owed -= {report.symbol for report in reports}
        self._subscriptions.append(
            await js.subscribe(
                subjects.positions(self.account_id, "*"),
                stream=POSITIONS.name,
                cb=self._on_position,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=follow_from
                ),
                idle_heartbeat=_HEARTBEAT,
            )
        )
        await self._cancel_leftovers()
        await self._recent_quotes()
        for symbol in self.symbols:
            self._market_data.append(
                await self._nc.subscribe(
                    subjects.market_data_filter("*", symbol),
                    cb=self._on_market_data,
                    pending_msgs_limit=10_000,  # only the latest price matters: drop, not queue
                )
            )
        self._task = asyncio.create_task(self._quote_loop(), name=f"market-maker-{self.account_id}")

    async def stop(self) -> None:
        """Stop quoting, cancel every order, and wait up to `cancel_timeout` for the cancels
        to be confirmed. Orders still unconfirmed then stay in the registry: the next start
        cancels them."""
        if self._publisher is None:
            return
        await self._stop_quoting()
        try:
            async with asyncio.timeout(self.config.cancel_timeout):
                for order_id in self._book.uncancelled():
                    self._book.cancelling(order_id)
                    await self._send_cancel(order_id)
                await self._publisher.flush(self.config.cancel_timeout)
        except Exception:
            log.exception("market maker %s: sending the final cancels failed", self.account_id)
        if await self._wait_until(lambda: len(self._book) == 0, self.config.cancel_timeout):
            try:
                for symbol in sorted(self._registered):
                    await self._registry.save(self.account_id, symbol, [])
            except Exception:
                log.exception(
                    "market maker %s: clearing the order registry failed", self.account_id
                )
        else:
            log.warning(
                "market maker %s: %d orders not confirmed cancelled after %.1fs; "
                "the next start cancels them",
                self.account_id,
                len(self._book),
                self.config.cancel_timeout,
            )
        await self._close()

    async def abort(self) -> None:
        """Stop at once, cancelling nothing (what a crash does; the next start cleans up)."""
        if self._publisher is None:
            return
        await self._stop_quoting()
        await self._close()

    async def _stop_quoting(self) -> None:
        for subscription in self._market_data:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._market_data.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _close(self) -> None:
        for subscription in [*self._market_data, *self._subscriptions]:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._market_data.clear()
        self._subscriptions.clear()
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None

    # ---- start-up ----

    def _msg_id(self, *parts: str) -> str:
        return ":".join(("agent", self.account_id, *parts))

    async def _open_account(self) -> None:
        opened, funded = self._msg_id("open"), self._msg_id("fund")
        held = {s: self._msg_id("holding", s) for s in self.symbols if self.config.holding(s) > 0}
        done = await published_ids(
            self._nc, ORDERS.name, subjects.ORDERS_ADMIN, (opened, funded, *held.values())
        )
        self._owed = {symbol for symbol, msg_id in held.items() if msg_id not in done}
        publisher = self._require_publisher()
        now = self._wall_clock()
        if opened not in done:
            log.info("market maker %s: opening its account", self.account_id)
            event = orders.AccountOpened(ts=now, account_id=self.account_id, shorting_enabled=True)
            await publisher.publish(subjects.ORDERS_ADMIN, orders.encode(event), msg_id=opened)
            self.stats.account_requests += 1
            # Stored before the deposit: a deposit to an account not open yet is ignored.
            await publisher.flush()
        if funded not in done:
            amount = self.config.deposit
            log.info("market maker %s: depositing %s", self.account_id, amount)
            deposit = orders.CashDeposited(ts=now, account_id=self.account_id, amount=amount)
            await publisher.publish(subjects.ORDERS_ADMIN, orders.encode(deposit), msg_id=funded)
            self.stats.account_requests += 1
            await publisher.flush()

    async def _deposit_holding(self, symbol: str, reference: Decimal) -> None:
        """Give the account its starting coins, once ever, at the first reference price (on the
        tick already) as their cost basis; the position report that follows re-quotes."""
        qty = self.config.holding(symbol)
        log.info("market maker %s: depositing %s %s at %s", self.account_id, qty, symbol, reference)
        event = orders.AssetDeposited(
            ts=self._wall_clock(),
            account_id=self.account_id,
            symbol=symbol,
            qty=qty,
            price=reference,
        )
        publisher = self._require_publisher()
        await publisher.publish(
            subjects.ORDERS_ADMIN, orders.encode(event), msg_id=self._msg_id("holding", symbol)
        )
        await publisher.flush()
        self.stats.account_requests += 1
        self._owed.discard(symbol)

    async def _cancel_leftovers(self) -> None:
        leftovers = await self._registry.load(self.account_id)
        if not leftovers:
            return
        count = sum(map(len, leftovers.values()))
        log.info("market maker %s: cancelling %d orders of an earlier run", self.account_id, count)
        for symbol, order_ids in leftovers.items():
            self._registered.add(symbol)
            for order_id in order_ids:
                self._book.adopt(order_id, symbol)
                await self._send_cancel(order_id)
        await self._require_publisher().flush()
        if not await self._wait_until(lambda: self._book.adopted == 0, self.config.cancel_timeout):
            log.warning(
                "market maker %s: %d orders of an earlier run not confirmed cancelled; "
                "quoting anyway",
                self.account_id,
                self._book.adopted,
            )
        for symbol in leftovers:
            await self._registry.save(self.account_id, symbol, self._book.order_ids(symbol))

    async def _recent_quotes(self) -> None:
        """Take the venues' last quotes from the stream, when recent enough to be a reference:
        a feed that is quiet (or a replay paused) does not keep a fresh maker from quoting."""
        now = self._wall_clock()
        for delivery in await read_view(
            self._nc,
            MARKET_DATA.name,
            subjects.market_data_filter(),
            deliver_policy="last_per_subject",
        ):
            try:
                message = marketdata.decode(delivery.data)
            except (msgspec.DecodeError, ValueError):
                continue
            fresh = now - delivery.time_ns <= DEFAULT_MAX_AGE_NS
            if isinstance(message, marketdata.Quote) and fresh:
                self._prices.on_quote(message, now_ns=delivery.time_ns)
        for symbol in self._prices.all():
            self._touch(symbol)

    # ---- quoting ----

    async def _quote_loop(self) -> None:
        while True:
            self._wake.clear()
            for symbol in self._schedule.due(self._clock()):
                try:
                    await self._requote(symbol)
                except Exception:
                    log.exception("market maker %s: re-quoting %s failed", self.account_id, symbol)
                self._schedule.quoted(symbol, self._clock())
            try:
                self._require_publisher().raise_errors()
            except PublishError:
                log.exception("market maker %s: the journal refused a request", self.account_id)
            wait = self._schedule.wait_time(self._clock())
            if wait == 0:
                await asyncio.sleep(0)  # due now: go round, but let the callbacks run first
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _requote(self, symbol: str) -> None:
        reference = self._prices.get(symbol)
        if reference is None:
            return
        if symbol in self._owed:
            await self._deposit_holding(symbol, reference)
        self.stats.requotes += 1
        # The ladder stays on the reference it was built on until the price moves the
        # threshold away from it: a re-quote for a fill or a confirmed cancel must not re-price
        # every order for a move too small to matter (on a fine tick, as crypto's, any move
        # re-prices, and each re-price's cancels would trigger the next, once a second).
        anchor = self._quoted_at.get(symbol)
        if anchor is None or moved_enough(anchor, reference, self.config.requote_threshold_bps):
            anchor = self._quoted_at[symbol] = reference
        todo = requote(
            self._instruments[symbol],
            self.config.for_symbol(symbol),
            anchor,
            self._book.position(symbol),
            self._book.live(symbol),
            self._book.reserved_sells(symbol),
            target=self.config.holding(symbol),
        )
        # Cancels first: the journal keeps their order, so a new order never meets the old
        # one it replaces on the book.
        for order_id in todo.cancel:
            self._book.cancelling(order_id)
            await self._send_cancel(order_id)
        if not todo.place:
            return
        new = [(str(uuid.uuid4()), quote) for quote in todo.place]
        for order_id, quote in new:
            self._book.placed(order_id, symbol, quote)
        try:
            # Registered before sent: a crash from here on leaves ids the next run cancels.
            await self._registry.save(self.account_id, symbol, self._book.order_ids(symbol))
        except Exception:
            for order_id, _ in new:
                self._book.forget(order_id)
            raise
        self._registered.add(symbol)
        for order_id, quote in new:
            await self._send_order(order_id, symbol, quote, reference)

    async def _send_order(
        self, order_id: str, symbol: str, quote: Quote, reference: Decimal
    ) -> None:
        order = orders.OrderSubmitted(
            ts=self._wall_clock(),
            order_id=order_id,
            client_order_id=order_id,
            account_id=self.account_id,
            symbol=symbol,
            side="buy" if quote.side == "buy" else "sell",
            kind="limit",
            time_in_force="gtc",
            qty=quote.qty,
            limit_price=quote.price,
            reference_price=reference,
        )
        await self._require_publisher().publish(
            subjects.ORDERS_NEW, orders.encode(order), msg_id=self._msg_id(order_id)
        )
        self.stats.orders_sent += 1

    async def _send_cancel(self, order_id: str) -> None:
        request = orders.CancelRequested(
            ts=self._wall_clock(), order_id=order_id, account_id=self.account_id
        )
        # The run in the id: an earlier run's cancel of the same order may still be inside
        # the duplicate window, and this one must not be dropped as its copy.
        await self._require_publisher().publish(
            subjects.ORDERS_CANCEL,
            orders.encode(request),
            msg_id=self._msg_id(order_id, "cancel", self._run),
        )
        self.stats.cancels_sent += 1

    # ---- what comes back ----

    async def _on_market_data(self, msg: Msg) -> None:
        try:
            message = marketdata.decode(msg.data)
        except (msgspec.DecodeError, ValueError):
            return  # the feed's consumers dead-letter malformed data; here it is just skipped
        if not isinstance(message, marketdata.Quote):
            return
        reference = self._prices.on_quote(message)
        if reference is not None and moved_enough(
            self._quoted_at.get(message.symbol), reference, self.config.requote_threshold_bps
        ):
            self._touch(message.symbol)

    async def _on_order_event(self, msg: Msg) -> None:
        try:
            event = orders.decode(msg.data)
        except msgspec.DecodeError:
            return
        try:
            outcome = self._book.apply(event)
            if outcome is not None:
                self._react(outcome)
        except Exception:
            log.exception("market maker %s: applying %s failed", self.account_id, msg.subject)

    async def _on_position(self, msg: Msg) -> None:
        try:
            report = positions.decode(msg.data)
        except msgspec.DecodeError:
            return
        self._book.position_reported(report.symbol, report.qty, report.match_id)
        self._touch(report.symbol)

    def _react(self, outcome: Outcome) -> None:
        self._changed.set()
        symbol, rejection = outcome.symbol, outcome.rejection
        if outcome.kind == "accepted":
            self._schedule.accepted(symbol)
            return  # the plan already counted it
        if outcome.kind == "filled":
            self.stats.fills += 1
        elif rejection is not None and not (
            # A cancel of an order that had finished already: nothing went wrong.
            outcome.kind == "cancel_refused" and rejection.code is RejectCode.UNKNOWN_ORDER
        ):
            self._report(rejection)
            if symbol in self._instruments:
                self._schedule.refused(symbol, self._clock())
                self._wake.set()
            return
        self._touch(symbol)

    def _touch(self, symbol: str) -> None:
        """The symbol's position or orders changed: quote it again (when allowed)."""
        if symbol in self._instruments:
            self._schedule.mark(symbol)
            self._wake.set()

    def _report(self, rejection: orders.OrderRejected) -> None:
        """Log a refusal the first time its reason comes up for a symbol; count them all."""
        self.stats.refusals[rejection.code] += 1
        key = (rejection.symbol, rejection.request, str(rejection.code))
        if key in self._reported:
            log.debug("market maker %s: %s", self.account_id, rejection.message)
            return
        self._reported.add(key)
        log.warning(
            "market maker %s: %s request for %s refused (%s): %s; "
            "the symbol backs off, and further refusals for this reason are logged at debug",
            self.account_id,
            rejection.request,
            rejection.symbol or rejection.order_id,
            rejection.code,
            rejection.message,
        )

    # ---- helpers ----

    def _require_publisher(self) -> AckedPublisher:
        if self._publisher is None:
            raise RuntimeError("MarketMakers.start() was not called (or it was stopped)")
        return self._publisher

    async def _wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._changed.clear()
            if condition():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
