"""The history service on a real nats-server: MARKET_DATA recorded once whatever happens to
the consumer, and queries answered over NATS request/reply, with precise errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from bourse.bus.consume.deadletter import DeadLetterHeader
from bourse.history import query
from bourse.history.client import HistoryClient
from bourse.history.query import BarsRequest, HistoryQueryError, LatestRequest, RowsRequest
from bourse.history.rows import Recorded
from bourse.history.service import HistoryConfig, HistoryService
from bourse.history.store import HistoryStore, IngestResult, open_store
from bourse.model import marketdata, subjects
from bourse.model.marketdata import Depth, MarketData
from tests.analytics.factories import S, quote, trade
from tests.conftest import eventually

T0 = 1_700_000_000 * S
MINUTE = 60 * S


async def publish(js: JetStreamContext, messages: Sequence[MarketData]) -> list[int]:
    """Publish and wait for each ack; the stream sequences."""
    seqs = []
    for m in messages:
        ack = await js.publish(subjects.market_data(m.venue, m.symbol), marketdata.encode(m))
        seqs.append(ack.seq)
    return seqs


def stored(store: HistoryStore) -> int:
    span = store.span()
    return sum(int(part["rows"] or 0) for part in span.values())


@pytest.fixture
def store(tmp_path: Path) -> AsyncIterator[HistoryStore]:
    with open_store(None, home=tmp_path) as opened:
        yield opened


@pytest.fixture
async def history(
    nc: NATS, js: JetStreamContext, store: HistoryStore
) -> AsyncIterator[HistoryService]:
    service = await HistoryService(nc, store, HistoryConfig(batch_timeout=0.05)).start()
    yield service
    await service.stop()


# ---- ingestion ----


async def test_what_is_published_is_stored(js: JetStreamContext, history: HistoryService) -> None:
    depth = Depth(symbol="AAPL", venue="bourse", bids=[], asks=[], ts=T0, seq=1)
    messages: list[MarketData] = [
        trade("180.00", 5, T0),
        quote("179.90", "180.10", T0 + 1),
        depth,
        trade("60000.00", "0.0123", T0 + 2, symbol="BTC-USD", venue="coinbase"),
    ]
    await publish(js, messages)
    await eventually(lambda: history.ingested.stored == 3 and history.ingested.ignored == 1)
    assert stored(history.store) == 3


async def test_a_restart_resumes_and_a_full_redelivery_stores_nothing(
    nc: NATS, js: JetStreamContext, store: HistoryStore
) -> None:
    config = HistoryConfig(batch_timeout=0.05)
    first = await HistoryService(nc, store, config).start()
    await publish(js, [trade("180", 1, T0 + i) for i in range(50)])
    await eventually(lambda: first.ingested.stored == 50)
    await first.stop()

    await publish(js, [trade("181", 1, T0 + 100 + i) for i in range(30)])  # while it is down
    second = await HistoryService(nc, store, config).start()
    await eventually(lambda: second.ingested.stored == 30)
    assert second.ingested.duplicates == 0  # resumed after what it acknowledged
    await second.stop()

    # The durable consumer lost: a new one delivers MARKET_DATA from its first message.
    await js.delete_consumer("MARKET_DATA", config.durable)
    third = await HistoryService(nc, store, config).start()
    await eventually(lambda: third.ingested.duplicates == 80)
    await third.stop()
    assert third.ingested.stored == 0
    assert stored(store) == 80


async def test_a_batch_stored_but_not_acknowledged_is_stored_once(
    nc: NATS, js: JetStreamContext, store: HistoryStore
) -> None:
    # The store commits, then the service fails before acknowledging (a crash, a lost
    # connection): JetStream redelivers the batch, and the store recognises every message.
    real_ingest = store.ingest
    calls: list[IngestResult] = []

    def commits_then_fails(batch: Sequence[Recorded]) -> IngestResult:
        result = real_ingest(batch)
        calls.append(result)
        if len(calls) == 1:
            raise RuntimeError("lost before the acknowledgement")
        return result

    store.ingest = commits_then_fails  # type: ignore[method-assign]
    service = await HistoryService(nc, store, HistoryConfig(batch_timeout=0.05)).start()
    await publish(js, [trade("180", 1, T0 + i) for i in range(20)])
    await eventually(lambda: sum(c.duplicates for c in calls) >= 20, timeout=15)
    await service.stop()
    assert calls[0].stored == 20
    assert sum(c.stored for c in calls) == 20
    assert stored(store) == 20


async def test_malformed_and_inexact_messages_are_dead_lettered(
    nc: NATS, js: JetStreamContext, history: HistoryService
) -> None:
    good = trade("180.00", 5, T0)
    inexact = marketdata.encode(trade("180.00", 5, T0)).replace(b'"180.00"', b'"180.000000001"')
    await js.publish("md.nyse.AAPL", b"{not json")
    await js.publish("md.nyse.AAPL", inexact)
    await publish(js, [good])
    await eventually(lambda: history.ingested.stored == 1)
    await eventually(lambda: history.consumer.stats.dead_lettered == 2)
    sub = await js.subscribe("deadletter.md.>", ordered_consumer=True)
    reasons = []
    for _ in range(2):
        msg = await sub.next_msg(timeout=5)
        reasons.append(msg.headers[DeadLetterHeader.ERROR] if msg.headers else "")
    await sub.unsubscribe()
    assert any("does not fit the history store" in r for r in reasons)


# ---- queries ----


@pytest.fixture
async def asked(nc: NATS, js: JetStreamContext, history: HistoryService) -> HistoryClient:
    start = T0 - T0 % MINUTE
    await publish(
        js,
        [
            quote("179.90", "180.10", start + S),
            trade("180.00", 10, start + 2 * S),
            trade("180.50", 30, start + MINUTE + S, venue="nasdaq"),
            quote("299.00", "301.00", start + 3 * S, symbol="MSFT"),
        ],
    )
    await eventually(lambda: history.ingested.stored == 4)
    return HistoryClient(nc)


async def test_trades_quotes_and_bars(asked: HistoryClient) -> None:
    trades = await asked.trades(RowsRequest(symbols=["AAPL"]))
    assert [t.price for t in trades.items["AAPL"]] == [Decimal("180.00"), Decimal("180.50")]
    assert trades.next_page_token is None
    first = await asked.trades(RowsRequest(symbols=["AAPL"], limit=1, sort="desc"))
    assert [t.venue for t in first.items["AAPL"]] == ["nasdaq"]
    rest = await asked.trades(
        RowsRequest(symbols=["AAPL"], limit=1, sort="desc", page_token=first.next_page_token)
    )
    assert [t.venue for t in rest.items["AAPL"]] == ["nyse"]
    quotes = await asked.quotes(RowsRequest(symbols=["MSFT", "AAPL"], venue="nyse"))
    assert sorted(quotes.items) == ["AAPL", "MSFT"]
    bars = await asked.bars(BarsRequest(symbols=["AAPL"], timeframe="1Min"))
    assert [(b.close, b.volume, b.venue) for b in bars.items["AAPL"]] == [
        (Decimal("180.00"), Decimal(10), "consolidated"),
        (Decimal("180.50"), Decimal(30), "consolidated"),
    ]
    start = T0 - T0 % MINUTE
    in_range = await asked.trades(
        RowsRequest(symbols=["AAPL"], start=start + 2 * S, end=start + 2 * S)
    )
    assert len(in_range.items["AAPL"]) == 1
    rfc = await asked.trades(RowsRequest(symbols=["AAPL"], start="2023-11-14T22:14:00.000000001Z"))
    assert [t.ts for t in rfc.items["AAPL"]] == [start + MINUTE + S]


async def test_latest_and_snapshots(asked: HistoryClient) -> None:
    latest = await asked.latest(LatestRequest(symbols=["AAPL", "MSFT", "TSLA"]))
    assert latest.trades["AAPL"].venue == "nasdaq"
    assert set(latest.quotes) == {"AAPL", "MSFT"}
    assert latest.bars["AAPL"].close == Decimal("180.50")
    assert latest.bars["MSFT"].source == "quotes"
    snapshots = await asked.snapshots(query.SnapshotsRequest(symbols=["AAPL", "TSLA"]))
    aapl = snapshots["AAPL"]
    assert aapl.latest_trade is not None and aapl.latest_trade.price == Decimal("180.50")
    assert aapl.minute_bar is not None and aapl.minute_bar.trade_count == 1
    assert aapl.daily_bar is not None and aapl.daily_bar.trade_count == 2
    assert aapl.prev_daily_bar is None
    assert snapshots["TSLA"] == query.Snapshot()
    span = await asked.span()
    assert span["trades"]["rows"] == 2


@pytest.mark.parametrize(
    ("kind", "request_", "field", "says"),
    [
        ("trades", {"symbols": ["AAPL"], "limit": 0}, "limit", "limit must be from 1 to 10000"),
        ("trades", {"symbols": []}, "symbols", "at least one symbol"),
        ("trades", {"symbols": ["AAPL", "no way"]}, "symbols", "invalid symbol"),
        ("trades", {"symbols": ["AAPL"], "start": "yesterday"}, "start", "RFC 3339"),
        ("trades", {"symbols": ["AAPL"], "limit": "10"}, "limit", "Expected `int`"),
        ("trades", {"symbols": ["AAPL"], "sort": "up"}, "sort", "accepted: asc or desc"),
        ("trades", {"symbols": ["AAPL"], "page_token": "abc"}, "page_token", "page_token"),
        ("quotes", {"symbols": ["AAPL"], "colour": "red"}, None, "unknown field `colour`"),
        ("quotes", {"symbols": ["AAPL"], "venue": "NYSE"}, "venue", "invalid venue"),
        ("bars", {"symbols": ["AAPL"], "timeframe": "1Week"}, "timeframe", "not fixed widths"),
        ("bars", {"symbols": ["AAPL"], "timeframe": "1M"}, "timeframe", "invalid timeframe"),
        ("latest", {"symbols": ["AAPL"], "kinds": ["news"]}, "kinds", "quotes, trades, bars"),
        ("nonsense", {}, None, "no query 'nonsense'"),
    ],
)
async def test_bad_requests_say_what_is_wrong(
    nc: NATS,
    history: HistoryService,
    kind: str,
    request_: dict[str, object],
    field: str | None,
    says: str,
) -> None:
    reply = await nc.request(f"history.query.{kind}", json.dumps(request_).encode(), timeout=5)
    error = json.loads(reply.data)["error"]
    assert error["code"] == "invalid_request"
    assert error["field"] == field
    assert says in error["message"]


async def test_an_end_before_the_start_is_inconsistent(asked: HistoryClient) -> None:
    with pytest.raises(HistoryQueryError) as refused:
        await asked.trades(RowsRequest(symbols=["AAPL"], start=T0, end=T0 - 1))
    assert refused.value.error.code == "inconsistent_request"
    assert refused.value.error.field == "end"


@pytest.mark.parametrize(
    ("payload", "says"),
    [(b"{not json", "must be a JSON object"), (b"[1, 2]", "Expected `object`, got `array`")],
)
async def test_not_a_json_object_is_refused(
    nc: NATS, history: HistoryService, payload: bytes, says: str
) -> None:
    reply = await nc.request("history.query.trades", payload, timeout=5)
    assert says in json.loads(reply.data)["error"]["message"]


async def test_an_answer_fits_one_message_and_the_token_continues(
    nc: NATS, js: JetStreamContext, history: HistoryService
) -> None:
    count = 6_000  # ~1.4 MB of quotes: more than one NATS message holds
    for i in range(count):
        q = quote("179.90", "180.10", T0 + i)
        await nc.publish("md.nyse.AAPL", marketdata.encode(q))
    await eventually(lambda: history.ingested.stored == count, timeout=30)
    reply = await nc.request(
        "history.query.quotes",
        msgspec.json.encode(RowsRequest(symbols=["AAPL"], limit=10_000)),
        timeout=10,
    )
    assert len(reply.data) <= nc.max_payload
    page = json.loads(reply.data)
    assert 0 < len(page["quotes"]["AAPL"]) < count
    assert page["next_page_token"] is not None
    client = HistoryClient(nc)
    seen = [q.stream_seq async for q in client.every("quotes", RowsRequest(symbols=["AAPL"]))]
    assert len(seen) == count and seen == sorted(set(seen))


async def test_no_service_is_unavailable(nc: NATS) -> None:
    with pytest.raises(query.HistoryUnavailable, match="no history service"):
        await HistoryClient(nc, timeout=1).trades(RowsRequest(symbols=["AAPL"]))
