from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bourse.analytics.arbitrage import (
    ArbitrageClosed,
    ArbitrageConfig,
    ArbitrageDetector,
    ArbitrageEvent,
    ArbitrageOpened,
)
from bourse.analytics.messages import decode, encode
from bourse.errors import ConfigError
from bourse.model.marketdata import Quote
from tests.analytics.factories import S, quote

D = Decimal

FEES = ArbitrageConfig(fees_bps={"nyse": D(3), "nasdaq": D(2)}, max_age_ns=5 * S)


def test_a_crossing_net_of_fees_opens_once_with_hand_computed_edge() -> None:
    detector = ArbitrageDetector(FEES)
    assert detector.on_quote(quote("99.90", "100.00", 1 * S, venue="nyse", ask_size=300)) == []
    events = detector.on_quote(quote("100.10", "100.20", 2 * S, venue="nasdaq", bid_size=200))
    # 100.10 * (1 - 0.0002) - 100.00 * (1 + 0.0003) = 100.07998 - 100.03
    assert events == [
        ArbitrageOpened(
            id="AAPL.nyse.nasdaq.2000000000",
            symbol="AAPL",
            ts=2 * S,
            buy_venue="nyse",
            buy_price=D("100.00"),
            buy_size=D(300),
            sell_venue="nasdaq",
            sell_price=D("100.10"),
            sell_size=D(200),
            size=D(200),
            edge=D("0.049980"),
            edge_bps=D("4.998"),
            profit=D("9.996000"),
        )
    ]
    assert decode(encode(events[0])) == events[0]
    assert b'"edge":"0.049980"' in encode(events[0])  # price places + 4


def test_one_event_per_crossing_however_often_it_ticks_then_closed_and_re_armed() -> None:
    detector = ArbitrageDetector(FEES)
    detector.on_quote(quote("99.90", "100.00", 1 * S, venue="nyse"))
    (opened,) = detector.on_quote(quote("100.10", "100.20", 2 * S, venue="nasdaq"))
    # Still crossed, prices moving: nothing new.
    assert detector.on_quote(quote("100.20", "100.30", 3 * S, venue="nasdaq")) == []
    assert detector.on_quote(quote("99.95", "100.01", 3 * S, venue="nyse")) == []
    assert detector.open_opportunities("AAPL") == [opened]
    (closed,) = detector.on_quote(quote("100.00", "100.05", 4 * S, venue="nasdaq"))
    assert closed == ArbitrageClosed(
        id=opened.id,
        symbol="AAPL",
        ts=4 * S,
        buy_venue="nyse",
        sell_venue="nasdaq",
        opened_ts=2 * S,
        duration_ns=2 * S,
        reason="gone",
        # best seen: 100.20 * 0.9998 - 100.00 * 1.0003 = 0.14996
        peak_edge=D("0.14996"),
    )
    assert detector.on_quote(quote("100.00", "100.05", 5 * S, venue="nasdaq")) == []
    (again,) = detector.on_quote(quote("100.30", "100.40", 6 * S, venue="nasdaq"))
    assert isinstance(again, ArbitrageOpened) and again.id == "AAPL.nyse.nasdaq.6000000000"
    assert decode(encode(closed)) == closed


def test_fees_can_cancel_a_gross_crossing() -> None:
    detector = ArbitrageDetector(ArbitrageConfig(default_fee_bps=D(1)))
    detector.on_quote(quote("99.90", "100.00", 1 * S, venue="nyse"))
    # 100.02 * 0.9999 - 100.00 * 1.0001 = -0.000002
    assert detector.on_quote(quote("100.02", "100.10", 1 * S, venue="nasdaq")) == []
    opened = detector.on_quote(quote("100.03", "100.10", 1 * S, venue="nasdaq"))
    assert [e.edge for e in opened if isinstance(e, ArbitrageOpened)] == [D("0.009997")]


def test_stale_quotes_never_open_and_going_stale_closes() -> None:
    detector = ArbitrageDetector(FEES)
    detector.on_quote(quote("99.90", "100.00", 0, venue="nyse"))
    assert detector.on_quote(quote("100.50", "100.60", 6 * S, venue="nasdaq")) == []
    detector.on_quote(quote("99.90", "100.00", 7 * S, venue="nyse"))  # fresh again: opens
    assert len(detector.open_opportunities("AAPL")) == 1
    assert detector.expire(11 * S) == []  # nasdaq is 5 s old: still fresh
    (closed,) = detector.expire(11 * S + 1)
    assert isinstance(closed, ArbitrageClosed)
    assert (closed.reason, closed.duration_ns) == ("stale", 4 * S + 1)
    assert detector.expire(20 * S) == []


def test_a_pair_that_closes_and_reopens_at_the_same_instant_gets_a_new_id() -> None:
    # Quotes often share a timestamp (a feed's whole tick is stamped at once).
    detector = ArbitrageDetector(FEES)
    detector.on_quote(quote("99.90", "100.00", 1 * S, venue="nyse"))
    (first,) = detector.on_quote(quote("100.50", "100.60", 1 * S, venue="nasdaq"))
    (closed,) = detector.on_quote(quote("99.95", "100.60", 1 * S, venue="nasdaq"))
    (second,) = detector.on_quote(quote("100.50", "100.60", 1 * S, venue="nasdaq"))
    assert [e.id for e in (first, closed, second)] == [
        "AAPL.nyse.nasdaq.1000000000",
        "AAPL.nyse.nasdaq.1000000000",
        "AAPL.nyse.nasdaq.1000000000.2",
    ]
    assert isinstance(closed, ArbitrageClosed) and closed.duration_ns == 0


def test_a_side_without_size_is_not_executable() -> None:
    detector = ArbitrageDetector()
    detector.on_quote(quote("99.90", "100.00", 1 * S, venue="nyse", ask_size=0))
    assert detector.on_quote(quote("100.50", "100.60", 1 * S, venue="nasdaq")) == []


def test_min_edge_opens_above_the_threshold_and_closes_only_at_zero() -> None:
    detector = ArbitrageDetector(ArbitrageConfig(min_edge_bps=D(5)))
    detector.on_quote(quote("99.90", "100.00", 1 * S, venue="nyse"))
    assert detector.on_quote(quote("100.05", "100.20", 1 * S, venue="nasdaq")) == []  # 5 bps
    (opened,) = detector.on_quote(quote("100.06", "100.20", 2 * S, venue="nasdaq"))
    assert isinstance(opened, ArbitrageOpened) and opened.edge_bps == D(6)
    assert detector.on_quote(quote("100.01", "100.20", 3 * S, venue="nasdaq")) == []  # 1 bp
    (closed,) = detector.on_quote(quote("100.00", "100.20", 4 * S, venue="nasdaq"))
    assert isinstance(closed, ArbitrageClosed) and closed.reason == "gone"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError):
        ArbitrageConfig(fees_bps={"nyse": D(-1)})
    with pytest.raises(ConfigError):
        ArbitrageConfig(min_edge_bps=D("NaN"))


# --- exactly once per crossing, against a model ------------------------------------------

VENUES = ("nyse", "nasdaq", "arca")
CONFIG = ArbitrageConfig(
    fees_bps={"nyse": D("0.5"), "nasdaq": D(1)}, default_fee_bps=D(0), max_age_ns=3 * S
)

steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2 * S),  # time passes
        st.sampled_from(VENUES),
        st.integers(min_value=9_990, max_value=10_010),  # bid, cents
        st.integers(min_value=0, max_value=6),  # spread, cents
        st.integers(min_value=0, max_value=2),  # bid size
        st.integers(min_value=0, max_value=2),  # ask size
        st.booleans(),  # the shell calls expire() before the quote
    ),
    max_size=50,
)


def crossed(buy: Quote, sell: Quote, now: int) -> bool:
    """The model: both fresh, both sized, a positive edge after fees, in exact fractions."""
    if now - buy.ts > CONFIG.max_age_ns or now - sell.ts > CONFIG.max_age_ns:
        return False
    if not buy.ask_size or not sell.bid_size:
        return False
    sell_fee = Fraction(CONFIG.fee_bps(sell.venue)) / 10_000
    buy_fee = Fraction(CONFIG.fee_bps(buy.venue)) / 10_000
    return Fraction(sell.bid) * (1 - sell_fee) - Fraction(buy.ask) * (1 + buy_fee) > 0


@given(steps)
def test_exactly_one_opening_per_crossing_and_one_closing_when_it_ends(
    script: list[tuple[int, str, int, int, int, int, bool]],
) -> None:
    detector = ArbitrageDetector(CONFIG)
    latest: dict[str, Quote] = {}
    was_crossed: dict[tuple[str, str], bool] = {}
    now = 0
    events: list[ArbitrageEvent] = []
    expected_openings = expected_closings = 0

    def check(now: int) -> None:
        nonlocal expected_openings, expected_closings
        for buy in latest.values():
            for sell in latest.values():
                if buy.venue == sell.venue:
                    continue
                pair = (buy.venue, sell.venue)
                is_crossed = crossed(buy, sell, now)
                if is_crossed and not was_crossed.get(pair, False):
                    expected_openings += 1
                elif was_crossed.get(pair, False) and not is_crossed:
                    expected_closings += 1
                was_crossed[pair] = is_crossed

    for elapsed, venue, bid, spread, bid_size, ask_size, expire_first in script:
        now += elapsed
        if expire_first:
            events += detector.expire(now)
            check(now)
        q = quote(
            D(bid).scaleb(-2),
            D(bid + spread).scaleb(-2),
            now,
            venue=venue,
            bid_size=bid_size,
            ask_size=ask_size,
        )
        latest[venue] = q
        events += detector.on_quote(q)
        check(now)

    openings = [e for e in events if isinstance(e, ArbitrageOpened)]
    closings = [e for e in events if isinstance(e, ArbitrageClosed)]
    assert len(openings) == expected_openings
    assert len({o.id for o in openings}) == len(openings)
    assert len(closings) == expected_closings
    # Per pair: opened, closed, opened, ... each closing naming the opening before it.
    for buy in VENUES:
        for sell in VENUES:
            mine = [e for e in events if (e.buy_venue, e.sell_venue) == (buy, sell)]
            assert [type(e) for e in mine] == [ArbitrageOpened, ArbitrageClosed] * (
                len(mine) // 2
            ) + [ArbitrageOpened] * (len(mine) % 2)
            for opening, closing in zip(mine[::2], mine[1::2], strict=False):
                assert isinstance(closing, ArbitrageClosed) and closing.id == opening.id
                assert closing.duration_ns == closing.ts - opening.ts >= 0
    still_open = {o.id for o in openings} - {c.id for c in closings}
    assert {o.id for o in detector.open_opportunities("AAPL")} == still_open
