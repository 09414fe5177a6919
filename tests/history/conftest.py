"""History stores of both kinds, and market data to put in them.

DuckDB is a file in the test's directory; PostgreSQL is a schema of its own in the database at
$BOURSE_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test), dropped after
the test, and skipped with the reason when that server cannot be reached.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from bourse.history.rows import Recorded
from bourse.history.store import HistoryStore, open_store
from bourse.model import marketdata
from bourse.model.marketdata import MarketData

POSTGRES_URL = os.environ.get(
    "BOURSE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["duckdb", "postgresql"]


@functools.cache
def postgres_unavailable() -> str | None:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.Error as error:
        return (
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({error}); set BOURSE_TEST_POSTGRES_URL"
        )


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """The URL of an empty schema of its own in the test database (dropped after)."""
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    name = f"history_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{name}"')
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={name}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{name}" CASCADE')


@contextlib.contextmanager
def store_url(backend: str, directory: Path) -> Iterator[str]:
    """Where an empty store of `backend` can be opened (and reopened)."""
    if backend == "duckdb":
        yield str(directory / f"history-{uuid.uuid4().hex[:8]}.duckdb")
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as found:
        yield found


@pytest.fixture
def store(url: str, tmp_path: Path) -> Iterator[HistoryStore]:
    """An empty store of each kind."""
    with open_store(url, home=tmp_path) as opened:
        yield opened


def recorded(messages: Iterable[MarketData], first_seq: int = 1) -> list[Recorded]:
    """Messages as the consumer hands them over, with consecutive stream sequences."""
    return [
        Recorded(first_seq + i, message, marketdata.encode(message))
        for i, message in enumerate(messages)
    ]


def messages_of(batch: Sequence[Recorded]) -> list[MarketData]:
    return [r.message for r in batch]
