"""The history service's queries over NATS request/reply: subjects, requests, answers, errors.

Every query is a JSON object on `history.query.<kind>`; every answer is a JSON object, or
`{"error": {"code", "message", "field"}}` when the request was refused (docs/history.md).

| subject | request | answer |
|---|---|---|
| `history.query.trades` | `RowsRequest` | `{"trades": {symbol: [row...]}, "next_page_token"}` |
| `history.query.quotes` | `RowsRequest` | `{"quotes": {symbol: [row...]}, "next_page_token"}` |
| `history.query.bars` | `BarsRequest` | `{"bars": {symbol: [bar...]}, "next_page_token"}` |
| `history.query.latest` | `LatestRequest` | `{"quotes": {symbol: row}, "trades": ..., "bars"}` |
| `history.query.snapshots` | `SnapshotsRequest` | `{"snapshots": {symbol: snapshot}}` |
| `history.query.span` | `{}` | `{"quotes": {rows, first_ts, last_ts, max_seq}, "trades": ...}` |

Rows are the market-data messages as published plus `stream_seq` (`rows.QuoteRow`,
`rows.TradeRow`), bars are `analytics.bars.Bar`. Numbers are decimal strings, times integer
nanoseconds. An answer never exceeds the connection's max payload: a page holds at most
`limit` items and stops earlier when the next would not fit, with a `next_page_token` either
way when more remain.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import msgspec

from bourse.analytics.bars import Bar
from bourse.analytics.timeframes import Timeframe
from bourse.errors import BourseError, ConfigError
from bourse.history.rows import QuoteRow, Row, RowKind, TradeRow
from bourse.history.store import Cursor, RangeQuery
from bourse.model.subjects import check_venue, normalize_symbol

ROOT = "history.query"
Kind = Literal["trades", "quotes", "bars", "latest", "snapshots", "span"]
KINDS: tuple[Kind, ...] = ("trades", "quotes", "bars", "latest", "snapshots", "span")
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
MAX_SYMBOLS = 1_000
_ENVELOPE = 256  # bytes kept free in an answer for its keys and token


def query_subject(kind: Kind) -> str:
    """`history.query.<kind>`: where the history service answers that query."""
    return f"{ROOT}.{kind}"


ALL_QUERIES = f"{ROOT}.*"


# ---- requests ----

Time = int | str | None


class RowsRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Trades or quotes of `symbols` (e.g. `["AAPL", "BTC/USD"]`), optionally on one `venue`,
    with `start` <= ts <= `end` (ns since the epoch, or RFC 3339 text), `limit` items per page
    (1-10,000), `sort` by time within each symbol, continuing at `page_token`."""

    symbols: list[str]
    venue: str | None = None
    start: Time = None
    end: Time = None
    limit: int = DEFAULT_LIMIT
    sort: Literal["asc", "desc"] = "asc"
    page_token: str | None = None


class BarsRequest(RowsRequest, kw_only=True, forbid_unknown_fields=True):
    """Bars of `timeframe` (`1Min`, `5Min`, `1Hour`, `1Day`, `15s`...) whose start is within
    [start, end]. Without `venue`, consolidated across venues (their venue is
    `consolidated`)."""

    timeframe: str = "1Min"


class LatestRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The latest quote, trade and bar (of `timeframe`, the one holding the latest message)
    of each symbol, on `venue` or across venues; `kinds` picks which."""

    symbols: list[str]
    venue: str | None = None
    timeframe: str = "1Min"
    kinds: list[Literal["quotes", "trades", "bars"]] = msgspec.field(
        default_factory=lambda: ["quotes", "trades", "bars"]
    )


class SnapshotsRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Per symbol: latest trade and quote, the latest minute bar, the latest daily bar and the
    daily bar before it (UTC days)."""

    symbols: list[str]
    venue: str | None = None


class SpanRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What the store holds: rows, first and last times, highest stream sequence."""


# ---- answers ----


class Snapshot(msgspec.Struct, kw_only=True):
    latest_trade: TradeRow | None = None
    latest_quote: QuoteRow | None = None
    minute_bar: Bar | None = None
    daily_bar: Bar | None = None
    prev_daily_bar: Bar | None = None


class QueryError(msgspec.Struct, frozen=True, kw_only=True):
    """Why a request was refused. `code`: `invalid_request` (a value is malformed or out of
    range: `message` says what and what is accepted, `field` names it),
    `inconsistent_request` (well-formed values that contradict each other, such as an end
    before the start) or `internal` (the service failed; it logged why)."""

    code: Literal["invalid_request", "inconsistent_request", "internal"]
    message: str
    field: str | None = None


class HistoryQueryError(BourseError):
    """A history query was refused (raised on the asking side, with the service's reason)."""

    def __init__(self, error: QueryError) -> None:
        self.error = error
        super().__init__(error.message)


class HistoryUnavailable(BourseError):
    """No history service answered (none running, or it took longer than the timeout)."""


class _Failed(msgspec.Struct, frozen=True):
    error: QueryError


class Invalid(BourseError):
    """A request that cannot be answered: `field` and a message saying what is accepted."""

    def __init__(
        self,
        field: str | None,
        message: str,
        code: Literal["invalid_request", "inconsistent_request"] = "invalid_request",
    ) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code

    def answer(self) -> bytes:
        error = QueryError(code=self.code, message=self.message, field=self.field)
        return encode(_Failed(error))


_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def internal_error(message: str) -> bytes:
    return encode(_Failed(QueryError(code="internal", message=message)))


R = TypeVar("R")

_ACCEPTED = {
    "symbols": 'a list of symbols, e.g. ["AAPL", "BTC/USD"]',
    "venue": "a venue name, e.g. nyse, or null for every venue",
    "start": "ns since the epoch, or RFC 3339 text",
    "end": "ns since the epoch, or RFC 3339 text",
    "limit": f"an integer from 1 to {MAX_LIMIT}",
    "sort": "asc or desc",
    "page_token": "the next_page_token of an earlier answer",
    "timeframe": "1Min, 5Min, 1Hour, 1Day, 15s...",
    "kinds": "a list of quotes, trades, bars",
}


def decode_request(payload: bytes, kind: type[R]) -> R:
    """The request in `payload`, or `Invalid` saying what is wrong with it."""
    try:
        return msgspec.json.decode(payload or b"{}", type=kind)
    except msgspec.ValidationError as error:
        path = str(error).rsplit("at `$.", 1)
        field = path[1].rstrip("`").split("[")[0].split(".")[0] if len(path) == 2 else None
        accepted = _ACCEPTED.get(field or "", "a JSON object with the fields in docs/history.md")
        raise Invalid(field, f"invalid request: {error}; accepted: {accepted}") from None
    except msgspec.DecodeError as error:
        raise Invalid(None, f"the request must be a JSON object: {error}") from None


# ---- validation: JSON request -> RangeQuery ----

_FRACTION = re.compile(r"(?<=\d)\.(\d+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(value: int | str, field: str) -> int:
    """ns since the epoch from an integer, or from RFC 3339 text (`2024-03-01T14:30:00Z`,
    fractions to the nanosecond, any offset; a date alone is midnight UTC)."""
    if isinstance(value, int):
        if value < 0:
            raise Invalid(field, f"{field} must be >= 0 ns since the epoch, got {value}")
        return value
    text = value.strip()
    fraction = 0
    match = _FRACTION.search(text)
    if match is not None:
        digits = match.group(1)
        if len(digits) > 9:
            raise Invalid(field, f"{field} has more than 9 fractional digits: {value!r}")
        fraction = int(digits.ljust(9, "0"))
        text = text[: match.start()] + text[match.end() :]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(
            field,
            f"{field} must be RFC 3339 (e.g. 2024-03-01T14:30:00Z) or a date, got {value!r}",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ns = (moment - _EPOCH) // timedelta(microseconds=1) * 1_000 + fraction
    if ns < 0:
        raise Invalid(field, f"{field} must not be before 1970-01-01, got {value!r}")
    return ns


def parse_symbols(symbols: Sequence[str]) -> tuple[str, ...]:
    if not symbols:
        raise Invalid("symbols", 'symbols must name at least one symbol, e.g. ["AAPL"]')
    if len(symbols) > MAX_SYMBOLS:
        raise Invalid("symbols", f"at most {MAX_SYMBOLS} symbols per request, got {len(symbols)}")
    try:
        return tuple(dict.fromkeys(normalize_symbol(s) for s in symbols))
    except ConfigError as error:
        raise Invalid("symbols", str(error)) from None


def parse_venue(venue: str | None) -> str | None:
    if venue is None:
        return None
    try:
        return check_venue(venue)
    except ConfigError as error:
        raise Invalid("venue", str(error)) from None


def parse_timeframe(text: str) -> Timeframe:
    try:
        return Timeframe.parse(text)
    except ConfigError as error:
        raise Invalid("timeframe", str(error)) from None


def _token(kind: str, cursor: Cursor) -> str:
    raw = encode([kind, cursor.symbol, cursor.ts, cursor.stream_seq])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(kind: str, token: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        found, symbol, ts, stream_seq = msgspec.json.decode(raw, type=tuple[str, str, int, int])
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        found = ""
    if found != kind:
        raise Invalid(
            "page_token", f"page_token is not one this query returned: {token[:64]!r}"
        ) from None
    return Cursor(symbol, ts, stream_seq)


def range_query(request: RowsRequest, token_kind: str) -> RangeQuery:
    """The validated form of a trades, quotes or bars request (raises `Invalid`)."""
    if not 1 <= request.limit <= MAX_LIMIT:
        raise Invalid("limit", f"limit must be from 1 to {MAX_LIMIT}, got {request.limit}")
    start = None if request.start is None else parse_time(request.start, "start")
    end = None if request.end is None else parse_time(request.end, "end")
    if start is not None and end is not None and end < start:
        raise Invalid("end", "end must not be before start", "inconsistent_request")
    return RangeQuery(
        symbols=parse_symbols(request.symbols),
        venue=parse_venue(request.venue),
        start=start,
        end=end,
        limit=request.limit,
        descending=request.sort == "desc",
        after=None if request.page_token is None else _cursor(token_kind, request.page_token),
    )


# ---- answers of at most `budget` bytes ----


@dataclass(frozen=True)
class Page:
    items: Sequence[Row] | Sequence[Bar]
    more: bool  # the store had an item after these (it was asked for limit + 1)


def _cursor_of(item: Row | Bar) -> Cursor:
    if isinstance(item, Bar):
        return Cursor(item.symbol, item.start_ts, 0)
    return Cursor(item.symbol, item.ts, item.stream_seq)


def page_answer(key: RowKind | Literal["bars"], page: Page, budget: int) -> bytes:
    """`{key: {symbol: [items]}, "next_page_token": ...}` in at most `budget` bytes: items in
    order until the next one would not fit; the token continues after the last one given."""
    groups: dict[str, list[bytes]] = {}
    used = _ENVELOPE
    given = 0
    last: Row | Bar | None = None
    for item in page.items:
        encoded = _encoder.encode(item)
        cost = len(encoded) + 1 + (0 if item.symbol in groups else len(item.symbol) + 6)
        if used + cost > budget and given:
            break
        groups.setdefault(item.symbol, []).append(encoded)
        used += cost
        given += 1
        last = item
    more = page.more or given < len(page.items)
    token = _token("b" if key == "bars" else "r", _cursor_of(last)) if more and last else None
    body = b",".join(
        _encoder.encode(symbol) + b":[" + b",".join(items) + b"]"
        for symbol, items in groups.items()
    )
    head = b'{"' + key.encode() + b'":{'
    return head + body + b'},"next_page_token":' + _encoder.encode(token) + b"}"


# ---- the asking side ----


_raw_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


def parse_answer(payload: bytes) -> dict[str, msgspec.Raw]:
    """The answer's top-level parts (unparsed); raises HistoryQueryError for an error."""
    parts = _raw_decoder.decode(payload)
    if "error" in parts:
        raise HistoryQueryError(msgspec.json.decode(parts["error"], type=QueryError))
    return parts


def part(parts: dict[str, msgspec.Raw], key: str, kind: type[R], default: Callable[[], R]) -> R:
    raw = parts.get(key)
    if raw is None:
        return default()
    return msgspec.json.decode(raw, type=kind)
