"""Parquet files of history: quotes, trades or bars of some symbols over a time range.

    written = export_from_store(store, "trades", query, None, Path("aapl.parquet"))
    written = await export_over_nats(HistoryClient(nc), "bars", request, Path("bars.parquet"))

From a store opened directly (no platform running), rows go out by the database's own bulk
path (DuckDB's COPY ... TO parquet); over NATS, page after page of the service's answers.
Both write the same columns: those of the store's tables, `ts` as timestamp[ns] (UTC), prices
and sizes decimal128(18, 8). Bars: symbol, venue, timeframe, start and end (timestamp[ns]),
open, high, low, close, volume, trade_count, vwap, source.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from bourse.analytics.bars import Bar
from bourse.analytics.timeframes import Timeframe
from bourse.history import schema
from bourse.history.client import HistoryClient
from bourse.history.query import BarsRequest, RowsRequest
from bourse.history.rows import QuoteRow, RowKind, TradeRow
from bourse.history.store import TABLES, HistoryStore, RangeQuery

ExportKind = Literal["quotes", "trades", "bars"]
_NS = pa.timestamp("ns")
_NUMBER = pa.decimal128(18, 8)


def _row_schema(kind: RowKind) -> pa.Schema:
    def arrow(name: str, sql: str) -> pa.DataType:
        if name == "ts":
            return _NS
        return {"BIGINT": pa.int64(), "VARCHAR": pa.string()}.get(sql, _NUMBER)

    return pa.schema([(name, arrow(name, sql)) for name, sql in schema.COLUMNS[TABLES[kind]]])


BAR_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("venue", pa.string()),
        ("timeframe", pa.string()),
        ("start", _NS),
        ("end", _NS),
        ("open", _NUMBER),
        ("high", _NUMBER),
        ("low", _NUMBER),
        ("close", _NUMBER),
        ("volume", pa.decimal128(38, 8)),  # a sum of sizes
        ("trade_count", pa.int64()),
        ("vwap", pa.decimal128(38, 12)),  # rounded to the price places + 4
        ("source", pa.string()),
    ]
)
SCHEMAS: dict[ExportKind, pa.Schema] = {
    "quotes": _row_schema("quotes"),
    "trades": _row_schema("trades"),
    "bars": BAR_SCHEMA,
}


def record_batch(kind: ExportKind, items: Sequence[QuoteRow | TradeRow | Bar]) -> pa.RecordBatch:
    """Rows or bars as one Arrow batch of `SCHEMAS[kind]`."""
    arrow_schema = SCHEMAS[kind]
    records: list[dict[str, Any]] = [msgspec.structs.asdict(item) for item in items]
    if kind == "bars":
        for record in records:
            record["start"], record["end"] = record.pop("start_ts"), record.pop("end_ts")
    columns = [pa.array([r[f.name] for r in records], f.type) for f in arrow_schema]
    return pa.record_batch(columns, schema=arrow_schema)


def export_from_store(
    store: HistoryStore,
    kind: ExportKind,
    query: RangeQuery,
    timeframe: Timeframe | None,
    path: Path,
) -> int:
    """Everything `query` covers into `path`, in time order (its limit, sort and page are
    ignored); the count written."""
    query = RangeQuery(
        symbols=query.symbols, venue=query.venue, start=query.start, end=query.end, limit=None
    )
    if kind != "bars":
        return store.export_rows(kind, query, path)
    assert timeframe is not None
    bars = store.bars(query, timeframe)
    pq.write_table(pa.Table.from_batches([record_batch("bars", bars)], BAR_SCHEMA), str(path))
    return len(bars)


async def export_over_nats(
    client: HistoryClient, kind: ExportKind, request: RowsRequest, path: Path
) -> int:
    """Everything `request` covers, page after page, into `path`; the count written."""
    written = 0
    with pq.ParquetWriter(str(path), SCHEMAS[kind], compression="zstd") as writer:
        while True:
            if kind == "bars":
                assert isinstance(request, BarsRequest)
                page: Any = await client.bars(request)
            elif kind == "quotes":
                page = await client.quotes(request)
            else:
                page = await client.trades(request)
            items = [item for items in page.items.values() for item in items]
            if items:
                writer.write_batch(record_batch(kind, items))
                written += len(items)
            if page.next_page_token is None:
                return written
            request = msgspec.structs.replace(request, page_token=page.next_page_token)
