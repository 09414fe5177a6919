"""`bourse bench history`: the history store's ingestion and its bars query.

(a) **Ingestion** (target: at least 0.5x). Ours: `HistoryStore.ingest` on the simulator's
messages as the consumer hands them over (decoded, with their stream sequence and bytes),
in batches of the service's size, each batch one transaction with the idempotency check and
the latest rows. Peer: DuckDB's own bulk insert of the same rows, already typed, from an
Arrow table (`INSERT INTO t SELECT * FROM arrow`), in the same batches, one transaction each,
into the same tables of a fresh file. Both run three times, alternately; the medians count.
Also reported: the peer inserting everything in one statement (no per-batch commit), and the
consumer's decoding (`marketdata.decode`), which is outside the store's path.

(b) **A 1-minute OHLC query over 10 million ticks** (no target: the ratio is reported). Ours:
`HistoryStore.bars` (SQL, consolidated minute bars of every symbol, trades with the quote-mid
fallback). Peer: a plain Python loop computing the same bars from the same rows, fetched
beforehand in chunks (only the loop is timed). Both must give the same bars.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from benchmarks import Result, at_least
from bourse.analytics.bars import Bar
from bourse.analytics.rounding import divide, halve
from bourse.analytics.timeframes import Timeframe
from bourse.feed.simulator import Simulator
from bourse.history import schema
from bourse.history.bars import CONSOLIDATED
from bourse.history.duckdb_store import DuckDbStore
from bourse.history.rows import Places, Recorded
from bourse.history.service import HistoryConfig
from bourse.history.store import RangeQuery
from bourse.model import marketdata

TARGET = 0.5
RUNS = 3
MINUTE = Timeframe.parse("1Min")
T0 = 1_700_000_000_000_000_000
SYMBOLS = ("AAPL", "MSFT", "GOOGL", "AMZN", "TSLA")
QUOTES_ONLY = "TSLA"  # a symbol that never prints: its bars are quote mids


# ---- (a) ingestion ----


def simulated(count: int) -> list[bytes]:
    """The simulator's messages as published, ten milliseconds apart per tick."""
    simulator = Simulator(seed=1)
    payloads: list[bytes] = []
    now = T0
    while len(payloads) < count:
        payloads += [marketdata.encode(m) for m in simulator.tick(now)]
        now += 10_000_000
    return payloads[:count]


def batches(records: Sequence[Recorded], size: int) -> Iterator[Sequence[Recorded]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def _timed(work: Callable[[], object]) -> float:
    gc.collect()
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _ours(directory: Path, records: Sequence[Recorded], size: int) -> tuple[float, Path]:
    path = directory / "ours.duckdb"
    store = DuckDbStore.open(path)

    def ingest() -> None:
        for batch in batches(records, size):
            store.ingest(batch)

    elapsed = _timed(ingest)
    store.close()
    return elapsed, path


def _typed_tables(path: Path) -> dict[str, pa.Table]:
    """What ours stored, as Arrow tables in stream order: the peer's input."""
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            table: con.sql(f"SELECT * FROM {table} ORDER BY stream_seq").to_arrow_table()
            for table in (schema.QUOTES, schema.TRADES)
        }


def _peer(directory: Path, tables: dict[str, pa.Table], size: int | None, total: int) -> float:
    """DuckDB inserting the typed rows: in the batches ours had (by stream sequence, a
    transaction each), or all at once (size None)."""
    con = duckdb.connect(str(directory / f"peer-{size}.duckdb"))
    for statement in schema.ddl(postgres=False):
        con.execute(statement)
    bounds = [0, total] if size is None else [*range(0, total, size), total]
    slices = []
    for lower, upper in itertools.pairwise(bounds):
        batch = []
        for name, table in tables.items():
            seqs = table.column("stream_seq").to_pylist()
            first, last = bisect.bisect_right(seqs, lower), bisect.bisect_right(seqs, upper)
            batch.append((name, table.slice(first, last - first)))
        slices.append(batch)

    def insert() -> None:
        for batch in slices:
            con.begin()
            for name, rows in batch:  # noqa: B007 (DuckDB reads `rows` by name)
                con.execute(f"INSERT INTO {name} SELECT * FROM rows")
            con.commit()

    elapsed = _timed(insert)
    con.close()
    return elapsed


def ingestion(count: int, size: int) -> dict[str, Any]:
    payloads = simulated(count)
    started = time.perf_counter()
    decoded = [marketdata.decode(p) for p in payloads]
    decode_s = time.perf_counter() - started
    records = [
        Recorded(i + 1, m, p) for i, (m, p) in enumerate(zip(decoded, payloads, strict=True))
    ]
    pa.array([1, 2])  # pyarrow's first conversion pays a one-time set-up: not the store's cost
    ours, peer, peer_once = [], [], []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            elapsed, path = _ours(directory, records, size)
            ours.append(elapsed)
            tables = _typed_tables(path)
            stored = sum(t.num_rows for t in tables.values())
            peer.append(_peer(directory, tables, size, count))
            peer_once.append(_peer(directory, tables, None, count))
    ours_rate = stored / statistics.median(ours)
    peer_rate = stored / statistics.median(peer)
    return {
        "ratio": at_least(ours_rate / peer_rate),
        "messages": count,
        "rows_stored": stored,
        "batch_size": size,
        "ours_rows_per_s": round(ours_rate),
        "peer_rows_per_s": round(peer_rate),
        "peer": "DuckDB INSERT INTO t SELECT * FROM <typed Arrow table>, same batches, "
        "one transaction each",
        "peer_one_statement_rows_per_s": round(stored / statistics.median(peer_once)),
        "ratio_vs_one_statement": round(ours_rate / (stored / statistics.median(peer_once)), 3),
        "context_decode_us_per_message": round(decode_s / count * 1e6, 2),
    }


# ---- (b) minute bars over many ticks ----


def _fill(store_path: Path, ticks: int) -> dict[str, int]:
    """`ticks` messages over one day, 5 symbols x 2 venues, 40 % trades (none for TSLA),
    generated by DuckDB itself (seeded), straight into the store's tables."""
    with duckdb.connect(str(store_path)) as con:
        con.execute("SELECT setseed(0.42)")
        con.execute(
            f"""CREATE TEMP TABLE ticks AS SELECT
                i AS stream_seq,
                {T0} + i * (86400000000000 // {ticks}) AS ts,
                (['AAPL', 'MSFT', 'GOOGL', 'AMZN', 'TSLA'])[1 + (i % 5)] AS symbol,
                (['nyse', 'nasdaq'])[1 + ((i // 5) % 2)] AS venue,
                CAST(100 + floor(random() * 1000) / 100 AS {schema.NUMBER}) AS price,
                CAST(1 + floor(random() * 300) AS {schema.NUMBER}) AS size,
                random() < 0.4 AND i % 5 <> 4 AS is_trade
            FROM range(1, {ticks} + 1) r(i)"""
        )
        con.execute(
            f"INSERT INTO {schema.TRADES} SELECT stream_seq, ts, symbol, venue, price, size, "
            f"'unknown', stream_seq FROM ticks WHERE is_trade"
        )
        con.execute(
            f"INSERT INTO {schema.QUOTES} SELECT stream_seq, ts, symbol, venue, price, "
            f"price + 0.02, 100, 100, price, 1, 0, stream_seq FROM ticks WHERE NOT is_trade"
        )
        trades = con.execute(f"SELECT count(*) FROM {schema.TRADES}").fetchone()
        quotes = con.execute(f"SELECT count(*) FROM {schema.QUOTES}").fetchone()
    assert trades is not None and quotes is not None
    return {"trades": int(trades[0]), "quotes": int(quotes[0])}


class _Ohlc:
    """One bar being built by the loop: the prices that open and close it by (ts, seq)."""

    __slots__ = (
        "close",
        "close_key",
        "high",
        "low",
        "notional",
        "open",
        "open_key",
        "trades",
        "volume",
    )

    def __init__(self, price: Decimal, key: tuple[int, int]) -> None:
        self.open = self.high = self.low = self.close = price
        self.open_key = self.close_key = key
        self.volume = Decimal(0)
        self.notional = Decimal(0)
        self.trades = 0

    def add(self, price: Decimal, key: tuple[int, int]) -> None:
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        if key < self.open_key:
            self.open, self.open_key = price, key
        if key > self.close_key:
            self.close, self.close_key = price, key


def _python_bars(con: duckdb.DuckDBPyConnection, places: Places) -> tuple[float, list[Bar]]:
    """The same bars by a plain loop over the rows; only the loop is timed."""
    width = MINUTE.width_ns
    trade_bars: dict[tuple[str, int], _Ohlc] = {}
    quote_bars: dict[tuple[str, int], _Ohlc] = {}
    looped = 0.0
    for table, into in ((schema.TRADES, trade_bars), (schema.QUOTES, quote_bars)):
        price = "price, size" if table == schema.TRADES else "bid + ask, 0"
        cursor = con.execute(f"SELECT symbol, ts, stream_seq, {price} FROM {table}")
        while rows := cursor.fetchmany(500_000):
            started = time.perf_counter()
            for symbol, ts, seq, value, size in rows:
                key = (symbol, ts - ts % width)
                bar = into.get(key)
                if bar is None:
                    bar = into[key] = _Ohlc(value, (ts, seq))
                else:
                    bar.add(value, (ts, seq))
                if size:
                    bar.volume += size
                    bar.notional += value * size
                bar.trades += 1
            looped += time.perf_counter() - started
    started = time.perf_counter()
    bars = []
    for key in sorted(trade_bars.keys() | quote_bars.keys()):
        symbol, start = key
        bar = trade_bars.get(key)
        if bar is not None:
            ohlc = (bar.open, bar.high, bar.low, bar.close)
            vwap = divide(bar.notional, bar.volume, price_places=places.price_places(symbol))
            volume, count, source = bar.volume, bar.trades, "trades"
        else:
            bar = quote_bars[key]
            ohlc = (halve(bar.open), halve(bar.high), halve(bar.low), halve(bar.close))
            vwap, volume, count, source = None, Decimal(0), 0, "quotes"
        bars.append(
            Bar(
                symbol=symbol,
                venue=CONSOLIDATED,
                timeframe=str(MINUTE),
                start_ts=start,
                end_ts=start + width,
                open=ohlc[0],
                high=ohlc[1],
                low=ohlc[2],
                close=ohlc[3],
                volume=volume,
                trade_count=count,
                vwap=vwap,
                source=source,  # type: ignore[arg-type]
            )
        )
    return looped + time.perf_counter() - started, bars


def bars_query(ticks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bars.duckdb"
        DuckDbStore.open(path).close()  # the schema
        counts = _fill(path, ticks)
        store = DuckDbStore.open(path)
        query = RangeQuery(symbols=SYMBOLS, limit=None)
        timings, ours = [], []
        for _ in range(RUNS):
            gc.collect()
            started = time.perf_counter()
            ours = store.bars(query, MINUTE)
            timings.append(time.perf_counter() - started)
        store.close()
        with duckdb.connect(str(path), read_only=True) as con:
            loop_s, theirs = _python_bars(con, store.places)
    sql_s = statistics.median(timings)
    return {
        "ticks": ticks,
        **counts,
        "bars": len(ours),
        "sql_s": round(sql_s, 3),
        "python_loop_s": round(loop_s, 3),
        "ratio_python_over_sql": round(loop_s / sql_s, 1),
        "same_bars": ours == theirs,
        "quote_bars": sum(1 for b in ours if b.source == "quotes"),
    }


async def run(quick: bool) -> Result:
    size = HistoryConfig().batch_size
    ingest = ingestion(40_000 if quick else 400_000, size)
    query = bars_query(200_000 if quick else 10_000_000)
    met = ingest["ratio"] >= TARGET and query["same_bars"]
    return {
        "name": "history",
        "ratio": ingest["ratio"],
        "target": TARGET,
        "met": met,
        "ingest": ingest,
        "bars_query": query,
    }
