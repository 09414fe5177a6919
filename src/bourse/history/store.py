"""The history store: one query API over DuckDB (the default) or PostgreSQL.

    store = open_store(None, home=Path(".bourse"))          # .bourse/history.duckdb
    store = open_store("postgresql://user@host/db", home=...)
    result = store.ingest(batch)                             # [Recorded], idempotent
    trades = store.rows("trades", RangeQuery(symbols=("AAPL",), start=..., limit=100))
    bars = store.bars(RangeQuery(symbols=("AAPL",)), Timeframe.parse("1Min"))
    latest = store.latest("quotes", ("AAPL", "MSFT"))

Every method is synchronous and may block on I/O: the service calls them in worker threads.
Reads may run concurrently with each other and with one writer.

**Ingestion** takes a batch of messages with their MARKET_DATA sequences and stores the quotes
and trades among them in one transaction. It is idempotent by stream sequence: a sequence
already stored is never stored again, whether it comes back in a later batch (a redelivery, a
restart) or twice in one. The backends parse the messages' JSON themselves, in bulk (see
`DuckDbStore`), rather than building rows in Python.

**Queries** page by keyset: rows come ordered by symbol, then time (`ts`, then `stream_seq`,
ascending or descending), and a page continues strictly after a `Cursor`.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from bourse.analytics.bars import Bar
from bourse.analytics.timeframes import Timeframe
from bourse.errors import ConfigError
from bourse.history import schema
from bourse.history.bars import BarSql, bars_from_rows
from bourse.history.rows import (
    Places,
    QuoteRow,
    Recorded,
    Row,
    RowKind,
    TradeRow,
)
from bourse.model.marketdata import Quote, Trade

log = logging.getLogger(__name__)

DUCKDB_FILE = "history.duckdb"
ACCEPTED_URLS = (
    "postgresql://user@host:port/database, duckdb:///path/to/file.duckdb, or a path ending "
    "in .duckdb (default: history.duckdb in the data directory)"
)
TABLES: dict[RowKind, str] = {"quotes": schema.QUOTES, "trades": schema.TRADES}


class StoreError(ConfigError):
    """The store cannot be opened or used as configured."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the next page starts strictly after (symbol, ts, stream_seq).
    For bars `ts` is the bar's start and `stream_seq` is 0."""

    symbol: str
    ts: int
    stream_seq: int = 0


@dataclass(frozen=True, kw_only=True)
class RangeQuery:
    """A validated query over a time range. Times are ns since the epoch, both inclusive;
    `venue` None means every venue (for bars: consolidated across venues)."""

    symbols: tuple[str, ...]
    venue: str | None = None
    start: int | None = None
    end: int | None = None
    limit: int | None = 1000  # None: no limit (exports)
    descending: bool = False
    after: Cursor | None = None


@dataclass
class IngestResult:
    stored: int = 0  # rows inserted
    duplicates: int = 0  # stream sequences already stored (redeliveries)
    ignored: int = 0  # messages the store does not keep (depth)

    def add(self, other: IngestResult) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.ignored += other.ignored


@dataclass
class Staged:
    """One table's share of a batch: sequences and payloads in batch order, and the newest
    message per (symbol, venue)."""

    seqs: list[int] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    latest: dict[tuple[str, str], Recorded] = field(default_factory=dict)
    ascending: bool = False  # the sequences strictly increase: no copies

    def unique(self) -> Staged:
        """Without the second and later copies of a sequence (a redelivery within a batch)."""
        if self.ascending or len(set(self.seqs)) == len(self.seqs):
            return self
        kept: dict[int, bytes] = dict(zip(self.seqs, self.payloads, strict=True))
        return Staged(list(kept), list(kept.values()), self.latest)


def _staged(records: list[Recorded]) -> Staged:
    """One table's records as `Staged`, with the newest of each (symbol, venue)."""
    seqs = [r.stream_seq for r in records]
    staged = Staged(seqs, [r.payload for r in records])
    messages = [r.message for r in records]
    times = [m.ts for m in messages]
    staged.ascending = all(map(operator.lt, seqs, islice(seqs, 1, None)))
    if staged.ascending and all(map(operator.le, times, islice(times, 1, None))):
        # In (ts, stream_seq) order, as a batch usually is: the last of a key is its newest.
        staged.latest = {(m.symbol, m.venue): r for m, r in zip(messages, records, strict=True)}
        return staged
    latest = staged.latest
    for record, message in zip(records, messages, strict=True):
        key = (message.symbol, message.venue)
        newest = latest.get(key)
        if (
            newest is None
            or message.ts > newest.message.ts
            or (message.ts == newest.message.ts and record.stream_seq > newest.stream_seq)
        ):
            latest[key] = record
    return staged


def _upsert_latest(table: str, rows: Sequence[tuple[Any, ...]]) -> tuple[str, list[Any]]:
    """Rows into the latest table, each replacing an older one of its symbol and venue."""
    columns = schema.names(table)
    latest = schema.LATEST[table]
    row = "(" + ", ".join("?" for _ in columns) + ")"
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("symbol", "venue"))
    sql = (
        f"INSERT INTO {latest} ({', '.join(columns)}) VALUES {', '.join([row] * len(rows))} "
        f"ON CONFLICT (symbol, venue) DO UPDATE SET {updates} "
        f"WHERE (excluded.ts, excluded.stream_seq) > ({latest}.ts, {latest}.stream_seq)"
    )
    return sql, [value for r in rows for value in r]


def _values(record: Recorded) -> tuple[Any, ...]:
    """A message as a row, in table column order."""
    m = record.message
    if isinstance(m, Quote):
        return (
            record.stream_seq,
            m.ts,
            m.symbol,
            m.venue,
            m.bid,
            m.ask,
            m.bid_size,
            m.ask_size,
            m.last,
            m.last_size,
            m.volume,
            m.seq,
        )
    assert isinstance(m, Trade)
    return (record.stream_seq, m.ts, m.symbol, m.venue, m.price, m.size, m.side, m.seq)


class HistoryStore(ABC):
    """What the history service, the gateway's queries and the exports need of a store.

    The latest row of each symbol and venue is kept in memory (answers need no query) and
    saved to the latest tables every `SAVE_LATEST_EVERY` seconds and on `close()`, with the
    stream sequence it covers; opening the store reads them back and catches up from the rows
    stored after that sequence. A batch reaching below the highest sequence already held (a
    late retry) updates the latest tables at once, in the transaction that stores it, so that
    catching up from the saved sequence never misses it."""

    SAVE_LATEST_EVERY = 5.0  # seconds

    def __init__(self, places: Places | None = None) -> None:
        self.places = places or Places()
        self._write_lock = threading.Lock()
        self._latest_lock = threading.Lock()
        self._latest: dict[str, dict[tuple[str, str], tuple[Any, ...]]] = {}
        self._unsaved: dict[str, set[tuple[str, str]]] = {t: set() for t in TABLES.values()}
        self._saved_at = time.monotonic()
        self._high_water = 0
        self._closed = False

    def _load(self) -> None:
        """Read the saved latest rows and the highest sequence held; catch up (on open)."""
        found = self._fetch(f"SELECT value FROM {schema.META} WHERE key = 'latest_through'", [])
        through = int(found[0][0]) if found else 0
        high_water = 0
        for table in TABLES.values():
            columns = ", ".join(schema.names(table))
            rows = self._fetch(f"SELECT {columns} FROM {schema.LATEST[table]}", [])
            # The newest row of each key among those stored after the saved sequence.
            rows += self._fetch(
                f"SELECT {columns} FROM (SELECT {columns}, row_number() OVER (PARTITION BY "
                f"symbol, venue ORDER BY ts DESC, stream_seq DESC) AS newest FROM {table} "
                f"WHERE stream_seq > ?) tail WHERE newest = 1",
                [through],
            )
            latest = self._latest.setdefault(table, {})
            for row in rows:
                key = (row[2], row[3])
                if key not in latest or (row[1], row[0]) > (latest[key][1], latest[key][0]):
                    latest[key] = row
            (top,) = self._fetch(f"SELECT coalesce(max(stream_seq), 0) FROM {table}", [])
            high_water = max(high_water, int(top[0]))
        self._high_water = high_water

    # ---- writing ----

    def ingest(self, batch: Iterable[Recorded]) -> IngestResult:
        """Store the quotes and trades of `batch` (see the module docstring). Every message
        must be storable exactly (`rows.unstorable` is None: the consumer's decoding makes
        sure); a database would round a number with more places than the store keeps."""
        result = IngestResult()
        by_kind: tuple[list[Recorded], list[Recorded]] = ([], [])
        for record in batch:
            kind = type(record.message)
            if kind is Quote:
                by_kind[0].append(record)
            elif kind is Trade:
                by_kind[1].append(record)
            else:
                result.ignored += 1
        quotes, trades = _staged(by_kind[0]), _staged(by_kind[1])
        staged = {schema.QUOTES: quotes.unique(), schema.TRADES: trades.unique()}
        candidates = sum(len(s.seqs) for s in staged.values())
        result.duplicates = len(quotes.seqs) + len(trades.seqs) - candidates
        if candidates:
            with self._write_lock:
                result.stored = self._store(staged)
                if time.monotonic() - self._saved_at >= self.SAVE_LATEST_EVERY:
                    self._save_latest()
        result.duplicates += candidates - result.stored
        return result

    def _store(self, staged: dict[str, Staged]) -> int:
        lowest = min(min(s.seqs) for s in staged.values() if s.seqs)
        late = lowest <= self._high_water  # a retry or redelivery reaching below what is held
        stored = 0
        with self._transaction() as tx:
            for table, rows in staged.items():
                if rows.seqs:
                    stored += self._insert(tx, table, rows, late=late)
                    if late:
                        newest = [_values(r) for r in rows.latest.values()]
                        self._execute(tx, *_upsert_latest(table, newest))
        self._high_water = max(self._high_water, *(max(s.seqs, default=0) for s in staged.values()))
        with self._latest_lock:
            for table, rows in staged.items():
                latest = self._latest.setdefault(table, {})
                for key, record in rows.latest.items():
                    held = latest.get(key)
                    if held is None or (record.message.ts, record.stream_seq) > (held[1], held[0]):
                        latest[key] = _values(record)
                        self._unsaved[table].add(key)
        return stored

    def _save_latest(self) -> None:
        """Save the latest rows changed since the last save, and the sequence they cover."""
        with self._latest_lock:
            changed = {
                table: [self._latest[table][key] for key in keys]
                for table, keys in self._unsaved.items()
            }
            through = self._high_water
        with self._transaction() as tx:
            for table, rows in changed.items():
                if rows:
                    self._execute(tx, *_upsert_latest(table, rows))
            self._execute(
                tx,
                f"INSERT INTO {schema.META} VALUES ('latest_through', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [str(through)],
            )
        with self._latest_lock:
            for table, rows in changed.items():
                self._unsaved[table] -= {(row[2], row[3]) for row in rows}
        self._saved_at = time.monotonic()

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Any]:
        """A write transaction: committed when the block ends, rolled back if it raises."""

    @abstractmethod
    def _execute(self, tx: Any, sql: str, params: Sequence[Any]) -> None:
        """Run a statement written with `?` placeholders in transaction `tx`."""

    @abstractmethod
    def _insert(self, tx: Any, table: str, rows: Staged, *, late: bool) -> int:
        """Insert the staged rows not stored yet (`late`: some may be); how many were."""

    # ---- reading ----

    @abstractmethod
    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run a read-only statement written with `?` placeholders; return its rows."""

    @property
    @abstractmethod
    def _bar_sql(self) -> BarSql:
        """The dialect's bar aggregates."""

    def rows(self, kind: RowKind, query: RangeQuery) -> list[Row]:
        """Quotes or trades in `query`'s range, in keyset order, at most `query.limit`."""
        table = TABLES[kind]
        sql, params = self._rows_sql(table, query, schema.names(table))
        make = self._quote_row if kind == "quotes" else self._trade_row
        return [make(row) for row in self._fetch(sql, params)]

    def _rows_sql(self, table: str, query: RangeQuery, select: list[str]) -> tuple[str, list[Any]]:
        where, params = filters(query, lower=query.start, upper=query.end)
        direction = "DESC" if query.descending else "ASC"
        if query.after is not None:
            after = query.after
            where.append(
                f"(symbol > ? OR (symbol = ? AND (ts, stream_seq) "
                f"{'<' if query.descending else '>'} (?, ?)))"
            )
            params += [after.symbol, after.symbol, after.ts, after.stream_seq]
        sql = (
            f"SELECT {', '.join(select)} FROM {table} WHERE {' AND '.join(where)} "
            f"ORDER BY symbol, ts {direction}, stream_seq {direction}"
        )
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        return sql, params

    def bars(self, query: RangeQuery, timeframe: Timeframe) -> list[Bar]:
        """Bars of `timeframe` whose start lies in [start, end], computed over the stored
        trades (quote mid-prices where a bar has no trade), as `analytics.bars` defines them;
        per venue when `query.venue` is given, else consolidated across venues (their venue is
        `consolidated`)."""
        sql, params = self._bar_sql.select(query, timeframe)
        return bars_from_rows(self._fetch(sql, params), query, timeframe, self.places)

    def latest(
        self, kind: RowKind, symbols: Sequence[str], venue: str | None = None
    ) -> dict[str, Row]:
        """The latest quote or trade of each symbol (by ts, then stream sequence), on `venue`
        or on any venue; symbols with none are left out."""
        wanted = set(symbols)
        with self._latest_lock:
            rows = [
                row
                for (symbol, at), row in self._latest.get(TABLES[kind], {}).items()
                if symbol in wanted and (venue is None or at == venue)
            ]
        newest: dict[str, tuple[Any, ...]] = {}
        for row in rows:
            held = newest.get(row[2])
            if held is None or (row[1], row[0]) > (held[1], held[0]):
                newest[row[2]] = row
        make = self._quote_row if kind == "quotes" else self._trade_row
        return {symbol: make(row) for symbol, row in newest.items()}

    def last_times(
        self, symbols: Sequence[str], venue: str | None, before: dict[str, int]
    ) -> dict[str, int]:
        """Per symbol, the time of its latest quote or trade strictly before `before[symbol]`
        (symbols with none are left out)."""
        if not symbols:
            return {}
        parts, params = [], []
        for table in TABLES.values():
            where = " OR ".join("(symbol = ? AND ts < ?)" for _ in symbols)
            params += [value for symbol in symbols for value in (symbol, before[symbol])]
            if venue is not None:
                where = f"({where}) AND venue = ?"
                params.append(venue)
            parts.append(f"SELECT symbol, max(ts) AS ts FROM {table} WHERE {where} GROUP BY symbol")
        sql = f"SELECT symbol, max(ts) FROM ({' UNION ALL '.join(parts)}) found GROUP BY symbol"
        return {symbol: ts for symbol, ts in self._fetch(sql, params) if ts is not None}

    def span(self) -> dict[str, dict[str, int | None]]:
        """Rows, first and last time, and highest stream sequence of each table."""
        spans: dict[str, dict[str, int | None]] = {}
        for kind, table in TABLES.items():
            rows, first, last, high = self._fetch(
                f"SELECT count(*), min(ts), max(ts), max(stream_seq) FROM {table}", []
            )[0]
            spans[kind] = {"rows": rows, "first_ts": first, "last_ts": last, "max_seq": high}
        return spans

    def _quote_row(self, r: tuple[Any, ...]) -> QuoteRow:
        symbol = r[2]
        price, size = self.places.price, self.places.size
        return QuoteRow(
            stream_seq=r[0],
            ts=r[1],
            symbol=symbol,
            venue=r[3],
            bid=price(symbol, r[4]),
            ask=price(symbol, r[5]),
            bid_size=size(symbol, r[6]),
            ask_size=size(symbol, r[7]),
            last=price(symbol, r[8]),
            last_size=size(symbol, r[9]),
            volume=size(symbol, r[10]),
            seq=r[11],
        )

    def _trade_row(self, r: tuple[Any, ...]) -> TradeRow:
        symbol = r[2]
        return TradeRow(
            stream_seq=r[0],
            ts=r[1],
            symbol=symbol,
            venue=r[3],
            price=self.places.price(symbol, r[4]),
            size=self.places.size(symbol, r[5]),
            side=r[6],
            seq=r[7],
        )

    # ---- export and life cycle ----

    @abstractmethod
    def export_rows(self, kind: RowKind, query: RangeQuery, path: Path) -> int:
        """Write the rows of `query` (no limit) to a Parquet file; return how many."""

    def close(self) -> None:
        """Save the latest rows and close; the store cannot be used after."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._save_latest()
            finally:
                self._disconnect()

    @abstractmethod
    def _disconnect(self) -> None: ...

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def filters(
    query: RangeQuery, *, lower: int | None, upper: int | None, upper_exclusive: bool = False
) -> tuple[list[str], list[Any]]:
    """WHERE conditions (with `?` placeholders) for symbols, venue and a time range."""
    where = [f"symbol IN ({', '.join('?' for _ in query.symbols)})"]
    params: list[Any] = list(query.symbols)
    if query.venue is not None:
        where.append("venue = ?")
        params.append(query.venue)
    if lower is not None:
        where.append("ts >= ?")
        params.append(lower)
    if upper is not None:
        where.append("ts < ?" if upper_exclusive else "ts <= ?")
        params.append(upper)
    return where, params


def open_store(url: str | None, *, home: Path, places: Places | None = None) -> HistoryStore:
    """The store at `url` (see ACCEPTED_URLS); None is DuckDB in `home`."""
    if url is None or url == "":
        path = home / DUCKDB_FILE
    elif url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        from bourse.history.postgres_store import PostgresStore

        return PostgresStore.open(url, places=places)
    elif url.startswith("duckdb://"):
        path = Path(url.removeprefix("duckdb://"))
        if not path.name or str(path) in ("", "/"):
            raise StoreError("history URL", url, ACCEPTED_URLS)
    elif url.endswith(".duckdb"):
        path = Path(url)
    else:
        raise StoreError("history URL", url, ACCEPTED_URLS)
    from bourse.history.duckdb_store import DuckDbStore

    return DuckDbStore.open(path, places=places)
