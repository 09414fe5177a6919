"""Kelly sizing by hand; its cap and buying power as invariants; the trade record."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bourse.strategy.config import StrategyConfig
from bourse.strategy.execution import order_for
from bourse.strategy.prices import fee
from bourse.strategy.sizing import PaperTrades, TradeBook, kelly_estimate, size_target
from bourse.strategy.types import Direction, Fill, Portfolio, Signal, TradeStats
from tests.strategy.factories import AAPL, BTC, tick

D = Decimal
QUOTE = tick("100.00", bid="99.99", ask="100.01")


def _long(t: object = QUOTE) -> Signal:
    return Signal(tick=t, direction=Direction.LONG, reason="test")  # type: ignore[arg-type]


def _portfolio(cash: str, *, bp: str | None = None, position: str = "0") -> Portfolio:
    return Portfolio(cash=D(cash), buying_power=D(bp or cash), position=D(position))


def test_kelly_from_the_prior_alone() -> None:
    estimate = kelly_estimate(TradeStats(), StrategyConfig())  # p0 0.55, b0 1
    assert (estimate.win_probability, estimate.payoff) == (D("0.55"), D(1))
    assert estimate.kelly == D("0.10") and estimate.fraction == D("0.100000")


def test_kelly_shrinks_the_record_towards_the_prior_by_hand() -> None:
    # 3 wins of +2 %, 1 loss of -1 %, a prior of p0 = 0.5, b0 = 1 worth 10 trades:
    # p = (3 + 5) / 14 = 4/7; b_obs = 0.02 / 0.01 = 2, b = (10 + 4 * 2) / 14 = 9/7;
    # f* = 4/7 - (3/7) / (9/7) = 5/21 = 0.238095...
    stats = TradeStats(wins=3, losses=1, win_return_sum=D("0.06"), loss_return_sum=D("0.01"))
    config = StrategyConfig(prior_win_rate=D("0.5"), kelly_cap=D(1))
    estimate = kelly_estimate(stats, config)
    assert estimate.win_probability == D(8) / D(14)
    assert estimate.payoff == D(18) / D(14)
    assert estimate.fraction == D("0.238095")
    capped = kelly_estimate(stats, StrategyConfig(prior_win_rate=D("0.5"), kelly_cap=D("0.2")))
    assert capped.fraction == D("0.200000") and capped.kelly == estimate.kelly


def test_no_edge_is_a_fraction_of_zero() -> None:
    stats = TradeStats(wins=1, losses=9, win_return_sum=D("0.01"), loss_return_sum=D("0.09"))
    estimate = kelly_estimate(stats, StrategyConfig())
    assert estimate.kelly < 0 and estimate.fraction == 0
    held = Portfolio(cash=D(50_000), buying_power=D(50_000), position=D(10), stats=stats)
    unchanged = size_target(_long(), held, StrategyConfig(), AAPL)
    assert unchanged.qty == 10 and unchanged.fraction == 0 and "no edge" in unchanged.reason


def test_a_long_signal_buys_the_kelly_fraction_of_equity_in_whole_lots() -> None:
    # f = 0.1 of 100,000 at 100.00: 100 shares.
    target = size_target(_long(), _portfolio("100000"), StrategyConfig(), AAPL)
    assert (target.qty, target.fraction) == (D(100), D("0.100000"))
    # Crypto: 10,000 / 65,000 = 0.153846... BTC, floored to the lot of 0.0001.
    btc = tick("65000.00", bid="64999.99", ask="65000.01", symbol="BTC-USD")
    assert size_target(_long(btc), _portfolio("100000"), StrategyConfig(), BTC).qty == D("0.1538")


def test_buying_power_cuts_the_purchase_by_hand() -> None:
    # The limit is 100.01 * 1.0025 = 100.260025 -> 100.27; with 1 bp of fees 100.280027 a
    # share; (5,000 - 0.01) / 100.280027 = 49.86: 49 shares, though Kelly asks for 100.
    target = size_target(_long(), _portfolio("100000", bp="5000"), StrategyConfig(), AAPL)
    assert target.qty == 49
    notional = 49 * D("100.27")
    assert notional + fee(notional, D(1)) <= 5000


def test_a_flat_signal_targets_nothing() -> None:
    signal = Signal(tick=QUOTE, direction=Direction.FLAT, reason="exit")
    target = size_target(signal, _portfolio("1000", position="30"), StrategyConfig(), AAPL)
    assert (target.qty, target.fraction) == (D(0), D(0))


prices = st.decimals(min_value=D("0.05"), max_value=D("5000"), places=2)
amounts = st.decimals(min_value=D(0), max_value=D("2000000"), places=2)


@settings(max_examples=300, deadline=None)
@given(
    price=prices,
    half_spread=st.decimals(min_value=D("0.01"), max_value=D("1"), places=2),
    cash=amounts,
    spent=st.decimals(min_value=D(0), max_value=D(1), places=3),
    position=st.integers(min_value=0, max_value=500),
    wins=st.integers(min_value=0, max_value=50),
    losses=st.integers(min_value=0, max_value=50),
    cap=st.decimals(min_value=D("0.01"), max_value=D(1), places=2),
    limit_bps=st.decimals(min_value=D(0), max_value=D(200), places=1),
    fee_bps=st.decimals(min_value=D(0), max_value=D(50), places=1),
)
def test_sizing_never_exceeds_the_cap_nor_buying_power(
    price: Decimal,
    half_spread: Decimal,
    cash: Decimal,
    spent: Decimal,
    position: int,
    wins: int,
    losses: int,
    cap: Decimal,
    limit_bps: Decimal,
    fee_bps: Decimal,
) -> None:
    config = StrategyConfig(
        kelly_cap=cap, limit_bps=limit_bps, fee_bps=fee_bps, slippage_bps=D(0)
    ).check()
    quote = tick(
        str(price), bid=str(max(price - half_spread, D("0.01"))), ask=str(price + half_spread)
    )
    stats = TradeStats(
        wins=wins,
        losses=losses,
        win_return_sum=D("0.03") * wins,
        loss_return_sum=D("0.01") * losses,
    )
    buying_power = (cash * (1 - spent)).quantize(D("0.01"))
    portfolio = Portfolio(cash=cash, buying_power=buying_power, position=D(position), stats=stats)
    target = size_target(_long(quote), portfolio, config, AAPL)
    assert target.qty >= 0 and target.qty % AAPL.lot_size == 0
    assert D(0) <= target.fraction <= cap
    order = order_for(target, portfolio.position, config, AAPL, "x-1")
    if order is not None and order.side == "buy":
        # What the purchase can cost at worst (its limit) with its fees: within buying power.
        notional = order.qty * order.limit_price
        assert notional + fee(notional, fee_bps) <= buying_power
        # ...and the position bought towards stays within the cap of equity.
        assert target.qty * quote.price <= cap * portfolio.equity(quote.price)


def test_a_round_trip_is_recorded_net_of_fees() -> None:
    book = TradeBook()
    for side, qty, price, charge in (
        ("buy", 10, "100", "0.10"),
        ("buy", 10, "102", "0.10"),
        ("sell", 20, "105", "0.21"),
    ):
        closed = book.on_fill(
            Fill(
                client_order_id="c",
                order_id="o",
                ts=len(book.closed),
                side=side,  # type: ignore[arg-type]
                qty=D(qty),
                price=D(price),
                fee=D(charge),
            )
        )
    assert closed is not None and book.position == 0
    # cost 1000 + 0.10 + 1020 + 0.10 = 2020.20; proceeds 2100 - 0.21 = 2099.79
    assert (closed.cost, closed.proceeds, closed.pnl) == (D("2020.20"), D("2099.79"), D("79.59"))
    assert closed.qty == 20 and closed.return_ == D("0.039397")  # 79.59 / 2020.20
    assert book.stats == TradeStats(wins=1, win_return_sum=D("0.039397"))


def test_a_loss_counts_as_a_loss_and_overselling_is_a_bug() -> None:
    book = TradeBook(position=D(5), avg_price=D(10))  # held before the run started
    assert book.position == 5
    book.on_fill(Fill(client_order_id="c", order_id="o", ts=1, side="sell", qty=D(5), price=D(9)))
    assert book.stats == TradeStats(losses=1, loss_return_sum=D("0.1"))
    with pytest.raises(ValueError, match="long only"):
        book.on_fill(
            Fill(client_order_id="c", order_id="o", ts=2, side="sell", qty=D(1), price=D(9))
        )


def test_paper_trades_score_at_the_quotes_with_fees() -> None:
    paper = PaperTrades(D(1))
    assert paper.exit(QUOTE) is None  # nothing open
    paper.enter(QUOTE)  # 100.01 * 1.0001 = 100.020001
    result = paper.exit(tick("102.00", bid="101.99", ask="102.01"))  # 101.99 * 0.9999
    assert result == D("0.019594")  # (101.979801 - 100.020001) / 100.020001
    assert paper.stats == TradeStats(wins=1, win_return_sum=D("0.019594")) and paper.count == 1
