"""`bourse history`: what the history service has recorded, as Parquet files.

    bourse history export aapl.parquet --symbols AAPL --start 2024-03-01 --end 2024-03-02
    bourse history export bars.parquet --symbols AAPL,MSFT --kind bars --timeframe 5Min
    bourse history span

With a platform running (or --nats), the rows come over NATS from its history service; with
none, or with --store, from the store itself (the DuckDB file in the data directory by
default), which DuckDB can only open when no platform has it open.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import typer

from bourse.bus.connection import connected
from bourse.cli.common import NatsOption
from bourse.errors import ConfigError
from bourse.history.client import HistoryClient
from bourse.history.export import ExportKind, export_from_store, export_over_nats
from bourse.history.query import (
    MAX_LIMIT,
    BarsRequest,
    Invalid,
    RowsRequest,
    parse_timeframe,
    range_query,
)
from bourse.history.store import DUCKDB_FILE, HistoryStore, open_store
from bourse.runtime import NotRunningError, home, resolve_nats_url

app = typer.Typer(help="Recorded market data: export it, see what is kept.", no_args_is_help=True)

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Read this store directly (a .duckdb path or postgresql://...) instead of asking "
        "the running platform.",
        envvar="BOURSE_HISTORY_URL",
        show_default=False,
    ),
]


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="history")


def _source(nats: str | None, store: str | None) -> str | None:
    """The NATS URL to ask, or None to open the store directly."""
    if store is not None:
        return None
    try:
        return resolve_nats_url(nats)
    except NotRunningError:
        if (home() / DUCKDB_FILE).exists():
            return None
        raise


def _open(store: str | None) -> HistoryStore:
    return open_store(store, home=home())


@app.command("export")
def export(
    path: Annotated[Path, typer.Argument(help="The Parquet file to write.")],
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols, e.g. AAPL,BTC/USD.")],
    kind: Annotated[
        Literal["trades", "quotes", "bars"], typer.Option(help="What to export.")
    ] = "trades",
    timeframe: Annotated[str, typer.Option(help="Bar width for --kind bars: 1Min, 1Hour...")] = (
        "1Min"
    ),
    start: Annotated[
        str | None, typer.Option(help="From this time (RFC 3339 or a date), inclusive.")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Until this time, inclusive.")] = None,
    venue: Annotated[
        str | None, typer.Option(help="One venue only (bars: else consolidated).")
    ] = None,
    nats: NatsOption = None,
    store: StoreOption = None,
) -> None:
    """Write trades, quotes or bars of some symbols over a time range to a Parquet file."""
    request = RowsRequest(
        symbols=[s for s in symbols.split(",") if s.strip()],
        venue=venue,
        start=start,
        end=end,
        limit=MAX_LIMIT,
    )
    if kind == "bars":
        request = BarsRequest(**msgspec.structs.asdict(request), timeframe=timeframe)
    try:
        query = range_query(request, "b" if kind == "bars" else "r")
        tf = parse_timeframe(timeframe) if kind == "bars" else None
    except Invalid as invalid:
        raise ConfigError(f"--{invalid.field or 'symbols'}", "", invalid.message) from None
    path = path.absolute()
    url = _source(nats, store)
    written: int
    if url is None:
        with _open(store) as opened:
            written = export_from_store(opened, kind, query, tf, path)
    else:
        written = asyncio.run(_export_over_nats(url, kind, request, path))
    typer.echo(f"wrote {written:,} {kind} to {path}")


async def _export_over_nats(url: str, kind: ExportKind, request: RowsRequest, path: Path) -> int:
    async with connected(url, name="bourse-history-export") as nc:
        return await export_over_nats(HistoryClient(nc, timeout=30), kind, request, path)


@app.command("span")
def span(nats: NatsOption = None, store: StoreOption = None) -> None:
    """Rows kept, first and last times, highest MARKET_DATA sequence (as JSON)."""
    url = _source(nats, store)
    if url is None:
        with _open(store) as opened:
            found = opened.span()
    else:
        found = asyncio.run(_span_over_nats(url))
    typer.echo(json.dumps(found, indent=2))


async def _span_over_nats(url: str) -> dict[str, dict[str, int | None]]:
    async with connected(url, name="bourse-history-span") as nc:
        return await HistoryClient(nc).span()
