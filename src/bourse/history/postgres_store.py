"""The history store in PostgreSQL (`history_url`, or the platform's PostgreSQL database).

Same tables and queries as DuckDB. Ingestion sends each table's share of a batch as two
arrays (stream sequences and payloads) in one statement: PostgreSQL parses the JSON
(`json_to_record`) and `ON CONFLICT (stream_seq) DO NOTHING` makes it idempotent. Connections
come from a small SQLAlchemy pool (psycopg 3).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from bourse.history import schema
from bourse.history.bars import BarSql
from bourse.history.rows import Places, RowKind
from bourse.history.store import (
    ACCEPTED_URLS,
    TABLES,
    HistoryStore,
    RangeQuery,
    Staged,
    StoreError,
)

log = logging.getLogger(__name__)

_EXPORT_CHUNK = 50_000
_DECIMAL = pa.decimal128(18, 8)


def _ordered(expression: str, *, last: bool) -> str:
    order = "ts DESC, stream_seq DESC" if last else "ts, stream_seq"
    return f"(array_agg({expression} ORDER BY {order}))[1]"


def _pg_type(kind: str) -> str:
    return "text" if kind == "VARCHAR" else kind.lower()


def _insert_sql(table: str) -> str:
    columns = schema.names(table)
    record = ", ".join(f"{name} {_pg_type(kind)}" for name, kind in schema.COLUMNS[table][1:])
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"SELECT s.stream_seq, {schema.from_payload(table, 'j')} "
        f"FROM unnest(%s::bigint[], %s::text[]) AS s(stream_seq, payload), "
        f"LATERAL json_to_record(s.payload::json) AS j({record}) "
        f"ON CONFLICT (stream_seq) DO NOTHING"
    )


def _arrow_type(kind: str) -> pa.DataType:
    return {"BIGINT": pa.int64(), "VARCHAR": pa.string()}.get(kind, _DECIMAL)


class PostgresStore(HistoryStore):
    def __init__(self, engine: Engine, places: Places | None) -> None:
        super().__init__(places)
        self._engine = engine
        self._bars = BarSql(_ordered)
        self._inserts = {table: _insert_sql(table) for table in TABLES.values()}

    @classmethod
    def open(cls, url: str, *, places: Places | None = None) -> PostgresStore:
        try:
            parsed = make_url(url).set(drivername="postgresql+psycopg")
        except ArgumentError:
            raise StoreError("history URL", url, ACCEPTED_URLS) from None
        engine = create_engine(parsed, pool_size=4, max_overflow=4, pool_pre_ping=True)
        store = cls(engine, places)
        try:
            with store._connection() as connection, connection.cursor() as cursor:
                for statement in schema.ddl(postgres=True):
                    cursor.execute(statement)
                cursor.execute(f"SELECT value FROM {schema.META} WHERE key = 'version'")
                found = cursor.fetchone()
                if found is not None and int(found[0]) > schema.SCHEMA_VERSION:
                    raise StoreError(
                        "history store schema version",
                        found[0],
                        f"{schema.SCHEMA_VERSION} or lower (written by a newer Bourse)",
                    )
                cursor.execute(
                    f"INSERT INTO {schema.META} VALUES ('version', %s) ON CONFLICT DO NOTHING",
                    (str(schema.SCHEMA_VERSION),),
                )
                connection.commit()
        except OperationalError as error:
            engine.dispose()
            raise StoreError("history URL", url, f"a reachable PostgreSQL ({error.orig})") from None
        except BaseException:
            engine.dispose()
            raise
        store._load()
        log.info("history store: PostgreSQL at %s", parsed.render_as_string())
        return store

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        connection = self._engine.raw_connection()
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()  # back to the pool

    @property
    def _bar_sql(self) -> BarSql:
        return self._bars

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._connection() as connection, connection.cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), list(params))
            rows: list[tuple[Any, ...]] = cursor.fetchall()
            connection.rollback()  # end the read transaction
            return rows

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._connection() as connection, connection.cursor() as cursor:
            yield cursor
            connection.commit()

    def _execute(self, tx: Any, sql: str, params: Sequence[Any]) -> None:
        tx.execute(sql.replace("?", "%s"), list(params))

    def _insert(self, tx: Any, table: str, rows: Staged, *, late: bool) -> int:
        # ON CONFLICT makes every insert idempotent, late or not.
        tx.execute(self._inserts[table], (rows.seqs, [p.decode() for p in rows.payloads]))
        return int(tx.rowcount)

    def export_rows(self, kind: RowKind, query: RangeQuery, path: Path) -> int:
        table = TABLES[kind]
        columns = schema.COLUMNS[table]
        fields = [
            pa.field(name, pa.timestamp("ns") if name == "ts" else _arrow_type(kind_))
            for name, kind_ in columns
        ]
        arrow_schema = pa.schema(fields)
        sql, params = self._rows_sql(table, query, schema.names(table))
        written = 0
        with (
            self._connection() as connection,
            connection.cursor(name="history_export") as cursor,
            pq.ParquetWriter(str(path), arrow_schema, compression="zstd") as writer,
        ):
            cursor.execute(sql.replace("?", "%s"), params)
            while chunk := cursor.fetchmany(_EXPORT_CHUNK):
                arrays = [
                    pa.array([row[i] for row in chunk], field.type)
                    for i, field in enumerate(fields)
                ]
                writer.write_batch(pa.record_batch(arrays, schema=arrow_schema))
                written += len(chunk)
            connection.rollback()
        return written

    def _disconnect(self) -> None:
        self._engine.dispose()
