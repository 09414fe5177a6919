"""The accounts read model against real databases: a SQLite file, and PostgreSQL when reachable.

A seeded exchange session (accounts and engine cores over one in-memory journal) is projected
and checked against what the journal implies, computed here independently of the projector.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Context
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url

from bourse.accounts.readmodel import (
    Database,
    InvalidQuery,
    Order,
    OutOfOrder,
    ReadModelEvent,
    ReadModelProjection,
    api_keys,
    migrate,
    queries,
    schema_version,
)
from bourse.accounts.readmodel.migrations import LATEST, SchemaTooNew
from bourse.accounts.readmodel.schema import METADATA, migrations_table
from bourse.model import orders, positions
from tests.exchange.journal import Exchange, Message
from tests.exchange.test_exchange_fold import ACCOUNTS, random_session

POSTGRES_URL = os.environ.get(
    "BOURSE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
Stream = list[tuple[int, ReadModelEvent]]


# ---- databases ----


@functools.cache
def _postgres_unavailable() -> str | None:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.Error as error:
        return (
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({error}); set BOURSE_TEST_POSTGRES_URL"
        )


@contextlib.contextmanager
def empty_database(backend: str, directory: Path) -> Iterator[Database]:
    """A SQLite file, or a schema of its own in PostgreSQL (dropped after)."""
    if backend == "sqlite":
        db = Database.sqlite(directory / f"readmodel-{uuid.uuid4().hex[:8]}.db")
        try:
            yield db
        finally:
            db.close()
        return
    reason = _postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    name = f"readmodel_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{name}"')
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={name}"})
    db = Database.open(url.render_as_string(hide_password=False))
    try:
        yield db
    finally:
        db.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{name}" CASCADE')


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database of each kind."""
    with empty_database(request.param, tmp_path) as db:
        yield db


@pytest.fixture
def db(fresh_db: Database) -> Database:
    migrate(fresh_db)
    return fresh_db


# ---- the session and its streams ----


@dataclass(frozen=True)
class Session:
    exchange: Exchange
    orders: Stream  # (ORDERS stream sequence, message)
    positions: Stream


def streams(journal: Sequence[tuple[str, Message]]) -> tuple[Stream, Stream]:
    """The journal as JetStream would number it: one sequence per stream."""
    orders_stream: Stream = []
    positions_stream: Stream = []
    for subject, message in journal:
        if subject.startswith("orders."):
            assert not isinstance(message, positions.PositionChanged)
            orders_stream.append((len(orders_stream) + 1, message))  # type: ignore[arg-type]
        elif subject.startswith("positions."):
            assert isinstance(message, positions.PositionChanged)
            positions_stream.append((len(positions_stream) + 1, message))
    return orders_stream, positions_stream


@pytest.fixture(scope="module")
def session() -> Session:
    exchange = Exchange()
    for request in random_session(seed=23, count=3_000):
        exchange.submit([request])
    # The session closes: DAY orders still working expire.
    exchange.journal.extend(exchange.engine.expire_day_orders(ts=10_000_000))
    exchange.run()
    orders_stream, positions_stream = streams(exchange.journal)
    return Session(exchange, orders_stream, positions_stream)


@pytest.fixture(scope="module", params=BACKENDS)
def projected(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, session: Session
) -> Iterator[Database]:
    """The whole session projected once, for the tests that only read."""
    with empty_database(request.param, tmp_path_factory.mktemp("projected")) as db:
        migrate(db)
        project(ReadModelProjection(db), session)
        yield db


def project(projection: ReadModelProjection, session: Session, *, chunk: int = 400) -> None:
    """Both streams in batches, alternately, as two independent consumers would."""
    longest = max(len(session.orders), len(session.positions))
    for start in range(0, longest, chunk):
        projection.apply("ORDERS", session.orders[start : start + chunk])
        projection.apply("POSITIONS", session.positions[start : start + chunk])


def dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    with db.read() as conn:
        return {
            table.name: [
                tuple(row)
                for row in conn.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in METADATA.sorted_tables
        }


def all_orders(db: Database, account_id: str) -> list[Order]:
    with db.read() as conn:
        return queries.list_orders(conn, account_id, status="all", limit=queries.MAX_LIMIT)


# ---- what the journal implies, computed without the projector ----


@dataclass
class Expected:
    account_id: str
    client_order_id: str
    qty: D
    status: str
    filled: D = D(0)
    notional: D = D(0)
    leaves: D | None = None
    replaces: str | None = None
    replaced_by: str | None = None

    @property
    def average(self) -> D | None:
        return Context(prec=28).divide(self.notional, self.filled) if self.filled else None


def expected_orders(journal: Sequence[tuple[str, Message]]) -> dict[str, Expected]:
    out: dict[str, Expected] = {}
    new_client_ids: dict[str, str] = {}
    for _, message in journal:
        match message:
            case orders.OrderSubmitted():
                out.setdefault(
                    message.order_id,
                    Expected(
                        message.account_id, message.client_order_id, message.qty, "pending_new"
                    ),
                )
            case orders.OrderValidated(order=order):
                out[order.order_id].status = "accepted"
            case orders.OrderAccepted():
                out[message.order_id].status = "new"
            case orders.Execution():
                expected = out[message.order_id]
                expected.filled += message.qty
                expected.notional += message.qty * message.price
                expected.leaves = message.leaves_qty
                expected.status = "filled" if message.leaves_qty == 0 else "partially_filled"
            case orders.OrderCancelled():
                out[message.order_id].status = (
                    "expired" if message.reason == "expired" else "canceled"
                )
            case orders.OrderRejected(request="new"):
                out[message.order_id].status = "rejected"
            case orders.ReplaceRequested():
                new_client_ids[message.new_order_id] = message.new_client_order_id
            case orders.OrderReplaced():
                old = out[message.order_id]
                old.status, old.replaced_by = "replaced", message.new_order_id
                out[message.new_order_id] = Expected(
                    old.account_id,
                    new_client_ids[message.new_order_id],
                    message.qty,
                    "partially_filled" if old.filled else "new",
                    filled=old.filled,
                    notional=old.notional,
                    replaces=message.order_id,
                )
            case _:
                pass
    return out


# ---- projecting the session ----


def test_orders_match_what_the_journal_implies(projected: Database, session: Session) -> None:
    db = projected
    expected = expected_orders(session.exchange.journal)
    seen: dict[str, Order] = {}
    for account in ACCOUNTS:
        for order in all_orders(db, account):
            seen[order.id] = order
    assert seen.keys() == expected.keys()
    for order_id, want in expected.items():
        got = seen[order_id]
        assert (got.account_id, got.client_order_id, got.qty) == (
            want.account_id,
            want.client_order_id,
            want.qty,
        ), order_id
        assert got.status == want.status, order_id
        assert got.filled_qty == want.filled, order_id
        assert got.filled_avg_price == want.average, order_id
        assert (got.replaces, got.replaced_by) == (want.replaces, want.replaced_by), order_id
        if want.leaves is not None and got.is_open:
            assert got.qty - got.filled_qty == want.leaves, order_id
        assert (got.filled_at is not None) == (got.status == "filled"), order_id
        assert (got.expired_at is not None) == (got.status == "expired"), order_id
        assert (got.failed_at is not None) == (got.status == "rejected"), order_id
    statuses = {order.status for order in seen.values()}
    assert {"new", "partially_filled", "filled", "canceled", "expired", "rejected"} <= statuses
    assert "replaced" in statuses, "the session must replace orders"

    executions = [m for _, m in session.orders if isinstance(m, orders.Execution)]
    dumped = dump(db)
    assert len(dumped["fills"]) == len(executions)
    assert dumped["pending_replaces"] == []  # every replace was settled


def test_positions_cash_and_pnl_match_the_ledgers(projected: Database, session: Session) -> None:
    with projected.read() as conn:
        for account_id, ledger in session.exchange.accounts.ledgers.items():
            account = queries.get_account(conn, account_id)
            assert account is not None and account.status == "ACTIVE"
            assert account.cash == ledger.cash
            assert account.realized_pnl == ledger.realized_pnl
            assert account.shorting_enabled is ledger.shorting_enabled
            held = {p.symbol: (p.qty, p.avg_entry_price) for p in ledger.positions.values()}
            listed = queries.list_positions(conn, account_id)
            assert {p.symbol: (p.qty, p.avg_entry_price) for p in listed} == held
            assert all(p.cost_basis == p.qty * p.avg_entry_price for p in listed)
            for symbol in ("AAPL", "MSFT", "BTC-USD"):
                position = queries.get_position(conn, account_id, symbol)
                assert (position is None) == (symbol not in held)
    assert len(ledger.positions) > 0, "the session must leave positions open"


def test_replaying_and_redelivery_change_nothing(db: Database, session: Session) -> None:
    projection = ReadModelProjection(db)
    # Overlapping batches, as after a consumer restart that redelivers what was in flight.
    orders_stream = session.orders
    for start in range(0, len(orders_stream), 300):
        projection.apply("ORDERS", orders_stream[max(0, start - 150) : start + 300])
    projection.apply("POSITIONS", session.positions)
    projection.apply("POSITIONS", session.positions[: len(session.positions) // 2])
    first = dump(db)
    assert projection.apply("ORDERS", orders_stream) == 0
    assert projection.apply("POSITIONS", session.positions) == 0
    assert dump(db) == first
    assert projection.last_sequence("ORDERS") == len(orders_stream)
    assert projection.last_sequence("POSITIONS") == len(session.positions)


def test_the_two_streams_can_be_applied_side_by_side(
    db: Database, session: Session, projected: Database
) -> None:
    # Two consumers, one per stream, each in its own thread; both rewrite account rows.
    projection = ReadModelProjection(db)
    errors: list[BaseException] = []

    def consume(stream: str, messages: Stream, chunk: int) -> None:
        try:
            for start in range(0, len(messages), chunk):
                projection.apply(stream, messages[start : start + chunk])
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [
        threading.Thread(target=consume, args=("ORDERS", session.orders, 200)),
        threading.Thread(target=consume, args=("POSITIONS", session.positions, 20)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert dump(db) == dump(projected)


def test_small_batches_end_with_the_rows_of_one_big_batch(
    db: Database, session: Session, tmp_path: Path
) -> None:
    # In small batches an order's later events update its row (the upsert sets only what
    # events change); in one batch each row is written once, as it ends. Any column an event
    # changed but the upsert left alone would differ.
    project(ReadModelProjection(db), session, chunk=7)
    with empty_database("sqlite", tmp_path) as whole:
        migrate(whole)
        project(ReadModelProjection(whole), session, chunk=len(session.orders))
        assert dump(db) == dump(whole)


def test_sqlite_and_postgresql_hold_the_same_rows(
    db: Database, session: Session, tmp_path: Path
) -> None:
    reference = Database.sqlite(tmp_path / "reference.db")
    migrate(reference)
    project(ReadModelProjection(reference), session, chunk=5_000)
    project(ReadModelProjection(db), session, chunk=97)
    assert dump(db) == dump(reference)
    reference.close()


def test_a_batch_out_of_order_is_refused_whole(db: Database, session: Session) -> None:
    projection = ReadModelProjection(db)
    projection.apply("ORDERS", session.orders[:10])
    before = dump(db)
    with pytest.raises(OutOfOrder) as refused:
        projection.apply("ORDERS", [session.orders[12], session.orders[11]])
    assert (refused.value.previous, refused.value.sequence) == (13, 12)
    assert dump(db) == before
    assert projection.last_sequence("ORDERS") == 10


# ---- queries ----


def test_list_orders_filters_sorts_and_paginates(projected: Database) -> None:
    db = projected
    account = ACCOUNTS[0]
    everything = all_orders(db, account)
    assert 100 < len(everything) <= queries.MAX_LIMIT
    newest_first = sorted(everything, key=lambda o: (o.submitted_at, o.id), reverse=True)
    assert everything == newest_first
    with db.read() as conn:
        opened = queries.list_orders(conn, account, limit=500)  # status defaults to open
        closed = queries.list_orders(conn, account, status="closed", limit=500)
        assert opened and all(o.is_open for o in opened)
        assert closed and not any(o.is_open for o in closed)
        assert {o.id for o in opened} | {o.id for o in closed} == {o.id for o in everything}

        assert len(queries.list_orders(conn, account, status="all")) == queries.DEFAULT_LIMIT
        oldest_first = queries.list_orders(conn, account, status="all", direction="asc", limit=500)
        assert oldest_first == newest_first[::-1]

        middle = newest_first[len(newest_first) // 2]
        after = queries.list_orders(
            conn, account, status="all", after=middle.submitted_at, limit=500
        )
        assert after == [o for o in newest_first if o.submitted_at > middle.submitted_at]
        until = queries.list_orders(
            conn, account, status="all", until=middle.submitted_at, limit=500
        )
        assert until == [o for o in newest_first if o.submitted_at < middle.submitted_at]

        crypto = queries.list_orders(conn, account, status="all", symbols=["BTC-USD"], limit=500)
        assert crypto == [o for o in newest_first if o.symbol == "BTC-USD"]
        assert all(o.asset_class == "crypto" for o in crypto)
        two = queries.list_orders(conn, account, status="all", symbols=["AAPL", "MSFT"], limit=500)
        assert two == [o for o in newest_first if o.symbol in ("AAPL", "MSFT")]

        # Paging back in time with `until`, as Alpaca clients do.
        pages: list[Order] = []
        cursor: int | None = None
        while page := queries.list_orders(conn, account, status="all", limit=37, until=cursor):
            pages.extend(page)
            cursor = page[-1].submitted_at
        assert pages == newest_first

        for bad in (
            {"status": "done"},
            {"direction": "up"},
            {"limit": 0},
            {"limit": queries.MAX_LIMIT + 1},
        ):
            with pytest.raises(InvalidQuery):
                queries.list_orders(conn, account, **bad)


def test_another_accounts_orders_are_invisible(projected: Database) -> None:
    db = projected
    mine, theirs = ACCOUNTS[0], ACCOUNTS[1]
    order = all_orders(db, mine)[0]
    with db.read() as conn:
        assert queries.get_order(conn, mine, order.id) == order
        assert queries.get_order(conn, theirs, order.id) is None
        assert queries.get_order_by_client_id(conn, mine, order.client_order_id) == order
        assert queries.get_order_by_client_id(conn, theirs, order.client_order_id) is None
        listed = queries.list_orders(conn, theirs, status="all", limit=500)
        assert order.id not in {o.id for o in listed}
        assert queries.get_order(conn, mine, "no-such-order") is None
        assert queries.get_account(conn, "no-such-account") is None


# ---- the order lifecycle, message by message ----


def submit(
    order_id: str,
    client_order_id: str,
    side: str,
    qty: int,
    price: str,
    *,
    ts: int,
    account: str = "alice",
    tif: str = "gtc",
) -> tuple[str, orders.OrdersEvent]:
    return (
        "orders.new",
        orders.OrderSubmitted(
            ts=ts,
            order_id=order_id,
            client_order_id=client_order_id,
            account_id=account,
            symbol="AAPL",
            side=side,  # type: ignore[arg-type]
            kind="limit",
            time_in_force=tif,  # type: ignore[arg-type]
            qty=D(qty),
            limit_price=D(price),
            reference_price=D("190.00"),
        ),
    )


def opened_exchange() -> Exchange:
    exchange = Exchange()
    for account in ("alice", "bob"):
        exchange.submit(
            [
                (
                    "orders.admin",
                    orders.AccountOpened(ts=1, account_id=account, shorting_enabled=True),
                ),
                ("orders.admin", orders.CashDeposited(ts=1, account_id=account, amount=D(100_000))),
            ]
        )
    exchange.submit(
        [
            (
                "orders.admin",
                orders.CashDeposited(ts=1, account_id="bob", amount=D("0.000000000000000000001")),
            )
        ]
    )
    return exchange


def statuses_along(
    db: Database, journal: Sequence[tuple[str, Message]], order_id: str
) -> list[str]:
    """The order's status after each ORDERS message, without repeats."""
    projection = ReadModelProjection(db)
    seen: list[str] = []
    for seq, message in streams(journal)[0]:
        projection.apply("ORDERS", [(seq, message)])
        with db.read() as conn:
            order = queries.get_order(conn, "alice", order_id)
        if order is not None and (not seen or seen[-1] != order.status):
            seen.append(order.status)
    return seen


def test_an_order_goes_through_alpacas_statuses(db: Database) -> None:
    exchange = opened_exchange()
    exchange.submit([submit("a1", "mine-1", "buy", 10, "190.00", ts=10)])
    exchange.submit([submit("b1", "theirs-1", "sell", 4, "190.00", ts=11, account="bob")])
    exchange.submit(
        [("orders.cancel", orders.CancelRequested(ts=12, order_id="a1", account_id="alice"))]
    )
    assert statuses_along(db, exchange.journal, "a1") == [
        "pending_new",
        "accepted",
        "new",
        "partially_filled",
        "pending_cancel",
        "canceled",
    ]
    with db.read() as conn:
        order = queries.get_order(conn, "alice", "a1")
        bob = queries.get_account(conn, "bob")
    assert order is not None and order.filled_qty == 4 and order.filled_avg_price == D("190.00")
    assert order.canceled_at == 12 and order.filled_at is None
    assert bob is not None and bob.cash == D("100760.000000000000000000001")  # exact


def test_a_replace_links_both_orders_and_keeps_the_fills(db: Database) -> None:
    exchange = opened_exchange()
    exchange.submit([submit("a1", "mine-1", "buy", 10, "190.00", ts=10)])
    exchange.submit([submit("b1", "theirs-1", "sell", 3, "189.00", ts=11, account="bob")])
    exchange.submit(
        [
            (
                "orders.replace",
                orders.ReplaceRequested(
                    ts=12,
                    order_id="a1",
                    new_order_id="a2",
                    new_client_order_id="mine-2",
                    account_id="alice",
                    qty=D(8),
                    limit_price=D("190.50"),
                ),
            )
        ]
    )
    exchange.submit([submit("b2", "theirs-2", "sell", 5, "190.50", ts=13, account="bob")])
    assert statuses_along(db, exchange.journal, "a1") == [
        "pending_new",
        "accepted",
        "new",
        "partially_filled",
        "pending_replace",
        "replaced",
    ]
    with db.read() as conn:
        old = queries.get_order(conn, "alice", "a1")
        new = queries.get_order(conn, "alice", "a2")
        by_client_id = queries.get_order_by_client_id(conn, "alice", "mine-2")
    assert old is not None and new is not None
    assert (old.replaced_by, old.replaced_at, new.replaces) == ("a2", 12, "a1")
    assert by_client_id == new
    assert (new.client_order_id, new.limit_price, new.time_in_force) == (
        "mine-2",
        D("190.50"),
        "gtc",
    )
    # 3 at 190.00 before the replace, 5 at 190.50 after: filled, at the volume-weighted price.
    assert (new.qty, new.filled_qty, new.status) == (D(8), D(8), "filled")
    assert new.filled_avg_price == D("1522.50") / 8
    assert dump(db)["pending_replaces"] == []


def test_day_orders_expire_and_a_refused_cancel_puts_the_status_back(db: Database) -> None:
    exchange = opened_exchange()
    exchange.submit([submit("a1", "mine-1", "buy", 10, "190.00", ts=10, tif="day")])
    exchange.submit([submit("a2", "mine-2", "buy", 10, "189.00", ts=11)])
    exchange.journal.extend(exchange.engine.expire_day_orders(ts=20))
    exchange.run()
    projection = ReadModelProjection(db)
    orders_stream = streams(exchange.journal)[0]
    projection.apply("ORDERS", orders_stream)
    last = orders_stream[-1][0]
    # A cancel that reaches the engine after the order stopped working is refused.
    projection.apply(
        "ORDERS",
        [
            (
                last + 1,
                orders.CancelValidated(ts=21, order_id="a2", account_id="alice", symbol="AAPL"),
            ),
            (
                last + 2,
                orders.OrderRejected(
                    ts=21,
                    order_id="a2",
                    account_id="bob",  # another account's refusal says nothing about a2
                    request="cancel",
                    code=orders.RejectCode.UNKNOWN_ORDER,
                    message="no open order with this id",
                ),
            ),
        ],
    )
    with db.read() as conn:
        expired = queries.get_order(conn, "alice", "a1")
        pending = queries.get_order(conn, "alice", "a2")
    assert expired is not None and (expired.status, expired.expired_at) == ("expired", 20)
    assert pending is not None and pending.status == "pending_cancel"
    projection.apply(
        "ORDERS",
        [
            (
                last + 3,
                orders.OrderRejected(
                    ts=22,
                    order_id="a2",
                    account_id="alice",
                    request="cancel",
                    code=orders.RejectCode.UNKNOWN_ORDER,
                    message="no such working order",
                ),
            )
        ],
    )
    with db.read() as conn:
        restored = queries.get_order(conn, "alice", "a2")
    assert restored is not None and restored.status == "new"


def test_client_order_ids_find_the_order_that_holds_them(db: Database) -> None:
    exchange = opened_exchange()
    exchange.submit([submit("a1", "dup", "buy", 1, "190.00", ts=10)])
    exchange.submit([submit("a2", "dup", "buy", 1, "190.00", ts=11)])  # duplicate: rejected
    exchange.submit([submit("a3", "again", "buy", 10_000, "190.00", ts=12)])  # no buying power
    exchange.submit([submit("a4", "again", "buy", 1, "190.00", ts=13)])  # the id is free again
    exchange.submit([submit("a5", "later", "buy", 10_000, "190.00", ts=14)])  # rejected only
    orders_stream, _ = streams(exchange.journal)
    ReadModelProjection(db).apply("ORDERS", orders_stream)
    with db.read() as conn:

        def found(client_order_id: str) -> tuple[str, str] | None:
            order = queries.get_order_by_client_id(conn, "alice", client_order_id)
            return None if order is None else (order.id, order.status)

        assert found("dup") == ("a1", "new")
        assert found("again") == ("a4", "new")
        assert found("later") == ("a5", "rejected")
        assert found("never") is None
        duplicate = queries.get_order(conn, "alice", "a2")
    assert duplicate is not None and duplicate.status == "rejected"
    assert duplicate.reject_code == "duplicate_client_order_id"
    assert duplicate.reject_reason and "already used" in duplicate.reject_reason


def test_halts_and_positions_before_the_account_opens(db: Database) -> None:
    projection = ReadModelProjection(db)
    projection.apply(
        "POSITIONS",
        [
            (
                1,
                positions.PositionChanged(
                    ts=5,
                    account_id="carol",
                    symbol="AAPL",
                    qty=D(3),
                    avg_entry_price=D("190.00"),
                    realized_pnl=D("1.50"),
                    cash=D(0),
                    match_id=1,
                ),
            )
        ],
    )
    projection.apply(
        "ORDERS",
        [
            (1, orders.TradingHalted(ts=2, account_id="carol", reason="risk: drawdown")),
            (2, orders.AccountOpened(ts=3, account_id="carol", shorting_enabled=True)),
            (3, orders.CashDeposited(ts=4, account_id="carol", amount=D(500))),
            (4, orders.AccountOpened(ts=6, account_id="carol")),  # a second opening: ignored
        ],
    )
    with db.read() as conn:
        account = queries.get_account(conn, "carol")
        assert queries.list_positions(conn, "carol")[0].cost_basis == D("570.00")
    assert account is not None
    assert (account.status, account.created_at, account.shorting_enabled) == ("ACTIVE", 3, True)
    assert (account.cash, account.realized_pnl) == (D(500), D("1.50"))
    assert (account.trading_blocked, account.blocked_reason) == (True, "risk: drawdown")
    projection.apply("ORDERS", [(5, orders.TradingResumed(ts=7, account_id="carol"))])
    projection.apply(
        "POSITIONS",
        [
            (
                2,
                positions.PositionChanged(
                    ts=8,
                    account_id="carol",
                    symbol="AAPL",
                    qty=D(0),
                    avg_entry_price=D(0),
                    realized_pnl=D("2.00"),
                    cash=D(0),
                    match_id=2,
                ),
            )
        ],
    )
    with db.read() as conn:
        account = queries.get_account(conn, "carol")
        assert queries.list_positions(conn, "carol") == []
        assert queries.get_position(conn, "carol", "AAPL") is None
    assert account is not None and not account.trading_blocked
    assert account.realized_pnl == D("2.00")


# ---- API keys ----


def test_api_keys_verify_the_right_secret_only(db: Database) -> None:
    with db.write() as conn:
        key_id, secret = api_keys.create_api_key(conn, "alice", clock=lambda: 42)
        admin_id, admin_secret = api_keys.create_api_key(conn, "ops", "admin")
    assert len(secret) == api_keys.SECRET_LENGTH and key_id.startswith("PK")
    with db.read() as conn:
        key = api_keys.verify_api_key(conn, key_id, secret)
        assert key is not None
        assert (key.key_id, key.account_id, key.role, key.created_at) == (
            key_id,
            "alice",
            "trader",
            42,
        )
        assert api_keys.get_api_key(conn, key_id) == key
        admin = api_keys.verify_api_key(conn, admin_id, admin_secret)
        assert admin is not None and admin.role == "admin"
        assert api_keys.verify_api_key(conn, key_id, secret[:-1]) is None
        assert api_keys.verify_api_key(conn, key_id, secret + "x") is None
        assert api_keys.verify_api_key(conn, key_id, admin_secret) is None
        assert api_keys.verify_api_key(conn, key_id, "") is None
        assert api_keys.verify_api_key(conn, "PKNOSUCHKEY", secret) is None
        assert api_keys.get_api_key(conn, "PKNOSUCHKEY") is None
        stored = conn.execute(text("SELECT secret_hash FROM api_keys")).scalars().all()
    assert all(
        s.startswith("$scrypt$") and secret not in s and admin_secret not in s for s in stored
    )
    with db.write() as conn:
        assert api_keys.revoke_api_key(conn, key_id, clock=lambda: 50)
        assert not api_keys.revoke_api_key(conn, key_id)
    with db.read() as conn:
        assert api_keys.verify_api_key(conn, key_id, secret) is None
        revoked = api_keys.get_api_key(conn, key_id)
        assert revoked is not None and revoked.revoked_at == 50
    with db.write() as conn, pytest.raises(InvalidQuery):
        api_keys.create_api_key(conn, "alice", "root")  # type: ignore[arg-type]


def test_a_malformed_hash_matches_nothing() -> None:
    hashed = api_keys.hash_secret("s3cret")
    assert api_keys.secret_matches("s3cret", hashed)
    assert not api_keys.secret_matches("s3cret", hashed.replace("scrypt", "bcrypt"))
    assert not api_keys.secret_matches("s3cret", "not a hash")
    assert not api_keys.secret_matches("s3cret", hashed[:-4])


# ---- migrations ----


def test_migrations_are_rerunnable_and_keep_the_data(fresh_db: Database) -> None:
    assert schema_version(fresh_db) == 0
    assert migrate(fresh_db) == 0
    with fresh_db.write() as conn:
        key_id, secret = api_keys.create_api_key(conn, "alice")
    assert migrate(fresh_db) == LATEST
    assert migrate(fresh_db) == LATEST
    assert schema_version(fresh_db) == LATEST
    with fresh_db.read() as conn:
        assert api_keys.verify_api_key(conn, key_id, secret) is not None
        assert conn.execute(select(migrations_table.c.version)).scalars().all() == [LATEST]


def test_migrating_concurrently_migrates_once(fresh_db: Database) -> None:
    url = fresh_db.engine.url.render_as_string(hide_password=False)
    results: list[int] = []
    errors: list[BaseException] = []

    def start() -> None:
        db = Database.open(url)
        try:
            results.append(migrate(db))
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)
        finally:
            db.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [0] + [LATEST] * 3
    assert schema_version(fresh_db) == LATEST


def test_a_schema_newer_than_the_code_is_refused(db: Database) -> None:
    with db.write() as conn:
        conn.execute(
            insert(migrations_table).values(version=LATEST + 1, description="future", applied_at=0)
        )
    with pytest.raises(SchemaTooNew) as refused:
        migrate(db)
    assert (refused.value.found, refused.value.supported) == (LATEST + 1, LATEST)


def test_only_database_urls_it_can_serve_are_accepted() -> None:
    from bourse.errors import ConfigError

    for url in ("mysql://root@localhost/db", "sqlite://", "sqlite:///:memory:", "not a url"):
        with pytest.raises(ConfigError):
            Database.open(url)


def test_a_batch_finds_its_rows_through_the_indexes(tmp_path: Path) -> None:
    # Every batch reads the orders, accounts and pending replaces it touches, and who holds
    # its new orders' client order ids. Once written as a row-value IN, the last made SQLite
    # scan the whole orders table on every batch: the read model slowed down with every
    # order it had ever taken.
    from bourse.accounts.readmodel.database import driver
    from bourse.accounts.readmodel.projection import _ORDER_CHANGES
    from bourse.accounts.readmodel.sqlite_bulk import SqliteBulk

    indexes = {
        "orders": "sqlite_autoindex_orders_1",
        "accounts": "sqlite_autoindex_accounts_1",
        "pending": "sqlite_autoindex_pending_replaces_1",
        "holders": "ux_orders_client_order_key",
        "drop_pending": "ix_pending_replaces_order",
    }
    with empty_database("sqlite", tmp_path) as db:
        migrate(db)
        searches = SqliteBulk(_ORDER_CHANGES).searches()
        assert searches.keys() == indexes.keys()
        with db.read() as conn:
            for name, sql in searches.items():
                parameters = ("alice",) * (sql.count("?") - 1) + ('["k1", "k2"]',)
                plan = driver(conn).execute("EXPLAIN QUERY PLAN " + sql, parameters).fetchall()
                details = [row[-1] for row in plan]
                assert any(f"USING INDEX {indexes[name]}" in d for d in details), (name, details)
                assert not any(d.startswith("SCAN") and "json_each" not in d for d in details)


def _order_row(**changes: Any) -> Order:
    """A limit buy of alice's holding its client order id, with `changes`."""
    row = Order(
        id="o-1",
        client_order_id="c-1",
        account_id="alice",
        symbol="AAPL",
        asset_class="us_equity",
        side="buy",
        type="limit",
        time_in_force="gtc",
        qty=D(1),
        filled_qty=D(0),
        filled_notional=D(0),
        filled_avg_price=None,
        limit_price=D("100.01"),
        stop_price=None,
        status="new",
        created_at=1,
        updated_at=1,
        submitted_at=1,
        holds_client_order_id=True,
    )
    return msgspec.structs.replace(row, **changes)


def test_rows_written_in_bulk_read_back_exactly(tmp_path: Path) -> None:
    # On SQLite a batch's rows go to the database as bound parameters of one multi-row
    # INSERT and come back as one JSON document: every value must survive both ways, and
    # read the same through the queries.
    from bourse.accounts.readmodel import schema
    from bourse.accounts.readmodel.projection import _ORDER_CHANGES
    from bourse.accounts.readmodel.rows import Account, Position
    from bourse.accounts.readmodel.schema import order_to_db, to_db
    from bourse.accounts.readmodel.sqlite_bulk import SqliteBulk

    odd = 'q"uo\\te \u00e9\u4e2d \U0001f600'
    order = _order_row(
        id="o-1",
        client_order_id=odd,
        qty=D("1E+2"),
        filled_qty=D("0E-8"),
        filled_notional=D("-0"),
        limit_price=D("0.00000001"),
        stop_price=D("123456789012345678.123456789"),
        status="new",
        created_at=2**62,
        updated_at=2**62 + 1,
        submitted_at=1,
        reject_reason=odd,
    )
    account = Account(
        id="alice",
        status="ACTIVE",
        created_at=None,
        updated_at=5,
        trading_blocked=True,
        blocked_reason=odd,
        shorting_enabled=False,
        cash=D("100760.000000000000000000001"),
        realized_pnl=D("-1.5"),
    )
    position = Position(
        account_id="alice",
        symbol="AAPL",
        qty=D("-3"),
        avg_entry_price=D("190.10"),
        cost_basis=D("-570.30"),
        updated_at=7,
    )
    bulk = SqliteBulk(_ORDER_CHANGES)
    with empty_database("sqlite", tmp_path) as db:
        migrate(db)
        with db.write() as conn:
            bulk.upsert(conn, schema.orders, [order_to_db(order)])
            bulk.upsert(conn, schema.accounts, [to_db(account)])
            bulk.upsert(conn, schema.positions, [to_db(position)])
        with db.read() as conn:
            assert bulk.orders(conn, ["o-1", "nobody"]) == [order]
            assert bulk.accounts(conn, ["alice"]) == [account]
            assert bulk.holders(conn, "alice", [odd, "other"]) == [("o-1", odd)]
            assert queries.get_order(conn, "alice", "o-1") == order
            assert queries.get_order_by_client_id(conn, "alice", odd) == order
            assert queries.get_account(conn, "alice") == account
            assert queries.list_positions(conn, "alice") == [position]
        # An upsert of an order sets only what an order's later events change.
        later = msgspec.structs.replace(order, status="filled", symbol="MSFT", updated_at=9)
        with db.write() as conn:
            bulk.upsert(conn, schema.orders, [order_to_db(later)])
        with db.read() as conn:
            assert bulk.orders(conn, ["o-1"]) == [
                msgspec.structs.replace(order, status="filled", updated_at=9)
            ]


@pytest.mark.parametrize(
    ("count", "max_parameters"),
    [(1, None), (3, None), (255, None), (256, None), (300, None), (1000, None), (300, 999)],
)
def test_a_batch_of_any_size_is_written_whole_in_power_of_two_chunks(
    tmp_path: Path, count: int, max_parameters: int | None
) -> None:
    # A batch's rows go in as one INSERT per power-of-two chunk (at most CHUNK rows, fewer
    # where SQLite allows fewer parameters: 999 before 3.32): every row lands once, a row
    # already there is updated in place, none is left out at a chunk's edge.
    from bourse.accounts.readmodel import schema
    from bourse.accounts.readmodel.database import driver
    from bourse.accounts.readmodel.projection import _ORDER_CHANGES
    from bourse.accounts.readmodel.schema import order_to_db
    from bourse.accounts.readmodel.sqlite_bulk import CHUNK, SqliteBulk, chunk_limit

    def order(i: int, status: str) -> Order:
        return _order_row(
            id=f"o-{i:05d}",
            client_order_id=f"c-{i}",
            side="buy" if i % 2 else "sell",
            qty=D(i),
            status=status,
            created_at=i,
            updated_at=i,
            submitted_at=i,
        )

    bulk = SqliteBulk(_ORDER_CHANGES)
    half = count // 2
    with empty_database("sqlite", tmp_path) as db:
        migrate(db)
        with db.write() as conn:  # the first half is there before the batch
            bulk.upsert(conn, schema.orders, [order_to_db(order(i, "new")) for i in range(half)])
        with db.write() as conn:
            if max_parameters is not None:
                raw = driver(conn)
                raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, max_parameters)
                assert chunk_limit(raw, len(schema.orders.columns)) < CHUNK
            rows = [order_to_db(order(i, "filled")) for i in range(count)]
            bulk.upsert(conn, schema.orders, rows)
        with db.read() as conn:
            ids = [f"o-{i:05d}" for i in range(count)]
            assert sorted(bulk.orders(conn, ids), key=lambda o: o.id) == [
                order(i, "filled") for i in range(count)
            ]
            (total,) = driver(conn).execute("SELECT count(*) FROM orders").fetchone()
            assert total == count
