"""Historical market data in the Alpaca Market Data API dialect, from the history service.

Stocks (`/v2`) and crypto (`/v1beta3/crypto/us`), with the paths, parameters and JSON of
Alpaca's API, so alpaca-py's `StockHistoricalDataClient` and `CryptoHistoricalDataClient`
work with `url_override` set to the gateway:

    GET /v2/stocks/bars?symbols=AAPL,MSFT&timeframe=1Min&start=...  {"bars": {sym: [...]}, ...}
    GET /v2/stocks/{symbol}/bars                                      {"bars": [...], "symbol"}
    GET /v2/stocks/quotes, /v2/stocks/{symbol}/quotes                 bp bs ap as bx ax t
    GET /v2/stocks/trades, /v2/stocks/{symbol}/trades                 p s x i t
    GET /v2/stocks/{quotes|trades|bars}/latest, /v2/stocks/{symbol}/{quotes|trades|bars}/latest
    GET /v2/stocks/snapshots, /v2/stocks/{symbol}/snapshot
    GET /v1beta3/crypto/us/{bars|quotes|trades}, .../latest/{bars|quotes|trades}, .../snapshots

Every route needs the trading API's keys (crypto too, unlike Alpaca). Each asks the history
service over NATS (`bourse.history.query`); a page of `limit` items may take several of its
answers (each fits one NATS message). Parameters and errors: docs/market-data-api.md.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from fastapi import APIRouter, Depends, Query
from nats.aio.client import Client as NATS
from starlette.responses import Response

from bourse.analytics.bars import Bar
from bourse.gateway import errors
from bourse.history.client import HistoryClient, Page
from bourse.history.query import (
    MAX_LIMIT,
    BarsRequest,
    HistoryQueryError,
    HistoryUnavailable,
    LatestRequest,
    RowsRequest,
    Snapshot,
    SnapshotsRequest,
)
from bourse.history.rows import QuoteRow, TradeRow

STOCK_FEEDS = ("sip", "iex", "otc", "delayed_sip", "boats", "overnight")
ADJUSTMENTS = ("raw", "split", "dividend", "spin-off", "all")
CRYPTO_LOCATIONS = ("us",)
# Alpaca's exchange codes for the venues that have one; other venues go by their own name.
EXCHANGE_CODES = {"nyse": "N", "nasdaq": "Q"}
DEFAULT_LIMIT = 1000

_encoder = msgspec.json.Encoder(decimal_format="number")  # Alpaca's numbers are JSON numbers

Item = TypeVar("Item")
Authenticate = Callable[..., Awaitable[Any]]


# ---- Alpaca's JSON ----


def rfc3339_ns(ns: int) -> str:
    """`2024-03-01T14:30:00.123456789Z`, with as many fractional digits as it needs."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def exchange_code(venue: str) -> str:
    return EXCHANGE_CODES.get(venue, venue)


def trade_json(row: TradeRow, *, crypto: bool) -> dict[str, Any]:
    if crypto:
        found: dict[str, Any] = {"t": rfc3339_ns(row.ts), "p": row.price, "s": row.size}
        found["i"] = row.stream_seq
        if row.side != "unknown":
            found["tks"] = "B" if row.side == "buy" else "S"
        return found
    return {
        "t": rfc3339_ns(row.ts),
        "x": exchange_code(row.venue),
        "p": row.price,
        "s": row.size,
        "c": [],
        "i": row.stream_seq,
    }


def quote_json(row: QuoteRow, *, crypto: bool) -> dict[str, Any]:
    found: dict[str, Any] = {
        "t": rfc3339_ns(row.ts),
        "bp": row.bid,
        "bs": row.bid_size,
        "ap": row.ask,
        "as": row.ask_size,
    }
    if not crypto:
        found["bx"] = exchange_code(row.venue)
        found["ax"] = exchange_code(row.venue)
        found["c"] = []
    return found


def bar_json(bar: Bar) -> dict[str, Any]:
    return {
        "t": rfc3339_ns(bar.start_ts),
        "o": bar.open,
        "h": bar.high,
        "l": bar.low,
        "c": bar.close,
        "v": bar.volume,
        "n": bar.trade_count,
        "vw": bar.vwap,
    }


def snapshot_json(snapshot: Snapshot, *, crypto: bool) -> dict[str, Any]:
    trade, quote = snapshot.latest_trade, snapshot.latest_quote
    return {
        "latestTrade": None if trade is None else trade_json(trade, crypto=crypto),
        "latestQuote": None if quote is None else quote_json(quote, crypto=crypto),
        "minuteBar": _bar_or_none(snapshot.minute_bar),
        "dailyBar": _bar_or_none(snapshot.daily_bar),
        "prevDailyBar": _bar_or_none(snapshot.prev_daily_bar),
    }


def _bar_or_none(bar: Bar | None) -> dict[str, Any] | None:
    return None if bar is None else bar_json(bar)


def _json(body: Any) -> Response:
    return Response(_encoder.encode(body), media_type="application/json")


# ---- parameters ----


class Symbols:
    """The symbols asked for, as spelt (`BTC/USD`), and how the history service names them
    (`BTC-USD`): answers are keyed by the caller's spelling."""

    def __init__(self, text: str | None, *, required: str = "symbols") -> None:
        if text is None or not text.strip():
            raise errors.bad_request(f"{required} is required, e.g. AAPL,MSFT or BTC/USD")
        self.spelt: dict[str, str] = {}
        for raw in text.split(","):
            symbol = raw.strip().upper()
            if symbol:  # the history service checks the rest
                self.spelt.setdefault(symbol.replace("/", "-"), symbol)
        if not self.spelt:
            raise errors.bad_request(f"{required} must name at least one symbol")

    @property
    def names(self) -> list[str]:
        return list(self.spelt)

    def keyed(self, by_name: dict[str, Item]) -> dict[str, Item]:
        return {self.spelt.get(name, name): value for name, value in by_name.items()}


def _choice(value: str | None, name: str, accepted: Sequence[str]) -> None:
    if value is not None and value.lower() not in accepted:
        raise errors.bad_request(f"invalid {name}: {value!r}; accepted: {', '.join(accepted)}")


IEX_VENUE = "bourse"  # what `feed=iex` means, as on the live stream's /v2/iex
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page, 1-10,000")]
Sort = Literal["asc", "desc"]
Text = str | None


@dataclass
class Paging:
    """The time range and paging of every series, as Alpaca spells them."""

    start: Text = None
    end: Text = None
    limit: Limit = DEFAULT_LIMIT
    page_token: Text = None
    sort: Sort = "asc"


@dataclass
class StockParams:
    """Alpaca's stock parameters that choose the data. `feed=iex` is Bourse's own exchange
    (as the live stream's `/v2/iex`); every other feed is the consolidated one of all venues.
    No corporate actions, prices in US dollars."""

    feed: Text = None
    currency: Text = None
    venue: Text = None

    def venue_to_read(self, adjustment: Text = None) -> str | None:
        _choice(self.feed, "feed", STOCK_FEEDS)
        _choice(adjustment, "adjustment", ADJUSTMENTS)
        _choice(self.currency, "currency", ("usd",))
        if self.feed is None or self.feed.lower() != "iex":
            return self.venue
        if self.venue is not None and self.venue != IEX_VENUE:
            raise errors.bad_request(
                f"feed=iex is the {IEX_VENUE!r} venue; venue={self.venue!r} contradicts it "
                "(drop one)"
            )
        return IEX_VENUE


# Query parameters shared by routes, each group read into one object by FastAPI.
Paged = Annotated[Paging, Depends()]
StockData = Annotated[StockParams, Depends()]


def _crypto_location(loc: str) -> None:
    if loc not in CRYPTO_LOCATIONS:
        raise errors.not_found(
            f"unknown crypto location {loc!r}; accepted: {', '.join(CRYPTO_LOCATIONS)}"
        )


def _start_of_today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")


def _failed(error: HistoryQueryError) -> errors.ApiError:
    status = 422 if error.error.code == "inconsistent_request" else 400
    return errors.ApiError(status, error.error.message, reason="invalid_request")


# ---- the routes ----


def marketdata_router(nc: NATS, authenticate: Authenticate, *, timeout: float = 10.0) -> APIRouter:
    """The market-data routes, authenticated by `authenticate` (the trading API's keys)."""
    history = HistoryClient(nc, timeout=timeout)
    router = APIRouter(dependencies=[Depends(authenticate)], tags=["market data"])

    async def ask(call: Callable[[], Awaitable[Item]]) -> Item:
        try:
            return await call()
        except HistoryQueryError as error:
            raise _failed(error) from None
        except HistoryUnavailable as error:
            raise errors.unavailable(str(error)) from None

    async def page(
        kind: Literal["trades", "quotes", "bars"],
        request: RowsRequest,
        limit: int,
    ) -> tuple[dict[str, list[Any]], str | None]:
        """Up to `limit` items, over as many of the service's answers as it takes."""
        fetch: Callable[[Any], Awaitable[Page[Any]]] = getattr(history, kind)
        found: dict[str, list[Any]] = {}
        count, token = 0, request.page_token
        while True:
            asked = msgspec.structs.replace(request, limit=limit - count, page_token=token)
            answer = await ask(functools.partial(fetch, asked))
            for symbol, items in answer.items.items():
                found.setdefault(symbol, []).extend(items)
                count += len(items)
            token = answer.next_page_token
            if token is None or count >= limit:
                return found, token

    async def series(
        kind: Literal["trades", "quotes", "bars"],
        symbols: Symbols,
        paging: Paging,
        venue: Text,
        timeframe: Text = None,
        *,
        crypto: bool = False,
        single: bool,
    ) -> Response:
        common: dict[str, Any] = {
            "symbols": symbols.names,
            "venue": venue,
            "start": paging.start or _start_of_today(),
            "end": paging.end or None,
            "sort": paging.sort,
            "page_token": paging.page_token or None,
        }
        request = (
            BarsRequest(**common, timeframe=_timeframe(timeframe))
            if kind == "bars"
            else RowsRequest(**common)
        )
        found, token = await page(kind, request, paging.limit)
        shown = {s: [_item(kind, item, crypto) for item in items] for s, items in found.items()}
        if single:
            name = symbols.names[0]
            body = {kind: shown.get(name, []), "symbol": symbols.spelt[name]}
            return _json({**body, "next_page_token": token})
        return _json({kind: symbols.keyed(shown), "next_page_token": token})

    async def latest(
        kind: Literal["quotes", "trades", "bars"],
        symbols: Symbols,
        venue: Text,
        *,
        crypto: bool,
        single: bool,
    ) -> Response:
        request = LatestRequest(symbols=symbols.names, venue=venue, kinds=[kind])
        answer = await ask(lambda: history.latest(request))
        found: dict[str, Any] = getattr(answer, kind)
        shown = {symbol: _item(kind, item, crypto) for symbol, item in found.items()}
        if single:
            name = symbols.names[0]
            if name not in shown:
                raise errors.not_found(f"no {kind[:-1]} found for {symbols.spelt[name]}")
            return _json({"symbol": symbols.spelt[name], kind[:-1]: shown[name]})
        return _json({kind: symbols.keyed(shown)})

    async def snapshots(symbols: Symbols, venue: Text, *, crypto: bool) -> dict[str, Any]:
        request = SnapshotsRequest(symbols=symbols.names, venue=venue)
        found = await ask(lambda: history.snapshots(request))
        return symbols.keyed({s: snapshot_json(snap, crypto=crypto) for s, snap in found.items()})

    # ---- stocks ----

    @router.get("/v2/stocks/bars", summary="Bars of several stocks")
    async def stock_bars(
        paging: Paged,
        source: StockData,
        symbols: Text = None,
        timeframe: Text = None,
        adjustment: Text = None,
        asof: Text = None,
    ) -> Response:
        venue = source.venue_to_read(adjustment)
        return await series("bars", Symbols(symbols), paging, venue, timeframe, single=False)

    @router.get("/v2/stocks/quotes", summary="Quotes of several stocks")
    async def stock_quotes(
        paging: Paged, source: StockData, symbols: Text = None, asof: Text = None
    ) -> Response:
        venue = source.venue_to_read()
        return await series("quotes", Symbols(symbols), paging, venue, single=False)

    @router.get("/v2/stocks/trades", summary="Trades of several stocks")
    async def stock_trades(
        paging: Paged, source: StockData, symbols: Text = None, asof: Text = None
    ) -> Response:
        venue = source.venue_to_read()
        return await series("trades", Symbols(symbols), paging, venue, single=False)

    @router.get("/v2/stocks/{kind}/latest", summary="Latest quote, trade or minute bar of stocks")
    async def stock_latest(
        kind: Literal["quotes", "trades", "bars"], source: StockData, symbols: Text = None
    ) -> Response:
        venue = source.venue_to_read()
        return await latest(kind, Symbols(symbols), venue, crypto=False, single=False)

    @router.get("/v2/stocks/snapshots", summary="Snapshots of several stocks")
    async def stock_snapshots(source: StockData, symbols: Text = None) -> Response:
        venue = source.venue_to_read()
        return _json(await snapshots(Symbols(symbols), venue, crypto=False))

    @router.get("/v2/stocks/{symbol}/bars", summary="Bars of one stock")
    async def stock_symbol_bars(
        symbol: str,
        paging: Paged,
        source: StockData,
        timeframe: Text = None,
        adjustment: Text = None,
        asof: Text = None,
    ) -> Response:
        venue = source.venue_to_read(adjustment)
        return await series("bars", _one(symbol), paging, venue, timeframe, single=True)

    @router.get("/v2/stocks/{symbol}/quotes", summary="Quotes of one stock")
    async def stock_symbol_quotes(
        symbol: str, paging: Paged, source: StockData, asof: Text = None
    ) -> Response:
        venue = source.venue_to_read()
        return await series("quotes", _one(symbol), paging, venue, single=True)

    @router.get("/v2/stocks/{symbol}/trades", summary="Trades of one stock")
    async def stock_symbol_trades(
        symbol: str, paging: Paged, source: StockData, asof: Text = None
    ) -> Response:
        venue = source.venue_to_read()
        return await series("trades", _one(symbol), paging, venue, single=True)

    @router.get(
        "/v2/stocks/{symbol}/{kind}/latest", summary="Latest quote, trade or minute bar of a stock"
    )
    async def stock_symbol_latest(
        symbol: str, kind: Literal["quotes", "trades", "bars"], source: StockData
    ) -> Response:
        venue = source.venue_to_read()
        return await latest(kind, _one(symbol), venue, crypto=False, single=True)

    @router.get("/v2/stocks/{symbol}/snapshot", summary="Snapshot of one stock")
    async def stock_symbol_snapshot(symbol: str, source: StockData) -> Response:
        venue = source.venue_to_read()  # checked before the symbol, as it always was
        wanted = _one(symbol)
        found = await snapshots(wanted, venue, crypto=False)
        spelt = wanted.spelt[wanted.names[0]]
        return _json({"symbol": spelt, **found[spelt]})

    # ---- crypto ----

    @router.get("/v1beta3/crypto/{loc}/bars", summary="Crypto bars")
    async def crypto_bars(
        loc: str, paging: Paged, symbols: Text = None, timeframe: Text = None, venue: Text = None
    ) -> Response:
        _crypto_location(loc)
        wanted = Symbols(symbols)
        return await series("bars", wanted, paging, venue, timeframe, crypto=True, single=False)

    @router.get("/v1beta3/crypto/{loc}/snapshots", summary="Crypto snapshots")
    async def crypto_snapshots(loc: str, symbols: Text = None, venue: Text = None) -> Response:
        _crypto_location(loc)
        return _json({"snapshots": await snapshots(Symbols(symbols), venue, crypto=True)})

    @router.get("/v1beta3/crypto/{loc}/{kind}", summary="Crypto quotes or trades")
    async def crypto_rows(
        loc: str,
        kind: Literal["quotes", "trades"],
        paging: Paged,
        symbols: Text = None,
        venue: Text = None,
    ) -> Response:
        _crypto_location(loc)
        return await series(kind, Symbols(symbols), paging, venue, crypto=True, single=False)

    @router.get("/v1beta3/crypto/{loc}/latest/{kind}", summary="Latest crypto quotes, trades, bars")
    async def crypto_latest(
        loc: str,
        kind: Literal["quotes", "trades", "bars"],
        symbols: Text = None,
        venue: Text = None,
    ) -> Response:
        _crypto_location(loc)
        return await latest(kind, Symbols(symbols), venue, crypto=True, single=False)

    return router


def _one(symbol: str) -> Symbols:
    if "," in symbol:
        raise errors.bad_request(f"invalid symbol: {symbol!r}; one symbol in the path")
    return Symbols(symbol, required="symbol")


def _timeframe(timeframe: str | None) -> str:
    if timeframe is None or not timeframe.strip():
        raise errors.bad_request("timeframe is required, e.g. 1Min, 5Min, 1Hour or 1Day")
    return timeframe


def _item(kind: str, item: Any, crypto: bool) -> dict[str, Any]:
    if kind == "bars":
        return bar_json(item)
    if kind == "quotes":
        return quote_json(item, crypto=crypto)
    return trade_json(item, crypto=crypto)
