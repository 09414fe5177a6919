"""The pipeline (every analytics core behind one pure API): outputs, ids, and snapshots."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bourse.analytics.arbitrage import ArbitrageConfig, ArbitrageOpened
from bourse.analytics.bars import Bar
from bourse.analytics.indicators import BarIndicators, VwapUpdate
from bourse.analytics.nbbo import Nbbo
from bourse.analytics.pipeline import AnalyticsConfig, AnalyticsPipeline, Output
from bourse.analytics.timeframes import Timeframe
from bourse.model.marketdata import MarketData
from tests.analytics.factories import T0, S, quote, simulated, trade

MINUTE = 60 * S


def run(pipeline: AnalyticsPipeline, batch: list[MarketData], every: int = 50) -> list[Output]:
    out: list[Output] = []
    for i, message in enumerate(batch):
        pipeline.on_message(message)
        if i % every == every - 1:
            pipeline.advance(pipeline.event_ns)
            out.extend(pipeline.drain())
    pipeline.advance(pipeline.event_ns)
    out.extend(pipeline.drain())
    return out


def test_a_closed_bar_goes_out_with_its_indicators_and_the_vwap_at_its_end() -> None:
    pipeline = AnalyticsPipeline(AnalyticsConfig(timeframes=("1Sec", "1Min")))
    pipeline.on_message(trade("100.00", 10, T0 + 100))
    pipeline.on_message(trade("102.00", 30, T0 + 200))
    assert pipeline.drain() == []
    pipeline.on_message(trade("500.00", 1, T0 + S + 1))  # closes the first second
    out = pipeline.drain()
    assert [subject for subject, _, _ in out] == [
        "analytics.bars.1Sec.nyse.AAPL",
        "analytics.indicators.1Sec.nyse.AAPL",
        "analytics.vwap.nyse.AAPL",
        "analytics.bars.1Sec.consolidated.AAPL",  # every venue's: here nyse's alone
        "analytics.indicators.1Sec.consolidated.AAPL",
    ]
    (_, bar_id, bar), (_, _, indicators), (_, vwap_id, vwap), (_, _, consolidated), _ = out
    assert isinstance(consolidated, Bar)
    assert msgspec.structs.replace(consolidated, venue="nyse") == bar
    assert isinstance(bar, Bar) and bar.vwap == Decimal("101.50")
    assert bar_id == f"bar.1Sec.nyse.AAPL.{T0}"
    assert isinstance(indicators, BarIndicators) and indicators.close == Decimal("102.00")
    # The VWAP at the bar's end does not count the trade that closed the bar.
    assert isinstance(vwap, VwapUpdate) and vwap.session_vwap == Decimal("101.50")
    assert vwap_id == f"vwap.nyse.AAPL.{T0 + S}"


def test_bars_close_on_time_once_market_time_passes_their_end_and_the_lateness() -> None:
    config = AnalyticsConfig(timeframes=("1Sec",), allowed_lateness_ns=200_000_000)
    pipeline = AnalyticsPipeline(config)
    pipeline.on_message(quote("99", "101", T0 + 10))
    pipeline.advance(T0 + S + 199_000_000)
    assert _bars(pipeline.drain()) == []
    pipeline.advance(T0 + S + 200_000_000)
    [bar, consolidated] = _bars(pipeline.drain())
    assert isinstance(bar, Bar) and bar.source == "quotes" and bar.close == Decimal(100)
    assert consolidated == msgspec.structs.replace(bar, venue="consolidated")


def test_nbbo_changes_are_conflated_per_drain_and_ids_count_changes_at_one_instant() -> None:
    pipeline = AnalyticsPipeline(AnalyticsConfig())
    pipeline.on_message(quote("100.00", "100.20", T0, venue="nyse"))
    pipeline.on_message(quote("100.10", "100.30", T0, venue="arca"))
    [(subject, msg_id, nbbo)] = pipeline.drain()
    assert subject == "analytics.nbbo.AAPL" and msg_id == f"nbbo.AAPL.{T0}.1"  # computed once
    assert isinstance(nbbo, Nbbo) and nbbo.bid == Decimal("100.10") and nbbo.bid_venues == ["arca"]
    unconflated = AnalyticsPipeline(AnalyticsConfig(conflate_nbbo=False))
    unconflated.on_message(quote("100.00", "100.20", T0, venue="nyse"))
    unconflated.on_message(quote("100.10", "100.30", T0, venue="arca"))
    assert [msg_id for _, msg_id, _ in unconflated.drain()] == [
        f"nbbo.AAPL.{T0}.1",
        f"nbbo.AAPL.{T0}.2",
    ]


def test_arbitrage_events_carry_their_ids_and_close_when_time_makes_a_quote_stale() -> None:
    pipeline = AnalyticsPipeline(AnalyticsConfig(arbitrage=ArbitrageConfig(max_age_ns=S)))
    pipeline.on_message(quote("100.00", "100.10", T0, venue="nyse"))
    pipeline.on_message(quote("100.20", "100.30", T0, venue="arca"))
    [opened] = [o for o in pipeline.drain() if o[0] == "analytics.arb.AAPL"]
    assert isinstance(opened[2], ArbitrageOpened)
    assert opened[1] == f"arb.opened.AAPL.nyse.arca.{T0}"
    pipeline.advance(T0 + 2 * S)
    [closed] = [o for o in pipeline.drain() if o[0] == "analytics.arb.AAPL"]
    assert closed[1] == f"arb.closed.AAPL.nyse.arca.{T0}"


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(min_value=0, max_value=600), seed=st.integers(0, 3))
def test_snapshot_and_restore_anywhere_gives_the_same_outputs_as_one_pass(
    cut: int, seed: int
) -> None:
    messages = simulated(40, seed=seed)
    cut = min(cut, len(messages))
    config = AnalyticsConfig(timeframes=("1Sec", "2Sec"), sma_periods=(2,), ema_periods=(3,))
    whole = run(AnalyticsPipeline(config), messages)
    first = AnalyticsPipeline(config)
    before = run(first, messages[:cut])
    second = AnalyticsPipeline.restore(first.snapshot(), config)
    after = run(second, messages[cut:])
    assert second.snapshot() != b""
    # Conflation depends on where drains fall, so compare everything but superseded NBBOs.
    assert _without_nbbo(before + after) == _without_nbbo(whole)
    assert _last_nbbo(before + after) == _last_nbbo(whole)


def _bars(outputs: list[Output]) -> list[Bar]:
    return [o[2] for o in outputs if isinstance(o[2], Bar)]


def _without_nbbo(outputs: list[Output]) -> list[Output]:
    return [o for o in outputs if not isinstance(o[2], Nbbo)]


def _last_nbbo(outputs: list[Output]) -> dict[str, Nbbo]:
    return {o[2].symbol: o[2] for o in outputs if isinstance(o[2], Nbbo)}


def test_a_snapshot_taken_with_other_timeframes_is_refused() -> None:
    pipeline = AnalyticsPipeline(AnalyticsConfig(timeframes=("1Sec",)))
    with pytest.raises(ValueError, match="timeframes"):
        AnalyticsPipeline.restore(pipeline.snapshot(), AnalyticsConfig(timeframes=("1Min",)))


def test_a_snapshot_is_refused_while_outputs_wait_to_be_drained() -> None:
    pipeline = AnalyticsPipeline(AnalyticsConfig())
    pipeline.on_message(quote("100.00", "100.20", T0))
    with pytest.raises(RuntimeError):
        pipeline.snapshot()


def test_consolidated_bars_take_every_venues_trades_and_fall_back_to_every_venues_mids() -> None:
    pipeline = AnalyticsPipeline(AnalyticsConfig(timeframes=("1Sec", "1Min")))
    market: list[MarketData] = [
        quote("99.00", "101.00", T0 + 1, venue="arca"),  # second 0: quotes only, two venues
        quote("101.00", "103.00", T0 + 2, venue="bourse"),  # the exchange's own venue too
        trade("100.00", 10, T0 + S + 1, venue="nyse"),  # second 1: trades on two venues
        quote("90.00", "92.00", T0 + S + 2, venue="arca"),  # a quote: not in a trade bar
        trade("104.00", 30, T0 + S + 3, venue="bourse"),
    ]
    for message in market:
        pipeline.on_message(message)
    pipeline.advance(T0 + 2 * S + 500_000_000)
    consolidated = {
        bar.start_ts: bar for bar in _bars(pipeline.drain()) if bar.venue == "consolidated"
    }
    quoted, traded = consolidated[T0], consolidated[T0 + S]
    assert (quoted.source, quoted.open, quoted.high, quoted.close) == (
        "quotes",
        Decimal(100),
        Decimal(102),
        Decimal(102),
    )
    assert (traded.source, traded.open, traded.close, traded.volume, traded.trade_count) == (
        "trades",
        Decimal("100.00"),
        Decimal("104.00"),
        Decimal(40),
        2,
    )
    assert traded.vwap == Decimal("103.00") and traded.low == Decimal("100.00")
    pipeline.advance(T0 + 2 * MINUTE)
    out = pipeline.drain()
    [minute] = [b for b in _bars(out) if b.venue == "consolidated" and b.timeframe == "1Min"]
    assert (minute.source, minute.volume, minute.trade_count) == ("trades", Decimal(40), 2)
    assert ("analytics.bars.1Min.consolidated.AAPL", f"bar.1Min.consolidated.AAPL.{T0}") in [
        (subject, msg_id) for subject, msg_id, _ in out
    ]
    assert "analytics.indicators.1Min.consolidated.AAPL" in [subject for subject, _, _ in out]


def test_consolidated_bars_equal_the_history_services(tmp_path: Path) -> None:
    from bourse.history.bars import CONSOLIDATED
    from bourse.history.store import RangeQuery, open_store
    from tests.history.conftest import recorded

    messages = simulated(300, seed=5)  # 45 s, several symbols and venues, quotes and trades
    config = AnalyticsConfig(timeframes=("1Sec", "5Sec", "1Min"))
    pipeline = AnalyticsPipeline(config)
    out = run(pipeline, messages)
    pipeline.advance(2**62)
    built = [b for b in _bars(out + pipeline.drain()) if b.venue == CONSOLIDATED]
    assert pipeline.bars.late == 0
    symbols = tuple(sorted({m.symbol for m in messages}))
    with open_store(str(tmp_path / "history.duckdb"), home=tmp_path) as store:
        store.ingest(recorded(messages))
        for tf in config.timeframes:
            query = RangeQuery(symbols=symbols, venue=None, limit=None)
            from_sql = store.bars(query, Timeframe.parse(tf))
            mine = sorted(
                (b for b in built if b.timeframe == tf), key=lambda b: (b.symbol, b.start_ts)
            )
            assert from_sql == mine and len(mine) >= len(symbols)


def test_no_consolidated_bars_when_not_configured() -> None:
    pipeline = AnalyticsPipeline(AnalyticsConfig(timeframes=("1Sec",), consolidated_venue=None))
    out = run(pipeline, simulated(20))
    pipeline.advance(2**62)
    assert {b.venue for b in _bars(out + pipeline.drain())} >= {"nyse"}
    assert "consolidated" not in {b.venue for b in _bars(out)}
