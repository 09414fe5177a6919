"""The history store's tables, the same in DuckDB and PostgreSQL.

- `md_quotes`, `md_trades`: every quote and trade recorded from MARKET_DATA, one row per
  message, with `stream_seq` (the MARKET_DATA sequence) as its identity. Times are integer
  nanoseconds since the epoch (UTC); prices and sizes DECIMAL(18, 8), exact.
- `md_latest_quotes`, `md_latest_trades`: the latest row (by `ts`, then `stream_seq`) per
  symbol and venue as last saved (the store keeps them in memory and saves them every few
  seconds), so opening a store never scans history for them.
- `md_meta`: the schema version, and `latest_through`, the stream sequence the saved latest
  rows cover.

In PostgreSQL `stream_seq` is a primary key (inserts say ON CONFLICT DO NOTHING) and
`(symbol, ts, stream_seq)` is indexed. DuckDB gets no index: a unique index would triple the
cost of an insert, and its per-row-group min/max statistics already prune time ranges since
rows arrive in roughly time order; ingestion skips redeliveries by sequence instead (see
`DuckDbStore`).
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1

NUMBER: Final = "DECIMAL(18,8)"
# A product of two numbers needs 38 digits (16 places); DuckDB overflows DECIMAL(18,8) x itself.
WIDE: Final = "DECIMAL(19,8)"

QUOTES: Final = "md_quotes"
TRADES: Final = "md_trades"
LATEST_QUOTES: Final = "md_latest_quotes"
LATEST_TRADES: Final = "md_latest_trades"
META: Final = "md_meta"

# (name, SQL type) in table order; the JSON fields of the message have the same names.
QUOTE_COLUMNS: Final = (
    ("stream_seq", "BIGINT"),
    ("ts", "BIGINT"),
    ("symbol", "VARCHAR"),
    ("venue", "VARCHAR"),
    ("bid", NUMBER),
    ("ask", NUMBER),
    ("bid_size", NUMBER),
    ("ask_size", NUMBER),
    ("last", NUMBER),
    ("last_size", NUMBER),
    ("volume", NUMBER),
    ("seq", "BIGINT"),
)
TRADE_COLUMNS: Final = (
    ("stream_seq", "BIGINT"),
    ("ts", "BIGINT"),
    ("symbol", "VARCHAR"),
    ("venue", "VARCHAR"),
    ("price", NUMBER),
    ("size", NUMBER),
    ("side", "VARCHAR"),
    ("seq", "BIGINT"),
)
COLUMNS: Final = {QUOTES: QUOTE_COLUMNS, TRADES: TRADE_COLUMNS}
# Fields a publisher may leave out of a message (the model's defaults), as SQL literals.
DEFAULTS: Final = {"side": "'unknown'"}


def from_payload(table: str, record: str) -> str:
    """The select list that takes a row's columns (all but stream_seq) from the parsed
    payload `record`, with the model's defaults for fields a message may leave out."""
    fields = []
    for name, _ in COLUMNS[table][1:]:
        value = f"{record}.{name}"
        fields.append(f"coalesce({value}, {DEFAULTS[name]})" if name in DEFAULTS else value)
    return ", ".join(fields)


LATEST: Final = {QUOTES: LATEST_QUOTES, TRADES: LATEST_TRADES}


def names(table: str) -> list[str]:
    return [name for name, _ in COLUMNS[table]]


def _table(name: str, columns: tuple[tuple[str, str], ...], key: str | None) -> str:
    body = ", ".join(f"{column} {kind} NOT NULL" for column, kind in columns)
    if key is not None:
        body += f", PRIMARY KEY ({key})"
    return f"CREATE TABLE IF NOT EXISTS {name} ({body})"


def ddl(*, postgres: bool) -> list[str]:
    """Statements that create whatever is missing; running them again changes nothing."""
    statements = [f"CREATE TABLE IF NOT EXISTS {META} (key VARCHAR PRIMARY KEY, value VARCHAR)"]
    for table, columns in COLUMNS.items():
        statements.append(_table(table, columns, "stream_seq" if postgres else None))
        statements.append(_table(LATEST[table], columns, "symbol, venue"))
        if postgres:
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {table}_symbol_ts ON {table} (symbol, ts, stream_seq)"
            )
    return statements
