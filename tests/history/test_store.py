"""The store, on DuckDB and PostgreSQL alike: ingestion is idempotent by stream sequence,
queries page by keyset, the latest rows follow time (not arrival), exports are Parquet."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest

from bourse.history.consumer import decode_storable
from bourse.history.rows import QuoteRow, Recorded, TradeRow
from bourse.history.store import Cursor, HistoryStore, RangeQuery, open_store
from bourse.model import marketdata
from bourse.model.marketdata import Depth, MarketData, Quote, Trade
from tests.analytics.factories import S, quote, trade
from tests.history.conftest import recorded

T0 = 1_700_000_000 * S


def session(count: int = 300, seed: int = 7) -> list[MarketData]:
    """Quotes and trades of two symbols on two venues, time mostly increasing, some ties."""
    rng = random.Random(seed)
    messages: list[MarketData] = []
    ts = T0
    for _ in range(count):
        ts += rng.choice([0, 1, S // 10, S])
        symbol, venue = rng.choice(["AAPL", "MSFT"]), rng.choice(["nyse", "nasdaq"])
        price = Decimal(rng.randint(18_000, 18_100)) / 100
        if rng.random() < 0.4:
            messages.append(trade(price, rng.randint(1, 300), ts, venue=venue, symbol=symbol))
        else:
            ask = price + Decimal("0.02")
            messages.append(quote(price, ask, ts, venue=venue, symbol=symbol))
    return messages


def as_message(row: QuoteRow | TradeRow) -> MarketData:
    """A stored row decodes as the market-data message it was."""
    return marketdata.decode(msgspec.json.encode(row))


def everything(store: HistoryStore, kind: str, **query: object) -> list[QuoteRow | TradeRow]:
    return store.rows(kind, RangeQuery(symbols=("AAPL", "MSFT"), limit=None, **query))  # type: ignore[arg-type]


def test_rows_are_the_messages_with_their_stream_sequence(store: HistoryStore) -> None:
    batch = recorded(session())
    result = store.ingest(batch)
    assert result.stored == len(batch) and result.duplicates == 0
    rows = everything(store, "trades") + everything(store, "quotes")
    assert sorted((r.stream_seq, as_message(r)) for r in rows) == sorted(
        ((r.stream_seq, r.message) for r in batch), key=lambda pair: pair[0]
    )
    # As the feed wrote them: the instrument's places, no trailing zeros beyond.
    first = next(r for r in rows if isinstance(r, QuoteRow))
    assert msgspec.json.encode(first.bid).decode().count(".") == 1
    assert str(first.bid_size) == "100"


def test_the_same_messages_again_store_nothing(store: HistoryStore) -> None:
    batch = recorded(session())
    store.ingest(batch[:200])
    again = store.ingest(batch[100:])  # half redelivered, half new
    assert again.stored == len(batch) - 200
    assert again.duplicates == 100
    twice = store.ingest(batch[:10] + batch[:10])  # and twice in one batch
    assert (twice.stored, twice.duplicates) == (0, 20)
    assert len(everything(store, "trades")) + len(everything(store, "quotes")) == len(batch)


def test_a_message_retried_after_later_ones_is_stored_once(store: HistoryStore) -> None:
    # A failed batch is nak'd and retried while later batches succeed: the retry arrives below
    # the highest sequence stored, and must be stored (once) all the same.
    batch = recorded(session(60))
    missing = batch[20:30]
    store.ingest(batch[:20])
    store.ingest(batch[30:])
    assert store.ingest(missing).stored == len(missing)
    assert store.ingest(missing).stored == 0
    seqs = sorted(r.stream_seq for r in everything(store, "trades") + everything(store, "quotes"))
    assert seqs == [r.stream_seq for r in batch]


def test_a_reopened_store_knows_what_it_holds(url: str, tmp_path: Path) -> None:
    batch = recorded(session())
    with open_store(url, home=tmp_path) as store:
        store.ingest(batch)
    with open_store(url, home=tmp_path) as store:  # a restart
        again = store.ingest(batch)
        assert (again.stored, again.duplicates) == (0, len(batch))
        assert store.span()["quotes"]["max_seq"] == max(
            r.stream_seq for r in batch if isinstance(r.message, Quote)
        )


def test_a_trade_without_a_side_is_stored_as_unknown(store: HistoryStore) -> None:
    # Another publisher may leave out what the model defaults (here `side`).
    payload = b'{"type":"trade","symbol":"AAPL","venue":"nyse","price":"180.00","size":"5",'
    payload += b'"ts":%d,"seq":1}' % T0
    message = marketdata.decode(payload)
    assert store.ingest([Recorded(1, message, payload)]).stored == 1
    (row,) = everything(store, "trades")
    assert row.side == "unknown" and as_message(row) == message


def test_depth_is_not_kept(store: HistoryStore) -> None:
    depth = Depth(symbol="AAPL", venue="bourse", bids=[], asks=[], ts=T0, seq=1)
    fine = trade("180.00", 5, T0)
    result = store.ingest(recorded([depth, fine]))
    assert (result.stored, result.ignored) == (1, 1)
    assert [as_message(r) for r in everything(store, "trades")] == [fine]


@pytest.mark.parametrize(
    ("price", "size"),
    [("180.000000001", "5"), ("180", "12345678901"), ("12345678901", "1")],
)
def test_numbers_the_store_would_round_are_refused_at_decoding(price: str, size: str) -> None:
    payload = marketdata.encode(trade(price, size, T0))
    with pytest.raises(ValueError, match="does not fit the history store"):
        decode_storable(payload)
    too_late = marketdata.encode(msgspec.structs.replace(trade("180", 1, T0), ts=2**63))
    with pytest.raises(ValueError, match="BIGINT"):
        decode_storable(too_late)
    assert decode_storable(marketdata.encode(trade("180.12345678", "0.0001", T0))).ts == T0


def test_pages_continue_exactly_where_they_ended(store: HistoryStore) -> None:
    batch = recorded(session(400))
    store.ingest(batch)
    for descending in (False, True):
        for kind in ("quotes", "trades"):
            whole = everything(store, kind, descending=descending)
            for size in (1, 7, 50):
                pages, after = [], None
                while True:
                    query = RangeQuery(
                        symbols=("MSFT", "AAPL"), limit=size, descending=descending, after=after
                    )
                    page = store.rows(kind, query)  # type: ignore[arg-type]
                    pages += page
                    if len(page) < size:
                        break
                    after = Cursor(page[-1].symbol, page[-1].ts, page[-1].stream_seq)
                assert pages == whole
            # symbols in order; time (then stream sequence) ascending or descending within
            keys = [(r.symbol, r.ts, r.stream_seq) for r in whole]
            by_time = sorted(keys, key=lambda k: (k[1], k[2]), reverse=descending)
            assert keys == sorted(by_time, key=lambda k: k[0])


def test_time_bounds_are_inclusive_and_venue_filters(store: HistoryStore) -> None:
    batch = recorded(session())
    store.ingest(batch)
    trades = [r for r in batch if isinstance(r.message, Trade)]
    start, end = trades[5].message.ts, trades[-5].message.ts
    found = everything(store, "trades", start=start, end=end, venue="nyse")
    expected = [
        r.stream_seq for r in trades if start <= r.message.ts <= end and r.message.venue == "nyse"
    ]
    assert sorted(r.stream_seq for r in found) == sorted(expected)
    assert {r.venue for r in found} == {"nyse"}


def test_latest_is_by_time_not_by_arrival(store: HistoryStore) -> None:
    newer = trade("181.00", 1, T0 + 10 * S, venue="nyse")
    older = trade("179.00", 1, T0 + 5 * S, venue="nyse")  # arrives later, happened earlier
    other = trade("180.50", 1, T0 + 7 * S, venue="nasdaq")
    store.ingest(recorded([newer]))
    store.ingest(recorded([older, other], first_seq=2))
    latest = store.latest("trades", ["AAPL", "ZZZZ"])
    assert set(latest) == {"AAPL"}
    assert as_message(latest["AAPL"]) == newer
    assert as_message(store.latest("trades", ["AAPL"], venue="nasdaq")["AAPL"]) == other
    # and within one batch
    newest = trade("182.00", 1, T0 + 20 * S, venue="nasdaq")
    store.ingest(recorded([newest, msgspec.structs.replace(older, ts=T0 + 19 * S)], first_seq=10))
    assert as_message(store.latest("trades", ["AAPL"])["AAPL"]) == newest


def test_latest_of_a_batch_in_order_and_out_of_order(store: HistoryStore) -> None:
    # A batch in (ts, stream sequence) order takes its last message per key as the newest;
    # one that is not (a time going back, a sequence twice) compares them all.
    first = quote("180.00", "180.02", T0 + 5 * S, venue="nyse")
    tied = quote("180.10", "180.12", T0 + 5 * S, venue="nyse")  # same time, later sequence
    elsewhere = quote("179.00", "179.02", T0 + 6 * S, venue="nasdaq")
    store.ingest(recorded([first, tied, elsewhere]))
    latest = store.latest("quotes", ["AAPL"], venue="nyse")["AAPL"]
    assert (as_message(latest), latest.stream_seq) == (tied, 2)
    newest = quote("181.00", "181.02", T0 + 9 * S, venue="nyse")
    back = quote("178.00", "178.02", T0 + 8 * S, venue="nyse")
    batch = recorded([newest, back], first_seq=10)
    result = store.ingest([*batch, batch[0]])  # and the first again: a copy in the batch
    assert (result.stored, result.duplicates) == (2, 1)
    assert as_message(store.latest("quotes", ["AAPL"], venue="nyse")["AAPL"]) == newest
    assert as_message(store.latest("quotes", ["AAPL"])["AAPL"]) == newest


def test_the_latest_rows_survive_a_restart_and_a_crash(url: str, tmp_path: Path) -> None:
    first = trade("180.00", 1, T0 + 10 * S)
    with open_store(url, home=tmp_path) as store:
        store.ingest(recorded([first]))  # saved on close
    crashed = open_store(url, home=tmp_path)
    crashed.SAVE_LATEST_EVERY = 1e9  # never saved: found again from the rows stored
    newer = trade("181.00", 1, T0 + 20 * S)
    crashed.ingest(recorded([newer], first_seq=5))
    late = trade("182.00", 1, T0 + 30 * S, venue="nasdaq")  # a retry below sequence 5
    crashed.ingest(recorded([late], first_seq=3))
    crashed._disconnect()  # as a crash would: nothing saved
    with open_store(url, home=tmp_path) as store:
        latest = store.latest("trades", ["AAPL"])
        assert as_message(latest["AAPL"]) == late
        assert as_message(store.latest("trades", ["AAPL"], venue="nyse")["AAPL"]) == newer


def test_last_times_before_a_moment(store: HistoryStore) -> None:
    store.ingest(
        recorded(
            [
                trade("180", 1, T0, symbol="AAPL"),
                quote("180", "181", T0 + 3 * S, symbol="AAPL"),
                trade("300", 1, T0 + 9 * S, symbol="MSFT"),
            ]
        )
    )
    found = store.last_times(["AAPL", "MSFT"], None, {"AAPL": T0 + 5 * S, "MSFT": T0 + 9 * S})
    assert found == {"AAPL": T0 + 3 * S}


def test_export_writes_parquet_with_exact_numbers(store: HistoryStore, tmp_path: Path) -> None:
    batch = recorded(session())
    store.ingest(batch)
    path = tmp_path / "trades.parquet"
    query = RangeQuery(symbols=("AAPL",), limit=None)
    assert store.export_rows("trades", query, path) == len(store.rows("trades", query))
    table = pq.read_table(path)
    assert table.column_names == [
        "stream_seq", "ts", "symbol", "venue", "price", "size", "side", "seq"
    ]  # fmt: skip
    assert str(table.schema.field("price").type) == "decimal128(18, 8)"
    assert str(table.schema.field("ts").type) == "timestamp[ns]"
    exported = table.to_pylist()
    stored = store.rows("trades", query)
    assert [(e["stream_seq"], e["price"], e["size"]) for e in exported] == [
        (r.stream_seq, r.price, r.size) for r in stored
    ]
    assert exported[0]["ts"].value == stored[0].ts  # nanoseconds kept


def test_an_unknown_url_says_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="postgresql://"):
        open_store("mysql://somewhere/db", home=tmp_path)


def test_a_recorded_batch_keeps_its_payload() -> None:
    message = trade("180", 1, T0)
    (record,) = recorded([message])
    assert record == Recorded(1, message, marketdata.encode(message))
