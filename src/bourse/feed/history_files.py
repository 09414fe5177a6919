"""Real historical data as market-data messages: a shipped sample set and users' own files.

Formats (CSV or Parquet, one row per event, sorted by time or sorted here):

- `ts`: ISO-8601 time (`2024-03-01T14:30:00Z`, a date alone means midnight UTC) or integer
  nanoseconds since the epoch;
- `symbol`; `venue` (optional; the replay's `--venue` otherwise);
- then one of: trades `price`, `size`; quotes `bid`, `ask`, `bid_size`, `ask_size`; or bars
  `open`, `high`, `low`, `close`, `volume` (a bar becomes four trades at open, the nearer
  extreme, the other extreme and close, each with a quarter of the volume).

Numbers are read as exact decimals from their text. A bad row is reported with its number
and what was wrong; nothing is published from a file that does not parse.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path

import msgspec

from bourse.errors import DataFormatError
from bourse.model.marketdata import MarketData, Quote, Trade
from bourse.model.subjects import check_venue, normalize_symbol

TRADE_COLUMNS = ("price", "size")
QUOTE_COLUMNS = ("bid", "ask", "bid_size", "ask_size")
BAR_COLUMNS = ("open", "high", "low", "close", "volume")
SAMPLE_STOCKS = "sample:stocks"


@dataclass(frozen=True, slots=True)
class _Row:
    number: int
    values: dict[str, str]


def _parse_ts(text: str, where: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DataFormatError(
            where, f"ts {text!r} is neither ISO-8601 (2024-03-01T14:30:00Z) nor integer ns"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def _decimal(row: _Row, column: str, source: str, *, positive: bool) -> Decimal:
    text = row.values.get(column, "").strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise DataFormatError(
            f"{source} row {row.number}", f"{column} {text!r} is not a number"
        ) from None
    if not value.is_finite() or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "zero or positive"
        raise DataFormatError(f"{source} row {row.number}", f"{column} {text} must be {kind}")
    return value


def _kind(columns: Iterable[str], source: str) -> str:
    present = set(columns)
    missing = {"ts", "symbol"} - present
    if missing:
        raise DataFormatError(source, f"missing column(s) {', '.join(sorted(missing))}")
    for kind, needed in (("bar", BAR_COLUMNS), ("quote", QUOTE_COLUMNS), ("trade", TRADE_COLUMNS)):
        if set(needed) <= present:
            return kind
    raise DataFormatError(
        source,
        "needs trade columns (price, size), quote columns (bid, ask, bid_size, ask_size) "
        "or bar columns (open, high, low, close, volume)",
    )


def messages_from_rows(
    rows: Iterable[_Row], columns: list[str], *, source: str, venue: str
) -> list[MarketData]:
    """Parse every row (all or nothing), sorted by time, numbered per venue from 1."""
    kind = _kind(columns, source)
    check_venue(venue)
    parsed: list[tuple[int, int, str, str, dict[str, Decimal]]] = []
    for row in rows:
        where = f"{source} row {row.number}"
        ts = _parse_ts(row.values.get("ts", ""), where)
        try:
            symbol = normalize_symbol(row.values.get("symbol", ""))
            row_venue = check_venue(row.values.get("venue") or venue)
        except Exception as exc:
            raise DataFormatError(where, str(exc)) from None
        needed = {"bar": BAR_COLUMNS, "quote": QUOTE_COLUMNS, "trade": TRADE_COLUMNS}[kind]
        values = {
            c: _decimal(
                row, c, source, positive=c not in ("volume", "size", "bid_size", "ask_size")
            )
            for c in needed
        }
        if kind == "quote" and values["bid"] > values["ask"]:
            raise DataFormatError(where, f"bid {values['bid']} is above ask {values['ask']}")
        if kind == "bar" and not (
            values["low"] <= min(values["open"], values["close"])
            and values["high"] >= max(values["open"], values["close"])
        ):
            raise DataFormatError(where, "bar needs low <= open, close <= high")
        parsed.append((ts, row.number, symbol, row_venue, values))
    parsed.sort(key=lambda item: (item[0], item[1]))
    seq: dict[str, int] = {}
    volume: dict[tuple[str, str], Decimal] = {}
    out: list[MarketData] = []
    for ts, _, symbol, row_venue, values in parsed:
        for event in _events(kind, ts, symbol, row_venue, values, volume):
            seq[row_venue] = seq.get(row_venue, 0) + 1
            out.append(_with_seq(event, seq[row_venue]))
    return out


def _with_seq(event: MarketData, seq: int) -> MarketData:
    return msgspec.structs.replace(event, seq=seq)


def _events(
    kind: str,
    ts: int,
    symbol: str,
    venue: str,
    v: dict[str, Decimal],
    volume: dict[tuple[str, str], Decimal],
) -> Iterator[MarketData]:
    key = (symbol, venue)
    if kind == "trade":
        volume[key] = volume.get(key, Decimal(0)) + v["size"]
        yield Trade(symbol=symbol, venue=venue, price=v["price"], size=v["size"], ts=ts, seq=1)
    elif kind == "quote":
        yield Quote(
            symbol=symbol,
            venue=venue,
            bid=v["bid"],
            ask=v["ask"],
            bid_size=v["bid_size"],
            ask_size=v["ask_size"],
            last=(v["bid"] + v["ask"]) / 2,
            last_size=Decimal(0),
            volume=volume.get(key, Decimal(0)),
            ts=ts,
            seq=1,
        )
    else:
        # A bar becomes the path open -> nearer extreme -> other extreme -> close, a quarter of
        # the volume each, spread evenly over the bar's first second so the order is kept.
        up = v["close"] >= v["open"]
        path = (
            (v["open"], v["low"], v["high"], v["close"])
            if up
            else (v["open"], v["high"], v["low"], v["close"])
        )
        quarter = (v["volume"] / 4).to_integral_value() or Decimal(1)
        for i, price in enumerate(path):
            volume[key] = volume.get(key, Decimal(0)) + quarter
            yield Trade(
                symbol=symbol,
                venue=venue,
                price=price,
                size=quarter,
                ts=ts + i * 250_000_000,
                seq=1,
            )


def read_csv_text(text: str, *, source: str, venue: str) -> list[MarketData]:
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip().lower() for c in (reader.fieldnames or [])]
    rows = (
        _Row(number, {c.strip().lower(): (v or "") for c, v in raw.items() if c is not None})
        for number, raw in enumerate(reader, start=2)
    )
    return messages_from_rows(rows, columns, source=source, venue=venue)


def read_parquet(path: Path, *, venue: str) -> list[MarketData]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DataFormatError(str(path), f"not a readable Parquet file ({exc})") from None
    columns = [c.lower() for c in table.column_names]
    data = table.to_pydict()
    names = table.column_names

    def as_text(value: object) -> str:
        if isinstance(value, datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=UTC)
            return moment.isoformat()
        return "" if value is None else str(value)

    rows = (
        _Row(i + 1, {n.lower(): as_text(data[n][i]) for n in names}) for i in range(table.num_rows)
    )
    return messages_from_rows(rows, columns, source=str(path), venue=venue)


def read_file(path: Path, *, venue: str) -> list[MarketData]:
    """Messages from a user's CSV (optionally .gz) or Parquet file in the documented format."""
    if not path.exists():
        raise DataFormatError(str(path), "no such file")
    if path.suffix == ".parquet":
        return read_parquet(path, venue=venue)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataFormatError(str(path), "not UTF-8 text (CSV) nor a .parquet file") from None
    return read_csv_text(text, source=str(path), venue=venue)


def sample_stocks(*, venue: str, symbols: Iterable[str] | None = None) -> list[MarketData]:
    """Daily OHLCV of AAPL, GOOG, IBM, MSFT (2000-2013), FB (2012-2013): bokeh-sampledata."""
    blob = resources.files("bokeh_sampledata").joinpath("_data/stocks.csv.gz").read_bytes()
    lines = gzip.decompress(blob).decode().splitlines()
    wanted = {normalize_symbol(s) for s in symbols} if symbols else None
    header = "symbol,ts,open,high,low,close,volume"
    body = [
        ",".join(parts[:7])
        for parts in (line.split(",") for line in lines[1:])
        if wanted is None or parts[0] in wanted
    ]
    return read_csv_text("\n".join([header, *body]), source=SAMPLE_STOCKS, venue=venue)
