"""The engine and accounts services over a real nats-server, against the in-memory fold.

The services must do over JetStream exactly what `tests.exchange.journal.Exchange` does over
a list: the same outputs, byte for byte, and the same state, live, rebuilt from the journal,
restored from a snapshot plus the tail, and across crashes and a broker restart, without
publishing any output twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal as D
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bourse.accounts.service import accounts_service
from bourse.bus import pull
from bourse.bus.connection import connect
from bourse.bus.fold import INPUT_SEQ_HEADER, FoldService
from bourse.bus.publisher import MSG_ID_HEADER
from bourse.bus.server import NatsServer
from bourse.bus.snapshots import SnapshotStore
from bourse.bus.streams import MARKET_DATA, ORDERS, POSITIONS
from bourse.engine.core import EngineInput
from bourse.engine.service import engine_service
from bourse.model import orders, positions, subjects
from bourse.model.orders import RejectCode
from tests.conftest import eventually
from tests.exchange.journal import Exchange
from tests.exchange.test_exchange_fold import random_session

Request = tuple[str, orders.OrdersEvent]
Stored = tuple[str, bytes, str]  # subject, payload, Nats-Msg-Id

# Where each part of the in-memory journal lives on the bus.
STREAM_OF = {"orders": ORDERS.name, "positions": POSITIONS.name, "md": MARKET_DATA.name}


class LiveExchange:
    """The two services on their own connections, as separate processes would run them."""

    def __init__(self, url: str, *, snapshot_every: int) -> None:
        self.url = url
        self.snapshot_every = snapshot_every
        self.connections: list[NATS] = []
        self._engine: FoldService[EngineInput] | None = None
        self._accounts: FoldService[orders.OrdersEvent] | None = None

    @property
    def engine(self) -> FoldService[EngineInput]:
        assert self._engine is not None
        return self._engine

    @property
    def accounts(self) -> FoldService[orders.OrdersEvent]:
        assert self._accounts is not None
        return self._accounts

    @property
    def services(self) -> list[FoldService[Any]]:
        return [self.engine, self.accounts]

    async def start_engine(self) -> None:
        nc = await self._connect("engine")
        self._engine = await engine_service(nc, snapshot_every=self.snapshot_every).start()

    async def start_accounts(self) -> None:
        nc = await self._connect("accounts")
        self._accounts = await accounts_service(nc, snapshot_every=self.snapshot_every).start()

    async def start(self) -> LiveExchange:
        await self.start_engine()
        await self.start_accounts()
        return self

    async def _connect(self, name: str) -> NATS:
        nc = await connect(self.url, name=name)
        self.connections.append(nc)
        return nc

    def digests(self) -> tuple[str, str]:
        return self.engine.core.state_digest(), self.accounts.core.state_digest()

    async def stop(self) -> None:
        for service in self.services:
            await service.stop()
        await self._close()

    async def abort(self) -> None:
        for service in self.services:
            await service.abort()
        await self._close()

    async def _close(self) -> None:
        for nc in self.connections:
            if not nc.is_closed:
                await nc.close()
        self.connections.clear()


@pytest.fixture
async def exchange(nats_server: NatsServer, js: JetStreamContext) -> AsyncIterator[LiveExchange]:
    running = await LiveExchange(nats_server.url, snapshot_every=100).start()
    yield running
    await running.abort()


async def settle(nc: NATS, exchange: LiveExchange) -> None:
    """Wait until both services have answered everything, and their answers too."""
    while True:
        target = (await pull.stream_info(nc, ORDERS.name)).state.last_seq
        for service in exchange.services:
            await service.wait_caught_up()
        if (await pull.stream_info(nc, ORDERS.name)).state.last_seq == target:
            return


async def submit(js: JetStreamContext, subject: str, request: orders.OrdersEvent) -> None:
    await js.publish(subject, orders.encode(request))


async def stored(nc: NATS, stream: str, filter_subject: str) -> list[Stored]:
    """Every message of `stream` on `filter_subject`, in stream order."""
    name = f"check_{nc.new_inbox().rsplit('.', 1)[-1]}"
    config = pull.ConsumerConfig(
        name=name,
        ack_policy="none",
        deliver_policy="all",
        filter_subjects=(filter_subject,),
        inactive_threshold=pull.nanos(30),
        mem_storage=True,
    )
    info = await pull.create_consumer(nc, stream, name, config)
    puller = await pull.Puller(nc, stream=stream, consumer=name).start()
    got: list[Stored] = []
    try:
        while len(got) < info.num_pending:
            request = pull.PullRequest(batch=info.num_pending - len(got), expires=pull.nanos(1))
            async for item in puller.pull(request, timeout=3.0):
                assert isinstance(item, pull.Delivery), item
                got.append((item.subject, item.data, item.headers.get(MSG_ID_HEADER, "")))
    finally:
        await puller.close()
        await pull.delete_consumer(nc, stream, name)
    return got


def expected_by_stream(journal: Exchange) -> dict[str, list[tuple[str, bytes]]]:
    """The in-memory journal split as the bus splits it (bourse venue only for market data)."""
    split: dict[str, list[tuple[str, bytes]]] = {name: [] for name in STREAM_OF.values()}
    for subject, message in journal.journal:
        split[STREAM_OF[subject.split(".", 1)[0]]].append((subject, msgspec.json.encode(message)))
    return split


async def bus_by_stream(nc: NATS) -> dict[str, list[Stored]]:
    return {
        ORDERS.name: await stored(nc, ORDERS.name, subjects.ALL_ORDERS),
        POSITIONS.name: await stored(nc, POSITIONS.name, subjects.positions("*", "*")),
        MARKET_DATA.name: await stored(nc, MARKET_DATA.name, subjects.market_data_filter("bourse")),
    }


def outputs_of(bus: dict[str, list[Stored]], service: str) -> int:
    return sum(msg_id.startswith(f"{service}.") for s in bus.values() for _, _, msg_id in s)


def in_memory(requests: list[Request]) -> Exchange:
    """The reference: each request runs to quiescence before the next, as `settle` does."""
    reference = Exchange()
    for request in requests:
        reference.submit([request])
    return reference


# ---- the public contract, by example ----


def _order(
    oid: str, account: str, side: orders.Side, qty: int, limit: str | None = "190.00"
) -> orders.OrderSubmitted:
    """An AAPL order: limit GTC, or market DAY when `limit` is None."""
    return orders.OrderSubmitted(
        ts=1_000,
        order_id=oid,
        client_order_id=f"c-{oid}",
        account_id=account,
        symbol="AAPL",
        side=side,
        kind="limit" if limit else "market",
        time_in_force="gtc" if limit else "day",
        qty=D(qty),
        limit_price=D(limit) if limit else None,
        reference_price=D("190.00"),
    )


async def test_orders_fill_cancel_and_reject_through_the_services(
    nc: NATS, js: JetStreamContext, exchange: LiveExchange
) -> None:
    executed: list[orders.Execution] = []

    async def on_execution(msg: Msg) -> None:
        event = orders.decode(msg.data)
        assert isinstance(event, orders.Execution)
        executed.append(event)

    await nc.subscribe(subjects.order_outcome("executed", "*"), cb=on_execution)
    admin: list[orders.OrdersEvent] = [
        orders.AccountOpened(ts=0, account_id="alice"),
        orders.CashDeposited(ts=0, account_id="alice", amount=D("100000")),
        orders.AccountOpened(ts=0, account_id="bob", shorting_enabled=True),
        orders.CashDeposited(ts=0, account_id="bob", amount=D("100000")),
        orders.AccountOpened(ts=0, account_id="carol"),
        orders.CashDeposited(ts=0, account_id="carol", amount=D("1000")),
    ]
    for event in admin:
        await submit(js, subjects.ORDERS_ADMIN, event)
    await submit(js, subjects.ORDERS_NEW, _order("ask1", "bob", "sell", 10))
    await submit(js, subjects.ORDERS_NEW, _order("mkt1", "alice", "buy", 10, limit=None))
    await submit(js, subjects.ORDERS_NEW, _order("bid1", "alice", "buy", 5, limit="185.00"))
    await submit(js, subjects.ORDERS_NEW, _order("big1", "carol", "buy", 100))
    await settle(nc, exchange)
    await submit(
        js,
        subjects.ORDERS_CANCEL,
        orders.CancelRequested(ts=2, order_id="bid1", account_id="alice"),
    )
    await settle(nc, exchange)

    # A market order fills against the resting limit: one execution per side, same match.
    await eventually(lambda: len(executed) == 2)
    assert {(e.order_id, e.side, e.price, e.qty, e.leaves_qty) for e in executed} == {
        ("ask1", "sell", D("190.00"), D(10), D(0)),
        ("mkt1", "buy", D("190.00"), D(10), D(0)),
    }
    bus = await bus_by_stream(nc)
    # The last position per subject.
    latest = {subject: positions.decode(data) for subject, data, _ in bus[POSITIONS.name]}
    assert latest["positions.alice.AAPL"].qty == 10
    assert latest["positions.alice.AAPL"].cash == D("98100.00")
    assert latest["positions.bob.AAPL"].qty == -10
    by_subject = {subject: orders.decode(data) for subject, data, _ in bus[ORDERS.name]}
    cancelled = by_subject["orders.cancelled.bid1"]
    assert isinstance(cancelled, orders.OrderCancelled) and cancelled.reason == "requested"
    rejected = by_subject["orders.rejected.big1"]
    assert isinstance(rejected, orders.OrderRejected)
    assert rejected.code is RejectCode.INSUFFICIENT_BUYING_POWER
    # Every output names its producer, the input it answers, and its place among the answers.
    validated = await js.get_last_msg(ORDERS.name, "orders.validated.mkt1")
    assert validated.headers is not None
    input_seq = validated.headers[INPUT_SEQ_HEADER]
    assert validated.headers[MSG_ID_HEADER] == f"accounts.{input_seq}.0"
    request = await js.get_msg(ORDERS.name, int(input_seq))
    assert request.subject == subjects.ORDERS_NEW and b'"mkt1"' in (request.data or b"")


async def test_ids_that_cannot_be_subject_tokens_are_skipped_not_fatal(
    nc: NATS, js: JetStreamContext, exchange: LiveExchange
) -> None:
    # An order id becomes a subject token (`orders.validated.<id>`). One with a space, a dot,
    # a wildcard or nothing at all used to stop the accounts service for good: it could not
    # publish its answer, and every restart replayed the same message into the same failure.
    await submit(js, subjects.ORDERS_ADMIN, orders.AccountOpened(ts=0, account_id="alice"))
    await submit(
        js, subjects.ORDERS_ADMIN, orders.CashDeposited(ts=0, account_id="alice", amount=D(10**5))
    )
    bad = ["a b", "x.y", "*", ">", "", "z" * 65, "tab\there", "o1\n"]
    for oid in bad:
        await submit(js, subjects.ORDERS_NEW, _order(oid, "alice", "buy", 1))
    await submit(js, subjects.ORDERS_NEW, _order("ok1", "alice", "buy", 1))
    # A cancel for another bad id, and a position subject's account token.
    await submit(
        js, subjects.ORDERS_CANCEL, orders.CancelRequested(ts=1, order_id="a.b", account_id="x y")
    )
    await settle(nc, exchange)  # raises the error of a service that failed
    assert exchange.accounts.stats.skipped == len(bad) + 1
    bus = await bus_by_stream(nc)
    requests = (subjects.ORDERS_NEW, subjects.ORDERS_ADMIN, subjects.ORDERS_CANCEL)
    answers = {
        subject: orders.decode(data)
        for subject, data, _ in bus[ORDERS.name]
        if subject not in requests
    }
    assert set(answers) == {"orders.validated.ok1", "orders.accepted.ok1"}
    assert isinstance(answers["orders.accepted.ok1"], orders.OrderAccepted)


# ---- determinism: live, from the journal, from a snapshot plus the tail ----


async def test_the_services_fold_exactly_like_the_in_memory_exchange_and_rebuild_the_same(
    nats_server: NatsServer, nc: NATS, js: JetStreamContext, exchange: LiveExchange
) -> None:
    requests = random_session(seed=5, count=1_000)
    for subject, request in requests:
        await submit(js, subject, request)
        await settle(nc, exchange)
    reference = in_memory(requests)
    reference_digests = (reference.engine.state_digest(), reference.accounts.state_digest())

    bus = await bus_by_stream(nc)
    expected = expected_by_stream(reference)
    for stream, messages in bus.items():
        assert [(s, d) for s, d, _ in messages] == expected[stream], stream
    assert sum(isinstance(m, orders.Execution) for _, m in reference.journal) > 100
    assert exchange.digests() == reference_digests
    engine_outputs, accounts_outputs = outputs_of(bus, "engine"), outputs_of(bus, "accounts")
    # Every message on the bus but the requests is one of theirs.
    assert engine_outputs + accounts_outputs == sum(map(len, expected.values())) - len(requests)

    # (b) Crash both (no final snapshot), then restore the last snapshot and replay the tail.
    await exchange.abort()
    restarted = await LiveExchange(nats_server.url, snapshot_every=100).start()
    try:
        for service in restarted.services:
            assert service.stats.restored_seq > 0
            await service.wait_caught_up()
            # Only the tail after the last snapshot (taken every 100 inputs, or less often for
            # a large state: see FoldService.snapshot_interval).
            assert 0 < service.stats.applied < service.snapshot_interval
            assert service.stats.published == 0
        assert restarted.digests() == reference_digests
    finally:
        await restarted.stop()

    # (a) No snapshot at all: rebuild from the whole journal, publishing nothing again.
    store = SnapshotStore(nc)
    for name in ("engine", "accounts"):
        await store.delete(name)
    rebuilt = await LiveExchange(nats_server.url, snapshot_every=100_000).start()
    try:
        for service in rebuilt.services:
            assert service.stats.restored_seq == 0
            await service.wait_caught_up()
            assert service.stats.published == 0
            assert service.publisher_stats.duplicates == 0
        assert (rebuilt.engine.stats.suppressed, rebuilt.accounts.stats.suppressed) == (
            engine_outputs,
            accounts_outputs,
        )
        assert rebuilt.digests() == reference_digests
    finally:
        await rebuilt.stop()
    assert await bus_by_stream(nc) == bus


# ---- crashes and a broker restart mid-session ----


async def test_crashes_and_a_broker_restart_mid_session_lose_and_duplicate_nothing(
    nats_server: NatsServer, nc: NATS, js: JetStreamContext, exchange: LiveExchange
) -> None:
    requests = random_session(seed=9, count=450)
    for n, (subject, request) in enumerate(requests):
        await submit(js, subject, request)
        if n == 100:
            # Accounts dies with the request in hand (or its answer in flight).
            await exchange.accounts.abort()
            await exchange.start_accounts()
            restarted_accounts = exchange.accounts
        elif n == 200:
            # The engine dies while it answers a validated order.
            await exchange.accounts.wait_caught_up()
            await exchange.engine.abort()
            await exchange.start_engine()
            restarted_engine = exchange.engine
        elif n == 300:
            # The broker restarts while both services work on the request.
            await nats_server.restart()
            await eventually(lambda: all(c.is_connected for c in [nc, *exchange.connections]))
        await settle(nc, exchange)
    reference = in_memory(requests)

    bus = await bus_by_stream(nc)
    expected = expected_by_stream(reference)
    for stream, messages in bus.items():
        ids = Counter(msg_id for _, _, msg_id in messages if msg_id)
        assert ids.most_common(1)[0][1] == 1, f"{stream} holds an output twice"
        assert Counter((s, d) for s, d, _ in messages) == Counter(expected[stream]), stream
    # The restarted services replayed a tail whose answers were (partly) out already.
    assert restarted_accounts.stats.suppressed > 0 and restarted_engine.stats.suppressed > 0
    assert exchange.digests() == (
        reference.engine.state_digest(),
        reference.accounts.state_digest(),
    )


async def test_a_graceful_stop_snapshots_and_a_restart_replays_nothing(
    nats_server: NatsServer, nc: NATS, js: JetStreamContext, exchange: LiveExchange
) -> None:
    requests = random_session(seed=3, count=40)
    for subject, request in requests:
        await submit(js, subject, request)
    await settle(nc, exchange)
    digests = exchange.digests()
    last = [service.last_seq for service in exchange.services]
    await exchange.stop()

    again = await LiveExchange(nats_server.url, snapshot_every=100).start()
    try:
        for service, seq in zip(again.services, last, strict=True):
            assert service.stats.restored_seq == seq
            await service.wait_caught_up()
            assert service.stats.applied == 0
        assert again.digests() == digests
    finally:
        await again.stop()


async def test_a_stream_filled_faster_than_the_services_read_folds_the_same_when_rebuilt(
    nats_server: NatsServer, nc: NATS, js: JetStreamContext, exchange: LiveExchange
) -> None:
    # No settling: requests race the services' answers, so the journal interleaves them in
    # its own way; whatever it is, a rebuild from the journal must reach the same state.
    publishes = [submit(js, subject, request) for subject, request in random_session(4, 1500)]
    await asyncio.gather(*publishes)
    await settle(nc, exchange)
    digests = exchange.digests()
    await exchange.stop()
    store = SnapshotStore(nc)
    for name in ("engine", "accounts"):
        await store.delete(name)
    rebuilt = await LiveExchange(nats_server.url, snapshot_every=100).start()
    try:
        for service in rebuilt.services:
            await service.wait_caught_up()
            assert service.stats.published == 0
        assert rebuilt.digests() == digests
    finally:
        await rebuilt.stop()
