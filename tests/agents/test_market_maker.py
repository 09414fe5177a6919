from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bourse.agents.market_maker import MakerConfig, WorkingOrder, desired_quotes, plan
from bourse.model.instruments import universe_by_symbol

AAPL = universe_by_symbol()["AAPL"]
BTC = universe_by_symbol()["BTC-USD"]


def test_a_flat_maker_quotes_symmetric_levels_on_tick() -> None:
    config = MakerConfig(spread_bps=D(10), level_step_bps=D(5), levels=2, size=D(100))
    quotes = desired_quotes(AAPL, config, D("200.00"), D(0))
    bids = [q.price for q in quotes if q.side == "buy"]
    asks = [q.price for q in quotes if q.side == "sell"]
    assert bids == [D("199.90"), D("199.80")]
    assert asks == [D("200.10"), D("200.20")]
    assert all(q.qty == D(100) for q in quotes)


def test_a_long_maker_skews_down_and_stops_buying_at_its_limit() -> None:
    config = MakerConfig(levels=3, size=D(100), max_inventory=D(1000), skew_bps_per_unit=D("0.01"))
    flat = desired_quotes(AAPL, config, D("200.00"), D(0))
    long = desired_quotes(AAPL, config, D("200.00"), D(900))
    assert max(q.price for q in long if q.side == "sell") < max(
        q.price for q in flat if q.side == "sell"
    )
    assert len([q for q in long if q.side == "buy"]) == 1  # 900 + 100 fits; 900 + 200 does not
    assert len([q for q in long if q.side == "sell"]) == 3


def test_plan_keeps_orders_that_still_fit_and_replaces_the_rest() -> None:
    config = MakerConfig(levels=1, size=D(100))
    desired = desired_quotes(AAPL, config, D("200.00"), D(0))
    bid = next(q for q in desired if q.side == "buy")
    working = [
        WorkingOrder("keep", "buy", bid.price, D(60)),
        WorkingOrder("stale", "sell", D("250.00"), D(100)),
    ]
    result = plan(desired, working)
    assert result.cancel == ["stale"]
    assert [(q.side, q.price) for q in result.place] == [("sell", D("200.10"))]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="levels"):
        MakerConfig(levels=0)
    with pytest.raises(ValueError, match="size"):
        MakerConfig(size=D(0))


@settings(max_examples=200, deadline=None)
@given(
    reference=st.decimals(min_value=D("0.05"), max_value=D("100000"), places=2),
    inventory=st.decimals(min_value=D(-6000), max_value=D(6000), places=0),
    levels=st.integers(1, 5),
)
def test_quotes_are_never_crossed_and_always_valid(reference: D, inventory: D, levels: int) -> None:
    for instrument in (AAPL, BTC):
        config = MakerConfig(levels=levels, size=D(1) if instrument is BTC else D(100))
        quotes = desired_quotes(instrument, config, reference, inventory)
        bids = [q.price for q in quotes if q.side == "buy"]
        asks = [q.price for q in quotes if q.side == "sell"]
        if bids and asks:
            assert max(bids) < min(asks)
        for q in quotes:
            assert instrument.is_valid_price(q.price) and instrument.is_valid_size(q.qty)
