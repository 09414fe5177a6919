"""The market makers against a real nats-server, with the accounts and engine services running.

The makers quote `AAPL` around the external venues' mid (nyse and nasdaq quotes published on
`md.<venue>.AAPL`); what they achieve is read where a client would read it: the engine's
depth on `md.bourse.AAPL` and the journal's events.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal as D
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bourse.accounts.service import accounts_service
from bourse.agents.market_maker import MakerConfig, desired_quotes
from bourse.agents.recovery import OrderRegistry, read_positions, read_view
from bourse.agents.service import MarketMakers, MarketMakersConfig
from bourse.bus.connection import connect
from bourse.bus.fold import FoldService
from bourse.bus.server import NatsServer
from bourse.bus.streams import ORDERS, POSITIONS
from bourse.engine.service import engine_service
from bourse.model import marketdata, orders, positions, subjects
from bourse.model.instruments import universe_by_symbol
from bourse.model.orders import RejectCode
from tests.conftest import eventually

AAPL = universe_by_symbol()["AAPL"]
LADDER = MakerConfig(spread_bps=D(10), level_step_bps=D(5), levels=3, size=D(100))
CONFIG = MarketMakersConfig(quoting=LADDER)


@dataclass
class Exchange:
    """The services, plus what a client sees: the bourse venue's depth and the journal."""

    nc: NATS
    js: JetStreamContext
    services: list[FoldService[Any]]
    depth: dict[str, marketdata.Depth] = field(default_factory=dict)
    events: list[orders.OrdersEvent] = field(default_factory=list)
    _md_seq: int = 0

    async def on_market_data(self, msg: Msg) -> None:
        message = marketdata.decode(msg.data)
        if isinstance(message, marketdata.Depth):
            self.depth[message.symbol] = message

    async def on_order_event(self, msg: Msg) -> None:
        self.events.append(orders.decode(msg.data))

    def ladder(self, symbol: str = "AAPL") -> tuple[list[tuple[D, D]], list[tuple[D, D]]]:
        """The bourse book's (bids, asks) as the engine last published them."""
        book = self.depth.get(symbol)
        return (list(book.bids), list(book.asks)) if book is not None else ([], [])

    async def reference(self, symbol: str, bid: str, ask: str) -> None:
        """Both external venues quote `bid`/`ask`: the reference becomes their mid."""
        instrument = universe_by_symbol()[symbol]
        for venue in instrument.venues:
            self._md_seq += 1
            quote = marketdata.Quote(
                symbol=symbol,
                venue=venue,
                bid=D(bid),
                ask=D(ask),
                bid_size=D(500),
                ask_size=D(500),
                last=D(bid),
                last_size=D(1),
                volume=D(1000),
                ts=self._md_seq,
                seq=self._md_seq,
            )
            await self.js.publish(subjects.market_data(venue, symbol), marketdata.encode(quote))

    async def request(self, subject: str, event: orders.OrdersEvent) -> None:
        await self.js.publish(subject, orders.encode(event))

    async def trader(self, account_id: str, cash: str) -> None:
        await self.request(subjects.ORDERS_ADMIN, orders.AccountOpened(ts=1, account_id=account_id))
        await self.request(
            subjects.ORDERS_ADMIN,
            orders.CashDeposited(ts=1, account_id=account_id, amount=D(cash)),
        )

    async def admin_events(self) -> list[orders.OrdersEvent]:
        """Every `orders.admin` message the journal holds, in order."""
        deliveries = await read_view(self.nc, ORDERS.name, subjects.ORDERS_ADMIN)
        return [orders.decode(d.data) for d in deliveries]

    def of(self, kind: type[Any], account_id: str) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and e.account_id == account_id]


@pytest.fixture
async def exchange(
    nats_server: NatsServer, nc: NATS, js: JetStreamContext
) -> AsyncIterator[Exchange]:
    services: list[FoldService[Any]] = [
        await engine_service(nc).start(),
        await accounts_service(nc).start(),
    ]
    running = Exchange(nc, js, services)
    await nc.subscribe(subjects.market_data("bourse", "*"), cb=running.on_market_data)
    await nc.subscribe(subjects.ALL_ORDERS, cb=running.on_order_event)
    yield running
    for service in services:
        await service.stop()


@pytest.fixture
async def maker_nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    """The maker's own connection, as its own process would have."""
    client = await connect(nats_server.url, name="maker")
    yield client
    if not client.is_closed:
        await client.close()


def ladder_at(reference: str, position: int = 0) -> tuple[list[tuple[D, D]], list[tuple[D, D]]]:
    """The (bids, asks) depth the maker's ladder makes around `reference`, best first."""
    quotes = desired_quotes(AAPL, LADDER, D(reference), D(position))
    bids = sorted(((q.price, q.qty) for q in quotes if q.side == "buy"), reverse=True)
    asks = sorted((q.price, q.qty) for q in quotes if q.side == "sell")
    return bids, asks


def maker_order_ids(exchange: Exchange, account_id: str = "mm-1") -> set[str]:
    return {e.order_id for e in exchange.of(orders.OrderAccepted, account_id)}


def finished(exchange: Exchange, order_ids: set[str]) -> bool:
    done = {e.order_id for e in exchange.events if isinstance(e, orders.OrderCancelled)}
    done |= {
        e.order_id for e in exchange.events if isinstance(e, orders.Execution) and e.leaves_qty == 0
    }
    return order_ids <= done


async def market_buy(exchange: Exchange, account_id: str, qty: int) -> None:
    """A funded user buys `qty` AAPL at market (the reference is 100.00)."""
    await exchange.trader(account_id, "1000000")
    await exchange.request(
        subjects.ORDERS_NEW,
        orders.OrderSubmitted(
            ts=2,
            order_id=f"{account_id}-buy-1",
            client_order_id=f"{account_id}-buy-1",
            account_id=account_id,
            symbol="AAPL",
            side="buy",
            kind="market",
            time_in_force="day",
            qty=D(qty),
            reference_price=D("100.00"),
        ),
    )


def maker_report(
    account_id: str, symbol: str, qty: D, *, price: str = "60000.00", match_id: int = 0
) -> positions.PositionChanged:
    """Accounts' report of a position (match id 0: not after a fill)."""
    return positions.PositionChanged(
        ts=1,
        account_id=account_id,
        symbol=symbol,
        qty=qty,
        avg_entry_price=D(price),
        realized_pnl=D(0),
        cash=D(0),
        match_id=match_id,
    )


async def test_the_maker_quotes_both_sides_and_a_market_buy_fills_on_its_asks(
    exchange: Exchange, maker_nc: NATS
) -> None:
    await exchange.reference("AAPL", "99.99", "100.01")
    maker = await MarketMakers(maker_nc, symbols=["AAPL"], config=CONFIG).start()
    try:
        expected = ladder_at("100.00")
        assert expected == (
            [(D("99.95"), D(100)), (D("99.90"), D(100)), (D("99.85"), D(100))],
            [(D("100.05"), D(100)), (D("100.10"), D(100)), (D("100.15"), D(100))],
        )
        await eventually(lambda: exchange.ladder() == expected, message="no two-sided ladder")
        assert len(maker_order_ids(exchange)) == 6

        # A user's market buy of 150 takes the best ask and half the next one.
        await market_buy(exchange, "alice", 150)
        await eventually(lambda: sum(e.qty for e in exchange.of(orders.Execution, "alice")) == 150)
        fills = [(e.price, e.qty) for e in exchange.of(orders.Execution, "alice")]
        assert fills == [(D("100.05"), D(100)), (D("100.10"), D(50))]
        assert {price for price, _ in fills} <= {price for price, _ in expected[1]}

        # The maker is short 150 now: it skews its ladder up and fills its book again.
        await eventually(lambda: maker.position("AAPL") == -150)
        await eventually(lambda: exchange.ladder() == ladder_at("100.00", position=-150))
        bids, asks = exchange.ladder()
        assert len(bids) == len(asks) == 3 and bids[0][0] < D("100.00") < asks[0][0]
    finally:
        await maker.stop()


async def test_the_maker_follows_the_reference_and_cancels_what_it_replaced(
    exchange: Exchange, maker_nc: NATS
) -> None:
    await exchange.reference("AAPL", "99.99", "100.01")
    maker = await MarketMakers(maker_nc, symbols=["AAPL"], config=CONFIG).start()
    try:
        await eventually(lambda: exchange.ladder() == ladder_at("100.00"))
        first = maker_order_ids(exchange)

        await exchange.reference("AAPL", "100.99", "101.01")
        await eventually(lambda: exchange.ladder() == ladder_at("101.00"), message="no re-quote")
        await eventually(lambda: finished(exchange, first))
        assert all(e.reason == "requested" for e in exchange.of(orders.OrderCancelled, "mm-1"))
        assert not exchange.of(orders.OrderRejected, "mm-1")
        assert maker.reference("AAPL") == D("101.00")
        assert sorted(o.price for o in maker.resting("AAPL")) == sorted(
            price for side in ladder_at("101.00") for price, _ in side
        )
    finally:
        await maker.stop()


async def test_stop_cancels_every_order_and_waits_for_the_confirmations(
    exchange: Exchange, maker_nc: NATS
) -> None:
    await exchange.reference("AAPL", "99.99", "100.01")
    maker = await MarketMakers(maker_nc, symbols=["AAPL"], config=CONFIG).start()
    await eventually(lambda: exchange.ladder() == ladder_at("100.00"))
    placed = maker_order_ids(exchange)

    await maker.stop()

    assert maker.open_orders == 0  # stop() returned after every cancel was confirmed
    await eventually(lambda: finished(exchange, placed))
    await eventually(lambda: exchange.ladder() == ([], []), message="orders left resting")
    assert await OrderRegistry(exchange.nc).load("mm-1") == {}


async def test_a_restart_keeps_the_position_funds_nothing_twice_and_cancels_what_was_left(
    nats_server: NatsServer, exchange: Exchange, maker_nc: NATS
) -> None:
    await exchange.reference("AAPL", "99.99", "100.01")
    crashed = await MarketMakers(maker_nc, symbols=["AAPL"], config=CONFIG).start()
    await eventually(lambda: exchange.ladder() == ladder_at("100.00"))
    await market_buy(exchange, "alice", 150)
    skewed = ladder_at("100.00", position=-150)
    await eventually(lambda: exchange.ladder() == skewed)

    async def position_reported() -> bool:
        try:
            last = await exchange.js.get_last_msg(POSITIONS.name, "positions.mm-1.AAPL")
        except NotFoundError:
            return False
        return positions.decode(last.data or b"").qty == -150

    await eventually(position_reported)
    left_behind = maker_order_ids(exchange)
    await crashed.abort()  # dies without cancelling anything
    await maker_nc.close()
    assert exchange.ladder() == skewed

    again_nc = await connect(nats_server.url, name="maker-again")
    again = await MarketMakers(again_nc, symbols=["AAPL"], config=CONFIG).start()
    try:
        assert again.position("AAPL") == -150  # read back from accounts' reports
        # start() returned once the earlier run's orders were confirmed cancelled.
        await eventually(lambda: finished(exchange, left_behind))
        await eventually(lambda: exchange.ladder() == skewed)
        assert maker_order_ids(exchange) - left_behind  # quoting with new orders
    finally:
        await again.stop()
        await again_nc.close()

    # The second run found its account on the journal and sent nothing (it does not rely on
    # the 2-minute duplicate window, which would also have dropped a resend here).
    assert (crashed.stats.account_requests, again.stats.account_requests) == (2, 0)
    admin = await exchange.admin_events()
    assert [type(e) for e in admin if getattr(e, "account_id", "") == "mm-1"] == [
        orders.AccountOpened,
        orders.CashDeposited,
    ]


async def test_refused_orders_are_reported_once_and_retried_after_a_back_off(
    exchange: Exchange, maker_nc: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    # Too poor for any of its orders: bids need cash, short sales margin.
    poor = MarketMakersConfig(
        quoting=LADDER, deposit=D(100), refusal_backoff=0.05, max_refusal_backoff=0.05
    )
    await exchange.reference("AAPL", "99.99", "100.01")
    caplog.set_level(logging.WARNING, logger="bourse.agents.service")
    maker = MarketMakers(maker_nc, account_id="mm-poor", symbols=["AAPL"], config=poor)
    await maker.start()
    try:
        # Two rounds of six refusals: the symbol was quoted again after its back-off.
        await eventually(lambda: maker.stats.refusals[RejectCode.INSUFFICIENT_BUYING_POWER] >= 12)
        warnings = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(warnings) == 1 and "insufficient_buying_power" in warnings[0].getMessage()
        assert exchange.ladder() == ([], [])
        assert not exchange.of(orders.OrderAccepted, "mm-poor")
    finally:
        await maker.stop()
    assert maker.open_orders == 0


async def test_a_maker_without_coins_quotes_only_bids_on_crypto(
    exchange: Exchange, maker_nc: NATS
) -> None:
    await exchange.reference("BTC-USD", "65000.00", "65001.00")
    penniless = MarketMakersConfig(holdings={})
    maker = await MarketMakers(maker_nc, symbols=["BTC-USD"], config=penniless).start()
    try:
        await eventually(lambda: len(exchange.ladder("BTC-USD")[0]) == 3)
        bids, asks = exchange.ladder("BTC-USD")
        assert asks == [] and bids[0][0] < D("65000.50")
        assert all(size == D("0.1") for _, size in bids)
        assert not maker.stats.refusals
    finally:
        await maker.stop()
    await eventually(lambda: exchange.ladder("BTC-USD") == ([], []))


async def test_a_maker_given_coins_quotes_both_sides_and_a_buy_fills_once_ever_funded(
    exchange: Exchange, maker_nc: NATS, nats_server: NatsServer
) -> None:
    await exchange.reference("BTC-USD", "65000.00", "65001.00")
    maker = await MarketMakers(maker_nc, symbols=["BTC-USD"]).start()  # 2 coins by default
    try:
        await eventually(lambda: maker.position("BTC-USD") == 2, message="no coins deposited")
        await eventually(
            lambda: [len(side) for side in exchange.ladder("BTC-USD")] == [3, 3],
            message="no two-sided BTC ladder",
        )
        bids, asks = exchange.ladder("BTC-USD")
        assert bids[0][0] < D("65000.50") < asks[0][0]
        assert not maker.stats.refusals

        await exchange.trader("alice", "1000000")
        await exchange.request(
            subjects.ORDERS_NEW,
            orders.OrderSubmitted(
                ts=2,
                order_id="alice-btc-1",
                client_order_id="alice-btc-1",
                account_id="alice",
                symbol="BTC-USD",
                side="buy",
                kind="market",
                time_in_force="gtc",
                qty=D("0.15"),
                reference_price=D("65000.50"),
            ),
        )
        await eventually(
            lambda: sum(e.qty for e in exchange.of(orders.Execution, "alice")) == D("0.15")
        )
        assert all(e.price >= asks[0][0] for e in exchange.of(orders.Execution, "alice"))
        await eventually(lambda: maker.position("BTC-USD") == D("1.85"))
    finally:
        await maker.stop()

    again_nc = await connect(nats_server.url, name="maker-again")
    again = await MarketMakers(again_nc, symbols=["BTC-USD"]).start()
    try:
        assert again.position("BTC-USD") == D("1.85")
    finally:
        await again.stop()
        await again_nc.close()
    assert (maker.stats.account_requests, again.stats.account_requests) == (3, 0)
    admin = await exchange.admin_events()
    deposits = [e for e in admin if isinstance(e, orders.AssetDeposited)]
    assert [(e.account_id, e.symbol, e.qty, e.price) for e in deposits] == [
        ("mm-1", "BTC-USD", D(2), D("65000.50"))
    ]


async def test_small_moves_do_not_re_price_the_ladder_however_often_it_is_re_quoted(
    exchange: Exchange, maker_nc: NATS
) -> None:
    """On crypto's fine tick any move changes the ladder's prices. A re-quote for a confirmed
    cancel used to re-price at the latest reference, whose cancels triggered the next: six
    orders and six cancels a second per symbol, forever, on a quiet market."""
    await exchange.reference("BTC-USD", "65000.00", "65001.00")
    maker = await MarketMakers(maker_nc, symbols=["BTC-USD"]).start()
    try:
        await eventually(lambda: [len(s) for s in exchange.ladder("BTC-USD")] == [3, 3])
        # One real move (20 bp): the ladder follows it...
        await exchange.reference("BTC-USD", "65130.00", "65131.00")

        def moved() -> bool:  # every bid above the old mid, every ask above the new one
            bids, asks = exchange.ladder("BTC-USD")
            return (
                maker.open_orders == 6
                and [len(bids), len(asks)] == [3, 3]
                and min(price for price, _ in bids) > D("65000.50")
                and min(price for price, _ in asks) > D("65130.50")
            )

        await eventually(moved, message="the ladder never followed the move")
        settled = dataclasses.replace(maker.stats)
        # ... then the price wanders by less than the threshold (2 bp), and after each step
        # something re-quotes the symbol (here a position report, as a fill or a confirmed
        # cancel would): each re-quote must leave the ladder where it is.
        for step in range(1, 6):
            bid = D("65130.00") + D(step)  # within 1 bp of the new anchor
            await exchange.reference("BTC-USD", str(bid), str(bid + 1))
            await eventually(lambda: maker.reference("BTC-USD") == bid + D("0.50"))  # noqa: B023
            requotes = maker.stats.requotes
            await exchange.js.publish(
                "positions.mm-1.BTC-USD",
                positions.encode(maker_report("mm-1", "BTC-USD", maker.position("BTC-USD"))),
            )
            await eventually(lambda: maker.stats.requotes > requotes)  # noqa: B023
        await eventually(lambda: maker.open_orders == 6)
        # Nothing sent for the wandering, though the symbol was re-quoted after every step.
        assert maker.stats.requotes >= settled.requotes + 5
        assert (maker.stats.orders_sent, maker.stats.cancels_sent) == (
            settled.orders_sent,
            settled.cancels_sent,
        ), (settled, maker.stats)
    finally:
        await maker.stop()


async def test_coins_are_not_given_again_to_an_account_that_has_held_them(
    exchange: Exchange, maker_nc: NATS
) -> None:
    """The deposit's message id on ORDERS ages out after 30 days; the position report stays."""
    held = maker_report("mm-old", "BTC-USD", D("1.5"), match_id=7)
    await exchange.js.publish("positions.mm-old.BTC-USD", positions.encode(held))
    await exchange.reference("BTC-USD", "65000.00", "65001.00")
    maker = await MarketMakers(maker_nc, account_id="mm-old", symbols=["BTC-USD"]).start()
    try:
        assert maker.position("BTC-USD") == D("1.5")
        await eventually(lambda: len(exchange.ladder("BTC-USD")[0]) == 3)  # quoting
    finally:
        await maker.stop()
    assert maker.stats.account_requests == 2  # opened and funded: no coins
    admin = await exchange.admin_events()
    assert not [e for e in admin if isinstance(e, orders.AssetDeposited)]


async def test_the_registry_keeps_order_ids_per_account_and_symbol(
    nc: NATS, js: JetStreamContext
) -> None:
    registry = OrderRegistry(nc)
    assert await registry.load("mm-1") == {}
    await registry.save("mm-1", "AAPL", ["b", "a"])
    await registry.save("mm-1", "BTC-USD", ["c"])
    await registry.save("mm-10", "AAPL", ["other"])
    await registry.save("mm-1", "MSFT", [])
    assert await OrderRegistry(nc).load("mm-1") == {"AAPL": ["a", "b"], "BTC-USD": ["c"]}
    await registry.save("mm-1", "AAPL", [])
    assert await registry.load("mm-1") == {"BTC-USD": ["c"]}


async def test_a_position_report_that_does_not_decode_does_not_stop_the_maker_starting(
    nc: NATS, js: JetStreamContext
) -> None:
    # POSITIONS keeps messages by size, not age: a bad one on the maker's subjects would
    # otherwise keep it (and `bourse up`) from starting for as long as it is kept.
    good = positions.PositionChanged(
        ts=1,
        account_id="mm-1",
        symbol="MSFT",
        qty=D(5),
        avg_entry_price=D("400.00"),
        realized_pnl=D(0),
        cash=D(1000),
        match_id=1,
    )
    await js.publish("positions.mm-1.MSFT", positions.encode(good))
    await js.publish("positions.mm-1.AAPL", b"{not json")
    last = (await js.publish("positions.mm-1.TSLA", b'{"type": "position", "qty": "x"}')).seq
    found, after = await read_positions(nc, "mm-1")
    assert found == [good]
    assert after == last + 1
