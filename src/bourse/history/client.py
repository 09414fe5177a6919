"""Asking the history service over NATS: the gateway's market-data API, `bourse history`, and
back-tests use this.

    history = HistoryClient(nc)
    page = await history.trades(RowsRequest(symbols=["AAPL"], start="2024-03-01", limit=500))
    page.items["AAPL"], page.next_page_token
    async for trade in history.every("trades", RowsRequest(symbols=["AAPL"])): ...

A refused request raises `HistoryQueryError` (its `error` says which field and why); no
service, or none answering in time, raises `HistoryUnavailable`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from bourse.analytics.bars import Bar
from bourse.history.query import (
    BarsRequest,
    HistoryUnavailable,
    Kind,
    LatestRequest,
    RowsRequest,
    Snapshot,
    SnapshotsRequest,
    SpanRequest,
    encode,
    parse_answer,
    part,
    query_subject,
)
from bourse.history.rows import QuoteRow, TradeRow

DEFAULT_TIMEOUT = 10.0

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: dict[str, list[T]]  # per symbol, in the order asked for
    next_page_token: str | None


@dataclass(frozen=True)
class Latest:
    quotes: dict[str, QuoteRow]
    trades: dict[str, TradeRow]
    bars: dict[str, Bar]


class HistoryClient:
    def __init__(self, nc: NATS, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._nc = nc
        self.timeout = timeout

    async def ask(self, kind: Kind, request: Any) -> dict[str, msgspec.Raw]:
        """Send one query; the answer's parts, unparsed (see `query.parse_answer`)."""
        try:
            reply = await self._nc.request(
                query_subject(kind), encode(request), timeout=self.timeout
            )
        except NoRespondersError:
            raise HistoryUnavailable(
                "no history service is running (start the platform with `bourse up`)"
            ) from None
        except (NatsError, TimeoutError) as error:
            raise HistoryUnavailable(
                f"the history service did not answer a {kind} query within {self.timeout}s "
                f"({type(error).__name__})"
            ) from None
        return parse_answer(reply.data)

    async def trades(self, request: RowsRequest) -> Page[TradeRow]:
        parts = await self.ask("trades", request)
        return Page(part(parts, "trades", dict[str, list[TradeRow]], dict), _token(parts))

    async def quotes(self, request: RowsRequest) -> Page[QuoteRow]:
        parts = await self.ask("quotes", request)
        return Page(part(parts, "quotes", dict[str, list[QuoteRow]], dict), _token(parts))

    async def bars(self, request: BarsRequest) -> Page[Bar]:
        parts = await self.ask("bars", request)
        return Page(part(parts, "bars", dict[str, list[Bar]], dict), _token(parts))

    async def latest(self, request: LatestRequest) -> Latest:
        parts = await self.ask("latest", request)
        return Latest(
            quotes=part(parts, "quotes", dict[str, QuoteRow], dict),
            trades=part(parts, "trades", dict[str, TradeRow], dict),
            bars=part(parts, "bars", dict[str, Bar], dict),
        )

    async def snapshots(self, request: SnapshotsRequest) -> dict[str, Snapshot]:
        parts = await self.ask("snapshots", request)
        return part(parts, "snapshots", dict[str, Snapshot], dict)

    async def span(self) -> dict[str, dict[str, int | None]]:
        parts = await self.ask("span", SpanRequest())
        span = dict[str, int | None]
        return {key: msgspec.json.decode(raw, type=span) for key, raw in parts.items()}

    async def every(
        self, kind: Literal["trades", "quotes", "bars"], request: RowsRequest
    ) -> AsyncIterator[Any]:
        """Every item of the query, page after page, in the query's order."""
        item_type = _ITEM_TYPES[kind]
        while True:
            parts = await self.ask(kind, request)
            for items in part(parts, kind, dict[str, list[item_type]], dict).values():  # type: ignore[valid-type]
                for item in items:
                    yield item
            token = _token(parts)
            if token is None:
                return
            request = msgspec.structs.replace(request, page_token=token)


_ITEM_TYPES: dict[str, type] = {"trades": TradeRow, "quotes": QuoteRow, "bars": Bar}


def _token(parts: dict[str, msgspec.Raw]) -> str | None:
    raw = parts.get("next_page_token")
    return None if raw is None else msgspec.json.decode(raw, type=str | None)
