"""The analytics service over a real nats-server: MARKET_DATA in, ANALYTICS out.

Market time follows the venues' timestamps and, once the service is caught up, an injected
wall clock: the tests move that clock to let bars close and quotes go stale, never sleep.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from bourse.analytics import messages
from bourse.analytics.arbitrage import ArbitrageClosed, ArbitrageConfig, ArbitrageOpened
from bourse.analytics.bars import Bar, BarBuilder
from bourse.analytics.indicators import BarIndicators, MovingAverages
from bourse.analytics.messages import AnalyticsMessage
from bourse.analytics.nbbo import Nbbo
from bourse.analytics.pipeline import CONSOLIDATED, AnalyticsConfig
from bourse.analytics.service import AnalyticsService
from bourse.bus.publisher import MSG_ID_HEADER
from bourse.bus.snapshots import SnapshotStore
from bourse.bus.streams import ANALYTICS
from bourse.model import marketdata, subjects
from bourse.model.marketdata import MarketData
from tests.analytics.factories import T0, S, quote, simulated, trade
from tests.conftest import eventually

HOUR = 3600 * S


class ManualClock:
    """A wall clock the test moves."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ns: int) -> None:
        self.now += ns


Published = tuple[str, str, AnalyticsMessage]  # subject, message id, message


async def published(js: JetStreamContext, pattern: str = "analytics.>") -> list[Published]:
    """Everything ANALYTICS holds on `pattern`, in stream order."""
    info = await js.stream_info(ANALYTICS.name, subjects_filter=pattern)
    total = sum((info.state.subjects or {}).values())
    if not total:
        return []
    subscription = await js.subscribe(pattern, ordered_consumer=True)
    try:
        found = []
        for _ in range(total):
            msg = await subscription.next_msg(timeout=5)
            msg_id = (msg.headers or {}).get(MSG_ID_HEADER, "")
            found.append((msg.subject, msg_id, messages.decode(msg.data)))
    finally:
        await subscription.unsubscribe()
    return found


async def until_published(js: JetStreamContext, pattern: str, count: int) -> list[Published]:
    """What ANALYTICS holds on `pattern` once it holds at least `count` messages."""

    async def enough() -> bool:
        return len(await published(js, pattern)) >= count

    await eventually(enough, message=f"fewer than {count} messages on {pattern}")
    return await published(js, pattern)


async def feed(js: JetStreamContext, batch: list[MarketData]) -> None:
    for message in batch:
        await js.publish(
            subjects.market_data(message.venue, message.symbol), marketdata.encode(message)
        )


def config(**overrides: object) -> AnalyticsConfig:
    settings: dict[str, object] = {
        "timeframes": ("1Sec", "1Min"),
        "start": "first",
        "tick_interval": 0.02,
    }
    return AnalyticsConfig(**{**settings, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def running(js: JetStreamContext) -> AsyncIterator[list[AnalyticsService]]:
    """Services started by a test, stopped at its end."""
    services: list[AnalyticsService] = []
    yield services
    for service in services:
        await service.stop()


async def start(
    nc: NATS, running: list[AnalyticsService], clock: ManualClock, settings: AnalyticsConfig
) -> AnalyticsService:
    service = await AnalyticsService(nc, settings, clock=clock).start()
    running.append(service)
    return service


async def test_bars_for_a_trading_venue_and_for_a_venue_that_only_quotes(
    nc: NATS, js: JetStreamContext, clock: ManualClock, running: list[AnalyticsService]
) -> None:
    service = await start(nc, running, clock, config())
    await feed(
        js,
        [
            trade("100.00", 10, T0 + 100, venue="nyse"),
            trade("101.00", 30, T0 + 200, venue="nyse"),
            quote("99.00", "101.00", T0 + 300, venue="arca"),
            quote("100.00", "102.00", T0 + 400, venue="arca"),
        ],
    )
    await service.wait_caught_up()
    assert await published(js, "analytics.bars.>") == []  # the second is not over yet
    clock.advance(2 * S)  # quiet market: the timer closes the bars
    bars = {s: m for s, _, m in await until_published(js, "analytics.bars.>", 3)}
    assert set(bars) == {
        "analytics.bars.1Sec.nyse.AAPL",
        "analytics.bars.1Sec.arca.AAPL",
        "analytics.bars.1Sec.consolidated.AAPL",  # every venue's: nyse's trades
    }
    traded, quoted = bars["analytics.bars.1Sec.nyse.AAPL"], bars["analytics.bars.1Sec.arca.AAPL"]
    assert isinstance(traded, Bar) and isinstance(quoted, Bar)
    assert (traded.open, traded.close, traded.volume, traded.trade_count) == (
        Decimal("100.00"),
        Decimal("101.00"),
        Decimal(40),
        2,
    )
    assert traded.vwap == Decimal("100.75") and traded.source == "trades"
    consolidated = bars["analytics.bars.1Sec.consolidated.AAPL"]
    assert consolidated == msgspec.structs.replace(traded, venue="consolidated")
    assert (quoted.open, quoted.close, quoted.source, quoted.volume) == (
        Decimal(100),
        Decimal(101),
        "quotes",
        Decimal(0),
    )
    vwaps = await published(js, "analytics.vwap.>")
    assert [s for s, _, _ in vwaps] == ["analytics.vwap.nyse.AAPL"]  # arca never printed
    clock.advance(HOUR)
    minute = await until_published(js, "analytics.bars.1Min.>", 3)
    assert sorted(s for s, _, _ in minute) == [
        "analytics.bars.1Min.arca.AAPL",
        "analytics.bars.1Min.consolidated.AAPL",
        "analytics.bars.1Min.nyse.AAPL",
    ]
    assert service.stats.ticks_in == 4 and service.stats.lag_messages == 0


async def test_a_symbol_or_venue_that_cannot_be_a_subject_token_is_skipped(
    nc: NATS, js: JetStreamContext, clock: ManualClock, running: list[AnalyticsService]
) -> None:
    # Outputs are published on `analytics.bars.<tf>.<venue>.<symbol>` from the message's own
    # symbol and venue: one with a space, a dot or a wildcard in them used to stop the
    # service for good (it could not publish, and every restart read the same message).
    service = await start(nc, running, clock, config())
    good = [trade("100.00", 10, T0 + 100), trade("101.00", 30, T0 + 200)]
    bad = [
        trade("100.50", 1, T0 + 150, symbol="AA PL"),
        trade("100.50", 1, T0 + 150, symbol="AAPL.X"),
        trade("100.50", 1, T0 + 150, venue="ny.se"),
        quote("99.00", "101.00", T0 + 160, venue="*"),
        quote("99.00", "101.00", T0 + 160, symbol=">"),
        trade("100.50", 1, T0 + 170, symbol="AAPL\n"),  # `$` alone lets a final \n through
        trade("100.50", 1, T0 + 170, venue="nyse\n"),
    ]
    subject = subjects.market_data("nyse", "AAPL")
    for message in [good[0], *bad, good[1]]:
        await js.publish(subject, marketdata.encode(message))
    await service.wait_caught_up()  # raises the error of a service that failed
    assert service.stats.skipped == len(bad)
    assert service.stats.ticks_in == len(good)
    clock.advance(2 * S)
    bars = {s: m for s, _, m in await until_published(js, "analytics.bars.1Sec.>", 2)}
    assert set(bars) == {"analytics.bars.1Sec.nyse.AAPL", "analytics.bars.1Sec.consolidated.AAPL"}
    bar = bars["analytics.bars.1Sec.nyse.AAPL"]
    assert isinstance(bar, Bar) and (bar.volume, bar.trade_count) == (Decimal(40), 2)


async def test_nbbo_across_two_venues_goes_stale_venue_by_venue(
    nc: NATS, js: JetStreamContext, clock: ManualClock, running: list[AnalyticsService]
) -> None:
    service = await start(nc, running, clock, config(nbbo_max_age_ns=5 * S))
    await feed(js, [quote("100.00", "101.00", T0, venue="nyse")])
    await service.wait_caught_up()
    await feed(js, [quote("100.50", "101.50", T0 + 3 * S, venue="arca")])
    await service.wait_caught_up()
    nbbos = [m for _, _, m in await published(js, "analytics.nbbo.AAPL")]
    assert all(isinstance(n, Nbbo) for n in nbbos)
    both = nbbos[-1]
    assert isinstance(both, Nbbo)
    assert (both.bid, both.bid_venues, both.ask, both.ask_venues, both.status) == (
        Decimal("100.50"),
        ["arca"],
        Decimal("101.00"),
        ["nyse"],
        "normal",
    )
    # 3 s after the arca quote, nyse's is 6 s old: stale, so the NBBO is arca's alone.
    clock.advance(3 * S)

    async def latest() -> Nbbo:
        found = [m for _, _, m in await published(js, "analytics.nbbo.AAPL")]
        assert isinstance(found[-1], Nbbo)
        return found[-1]

    async def stale_venues_are(venues: list[str]) -> bool:
        return (await latest()).stale_venues == venues

    await eventually(lambda: stale_venues_are(["nyse"]))
    arca_only = await latest()
    assert (arca_only.bid, arca_only.ask, arca_only.fresh_venues) == (
        Decimal("100.50"),
        Decimal("101.50"),
        ["arca"],
    )
    clock.advance(3 * S)  # now arca's is 6 s old too
    await eventually(lambda: stale_venues_are(["arca", "nyse"]))
    gone = await latest()
    assert gone.status == "stale" and gone.bid is None and gone.ask is None


async def test_an_arbitrage_crossing_opens_once_and_closes_net_of_fees(
    nc: NATS, js: JetStreamContext, clock: ManualClock, running: list[AnalyticsService]
) -> None:
    fees = ArbitrageConfig(fees_bps={"nyse": Decimal(10), "arca": Decimal(10)}, max_age_ns=5 * S)
    service = await start(nc, running, clock, config(arbitrage=fees))
    await feed(
        js,
        [
            quote("100.00", "100.10", T0, venue="nyse"),
            # Crossed by 0.10: less than 10 bp on each side, so no opportunity.
            quote("100.20", "100.30", T0 + 1, venue="arca"),
            # Crossed by 0.50: opens, once, however the prices tick while it stays open.
            quote("100.60", "100.70", T0 + 2, venue="arca"),
            quote("100.70", "100.80", T0 + 3, venue="arca"),
            quote("100.00", "100.05", T0 + 4, venue="nyse"),
            # Back below the ask after fees: closes.
            quote("100.00", "100.10", T0 + S, venue="arca"),
            # A second crossing, which ends when the quotes go stale.
            quote("101.00", "101.10", T0 + 2 * S, venue="arca"),
        ],
    )
    await service.wait_caught_up()
    clock.advance(10 * S)
    events = [m for _, _, m in await until_published(js, "analytics.arb.AAPL", 4)]
    assert [type(e).__name__ for e in events] == [
        "ArbitrageOpened",
        "ArbitrageClosed",
        "ArbitrageOpened",
        "ArbitrageClosed",
    ]
    first, first_closed, second, second_closed = events
    assert isinstance(first, ArbitrageOpened) and isinstance(first_closed, ArbitrageClosed)
    assert isinstance(second, ArbitrageOpened) and isinstance(second_closed, ArbitrageClosed)
    assert (first.buy_venue, first.buy_price, first.sell_venue, first.sell_price) == (
        "nyse",
        Decimal("100.10"),
        "arca",
        Decimal("100.60"),
    )
    assert first.size == Decimal(100) and first.ts == T0 + 2
    assert first.edge == Decimal("100.60") * Decimal("0.999") - Decimal("100.10") * Decimal("1.001")
    assert (first_closed.id, first_closed.reason) == (first.id, "gone")
    assert first_closed.duration_ns == S - 2
    assert (second_closed.id, second_closed.reason) == (second.id, "stale")
    assert len(await published(js, "analytics.arb.AAPL")) == 4


async def test_bars_from_the_stream_equal_the_pure_cores_whether_read_late_or_live(
    nc: NATS, js: JetStreamContext, clock: ManualClock, running: list[AnalyticsService]
) -> None:
    settings = config(timeframes=("1Sec", "5Sec"), sma_periods=(3,), ema_periods=(2,))
    market = simulated(120, seed=7)  # ~18 s of market time, several symbols and venues
    half = len(market) // 2
    await feed(js, market[:half])  # read as a replay when the service starts ...
    service = await start(nc, running, clock, settings)
    await service.wait_caught_up()
    await feed(js, market[half:])  # ... and the rest live
    await service.wait_caught_up()
    clock.advance(HOUR)  # close whatever is still open
    expected_bars = _one_pass(settings, market)
    found = await until_published(js, "analytics.bars.>", len(expected_bars))
    assert _by_series([m for _, _, m in found]) == _by_series(expected_bars)
    averages = MovingAverages(sma_periods=(3,), ema_periods=(2,))
    expected_indicators = [averages.on_bar(bar) for bar in expected_bars]
    indicators = [m for _, _, m in await published(js, "analytics.indicators.>")]
    assert all(isinstance(i, BarIndicators) for i in indicators)
    assert _by_series(indicators) == _by_series(expected_indicators)


async def test_a_restart_publishes_no_bar_twice_and_misses_none(
    nc: NATS, js: JetStreamContext, clock: ManualClock, running: list[AnalyticsService]
) -> None:
    settings = config(timeframes=("1Sec", "5Sec"), snapshot_interval=3600.0)
    market = simulated(150, seed=3)
    thirds = len(market) // 3
    first = await start(nc, running, clock, settings)
    await feed(js, market[:thirds])
    await first.wait_caught_up()
    await first.checkpoint()  # the snapshot the next run starts from ...
    await feed(js, market[thirds : 2 * thirds])
    await first.wait_caught_up()
    published_after_snapshot = first.stats.messages_out
    await first.abort()  # ... and a crash after more bars went out
    running.remove(first)
    assert published_after_snapshot > 0

    second = await start(nc, running, clock, settings)
    await feed(js, market[2 * thirds :])
    await second.wait_caught_up()
    assert second.stats.restored_seq == thirds
    assert second.stats.suppressed > 0  # found in ANALYTICS, not sent again
    await second.stop()  # a clean stop: the snapshot covers everything
    running.remove(second)

    third = await start(nc, running, clock, settings)
    await third.wait_caught_up()
    assert third.stats.restored_seq == len(market) and third.stats.suppressed == 0
    clock.advance(HOUR)
    expected = _one_pass(settings, market)
    found = await until_published(js, "analytics.bars.>", len(expected))
    ids = Counter(msg_id for _, msg_id, _ in found)
    assert [i for i, n in ids.items() if n > 1] == []
    assert _by_series([m for _, _, m in found]) == _by_series(expected)


async def test_stop_saves_a_snapshot_and_the_consumer_is_gone(
    nc: NATS, js: JetStreamContext, clock: ManualClock, running: list[AnalyticsService]
) -> None:
    service = await start(nc, running, clock, config())
    await feed(js, [trade("100.00", 1, T0)])
    await service.wait_caught_up()
    await service.stop()
    running.remove(service)
    snapshot = await SnapshotStore(nc).load("analytics")
    assert snapshot is not None and snapshot.input_seq == 1
    consumers = await js.consumers_info("MARKET_DATA")
    assert consumers == []


def _one_pass(settings: AnalyticsConfig, market: list[MarketData]) -> list[Bar]:
    """The pure core's bars: per venue, and consolidated as the history service makes them
    (`BarBuilder` fed every venue's messages as the pseudo-venue `consolidated`)."""
    builder = BarBuilder(settings.timeframes)
    bars = [bar for message in market for bar in builder.on_message(message)]
    consolidated = BarBuilder(settings.timeframes)
    bars += [
        bar
        for message in market
        for bar in consolidated.on_message(msgspec.structs.replace(message, venue=CONSOLIDATED))
    ]
    assert builder.late == consolidated.late == 0
    return bars + builder.flush(2**62) + consolidated.flush(2**62)


def _by_series(found: Sequence[object]) -> list[tuple[str, str, str, int, object]]:
    """Bars or indicators in a canonical order (the stream interleaves series)."""
    keyed = []
    for item in found:
        assert isinstance(item, Bar | BarIndicators)
        keyed.append((item.symbol, item.venue, item.timeframe, item.start_ts, item))
    return sorted(keyed, key=lambda k: k[:4])
