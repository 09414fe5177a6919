"""The history service: records MARKET_DATA into the store and answers queries over NATS.

    store = open_store(config.url, home=home)
    service = await HistoryService(nc, store).start()
    ...
    await service.stop()          # queries end, the batch in hand is stored and acknowledged
    store.close()

Ingestion: a durable pull consumer (`history`) on `md.>`, batched (2,000 messages or half a
second), each batch stored in one transaction, then acknowledged. Idempotent by stream
sequence, so a restart resumes where the consumer's acknowledgements left off and anything
redelivered is recognised (`IngestResult.duplicates`).

Queries: `history.query.<kind>` (see `query`), answered in worker threads, a few at a time.
Run one service per store: it is the store's only writer and holds its latest rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bourse.analytics.bars import Bar
from bourse.analytics.timeframes import Timeframe, TimeUnit
from bourse.bus.consume.spec import BatchSpec
from bourse.bus.streams import MARKET_DATA
from bourse.history import query as q
from bourse.history.consumer import RecordingConsumer
from bourse.history.rows import QuoteRow, Recorded, Row, TradeRow
from bourse.history.store import HistoryStore, IngestResult, RangeQuery
from bourse.model import subjects

log = logging.getLogger(__name__)

R = TypeVar("R", QuoteRow, TradeRow)

MINUTE = Timeframe.of(1, TimeUnit.MINUTE)
DAY = Timeframe.of(1, TimeUnit.DAY)


@dataclass(frozen=True, kw_only=True)
class HistoryConfig:
    durable: str = "history"
    batch_size: int = 2_000
    batch_timeout: float = 0.5  # seconds after a batch's first message
    query_concurrency: int = 4  # queries running at once; more wait their turn


class Answers:
    """Turns a query's bytes into its answer's bytes, from the store. Blocking: run it in a
    worker thread. `budget` is the largest answer allowed (the connection's max payload)."""

    def __init__(self, store: HistoryStore, budget: int) -> None:
        self.store = store
        self.budget = budget

    def __call__(self, kind: str, payload: bytes) -> bytes:
        try:
            match kind:
                case "trades" | "quotes":
                    rows = q.range_query(q.decode_request(payload, q.RowsRequest), "r")
                    found = self.store.rows(kind, _one_more(rows))
                    return q.page_answer(kind, _page(found, rows), self.budget)
                case "bars":
                    request = q.decode_request(payload, q.BarsRequest)
                    timeframe = q.parse_timeframe(request.timeframe)
                    bars = q.range_query(request, "b")
                    found_bars = self.store.bars(_one_more(bars), timeframe)
                    return q.page_answer("bars", _page(found_bars, bars), self.budget)
                case "latest":
                    return self._sized(self.latest(q.decode_request(payload, q.LatestRequest)))
                case "snapshots":
                    request_s = q.decode_request(payload, q.SnapshotsRequest)
                    return self._sized({"snapshots": self.snapshots(request_s)})
                case "span":
                    q.decode_request(payload, q.SpanRequest)
                    return q.encode(self.store.span())
                case _:
                    raise q.Invalid(None, f"no query {kind!r}; accepted: {', '.join(q.KINDS)}")
        except q.Invalid as invalid:
            return invalid.answer()
        except Exception:
            log.exception("history: the %s query failed", kind)
            return q.internal_error(f"the {kind} query failed; the history service logged why")

    def _sized(self, answer: dict[str, Any]) -> bytes:
        encoded = q.encode(answer)
        if len(encoded) > self.budget:
            raise q.Invalid("symbols", "the answer is too large for one message; ask fewer symbols")
        return encoded

    def latest(self, request: q.LatestRequest) -> dict[str, Any]:
        symbols = q.parse_symbols(request.symbols)
        venue = q.parse_venue(request.venue)
        timeframe = q.parse_timeframe(request.timeframe)
        quotes = self.store.latest("quotes", symbols, venue)
        trades = self.store.latest("trades", symbols, venue)
        answer: dict[str, Any] = {}
        if "quotes" in request.kinds:
            answer["quotes"] = quotes
        if "trades" in request.kinds:
            answer["trades"] = trades
        if "bars" in request.kinds:
            answer["bars"] = {
                symbol: bar
                for symbol in symbols
                if (bar := self._bar_at(symbol, venue, timeframe, _newest(symbol, quotes, trades)))
            }
        return answer

    def snapshots(self, request: q.SnapshotsRequest) -> dict[str, q.Snapshot]:
        symbols = q.parse_symbols(request.symbols)
        venue = q.parse_venue(request.venue)
        quotes = self.store.latest("quotes", symbols, venue)
        trades = self.store.latest("trades", symbols, venue)
        snapshots: dict[str, q.Snapshot] = {}
        newest = {s: ts for s in symbols if (ts := _newest(s, quotes, trades)) is not None}
        before_today = self.store.last_times(
            tuple(newest), venue, {s: DAY.start_of(ts) for s, ts in newest.items()}
        )
        for symbol in symbols:
            ts = newest.get(symbol)
            snapshots[symbol] = q.Snapshot(
                latest_trade=_as(TradeRow, trades.get(symbol)),
                latest_quote=_as(QuoteRow, quotes.get(symbol)),
                minute_bar=self._bar_at(symbol, venue, MINUTE, ts),
                daily_bar=self._bar_at(symbol, venue, DAY, ts),
                prev_daily_bar=self._bar_at(symbol, venue, DAY, before_today.get(symbol)),
            )
        return snapshots

    def _bar_at(
        self, symbol: str, venue: str | None, timeframe: Timeframe, ts: int | None
    ) -> Bar | None:
        """The bar of `timeframe` holding `ts`."""
        if ts is None:
            return None
        start = timeframe.start_of(ts)
        found = self.store.bars(
            RangeQuery(symbols=(symbol,), venue=venue, start=start, end=start, limit=1), timeframe
        )
        return found[0] if found else None


def _one_more(query: RangeQuery) -> RangeQuery:
    assert query.limit is not None
    return dataclasses.replace(query, limit=query.limit + 1)


def _page(found: Sequence[Row] | Sequence[Bar], query: RangeQuery) -> q.Page:
    assert query.limit is not None
    return q.Page(items=found[: query.limit], more=len(found) > query.limit)


def _newest(symbol: str, quotes: dict[str, Row], trades: dict[str, Row]) -> int | None:
    times = [row.ts for row in (quotes.get(symbol), trades.get(symbol)) if row is not None]
    return max(times) if times else None


def _as(kind: type[R], row: Row | None) -> R | None:
    assert row is None or isinstance(row, kind)
    return row


class HistoryService:
    """The store's writer and query server on one NATS connection (see the module)."""

    def __init__(self, nc: NATS, store: HistoryStore, config: HistoryConfig | None = None) -> None:
        self.config = config or HistoryConfig()
        self.store = store
        self.ingested = IngestResult()
        self._nc = nc
        spec = BatchSpec(
            durable=self.config.durable,
            filter_subjects=(subjects.ALL_MARKET_DATA,),
            stream=MARKET_DATA.name,
            batch_size=self.config.batch_size,
            batch_timeout=self.config.batch_timeout,
            max_ack_pending=max(10_000, 2 * self.config.batch_size),
            max_deliver=-1,  # a store that is down delays history; it never loses it
            retry_delays=(1.0, 2.0, 5.0, 10.0),
        )
        self.consumer = RecordingConsumer(nc, spec, self._store_batch)
        self._answers = Answers(store, budget=nc.max_payload or 1024 * 1024)
        self._queries: Subscription | None = None
        self._slots = asyncio.Semaphore(self.config.query_concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def answering(self) -> bool:
        """Whether it takes queries (started, not stopped)."""
        return self._queries is not None

    async def start(self) -> HistoryService:
        await self.consumer.start()
        self._queries = await self._nc.subscribe(q.ALL_QUERIES, queue="history", cb=self._on_query)
        return self

    async def stop(self) -> None:
        if self._queries is not None:
            with contextlib.suppress(Exception):
                await self._queries.unsubscribe()
            self._queries = None
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        await self.consumer.stop()

    async def _store_batch(self, batch: Sequence[Recorded]) -> None:
        result = await asyncio.to_thread(self.store.ingest, batch)
        self.ingested.add(result)

    async def _on_query(self, msg: Msg) -> None:
        task = asyncio.create_task(self._answer(msg), name="history-query")
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _answer(self, msg: Msg) -> None:
        kind = msg.subject.removeprefix(q.ROOT + ".")
        async with self._slots:
            answer = await asyncio.to_thread(self._answers, kind, msg.data)
        if msg.reply:
            try:
                await msg.respond(answer)
            except Exception:
                log.exception("history: could not answer a %s query", kind)
