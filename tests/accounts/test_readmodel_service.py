"""The read-model service against a real nats-server and real databases.

A seeded exchange session is published to ORDERS and POSITIONS; whatever happens on the way
(the service stopped and started again, the broker restarted, a message that does not decode,
a database that is locked for a while), the read model must end as the projection of the
same journal applied directly, with every message applied once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from bourse.accounts.readmodel import Database, ReadModelProjection, migrate, queries
from bourse.accounts.readmodel.service import ReadModelService
from bourse.bus.connection import connect
from bourse.bus.server import NatsServer
from bourse.bus.streams import ORDERS, POSITIONS
from bourse.model import orders, positions, subjects
from tests.accounts.test_readmodel import BACKENDS, Session, dump, empty_database, project, streams
from tests.conftest import eventually
from tests.exchange.journal import Exchange, Message
from tests.exchange.test_exchange_fold import ACCOUNTS, random_session

Journal = Sequence[tuple[str, Message]]


@pytest.fixture(scope="module")
def session() -> Session:
    exchange = Exchange()
    for request in random_session(seed=41, count=500):
        exchange.submit([request])
    exchange.journal.extend(exchange.engine.expire_day_orders(ts=10_000_000))
    exchange.run()
    orders_stream, positions_stream = streams(exchange.journal)
    return Session(exchange, orders_stream, positions_stream)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(backend: str, tmp_path: Path) -> Iterator[Database]:
    with empty_database(backend, tmp_path) as database:
        migrate(database)
        yield database


@pytest.fixture
def expected(backend: str, tmp_path: Path, session: Session) -> Iterator[Database]:
    """The same journal projected directly, without the bus."""
    with empty_database(backend, tmp_path) as database:
        migrate(database)
        project(ReadModelProjection(database), session)
        yield database


@pytest.fixture
async def service_nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    """The service's own connection, as in production."""
    client = await connect(nats_server.url, name="readmodel")
    yield client
    if not client.is_closed:
        await client.close()


async def publish(js: JetStreamContext, journal: Journal) -> None:
    """The journal's ORDERS and POSITIONS messages, in order (market data is not for us)."""
    for subject, message in journal:
        if subject.startswith(f"{subjects.ORDERS_ROOT}."):
            assert not isinstance(message, positions.PositionChanged)
            await js.publish(subject, orders.encode(message))  # type: ignore[arg-type]
        elif subject.startswith(f"{subjects.POSITIONS_ROOT}."):
            assert isinstance(message, positions.PositionChanged)
            await js.publish(subject, positions.encode(message))


def halves(session: Session) -> tuple[Journal, Journal]:
    journal = session.exchange.journal
    middle = len(journal) // 2
    return journal[:middle], journal[middle:]


def assert_same_read_model(got: Database, want: Database) -> None:
    with got.read() as got_conn, want.read() as want_conn:
        for account in ACCOUNTS:
            assert queries.get_account(got_conn, account) == queries.get_account(
                want_conn, account
            ), account
            assert queries.list_orders(
                got_conn, account, status="all", limit=queries.MAX_LIMIT
            ) == queries.list_orders(want_conn, account, status="all", limit=queries.MAX_LIMIT)
            assert queries.list_positions(got_conn, account) == queries.list_positions(
                want_conn, account
            ), account


def assert_applied_once(services: Sequence[ReadModelService], session: Session) -> None:
    for stream, total in (
        (ORDERS.name, len(session.orders)),
        (POSITIONS.name, len(session.positions)),
    ):
        assert sum(s.stats[stream].applied for s in services) == total, stream
        assert sum(s.stats[stream].redelivered for s in services) == 0, stream


async def test_the_service_projects_the_journal_as_the_projection_does(
    js: JetStreamContext, service_nc: NATS, db: Database, expected: Database, session: Session
) -> None:
    first, second = halves(session)
    await publish(js, first)  # waiting when the service starts...
    service = await ReadModelService(service_nc, db).start()
    try:
        await publish(js, second)  # ...and arriving while it runs
        await service.wait_caught_up(10.0)
    finally:
        await service.stop()
    assert dump(db) == dump(expected)
    assert_same_read_model(db, expected)
    assert_applied_once([service], session)
    assert service.stats[ORDERS.name].last_sequence == len(session.orders)


async def test_a_restarted_service_resumes_where_the_database_left_off(
    js: JetStreamContext, service_nc: NATS, db: Database, expected: Database, session: Session
) -> None:
    await publish(js, session.exchange.journal)
    projection = ReadModelProjection(db)
    first = await ReadModelService(service_nc, db, max_batch=20).start()
    try:
        await eventually(lambda: first.stats[ORDERS.name].last_sequence > 0)
    finally:
        await first.stop()
    # What stop() left is exactly what the database holds: the batch in hand was finished.
    mark = projection.last_sequence(ORDERS.name)
    assert 0 < mark < len(session.orders), "stop mid-stream"
    assert first.stats[ORDERS.name].last_sequence == mark
    assert first.stats[ORDERS.name].applied == mark

    second = await ReadModelService(service_nc, db).start()
    try:
        await second.wait_caught_up(10.0)
    finally:
        await second.stop()
    resumed = second.stats[ORDERS.name]
    assert resumed.received == len(session.orders) - mark  # nothing re-read
    assert resumed.batches < resumed.received / 10  # a backlog is applied in batches
    assert dump(db) == dump(expected)
    assert_applied_once([first, second], session)


async def test_the_service_catches_up_after_a_broker_restart(
    nats_server: NatsServer,
    nc: NATS,
    js: JetStreamContext,
    service_nc: NATS,
    db: Database,
    expected: Database,
    session: Session,
) -> None:
    first, second = halves(session)
    await publish(js, first)
    service = await ReadModelService(service_nc, db, max_batch=20).start()
    try:
        await eventually(lambda: service.stats[ORDERS.name].last_sequence > 0)
        await nats_server.restart()  # while the service is still reading the first half
        await eventually(lambda: nc.is_connected and service_nc.is_connected)
        await publish(js, second)
        await service.wait_caught_up(15.0)
    finally:
        await service.stop()
    assert service.stats[ORDERS.name].resubscribes >= 1  # its consumer went with the broker
    assert dump(db) == dump(expected)
    assert_applied_once([service], session)


async def test_a_malformed_message_is_skipped_counted_and_not_read_again(
    js: JetStreamContext, service_nc: NATS, db: Database, expected: Database, session: Session
) -> None:
    first, second = halves(session)
    await publish(js, first)
    bad = await js.publish(subjects.ORDERS_NEW, b'{"type": "order_submitted", "qty": ')
    await publish(js, second)
    service = await ReadModelService(service_nc, db).start()
    try:
        await service.wait_caught_up(10.0)
    finally:
        await service.stop()
    stats = service.stats[ORDERS.name]
    assert (stats.malformed, stats.malformed_sequences) == (1, [bad.seq])
    assert stats.applied == len(session.orders)
    assert ReadModelProjection(db).last_sequence(ORDERS.name) == len(session.orders) + 1
    assert_same_read_model(db, expected)

    again = await ReadModelService(service_nc, db).start()
    try:
        await again.wait_caught_up(10.0)
    finally:
        await again.stop()
    assert again.stats[ORDERS.name].received == 0
    assert again.stats[ORDERS.name].malformed == 0


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_locked_database_is_retried_in_place_not_skipped(
    js: JetStreamContext,
    service_nc: NATS,
    tmp_path: Path,
    expected: Database,
    session: Session,
) -> None:
    path = tmp_path / "locked.db"
    db = Database.sqlite(path, connect_args={"timeout": 0.05})  # give up on the lock quickly
    migrate(db)
    await publish(js, session.exchange.journal)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the database
    service = await ReadModelService(service_nc, db).start()
    try:
        await eventually(lambda: service.stats[ORDERS.name].database_retries >= 2)
        assert service.stats[ORDERS.name].last_sequence == 0
        holder.execute("ROLLBACK")
        await service.wait_caught_up(15.0)
    finally:
        holder.close()
        await service.stop()
        db.close()
    reopened = Database.sqlite(path)
    try:
        assert dump(reopened) == dump(expected)
    finally:
        reopened.close()
    assert_applied_once([service], session)
