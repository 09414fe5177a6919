"""P&L, equity, exposure, concentration and drawdown against values computed by hand."""

from __future__ import annotations

from decimal import Decimal as D

import msgspec

from bourse.model import orders, positions
from bourse.risk.core import RiskCore
from bourse.risk.messages import Mark
from bourse.risk.state import RiskMetrics
from tests.risk.inputs import SECOND, T0, feed, fill, opened, submitted


def metrics(core: RiskCore, account: str = "alice") -> RiskMetrics:
    found = core.metrics(account)
    assert found is not None
    return found


def test_pnl_equity_exposure_and_drawdown_by_hand() -> None:
    core = RiskCore()
    feed(core, opened("alice", 100_000))
    feed(
        core,
        [
            fill("alice", "AAPL", "buy", 100, "190", 1),  # cash 81,000
            fill("alice", "MSFT", "buy", 10, "420", 1),  # cash 76,800
        ],
    )
    # No marks yet: positions are worth what they cost.
    m = metrics(core)
    assert (m.cash, m.equity, m.unrealized_pnl) == (D(76_800), D(100_000), D(0))

    core.on_mark("AAPL", D(200), T0 + 1)
    assert metrics(core).peak_equity == D(101_000)
    core.on_mark("MSFT", D(400), T0 + 2)
    m = metrics(core)
    assert m.equity == D(100_800)  # 76,800 + 100 x 200 + 10 x 400
    assert m.unrealized_pnl == D(800)  # 100 x 10 - 10 x 20
    assert m.realized_pnl == D(0)
    assert (m.gross_exposure, m.net_exposure) == (D(24_000), D(24_000))
    assert (m.concentration, m.concentration_symbol) == (D("0.833333"), "AAPL")  # 20/24
    assert m.peak_equity == D(101_000)
    assert m.drawdown == D("0.001980")  # 200 / 101,000
    assert m.daily_pnl == D(800)

    feed(
        core,
        [
            fill("alice", "AAPL", "sell", 50, "210", 2),  # realizes 50 x 20 = 1,000
            fill("alice", "MSFT", "sell", 30, "400", 2),  # closes 10 (-200), opens short 20 @ 400
        ],
    )
    m = metrics(core)
    assert m.cash == D(99_300)  # 76,800 + 10,500 + 12,000
    assert m.realized_pnl == D(800)
    assert m.unrealized_pnl == D(500)  # 50 x (200 - 190) + (-20) x (400 - 400)
    assert m.equity == D(101_300) == m.cash + 50 * D(200) - 20 * D(400)
    assert m.equity - D(100_000) == m.realized_pnl + m.unrealized_pnl
    assert (m.gross_exposure, m.net_exposure) == (D(18_000), D(2_000))
    assert (m.concentration, m.concentration_symbol) == (D("0.555556"), "AAPL")  # 10/18
    assert (m.peak_equity, m.drawdown) == (D(101_300), D(0))

    core.on_mark("AAPL", D(180), T0 + 3)
    m = metrics(core)
    assert m.equity == D(100_300)
    assert m.drawdown == D("0.009872")  # 1,000 / 101,300
    assert m.daily_pnl == D(300)


def test_a_deposit_is_neither_profit_nor_a_recovery_from_drawdown() -> None:
    core = RiskCore()
    feed(core, [*opened("alice", 10_000), fill("alice", "AAPL", "buy", 100, "100", 1)])
    core.on_mark("AAPL", D(90), T0 + 1)  # equity 9,000: down 1,000 from the peak
    before = metrics(core)
    feed(core, [orders.CashDeposited(ts=T0 + 2, account_id="alice", amount=D(5_000))])
    after = metrics(core)
    assert after.equity == before.equity + 5_000
    assert after.daily_pnl == before.daily_pnl == D(-1_000)
    assert after.peak_equity - after.equity == D(1_000)


def test_coins_transferred_in_are_capital_then_marked_like_any_holding() -> None:
    core = RiskCore()
    feed(core, [*opened("alice", 10_000), fill("alice", "AAPL", "buy", 100, "100", 1)])
    core.on_mark("AAPL", D(90), T0 + 1)  # equity 9,000: down 1,000 from the peak
    before = metrics(core)
    deposit = orders.AssetDeposited(
        ts=T0 + 2, account_id="alice", symbol="BTC-USD", qty=D("0.5"), price=D(60_000)
    )
    feed(core, [deposit])
    after = metrics(core)
    assert after.equity == before.equity + 30_000  # no mark yet: at its cost basis
    assert after.daily_pnl == before.daily_pnl == D(-1_000)
    assert after.peak_equity - after.equity == D(1_000)
    assert after.gross_exposure == before.gross_exposure + 30_000
    core.on_mark("BTC-USD", D(62_000), T0 + 3)
    assert metrics(core).daily_pnl == D(0)  # the coins gained 1,000 since they came in
    # Invalid ones (as accounts refuses them) change nothing.
    unchanged = metrics(core)
    feed(
        core,
        [
            msgspec.structs.replace(deposit, qty=D(0)),
            msgspec.structs.replace(deposit, account_id="bob"),
        ],
    )
    assert metrics(core) == unchanged


def test_a_new_trading_day_starts_from_the_equity_at_the_close() -> None:
    core = RiskCore()
    feed(core, [*opened("alice", 10_000), fill("alice", "AAPL", "buy", 100, "100", 1)])
    core.on_mark("AAPL", D(95), T0 + 1)
    assert metrics(core).daily_pnl == D(-500)
    feed(core, [orders.SessionClosed(ts=T0 + 2, trading_day="2024-06-10")])
    m = metrics(core)
    assert (m.day_start_equity, m.daily_pnl) == (D(9_500), D(0))
    core.on_mark("AAPL", D(94), T0 + 3)
    # The same day closed twice (the session clock catching up) moves nothing.
    feed(core, [orders.SessionClosed(ts=T0 + 4, trading_day="2024-06-10")])
    assert metrics(core).daily_pnl == D(-100)


def test_positions_from_the_positions_stream_give_the_same_measures_as_executions() -> None:
    fills = [
        fill("alice", "AAPL", "buy", 100, "190", 1),
        fill("alice", "AAPL", "sell", 150, "195", 2),
    ]
    from_fills = RiskCore()
    feed(from_fills, [*opened("alice", 100_000), *fills, Mark(ts=T0, symbol="AAPL", price=D(193))])

    statements = [
        positions.PositionChanged(
            ts=T0,
            account_id="alice",
            symbol="AAPL",
            qty=D(100),
            avg_entry_price=D(190),
            realized_pnl=D(0),
            cash=D(81_000),
            match_id=1,
        ),
        positions.PositionChanged(
            ts=T0,
            account_id="alice",
            symbol="AAPL",
            qty=D(-50),
            avg_entry_price=D(195),
            realized_pnl=D(500),
            cash=D(110_250),
            match_id=2,
        ),
    ]
    from_positions = RiskCore()
    feed(
        from_positions,
        [*opened("alice", 100_000), *statements, Mark(ts=T0, symbol="AAPL", price=D(193))],
    )
    assert metrics(from_positions) == metrics(from_fills)
    assert metrics(from_fills).equity == D(110_250) - 50 * D(193)

    # Both sources of the same fills: each fill counts once, whichever arrives first.
    both = RiskCore()
    feed(both, [*opened("alice", 100_000), fills[0], statements[0], statements[1], fills[1]])
    feed(both, [Mark(ts=T0, symbol="AAPL", price=D(193))])
    assert metrics(both) == metrics(from_fills)


def test_fills_of_an_account_never_opened_are_ignored_as_accounts_ignores_them() -> None:
    core = RiskCore()
    assert feed(core, [fill("ghost", "AAPL", "buy", 1, "10", 1)]) == []
    assert core.metrics("ghost") is None


def test_a_query_changes_nothing_and_counts_orders_in_the_window_ending_now() -> None:
    core = RiskCore()
    feed(core, opened("alice", 10_000))
    feed(core, [submitted("alice", f"o{n}", T0 + n * SECOND // 4) for n in range(3)])
    assert metrics(core).order_rate == 3
    core.on_mark("MSFT", D(400), T0 + SECOND)  # time passes (alice holds no MSFT)
    digest = core.state_digest()
    assert metrics(core).order_rate == 2  # the orders at 0.25 s and 0.5 s: within (0, 1 s]
    assert core.state_digest() == digest
