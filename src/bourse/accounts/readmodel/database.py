"""The read model's database: a SQLAlchemy engine on SQLite or PostgreSQL, and transactions.

SQLite: the file is put in WAL mode (readers never block the writer), and Python's sqlite3
transaction handling is replaced by explicit BEGINs, so every transaction, DDL included, is
real and reads are repeatable; write transactions take the write lock up front
(`BEGIN IMMEDIATE`), so two writers queue on the busy timeout instead of failing half-way.
Writers in one process (the ORDERS and POSITIONS projections, the admin API) queue on a lock
first: SQLite's busy handler polls with growing sleeps (up to 100 ms), so two writers of one
process waiting on each other through it lost tens of milliseconds per batch under load.
PostgreSQL goes through psycopg 3.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bourse.errors import ConfigError

_WRITE = "bourse_write"
_ACCEPTED_URLS = "sqlite:///<path>, postgresql://user@host:port/database (psycopg 3)"


class Database:
    """A read-model database. `read()` and `write()` open one transaction each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # Only SQLite has one writer at a time; PostgreSQL's writers lock rows, not the file.
        self._writer: threading.RLock | None = None
        if self.dialect == "sqlite":
            _configure_sqlite(engine)
            self._writer = threading.RLock()

    @classmethod
    def open(cls, url: str, **engine_options: Any) -> Database:
        """Connect to `sqlite:///path/to/file.db` or `postgresql://user@host:port/db`."""
        try:
            parsed = make_url(url)
        except ArgumentError as error:
            raise ConfigError("database URL", url, _ACCEPTED_URLS) from error
        backend = parsed.get_backend_name()
        if backend == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        elif backend == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                # Each pooled connection would get its own empty in-memory database.
                raise ConfigError("database URL", url, "a SQLite file path: " + _ACCEPTED_URLS)
            engine_options["connect_args"] = {
                "timeout": 30,
                **engine_options.get("connect_args", {}),
            }
        else:
            raise ConfigError("database URL", url, _ACCEPTED_URLS)
        return cls(create_engine(parsed, **engine_options))

    @classmethod
    def sqlite(cls, path: Path | str, **engine_options: Any) -> Database:
        return cls.open(f"sqlite:///{Path(path)}", **engine_options)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot for every query made in it."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed when the block ends and rolled back if it raises."""
        with self._writer or contextlib.nullcontext(), self.engine.connect() as conn:
            conn = conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()


def driver(conn: Connection) -> Any:
    """The DB-API connection under `conn` (sqlite3's or psycopg's), in the same transaction."""
    return conn.connection.driver_connection


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would not BEGIN before
        # SELECT or DDL); the "begin" hook below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Switching a new file to WAL needs a moment alone with it, and SQLite can answer
        # "database is locked" without waiting while another connection opens it: retry.
        for attempt in range(50):
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.02 * (attempt + 1))
        # In WAL mode NORMAL is safe from corruption; a power cut can lose the last commits,
        # which the projection applies again from the stream (its offset rolls back with them).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        # Straight to the driver: SQLAlchemy's statement machinery (events, execution
        # context, result) cost more than the BEGIN itself, once per transaction.
        driver(conn).execute("BEGIN IMMEDIATE" if write else "BEGIN")
