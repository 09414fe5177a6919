"""The projection's shell: applies stream messages to the database, each exactly once.

A batch of messages from one stream is applied in one write transaction, together with the
stream's new high-water mark (`readmodel_offsets`): a message at or below the mark was
applied before and is skipped, so redelivery after a crash or a reconnect is harmless. That
needs messages in stream order, which the read model needs anyway (an execution cannot come
before its order); a batch out of order is refused before anything is written.

Batches are applied one at a time, whichever stream they come from (the consumers of ORDERS
and POSITIONS may run side by side): on PostgreSQL under an advisory lock, on SQLite by its
single writer.

Within a batch the rows the projector reads are cached and its changes collected, then
written with one statement per table, so a batch costs a few round trips, not a few per
message. The statements a batch always runs are built once per projection: building and
keying a SQLAlchemy statement costs more than running it for a small batch. On SQLite they go
straight to the driver, a table's rows as one multi-row INSERT per power-of-two chunk and the
rows read back as one JSON array (`sqlite_bulk`); on PostgreSQL through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    BindParameter,
    Connection,
    Executable,
    Table,
    bindparam,
    delete,
    select,
    text,
)
from sqlalchemy.dialects import postgresql

from bourse.accounts.readmodel import schema
from bourse.accounts.readmodel.database import Database
from bourse.accounts.readmodel.projector import (
    Change,
    PositionClosed,
    Projector,
    ReadModelEvent,
    ReplacesSettled,
)
from bourse.accounts.readmodel.rows import Account, Fill, Order, PendingReplace, Position
from bourse.accounts.readmodel.sqlite_bulk import SqliteBulk
from bourse.errors import BourseError
from bourse.model import orders, positions
from bourse.model.instruments import DEFAULT_UNIVERSE, Instrument

# Any 64-bit constant (distinct from the migrations' lock).
_PG_LOCK_KEY = 0x6272_7370_726F_6A01


class OutOfOrder(BourseError):
    """A batch's sequences must increase: the projection applies a stream in order."""

    def __init__(self, stream: str, previous: int, sequence: int) -> None:
        self.stream = stream
        self.previous = previous
        self.sequence = sequence
        super().__init__(
            f"{stream}: sequence {sequence} came after {previous}; the read model applies a "
            "stream in order (consume it with one ordered consumer, retrying in place)"
        )


class ReadModelProjection:
    """Projects the ORDERS and POSITIONS streams into the read model."""

    def __init__(self, db: Database, instruments: Iterable[Instrument] = DEFAULT_UNIVERSE) -> None:
        self._db = db
        self._projector = Projector({i.symbol: str(i.asset_class) for i in instruments})
        # On SQLite a batch goes to the driver in a few calls per table (sqlite_bulk); on
        # PostgreSQL through SQLAlchemy.
        self._statements: Statements = (
            SqliteBulk(_ORDER_CHANGES) if db.dialect == "sqlite" else _SqlAlchemyStatements()
        )

    def apply(self, stream: str, messages: Iterable[tuple[int, ReadModelEvent]]) -> int:
        """Apply `(stream sequence, message)` pairs in one transaction; return how many were
        new (the others were at or below the stream's high-water mark)."""
        with self._db.write() as conn:
            return self.apply_in(conn, stream, messages)

    def apply_in(
        self, conn: Connection, stream: str, messages: Iterable[tuple[int, ReadModelEvent]]
    ) -> int:
        """`apply` inside the caller's write transaction."""
        statements = self._statements
        applied_before = statements.offset(conn, stream)
        fresh: list[tuple[int, ReadModelEvent]] = []
        last = applied_before
        for sequence, message in messages:
            if sequence <= applied_before:
                continue  # applied before: a redelivery
            if sequence <= last:
                raise OutOfOrder(stream, last, sequence)
            fresh.append((sequence, message))
            last = sequence
        if not fresh:
            return 0
        batch = _Batch(conn, statements)
        batch.preload(message for _, message in fresh)
        for sequence, message in fresh:
            for change in self._projector.changes(message, sequence, batch):
                batch.record(change)
        batch.flush()
        statements.set_offset(conn, stream, last)
        return len(fresh)

    def last_sequence(self, stream: str) -> int:
        """The stream's high-water mark: the last sequence applied (0 before any)."""
        with self._db.read() as conn:
            found = conn.execute(
                select(schema.offsets.c.last_seq).where(schema.offsets.c.stream == stream)
            ).scalar_one_or_none()
        return int(found or 0)


# What an order's later events change; the rest is fixed when the row is made (a replace
# makes a new order). Setting only these on a conflict spares SQLite rewriting the entries of
# every index on the row (account, client order id, submission time) for each event.
_ORDER_CHANGES = frozenset(
    {
        "client_order_key",
        "filled_qty",
        "filled_notional",
        "filled_avg_price",
        "status",
        "updated_at",
        "filled_at",
        "canceled_at",
        "expired_at",
        "replaced_at",
        "failed_at",
        "replaced_by",
        "reject_code",
        "reject_reason",
    }
)


def _upsert_statement(table: Table, changes: frozenset[str] | None = None) -> Executable:
    """Insert rows of `table`, or overwrite the `changes` columns (default: every column) of
    the rows already there."""
    statement = postgresql.insert(table)
    keys = [column.name for column in table.primary_key.columns]
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=keys,
        set_={
            column.name: statement.excluded[column.name]
            for column in table.columns
            if column.name not in keys and (changes is None or column.name in changes)
        },
    )
    return upsert


def _ids() -> BindParameter[Any]:
    """`IN :ids`, a list given when the statement runs."""
    return bindparam("ids", expanding=True)


class Statements(Protocol):
    """What a batch runs against the database, inside the caller's write transaction."""

    def offset(self, conn: Connection, stream: str) -> int:
        """Take the projection's write lock; return the stream's high-water mark (its row
        made, at 0, before its first batch)."""
        ...

    def set_offset(self, conn: Connection, stream: str, last: int) -> None: ...

    def orders(self, conn: Connection, ids: Sequence[str]) -> Iterable[Order]: ...

    def accounts(self, conn: Connection, ids: Sequence[str]) -> Iterable[Account]: ...

    def pending(self, conn: Connection, ids: Sequence[str]) -> Iterable[PendingReplace]: ...

    def holders(
        self, conn: Connection, account_id: str, keys: Sequence[str]
    ) -> Iterable[tuple[str, str]]:
        """(order id, client order id) of the account's orders holding these keys."""
        ...

    def upsert(self, conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert the rows of `table`, or update those already there."""
        ...

    def add_fills(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert fills; one already there is left as it is."""
        ...

    def drop_pending(self, conn: Connection, order_ids: Sequence[str]) -> None:
        """Delete the pending replaces of these orders (they are settled)."""
        ...


class _SqlAlchemyStatements:
    """`Statements` through SQLAlchemy, built once (PostgreSQL)."""

    def __init__(self) -> None:
        offsets, orders_, accounts = schema.offsets, schema.orders, schema.accounts
        pending = schema.pending_replaces
        self._lock = text("SELECT pg_advisory_xact_lock(:key)")
        self._add_offset = postgresql.insert(offsets).on_conflict_do_nothing()
        self._offset = select(offsets.c.last_seq).where(offsets.c.stream == bindparam("stream"))
        self._set_offset = (
            offsets.update()
            .where(offsets.c.stream == bindparam("of_stream"))
            .values(last_seq=bindparam("new_last_seq"))
        )
        self._orders = select(orders_).where(orders_.c.id.in_(_ids()))
        self._accounts = select(accounts).where(accounts.c.id.in_(_ids()))
        self._pending = select(pending).where(pending.c.new_order_id.in_(_ids()))
        # Per account: `account_id = ? AND client_order_key IN (...)` searches the unique
        # index (a row-value `(account_id, client_order_key) IN (...)` made SQLite scan the
        # whole table on every batch).
        self._holders = select(orders_.c.id, orders_.c.client_order_key).where(
            orders_.c.account_id == bindparam("account_id"), orders_.c.client_order_key.in_(_ids())
        )
        self._upserts = {
            table.name: _upsert_statement(table) for table in (accounts, pending, schema.positions)
        }
        self._upserts[orders_.name] = _upsert_statement(orders_, _ORDER_CHANGES)
        self._add_fills = postgresql.insert(schema.fills).on_conflict_do_nothing()
        self._drop_pending = delete(pending).where(pending.c.order_id.in_(_ids()))

    def offset(self, conn: Connection, stream: str) -> int:
        # One projection transaction at a time, whichever stream: batches of ORDERS and
        # POSITIONS both rewrite account rows, and must not overwrite each other's changes.
        # (On SQLite, BEGIN IMMEDIATE serializes every write transaction.)
        conn.execute(self._lock, {"key": _PG_LOCK_KEY})
        found = conn.execute(self._offset, {"stream": stream}).scalar_one_or_none()
        if found is None:  # the stream's first batch (the lock above keeps this from racing)
            conn.execute(self._add_offset, {"stream": stream, "last_seq": 0})
            return 0
        return int(found)

    def set_offset(self, conn: Connection, stream: str, last: int) -> None:
        conn.execute(self._set_offset, {"of_stream": stream, "new_last_seq": last})

    def orders(self, conn: Connection, ids: Sequence[str]) -> Iterator[Order]:
        for row in conn.execute(self._orders, {"ids": ids}):
            yield schema.order_from_db(row)

    def accounts(self, conn: Connection, ids: Sequence[str]) -> Iterator[Account]:
        for row in conn.execute(self._accounts, {"ids": ids}):
            yield schema.from_db(Account, row)

    def pending(self, conn: Connection, ids: Sequence[str]) -> Iterator[PendingReplace]:
        for row in conn.execute(self._pending, {"ids": ids}):
            yield schema.from_db(PendingReplace, row)

    def holders(
        self, conn: Connection, account_id: str, keys: Sequence[str]
    ) -> Iterator[tuple[str, str]]:
        found = conn.execute(self._holders, {"account_id": account_id, "ids": keys})
        yield from ((order_id, key) for order_id, key in found)

    def upsert(self, conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            conn.execute(self._upserts[table.name], list(rows))

    def add_fills(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            conn.execute(self._add_fills, list(rows))

    def drop_pending(self, conn: Connection, order_ids: Sequence[str]) -> None:
        if order_ids:
            conn.execute(self._drop_pending, {"ids": list(order_ids)})


class _Batch:
    """The projector's view of the rows during one batch, and the changes to write."""

    def __init__(self, conn: Connection, statements: Statements) -> None:
        self._conn = conn
        self._statements = statements
        self._accounts: dict[str, Account | None] = {}
        self._orders: dict[str, Order | None] = {}
        self._pending: dict[str, PendingReplace | None] = {}
        self._settled: set[str] = set()
        self._positions: dict[tuple[str, str], Position | None] = {}
        self._holders: dict[tuple[str, str], str] = {}
        self._unheld: set[tuple[str, str]] = set()  # held by no order before this batch
        self._fills: list[Fill] = []
        self._dirty_accounts: set[str] = set()
        self._dirty_orders: set[str] = set()
        self._dirty_pending: set[str] = set()

    def preload(self, messages: Iterable[ReadModelEvent]) -> None:
        """Read the rows the messages refer to, a few queries for the whole batch."""
        order_ids: set[str] = set()
        account_ids: set[str] = set()
        pending_ids: set[str] = set()
        keys: set[tuple[str, str]] = set()
        for message in messages:
            match message:
                case orders.OrderValidated(order=submitted):
                    order_ids.add(submitted.order_id)
                    keys.add((submitted.account_id, submitted.client_order_id))
                case orders.ReplaceValidated(request=request):
                    order_ids.add(request.order_id)
                case orders.OrderReplaced():
                    order_ids.update((message.order_id, message.new_order_id))
                    pending_ids.add(message.new_order_id)
                case orders.Execution():
                    order_ids.add(message.order_id)
                    account_ids.add(message.account_id)
                case (
                    orders.OrderSubmitted()
                    | orders.OrderAccepted()
                    | orders.CancelValidated()
                    | orders.OrderRejected()
                    | orders.OrderCancelled()
                ):
                    order_ids.add(message.order_id)
                case (
                    orders.AccountOpened()
                    | orders.CashDeposited()
                    | orders.AssetDeposited()
                    | orders.TradingHalted()
                    | orders.TradingResumed()
                    | positions.PositionChanged()
                ):
                    account_ids.add(message.account_id)
                case _:
                    pass
        conn, statements = self._conn, self._statements
        for chunk in _chunks(order_ids - self._orders.keys()):
            self._orders.update(dict.fromkeys(chunk))
            for order in statements.orders(conn, chunk):
                self._orders[order.id] = order
        for chunk in _chunks(account_ids - self._accounts.keys()):
            self._accounts.update(dict.fromkeys(chunk))
            for account in statements.accounts(conn, chunk):
                self._accounts[account.id] = account
        for chunk in _chunks(pending_ids - self._pending.keys()):
            self._pending.update(dict.fromkeys(chunk))
            for replace in statements.pending(conn, chunk):
                self._pending[replace.new_order_id] = replace
        by_account: dict[str, set[str]] = {}
        for account_id, key in keys - self._holders.keys() - self._unheld:
            by_account.setdefault(account_id, set()).add(key)
        for account_id, wanted in sorted(by_account.items()):
            for chunk in _chunks(wanted):
                self._unheld.update((account_id, key) for key in chunk)
                for order_id, key in statements.holders(conn, account_id, chunk):
                    self._holders[(account_id, key)] = order_id
                    self._unheld.discard((account_id, key))

    # ---- View ----

    def account(self, account_id: str) -> Account | None:
        if account_id not in self._accounts:
            row = self._conn.execute(
                select(schema.accounts).where(schema.accounts.c.id == account_id)
            ).one_or_none()
            self._accounts[account_id] = None if row is None else schema.from_db(Account, row)
        return self._accounts[account_id]

    def order(self, order_id: str) -> Order | None:
        if order_id not in self._orders:
            row = self._conn.execute(
                select(schema.orders).where(schema.orders.c.id == order_id)
            ).one_or_none()
            self._orders[order_id] = None if row is None else schema.order_from_db(row)
        return self._orders[order_id]

    def pending_replace(self, new_order_id: str) -> PendingReplace | None:
        if new_order_id not in self._pending:
            table = schema.pending_replaces
            row = self._conn.execute(
                select(table).where(table.c.new_order_id == new_order_id)
            ).one_or_none()
            found = None if row is None else schema.from_db(PendingReplace, row)
            if found is not None and found.order_id in self._settled:
                found = None
            self._pending[new_order_id] = found
        return self._pending[new_order_id]

    def client_order_id_holder(self, account_id: str, client_order_id: str) -> str | None:
        # Orders of this batch that take a key are noted by record(), so both caches hold.
        key = (account_id, client_order_id)
        if key not in self._holders and key not in self._unheld:
            orders = schema.orders
            holder = self._conn.execute(
                select(orders.c.id).where(
                    orders.c.account_id == account_id,
                    orders.c.client_order_key == client_order_id,
                )
            ).scalar_one_or_none()
            if holder is None:
                self._unheld.add(key)
            else:
                self._holders[key] = holder
        return self._holders.get(key)

    # ---- changes ----

    def record(self, change: Change) -> None:
        match change:
            case Account(id=account_id):
                self._accounts[account_id] = change
                self._dirty_accounts.add(account_id)
            case Order(id=order_id):
                self._orders[order_id] = change
                self._dirty_orders.add(order_id)
                if change.holds_client_order_id:
                    key = (change.account_id, change.client_order_id)
                    self._holders[key] = order_id
                    self._unheld.discard(key)
            case Fill():
                self._fills.append(change)
            case Position(account_id=account_id, symbol=symbol):
                self._positions[(account_id, symbol)] = change
            case PositionClosed(account_id=account_id, symbol=symbol):
                self._positions[(account_id, symbol)] = None
            case PendingReplace(new_order_id=new_order_id):
                self._pending[new_order_id] = change
                self._dirty_pending.add(new_order_id)
            case ReplacesSettled(order_id=order_id):
                self._settled.add(order_id)
                for new_order_id, pending in self._pending.items():
                    if pending is not None and pending.order_id == order_id:
                        self._pending[new_order_id] = None
                        self._dirty_pending.add(new_order_id)

    def flush(self) -> None:
        conn, statements = self._conn, self._statements
        pending = schema.pending_replaces
        statements.drop_pending(conn, sorted(self._settled))
        gone = sorted(k for k in self._dirty_pending if self._pending[k] is None)
        if gone:
            conn.execute(delete(pending).where(pending.c.new_order_id.in_(gone)))
        statements.upsert(
            conn, pending, [schema.to_db(p) for p in _present(self._pending, self._dirty_pending)]
        )
        statements.upsert(
            conn,
            schema.accounts,
            [schema.to_db(a) for a in _present(self._accounts, self._dirty_accounts)],
        )
        statements.upsert(
            conn,
            schema.orders,
            [schema.order_to_db(o) for o in _present(self._orders, self._dirty_orders)],
        )
        statements.add_fills(conn, [schema.to_db(f) for f in self._fills])
        positions = schema.positions
        for account_id, symbol in sorted(k for k, v in self._positions.items() if v is None):
            conn.execute(
                delete(positions).where(
                    positions.c.account_id == account_id, positions.c.symbol == symbol
                )
            )
        statements.upsert(
            conn, positions, [schema.to_db(p) for p in _present(self._positions, self._positions)]
        )


_Key = TypeVar("_Key", str, tuple[str, str])
_Value = TypeVar("_Value")


def _present(rows: Mapping[_Key, _Value | None], keys: Iterable[_Key]) -> list[_Value]:
    """The rows of `keys` still present, in key order (a stable statement order)."""
    return [row for key in sorted(keys) if (row := rows[key]) is not None]


def _chunks(keys: set[_Key], size: int = 500) -> Iterator[list[_Key]]:
    ordered = sorted(keys)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]
