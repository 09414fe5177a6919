"""The projection's batch statements on SQLite, a few driver calls per table and batch.

SQLAlchemy's `executemany` hands SQLite one row at a time, and Python's sqlite3 module lets
go of the GIL around every row it steps: beside a busy event loop (the gateway's, in the same
process) each row then waits to get the GIL back, and a batch costs two and a half times
its CPU alone (docs/benchmarks.md, "orders"). Here a batch's rows of a table go in as one
`INSERT ... VALUES (...), (...), ...` per power-of-two chunk of rows (at most CHUNK), their
values bound as parameters: a 45-row batch is four statements (32 + 8 + 4 + 1 rows), each
prepared once per connection and kept in sqlite3's statement cache. (Rows sent as one JSON
array unpacked by `json_each` cost more: SQLite before 3.45 parses a row's JSON again for
every column it extracts, ~1.5 µs a column, 45 µs for an order's 30.) The rows a batch
reads come back as one JSON array (`json_group_array`), decoded by msgspec straight into the
row types. Same tables, same values (a Decimal is its string, as `ExactDecimal` stores it; a
boolean 0 or 1), inside the caller's transaction on the same connection.

PostgreSQL keeps SQLAlchemy's statements (psycopg sends a batch as a pipeline already).
"""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import msgspec
from sqlalchemy import Connection, Table

from bourse.accounts.readmodel import schema
from bourse.accounts.readmodel.database import driver
from bourse.accounts.readmodel.rows import Account, Order, PendingReplace

_Row = TypeVar("_Row", Account, Order, PendingReplace)
_encode = msgspec.json.Encoder().encode


def _selected(kind: type[msgspec.Struct], table: Table) -> str:
    """A JSON object per row with `kind`'s fields, for msgspec to decode as `kind`."""
    parts = []
    for field in msgspec.structs.fields(kind):
        name = field.name
        if name == "holds_client_order_id":  # an order holds its key when the key is set
            value = "json(iif(client_order_key IS NULL, 'false', 'true'))"
        elif field.type is bool:
            value = f"json(iif({name}, 'true', 'false'))"
        else:
            value = table.c[name].name
        parts.append(f"'{name}', {value}")
    return "json_group_array(json_object(" + ", ".join(parts) + "))"


class _Reader(Generic[_Row]):
    """Rows of `kind` whose `key` column is one of a list of ids, in one statement."""

    def __init__(self, kind: type[_Row], table: Table, key: str) -> None:
        self.sql = (
            f"SELECT {_selected(kind, table)} FROM {table.name} "
            f"WHERE {key} IN (SELECT value FROM json_each(?))"
        )
        self._decoder: msgspec.json.Decoder[list[_Row]] = msgspec.json.Decoder(list[kind])  # type: ignore[valid-type]

    def __call__(self, conn: Connection, ids: Sequence[str]) -> list[_Row]:
        found: str = driver(conn).execute(self.sql, (_encode(ids),)).fetchone()[0]
        return self._decoder.decode(found)


CHUNK = 256  # rows per INSERT at most, fewer where SQLite allows fewer parameters (below)


class _Writer:
    """Rows of a table (dicts by column name) inserted in a few statements (see the module);
    `on_conflict` says what a row whose key is there already does."""

    def __init__(self, table: Table, on_conflict: str) -> None:
        columns = [column.name for column in table.columns]
        self._values: Callable[[dict[str, Any]], tuple[Any, ...]] = operator.itemgetter(*columns)
        self._head = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "
        self._row = "(" + ", ".join("?" for _ in columns) + ")"
        self._tail = f" ON CONFLICT {on_conflict}"
        self._width = len(columns)
        self._sql: dict[int, str] = {}

    def sql(self, rows: int) -> str:
        """The statement for a chunk of `rows` rows."""
        found = self._sql.get(rows)
        if found is None:
            found = self._sql[rows] = self._head + ", ".join([self._row] * rows) + self._tail
        return found

    def __call__(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        raw = driver(conn)
        # Decimals as their strings, as the column type stores them (msgspec, in C).
        values: list[list[Any]] = msgspec.to_builtins([self._values(row) for row in rows])
        most = min(CHUNK, chunk_limit(raw, self._width))
        start, left = 0, len(values)
        while left:
            size = 1 << (min(most, left).bit_length() - 1)  # a power of two, at most both
            raw.execute(self.sql(size), [v for row in values[start : start + size] for v in row])
            start, left = start + size, left - size


def chunk_limit(raw: sqlite3.Connection, width: int) -> int:
    """How many rows of `width` values one statement may bind on this connection (SQLite
    allows 32,766 parameters since 3.32, 999 before, or what the build or `setlimit` says)."""
    return max(1, raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width)


def _upsert(table: Table, changes: frozenset[str] | None = None) -> _Writer:
    """Insert, or overwrite the `changes` columns (default: all but the key) of a row that
    is there."""
    keys = [column.name for column in table.primary_key.columns]
    updated = [
        f"{column.name} = excluded.{column.name}"
        for column in table.columns
        if column.name not in keys and (changes is None or column.name in changes)
    ]
    return _Writer(table, f"({', '.join(keys)}) DO UPDATE SET {', '.join(updated)}")


class SqliteBulk:
    """What a projection batch runs on SQLite (see the module)."""

    def __init__(self, order_changes: frozenset[str]) -> None:
        offsets = schema.offsets.name
        self.orders = _Reader(Order, schema.orders, "id")
        self.accounts = _Reader(Account, schema.accounts, "id")
        self.pending = _Reader(PendingReplace, schema.pending_replaces, "new_order_id")
        self._holders = (
            "SELECT json_group_array(json_array(id, client_order_key)) FROM orders "
            "WHERE account_id = ? AND client_order_key IN (SELECT value FROM json_each(?))"
        )
        self._upserts = {
            table.name: _upsert(table)
            for table in (schema.accounts, schema.pending_replaces, schema.positions)
        }
        self._upserts[schema.orders.name] = _upsert(schema.orders, order_changes)
        self.add_fills = _Writer(schema.fills, "DO NOTHING")
        self._offset = f"SELECT last_seq FROM {offsets} WHERE stream = ?"
        self._add_offset = f"INSERT INTO {offsets} (stream, last_seq) VALUES (?, 0)"
        self._set_offset = f"UPDATE {offsets} SET last_seq = ? WHERE stream = ?"
        pending = schema.pending_replaces.name
        self._drop_pending = (
            f"DELETE FROM {pending} WHERE order_id IN (SELECT value FROM json_each(?))"
        )

    def searches(self) -> dict[str, str]:
        """The SQL of the statements that look rows up by key, by name (a test looks at
        their query plans)."""
        return {
            "orders": self.orders.sql,
            "accounts": self.accounts.sql,
            "pending": self.pending.sql,
            "holders": self._holders,
            "drop_pending": self._drop_pending,
        }

    def upsert(self, conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        self._upserts[table.name](conn, rows)

    def holders(
        self, conn: Connection, account_id: str, keys: Sequence[str]
    ) -> list[tuple[str, str]]:
        """(order id, client order id) of the orders of the account holding these keys."""
        (found,) = driver(conn).execute(self._holders, (account_id, _encode(keys))).fetchone()
        pairs: list[tuple[str, str]] = msgspec.json.decode(found, type=list[tuple[str, str]])
        return pairs

    def offset(self, conn: Connection, stream: str) -> int:
        """The stream's high-water mark, its row made (at 0) if it has none yet."""
        raw = driver(conn)
        found = raw.execute(self._offset, (stream,)).fetchone()
        if found is None:
            raw.execute(self._add_offset, (stream,))
            return 0
        return int(found[0])

    def set_offset(self, conn: Connection, stream: str, last: int) -> None:
        driver(conn).execute(self._set_offset, (last, stream))

    def drop_pending(self, conn: Connection, order_ids: Sequence[str]) -> None:
        if order_ids:
            driver(conn).execute(self._drop_pending, (_encode(order_ids),))
