"""Bars by SQL are the analytics cores' bars: `BarBuilder` fed the same messages in the same
order gives the same bars, per venue and consolidated, on DuckDB and PostgreSQL."""

from __future__ import annotations

import itertools
from decimal import Decimal

import hypothesis
import msgspec
import pytest
from hypothesis import strategies as st

from bourse.analytics.bars import Bar, BarBuilder
from bourse.analytics.timeframes import Timeframe
from bourse.history.bars import CONSOLIDATED
from bourse.history.store import Cursor, HistoryStore, RangeQuery
from bourse.model.marketdata import MarketData
from tests.analytics.factories import S, quote, trade
from tests.history.conftest import recorded

T0 = 1_700_000_000 * S
MINUTE = 60 * S
TIMEFRAMES = ("1s", "1Min", "5Min")
_symbols = itertools.count()
_seqs = itertools.count(1, 10_000)


def built(messages: list[MarketData], timeframe: str, *, consolidated: bool) -> list[Bar]:
    """What the analytics core makes of the messages, in arrival order."""
    builder = BarBuilder([timeframe])
    bars: list[Bar] = []
    for message in messages:
        if consolidated:
            message = msgspec.structs.replace(message, venue=CONSOLIDATED)
        bars += builder.on_message(message)
    bars += builder.flush(2**62)
    assert builder.late == 0
    return sorted(bars, key=lambda b: (b.symbol, b.venue, b.start_ts))


@st.composite
def sessions(draw: st.DrawFn) -> list[MarketData]:
    """Trades and quotes of two symbols on two venues over ~6 minutes, in arrival order: by
    second, and in any order within a second (the builder's open bar takes any order)."""
    n = next(_symbols)
    symbols = [f"S{n}A", f"S{n}B"]
    count = draw(st.integers(1, 60))
    messages = []
    for _ in range(count):
        symbol = draw(st.sampled_from(symbols))
        venue = draw(st.sampled_from(["nyse", "nasdaq"]))
        ts = T0 + draw(st.integers(0, 6 * 60 * 4)) * (S // 4)  # quarter seconds: ties happen
        price = Decimal(draw(st.integers(100, 130))) / 10
        if draw(st.booleans()):
            size = draw(st.integers(0, 50))  # size 0 prints exist: no VWAP from them alone
            messages.append(trade(price, size, ts, venue=venue, symbol=symbol))
        else:
            ask = price + Decimal(draw(st.integers(0, 3))) / 100
            messages.append(quote(price, ask, ts, venue=venue, symbol=symbol))
    return sorted(messages, key=lambda m: m.ts // S)


def from_sql(
    store: HistoryStore, messages: list[MarketData], tf: str, venue: str | None
) -> list[Bar]:
    symbols = tuple(sorted({m.symbol for m in messages}))
    query = RangeQuery(symbols=symbols, venue=venue, limit=None)
    return store.bars(query, Timeframe.parse(tf))


@hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(messages=sessions())
def test_sql_bars_are_the_bar_builders(store: HistoryStore, messages: list[MarketData]) -> None:
    store.ingest(recorded(messages, first_seq=next(_seqs)))
    for tf in TIMEFRAMES:
        consolidated = built(messages, tf, consolidated=True)
        assert from_sql(store, messages, tf, None) == consolidated
        per_venue = built(messages, tf, consolidated=False)
        for venue in ("nyse", "nasdaq"):
            mine = [b for b in per_venue if b.venue == venue]
            assert sorted(from_sql(store, messages, tf, venue), key=lambda b: b.symbol) == sorted(
                mine, key=lambda b: b.symbol
            )


def test_a_minute_by_hand(store: HistoryStore) -> None:
    store.ingest(
        recorded(
            [
                quote("99.00", "99.10", T0 + 1 * S, venue="nasdaq"),  # nasdaq never prints
                trade("100.00", 10, T0 + 2 * S),
                trade("101.00", 30, T0 + 3 * S),
                trade("99.50", 10, T0 + 3 * S),  # same time as the one before: it closes
                quote("98.00", "98.20", T0 + MINUTE + S, venue="nasdaq"),  # quotes only
                quote("98.40", "98.60", T0 + MINUTE + 2 * S, venue="nasdaq"),
            ]
        )
    )
    minute = Timeframe.parse("1Min")
    start = T0 - T0 % MINUTE
    first, second = store.bars(RangeQuery(symbols=("AAPL",)), minute)
    assert (first.start_ts, first.venue, first.source) == (start, CONSOLIDATED, "trades")
    assert (first.open, first.high, first.low, first.close) == (
        Decimal("100.00"), Decimal("101.00"), Decimal("99.50"), Decimal("99.50")
    )  # fmt: skip
    assert (first.volume, first.trade_count) == (Decimal(50), 3)
    assert first.vwap == Decimal("100.50")  # (1000 + 3030 + 995) / 50 = 100.5, 2 places
    assert (second.source, second.open, second.close) == (
        "quotes",
        Decimal("98.10"),
        Decimal("98.50"),
    )
    assert (second.volume, second.trade_count, second.vwap) == (Decimal(0), 0, None)
    (nasdaq, _) = store.bars(RangeQuery(symbols=("AAPL",), venue="nasdaq"), minute)
    assert (nasdaq.source, nasdaq.open, nasdaq.venue) == ("quotes", Decimal("99.05"), "nasdaq")


def test_whole_bars_starting_within_the_range(store: HistoryStore) -> None:
    start = T0 - T0 % MINUTE
    store.ingest(recorded([trade("10", 1, start + i * MINUTE + 5 * S) for i in range(5)]))
    minute = Timeframe.parse("1Min")

    def starts(**bounds: int) -> list[int]:
        found = store.bars(RangeQuery(symbols=("AAPL",), **bounds), minute)  # type: ignore[arg-type]
        return [(b.start_ts - start) // MINUTE for b in found]

    assert starts() == [0, 1, 2, 3, 4]
    # a start inside a bar leaves that bar out (its start is before); the end is inclusive
    assert starts(start=start + 30 * S, end=start + 3 * MINUTE) == [1, 2, 3]
    assert starts(start=start + MINUTE, end=start + 3 * MINUTE - 1) == [1, 2]


def test_bar_pages_continue_after_the_last_bar(store: HistoryStore) -> None:
    start = T0 - T0 % MINUTE
    store.ingest(
        recorded(
            [
                trade("10", 1, start + i * MINUTE, symbol=symbol)
                for symbol in ("AAPL", "MSFT")
                for i in range(4)
            ]
        )
    )
    minute = Timeframe.parse("1Min")
    for descending in (False, True):
        whole = store.bars(RangeQuery(symbols=("AAPL", "MSFT"), descending=descending), minute)
        assert len(whole) == 8
        pages, after = [], None
        while True:
            query = RangeQuery(
                symbols=("MSFT", "AAPL"), limit=3, descending=descending, after=after
            )
            page = store.bars(query, minute)
            pages += page
            if len(page) < 3:
                break
            after = Cursor(page[-1].symbol, page[-1].start_ts)
        assert pages == whole
        assert [b.symbol for b in whole] == ["AAPL"] * 4 + ["MSFT"] * 4


@pytest.mark.parametrize("timeframe", ["1Hour", "1Day"])
def test_coarse_bars_roll_up_every_venue(store: HistoryStore, timeframe: str) -> None:
    messages: list[MarketData] = [
        trade("10.00", 1, T0, venue="nyse"),
        trade("12.00", 1, T0 + 10 * MINUTE, venue="nasdaq"),
        trade("11.00", 2, T0 + 20 * MINUTE, venue="nyse"),
    ]
    store.ingest(recorded(messages))
    assert from_sql(store, messages, timeframe, None) == built(
        messages, timeframe, consolidated=True
    )
