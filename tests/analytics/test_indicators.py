from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bourse.analytics.bars import Bar
from bourse.analytics.indicators import (
    DAY_NS,
    BarIndicators,
    Ema,
    MovingAverages,
    SessionVwap,
    Sma,
    VwapBook,
    WindowVwap,
)
from bourse.analytics.messages import decode, encode
from bourse.errors import ConfigError
from tests.analytics.factories import S, trade

D = Decimal


def feed(indicator: Sma | Ema, values: list[str]) -> list[Decimal | None]:
    return [indicator.update(D(v)) for v in values]


def test_sma_hand_computed() -> None:
    assert feed(Sma(3, price_places=2), ["1.00", "2.00", "3.00", "4.00", "6.00"]) == [
        None,
        None,
        D("2.00"),
        D("3.00"),
        D("4.333333"),  # 13 / 3, rounded to 2 + 4 places
    ]


def test_ema_is_seeded_by_the_sma_then_uses_alpha_two_over_n_plus_one() -> None:
    # period 3: alpha = 0.5; seed = (2 + 4 + 6) / 3 = 4; then 0.5*8 + 0.5*4 = 6; 0.5*10 + 3 = 8
    assert feed(Ema(3, price_places=2), ["2.00", "4.00", "6.00", "8.00", "10.00"]) == [
        None,
        None,
        D("4.00"),
        D("6.00"),
        D("8.00"),
    ]
    # period 2: alpha = 2/3; seed 1.50; (2 * 2.00 + 1.50) / 3 = 1.8333..., rounded
    ema = Ema(2, price_places=2)
    assert feed(ema, ["1.00", "2.00", "2.00"]) == [None, D("1.50"), D("1.833333")]
    # the rounded value is the state: (2 * 3.00 + 1.833333) / 3 = 2.611111
    assert ema.update(D("3.00")) == D("2.611111")


def test_periods_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        Sma(0, price_places=2)
    with pytest.raises(ConfigError):
        MovingAverages(ema_periods=[-1])


prices = st.integers(min_value=1, max_value=10**7).map(lambda cents: D(cents).scaleb(-2))


@given(prices, st.integers(min_value=1, max_value=50), st.integers(min_value=0, max_value=80))
def test_the_ema_and_sma_of_a_constant_are_that_constant(
    price: Decimal, period: int, extra: int
) -> None:
    ema, sma = Ema(period, price_places=2), Sma(period, price_places=2)
    for _ in range(period + extra):
        ema.update(price)
        sma.update(price)
    assert ema.value == price and sma.value == price


@given(st.lists(prices, min_size=1, max_size=60), st.integers(min_value=1, max_value=12))
def test_moving_averages_stay_within_the_range_and_the_sma_is_the_mean(
    values: list[Decimal], period: int
) -> None:
    ema, sma = Ema(period, price_places=2), Sma(period, price_places=2)
    for index, value in enumerate(values):
        ema.update(value)
        sma.update(value)
        seen = values[: index + 1]
        if index + 1 < period:
            assert ema.value is None and sma.value is None
            continue
        assert ema.value is not None and sma.value is not None
        assert min(seen) <= ema.value <= max(seen)
        window = seen[-period:]
        mean = sum((Fraction(v) for v in window), Fraction(0)) / period
        assert abs(Fraction(sma.value) - mean) <= Fraction(1, 2 * 10**6)


def test_session_vwap_hand_computed_resets_each_day_and_drops_late_trades() -> None:
    vwap = SessionVwap(price_places=2)
    vwap.update(10 * S, D("10.00"), D(100))
    vwap.update(20 * S, D("11.00"), D(300))
    assert vwap.value_at(30 * S) == D("10.75")  # (1000 + 3300) / 400
    assert vwap.value_at(DAY_NS) is None  # the next day has no trade yet
    vwap.update(DAY_NS + S, D("20.00"), D(1))
    assert vwap.value_at(DAY_NS + S) == D("20.00")
    vwap.update(DAY_NS - 1, D("99.00"), D(1))  # yesterday's trade, arriving today: late
    assert (vwap.late, vwap.value_at(DAY_NS + S)) == (1, D("20.00"))


def test_window_vwap_evicts_old_trades_and_accepts_out_of_order_ones() -> None:
    vwap = WindowVwap(10 * S, price_places=2)
    vwap.update(1 * S, D("10.00"), D(1))
    vwap.update(5 * S, D("20.00"), D(1))
    vwap.update(3 * S, D("30.00"), D(2))  # out of order, inside the window
    assert vwap.value_at(5 * S) == D("22.50")  # (10 + 20 + 60) / 4
    assert vwap.value_at(11 * S) == D("26.666667")  # the 1 s trade left: 80 / 3
    assert vwap.value_at(15 * S) is None  # (5 s, 15 s]: nothing
    vwap.update(4 * S, D("50.00"), D(1))  # older than the window reached: late
    assert vwap.late == 1 and vwap.volume == 0


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=100), prices, st.integers(1, 1000)),
        min_size=1,
        max_size=40,
    ),
    st.integers(min_value=0, max_value=30),
)
def test_window_vwap_in_any_arrival_order_is_the_vwap_of_the_accepted_trades_in_the_window(
    trades: list[tuple[int, Decimal, int]], after: int
) -> None:
    vwap = WindowVwap(20 * S, price_places=2)
    accepted: list[tuple[int, Decimal, int]] = []
    horizon: int | None = None
    for second, price, size in trades:
        ts = second * S
        if horizon is None or ts > horizon - 20 * S:
            accepted.append((ts, price, size))
        horizon = ts if horizon is None else max(horizon, ts)
        vwap.update(ts, price, D(size))
    assert vwap.late == len(trades) - len(accepted)
    now = max(ts for ts, _, _ in accepted) + after * S
    inside = [(price, size) for ts, price, size in accepted if ts > now - 20 * S]
    value = vwap.value_at(now)
    if not inside:
        assert value is None
        return
    notional = sum((Fraction(p) * s for p, s in inside), Fraction(0))
    exact = notional / sum(s for _, s in inside)
    assert value is not None and abs(Fraction(value) - exact) <= Fraction(1, 2 * 10**6)
    assert min(p for p, _ in inside) <= value <= max(p for p, _ in inside)


def bar(close: str, start: int, *, timeframe: str = "1Min", venue: str = "nyse") -> Bar:
    price = D(close)
    return Bar(
        symbol="AAPL",
        venue=venue,
        timeframe=timeframe,
        start_ts=start,
        end_ts=start + 60 * S,
        open=price,
        high=price,
        low=price,
        close=price,
        volume=D(1),
        trade_count=1,
        vwap=price,
        source="trades",
    )


def test_moving_averages_per_series_ignore_redelivered_bars_and_travel_as_json() -> None:
    averages = MovingAverages(sma_periods=[2], ema_periods=[3])
    assert averages.on_bar(bar("10.00", 0)) == BarIndicators(
        symbol="AAPL",
        venue="nyse",
        timeframe="1Min",
        start_ts=0,
        end_ts=60 * S,
        close=D("10.00"),
        sma={2: None},
        ema={3: None},
    )
    other = averages.on_bar(bar("50.00", 0, venue="nasdaq"))  # another series
    assert other is not None and other.sma == {2: None}
    second = averages.on_bar(bar("11.00", 60 * S))
    assert second is not None and second.sma == {2: D("10.50")}
    assert averages.on_bar(bar("11.00", 60 * S)) is None  # the same bar again
    third = averages.on_bar(bar("12.00", 120 * S))
    assert third is not None and (third.sma, third.ema) == ({2: D("11.50")}, {3: D("11.00")})
    payload = encode(third)
    assert b'"sma":{"2":"11.50"}' in payload
    assert decode(payload) == third


def test_vwap_book_per_symbol_and_venue() -> None:
    book = VwapBook(window_ns=10 * S)
    assert book.value("AAPL", "nyse", 0) is None
    book.on_trade(trade("10.00", 1, 1 * S))
    book.on_trade(trade("12.00", 1, 15 * S))
    book.on_trade(trade("99.00", 5, 15 * S, venue="nasdaq"))
    update = book.value("AAPL", "nyse", 15 * S)
    assert update is not None
    assert (update.session_vwap, update.session_volume) == (D("11.00"), D(2))
    assert (update.window_vwap, update.window_volume) == (D("12.00"), D(1))
    assert (update.session_start_ts, update.ts, update.window_ns) == (0, 15 * S, 10 * S)
    assert decode(encode(update)) == update
    with pytest.raises(ConfigError):
        VwapBook(window_ns=0)
