"""The history store in a DuckDB file (the default: `.bourse/history.duckdb`).

Ingestion hands DuckDB the batch's payloads as they came off the bus, as an Arrow string
column beside the stream sequences, and one `INSERT ... SELECT json_transform(...)` per table
parses and types them inside DuckDB, vectorised: building the rows in Python would cost more
than DuckDB's whole insert (docs/benchmarks.md, "history").

Idempotency without a unique index (which would triple the cost of an insert): the store
knows the highest stream sequence it holds. A batch entirely above it is new and goes in as
it is; a batch reaching below it (a redelivery, a retry after a failed batch, a restart) is
inserted through an anti-join against the rows in the batch's sequence range, which DuckDB's
min/max statistics keep to the few row groups concerned.

One process at a time may open the file (DuckDB's lock): while `bourse up` runs, go through
its NATS queries (`bourse history export` does).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from bourse.history import schema
from bourse.history.bars import BarSql
from bourse.history.rows import Places, RowKind
from bourse.history.store import TABLES, HistoryStore, RangeQuery, Staged, StoreError

log = logging.getLogger(__name__)


def _ordered(expression: str, *, last: bool) -> str:
    return f"{'last' if last else 'first'}({expression} ORDER BY ts, stream_seq)"


def _json_spec(table: str) -> str:
    fields = schema.COLUMNS[table][1:]  # everything but stream_seq comes from the payload
    return "{" + ", ".join(f'"{name}": "{kind}"' for name, kind in fields) + "}"


class DuckDbStore(HistoryStore):
    def __init__(self, connection: duckdb.DuckDBPyConnection, places: Places | None) -> None:
        super().__init__(places)
        self._con = connection
        self._bars = BarSql(_ordered)
        self._inserts = {
            table: (
                f"INSERT INTO {table} SELECT stream_seq, "
                + schema.from_payload(table, "j")
                + f" FROM (SELECT stream_seq, json_transform(payload, '{_json_spec(table)}') AS j"
                " FROM staged) fresh"
            )
            for table in TABLES.values()
        }
        self._load()

    @classmethod
    def open(cls, path: Path, *, places: Places | None = None) -> DuckDbStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = duckdb.connect(str(path))
        except duckdb.IOException as error:
            raise StoreError(
                "history store",
                str(path),
                f"a DuckDB file no other process has open ({error}); while the platform runs, "
                "query it over NATS (docs/history.md)",
            ) from None
        _migrate(connection)
        log.info("history store: DuckDB at %s", path)
        return cls(connection, places)

    @property
    def _bar_sql(self) -> BarSql:
        return self._bars

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cursor = self._con.cursor()
        try:
            return cursor.execute(sql, list(params)).fetchall()
        finally:
            cursor.close()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cursor = self._con.cursor()
        try:
            cursor.begin()
            yield cursor
            cursor.commit()
        except BaseException:
            cursor.rollback()
            raise
        finally:
            cursor.close()

    def _execute(self, tx: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> None:
        tx.execute(sql, list(params))

    def _insert(
        self, tx: duckdb.DuckDBPyConnection, table: str, rows: Staged, *, late: bool
    ) -> int:
        # The payloads are JSON that msgspec has decoded already: valid UTF-8, so the binary
        # array can be viewed as strings without another pass over it.
        batch = pa.table(
            {
                "stream_seq": pa.array(rows.seqs, pa.int64()),
                "payload": pa.array(rows.payloads, pa.binary()).view(pa.string()),
            }
        )
        sql = self._inserts[table]
        if late:
            sql += (
                f" WHERE stream_seq NOT IN (SELECT stream_seq FROM {table} "
                f"WHERE stream_seq BETWEEN {min(rows.seqs)} AND {max(rows.seqs)})"
            )
        staged = batch  # noqa: F841 (the statement reads it by name: a DuckDB replacement scan)
        inserted = tx.execute(sql).fetchone()
        return int(inserted[0]) if inserted else 0

    def export_rows(self, kind: RowKind, query: RangeQuery, path: Path) -> int:
        table = TABLES[kind]
        columns = [
            "make_timestamp_ns(ts) AS ts" if name == "ts" else name for name in schema.names(table)
        ]
        sql, params = self._rows_sql(table, query, columns)
        target = str(path).replace("'", "''")
        cursor = self._con.cursor()
        try:
            done = cursor.execute(
                f"COPY ({sql}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)", params
            ).fetchone()
        finally:
            cursor.close()
        return int(done[0]) if done else 0

    def _disconnect(self) -> None:
        self._con.close()


def _migrate(connection: duckdb.DuckDBPyConnection) -> None:
    for statement in schema.ddl(postgres=False):
        connection.execute(statement)
    _check_version(connection.execute(f"SELECT value FROM {schema.META} WHERE key = 'version'"))
    connection.execute(
        f"INSERT INTO {schema.META} VALUES ('version', ?) ON CONFLICT DO NOTHING",
        [str(schema.SCHEMA_VERSION)],
    )


def _check_version(result: Any) -> None:
    found = result.fetchone()
    if found is not None and int(found[0]) > schema.SCHEMA_VERSION:
        raise StoreError(
            "history store schema version",
            found[0],
            f"{schema.SCHEMA_VERSION} or lower (the store was written by a newer Bourse)",
        )
