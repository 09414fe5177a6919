from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bourse.analytics.bars import Bar, BarBuilder
from bourse.analytics.messages import decode, encode
from bourse.errors import ConfigError
from bourse.feed.simulator import Simulator
from bourse.model.marketdata import MarketData
from tests.analytics.factories import S, quote, trade

D = Decimal
MIN = 60 * S
FAR_FUTURE = 10**19


def test_trades_make_a_hand_computed_bar_when_a_later_bucket_arrives() -> None:
    builder = BarBuilder(["1Min"])
    assert builder.on_message(trade("10.00", 100, 1 * S)) == []
    assert builder.on_message(trade("11.00", 200, 20 * S)) == []
    assert builder.on_message(trade("13.00", 100, 40 * S)) == []
    assert builder.on_message(trade("12.00", 100, 59 * S)) == []
    closed = builder.on_message(trade("12.50", 10, 60 * S))
    # vwap = (1000 + 2200 + 1300 + 1200) / 500 = 5700 / 500
    assert closed == [
        Bar(
            symbol="AAPL",
            venue="nyse",
            timeframe="1Min",
            start_ts=0,
            end_ts=MIN,
            open=D("10.00"),
            high=D("13.00"),
            low=D("10.00"),
            close=D("12.00"),
            volume=D(500),
            trade_count=4,
            vwap=D("11.40"),
            source="trades",
        )
    ]


def test_a_vwap_that_does_not_terminate_is_rounded_to_price_places_plus_four() -> None:
    builder = BarBuilder(["1s"])
    builder.on_trade(trade("10.00", 1, 0))
    builder.on_trade(trade("11.00", 2, 1))
    (bar,) = builder.flush(S)
    assert bar.vwap == D("10.666667")  # 32 / 3
    assert (bar.low, bar.high) == (D("10.00"), D("11.00"))


def test_a_venue_without_trades_gets_a_bar_from_quote_mids_flagged_with_no_volume() -> None:
    builder = BarBuilder(["1Min"])
    builder.on_quote(quote("100.00", "100.02", 1 * S))  # mid 100.01
    builder.on_quote(quote("100.03", "100.06", 2 * S))  # mid 100.045
    builder.on_quote(quote("99.98", "100.00", 3 * S))  # mid 99.99
    builder.on_quote(quote("100.00", "100.04", 4 * S))  # mid 100.02
    builder.on_trade(trade("100.01", 5, 30 * S, venue="nasdaq"))
    bars = {b.venue: b for b in builder.flush(MIN)}
    nyse = bars["nyse"]
    assert nyse.source == "quotes"
    assert (nyse.open, nyse.high, nyse.low, nyse.close) == (
        D("100.01"),
        D("100.045"),
        D("99.99"),
        D("100.02"),
    )
    assert (nyse.volume, nyse.trade_count, nyse.vwap) == (D(0), 0, None)
    assert bars["nasdaq"].source == "trades"  # venues are kept apart


def test_trades_win_over_quotes_in_the_same_bar() -> None:
    builder = BarBuilder(["1Min"])
    builder.on_quote(quote("90.00", "90.02", 1 * S))
    builder.on_trade(trade("100.00", 1, 2 * S))
    builder.on_quote(quote("110.00", "110.02", 3 * S))
    (bar,) = builder.flush(MIN)
    assert (bar.source, bar.open, bar.high, bar.low, bar.close) == (
        "trades",
        D("100.00"),
        D("100.00"),
        D("100.00"),
        D("100.00"),
    )


def test_a_coarser_bar_uses_only_trades_when_some_of_its_seconds_had_trades() -> None:
    builder = BarBuilder(["1s", "1Min"])
    bars = builder.on_quote(quote("50.00", "50.02", 1 * S))  # this second: quotes only
    bars += builder.on_trade(trade("60.00", 3, 2 * S))
    bars += builder.on_trade(trade("61.00", 1, 3 * S))
    bars += builder.flush(MIN)
    seconds = [b for b in bars if b.timeframe == "1Sec"]
    (minute,) = [b for b in bars if b.timeframe == "1Min"]
    assert [b.source for b in seconds] == ["quotes", "trades", "trades"]
    assert (minute.source, minute.open, minute.low, minute.close) == (
        "trades",
        D("60.00"),
        D("60.00"),
        D("61.00"),
    )
    assert (minute.volume, minute.trade_count, minute.vwap) == (D(4), 2, D("60.25"))


def test_flush_closes_bars_by_time_in_a_quiet_market() -> None:
    builder = BarBuilder(["1s", "1Min"])
    builder.on_trade(trade("10.00", 1, 500_000_000))
    assert builder.flush(S - 1) == []
    (second,) = builder.flush(S)
    assert (second.timeframe, second.start_ts, second.end_ts) == ("1Sec", 0, S)
    assert builder.flush(MIN - 1) == []
    (minute,) = builder.flush(MIN)
    assert (minute.timeframe, minute.close) == ("1Min", D("10.00"))
    assert builder.flush(10 * MIN) == []  # nothing happened since: no empty bars


def test_a_message_in_a_new_minute_closes_the_previous_minute_at_once() -> None:
    builder = BarBuilder(["1s", "1Min"])
    builder.on_trade(trade("10.00", 1, 59 * S))
    closed = builder.on_trade(trade("11.00", 1, MIN + 1))
    assert [(b.timeframe, b.start_ts) for b in closed] == [("1Sec", 59 * S), ("1Min", 0)]


def test_late_messages_are_dropped_counted_and_never_change_a_closed_bar() -> None:
    builder = BarBuilder(["1s"])
    builder.on_trade(trade("10.00", 1, 5 * S))
    assert builder.on_trade(trade("99.00", 1, 4 * S)) == []  # older than the open bar
    assert builder.late == 1
    (bar,) = builder.flush(6 * S)
    assert bar.high == D("10.00")
    assert builder.on_trade(trade("99.00", 1, 5 * S + 1)) == []  # in a bar already closed
    assert builder.late == 2
    assert builder.flush(FAR_FUTURE) == []


def test_order_within_the_open_bar_does_not_matter_open_and_close_go_by_time() -> None:
    builder = BarBuilder(["1s"])
    builder.on_trade(trade("10.00", 1, 300))
    builder.on_trade(trade("9.00", 1, 100))  # earlier: the open
    builder.on_trade(trade("11.00", 1, 200))
    (bar,) = builder.flush(S)
    assert (bar.open, bar.high, bar.low, bar.close) == (
        D("9.00"),
        D("11.00"),
        D("9.00"),
        D("10.00"),
    )
    assert builder.late == 0


def test_prints_with_the_same_timestamp_open_and_close_in_arrival_order() -> None:
    builder = BarBuilder(["1s", "1Min"])
    for price in ("10.00", "10.50", "9.50", "10.20"):
        builder.on_trade(trade(price, 1, 0))
    (second,) = builder.on_trade(trade("10.10", 1, S))
    assert (second.open, second.close) == (D("10.00"), D("10.20"))
    minute = [b for b in builder.flush(MIN) if b.timeframe == "1Min"]
    assert [(b.open, b.close) for b in minute] == [(D("10.00"), D("10.10"))]


def test_only_the_configured_timeframes_are_emitted() -> None:
    builder = BarBuilder(["2Min", "3Min"])  # accumulated per minute, rolled up to both
    closed = builder.on_trade(trade("10.00", 1, 1 * S))
    closed += builder.on_trade(trade("12.00", 1, 150 * S))
    closed += builder.flush(6 * MIN)
    assert sorted((b.timeframe, b.start_ts, b.close) for b in closed) == [
        ("2Min", 0, D("10.00")),
        ("2Min", 2 * MIN, D("12.00")),
        ("3Min", 0, D("12.00")),
    ]


def test_partial_shows_the_bar_in_progress() -> None:
    builder = BarBuilder(["1s", "1Min"])
    assert builder.partial("AAPL", "nyse", "1Min") is None
    builder.on_trade(trade("10.00", 1, 1 * S))
    builder.on_trade(trade("12.00", 3, 2 * S))
    minute = builder.partial("AAPL", "nyse", "1Min")
    assert minute is not None
    assert (minute.start_ts, minute.open, minute.close, minute.volume) == (
        0,
        D("10.00"),
        D("12.00"),
        D(4),
    )
    second = builder.partial("AAPL", "nyse", "1s")
    assert second is not None and second.start_ts == 2 * S
    with pytest.raises(ConfigError):
        builder.partial("AAPL", "nyse", "5Min")
    # Looking does not change what closes.
    assert [b.volume for b in builder.flush(MIN) if b.timeframe == "1Min"] == [D(4)]


def test_bars_travel_as_json_with_decimal_strings() -> None:
    builder = BarBuilder(["1s"])
    builder.on_trade(trade("189.97", 100, 0))
    (bar,) = builder.flush(S)
    payload = encode(bar)
    assert b'"type":"bar"' in payload and b'"open":"189.97"' in payload
    assert decode(payload) == bar


def test_no_timeframes_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        BarBuilder([])


# --- properties ---------------------------------------------------------------------------

VENUES = ("nyse", "nasdaq")


STEPS = (0, 1, 100_000_000, S // 2, S, 7 * S, MIN, 5 * MIN)
JITTERS = (0, 0, 0, -S // 3, -3 * S, -2 * MIN)  # some messages arrive out of order

events = st.tuples(
    st.sampled_from(STEPS),
    st.sampled_from(JITTERS),
    st.sampled_from(VENUES),
    st.integers(min_value=9_000, max_value=11_000),  # price in cents
    st.one_of(st.none(), st.integers(min_value=0, max_value=500)),  # trade size, or a quote
    st.integers(min_value=0, max_value=7),  # quoted spread in cents
)


@st.composite
def streams(draw: st.DrawFn) -> list[MarketData]:
    """Trades and quotes on two venues, mostly in time order, some out of order."""
    ts = draw(st.integers(min_value=0, max_value=10 * MIN))
    messages: list[MarketData] = []
    for step, jitter, venue, cents, size, spread in draw(st.lists(events, max_size=60)):
        ts += step
        at = max(0, ts + jitter)
        price = D(cents).scaleb(-2)
        if size is not None:
            messages.append(trade(price, size, at, venue=venue))
        else:
            messages.append(quote(price, D(cents + spread).scaleb(-2), at, venue=venue))
    return messages


def run_one_pass(messages: list[MarketData], timeframes: list[str]) -> list[Bar]:
    builder = BarBuilder(timeframes)
    bars = [bar for message in messages for bar in builder.on_message(message)]
    return bars + builder.flush(FAR_FUTURE)


def by_series(bars: list[Bar]) -> dict[tuple[str, str, str], list[Bar]]:
    series: dict[tuple[str, str, str], list[Bar]] = defaultdict(list)
    for bar in bars:
        series[(bar.symbol, bar.venue, bar.timeframe)].append(bar)
    return dict(series)


TIMEFRAMES = ["1s", "1Min", "5Min", "1Hour"]


@settings(max_examples=200)
@given(streams())
def test_every_bar_is_well_formed(messages: list[MarketData]) -> None:
    for bar in run_one_pass(messages, TIMEFRAMES):
        assert bar.high >= bar.open >= bar.low
        assert bar.high >= bar.close >= bar.low
        assert bar.start_ts < bar.end_ts
        if bar.vwap is not None:
            assert bar.low <= bar.vwap <= bar.high
        if bar.source == "quotes":
            assert (bar.volume, bar.trade_count, bar.vwap) == (D(0), 0, None)
        else:
            assert bar.trade_count > 0 and (bar.vwap is None) == (bar.volume == 0)


@settings(max_examples=200)
@given(streams())
def test_each_series_is_in_time_order_with_no_bar_twice(messages: list[MarketData]) -> None:
    for bars in by_series(run_one_pass(messages, TIMEFRAMES)).values():
        starts = [b.start_ts for b in bars]
        assert starts == sorted(set(starts))


@settings(max_examples=200)
@given(streams())
def test_coarser_bars_are_exact_roll_ups_of_the_finest(messages: list[MarketData]) -> None:
    series = by_series(run_one_pass(messages, TIMEFRAMES))
    for (symbol, venue, timeframe), bars in series.items():
        if timeframe == "1Sec":
            continue
        seconds = series[(symbol, venue, "1Sec")]
        for bar in bars:
            inside = [s for s in seconds if bar.start_ts <= s.start_ts < bar.end_ts]
            chosen = [s for s in inside if s.source == "trades"] or inside
            assert bar.source == chosen[0].source
            assert bar.open == chosen[0].open and bar.close == chosen[-1].close
            assert bar.high == max(s.high for s in chosen)
            assert bar.low == min(s.low for s in chosen)
            assert bar.volume == sum((s.volume for s in chosen), D(0))
            assert bar.trade_count == sum(s.trade_count for s in chosen)


@settings(max_examples=200)
@given(streams(), st.data())
def test_built_live_with_flushes_equals_built_in_one_pass(
    messages: list[MarketData], data: st.DataObject
) -> None:
    """Live: the shell flushes on its clock, at a watermark no later than data still to come."""
    builder = BarBuilder(TIMEFRAMES)
    live: list[Bar] = []
    for index, message in enumerate(messages):
        if data.draw(st.booleans()):
            watermark = min(m.ts for m in messages[index:])
            live += builder.flush(watermark)
        live += builder.on_message(message)
    live += builder.flush(FAR_FUTURE)
    assert by_series(live) == by_series(run_one_pass(messages, TIMEFRAMES))


@settings(max_examples=200)
@given(streams(), st.data())
def test_snapshot_restore_at_any_point_equals_one_pass(
    messages: list[MarketData], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(messages)))
    first = BarBuilder(TIMEFRAMES)
    bars = [bar for m in messages[:cut] for bar in first.on_message(m)]
    second = BarBuilder.restore(first.snapshot())
    bars += [bar for m in messages[cut:] for bar in second.on_message(m)]
    bars += second.flush(FAR_FUTURE)
    one_pass = BarBuilder(TIMEFRAMES)
    expected = [bar for m in messages for bar in one_pass.on_message(m)]
    assert bars == expected + one_pass.flush(FAR_FUTURE)
    assert second.late == one_pass.late


def test_simulated_market_replayed_equals_live() -> None:
    simulator = Simulator(seed=7)
    messages = [m for step in range(400) for m in simulator.tick(step * 250_000_000)]
    replayed = run_one_pass(messages, TIMEFRAMES)
    builder = BarBuilder(TIMEFRAMES)
    live: list[Bar] = []
    for message in messages:
        live += builder.flush(message.ts)  # the clock never runs ahead of the data
        live += builder.on_message(message)
    live += builder.flush(FAR_FUTURE)
    assert by_series(live) == by_series(replayed)
    minutes = [b for b in replayed if b.timeframe == "1Min"]
    assert {b.venue for b in minutes} == {"nyse", "nasdaq", "coinbase", "kraken"}
    assert all(b.source == "trades" and b.vwap is not None for b in minutes)
    assert builder.late == 0
