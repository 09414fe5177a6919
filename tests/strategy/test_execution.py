"""Execution: targets into orders, the simulated broker's fills, the settlement barrier."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from bourse.strategy.backtest import SimulatedBroker
from bourse.strategy.config import StrategyConfig
from bourse.strategy.execution import Execution, Refusal, Settlement, order_for
from bourse.strategy.performance import PerformanceTracker
from bourse.strategy.sizing import TradeBook
from bourse.strategy.types import Fill, Mark, OrderRequest, Portfolio, Target
from tests.strategy.factories import AAPL, SECOND, T0, tick

D = Decimal
QUOTE = tick("100.00", bid="99.99", ask="100.01")


def _target(qty: int, t: object = QUOTE) -> Target:
    return Target(tick=t, qty=D(qty), fraction=D("0.1"), reason="test")  # type: ignore[arg-type]


def test_a_target_above_the_position_buys_the_difference_through_the_ask() -> None:
    order = order_for(_target(100), D(30), StrategyConfig(), AAPL, "run-1")
    assert order is not None
    # 100.01 * (1 + 25 bps) = 100.260025, up to the cent.
    assert (order.side, order.qty, order.limit_price) == ("buy", D(70), D("100.27"))
    assert order.client_order_id == "run-1" and order.tick == QUOTE


def test_a_target_below_sells_through_the_bid_and_none_when_there() -> None:
    order = order_for(_target(0), D(30), StrategyConfig(), AAPL, "run-2")
    assert order is not None
    # 99.99 * (1 - 25 bps) = 99.740025, down to the cent.
    assert (order.side, order.qty, order.limit_price) == ("sell", D(30), D("99.74"))
    assert order_for(_target(30), D(30), StrategyConfig(), AAPL, "run-3") is None


def _order(side: str, qty: int, *, limit: str, t: object = QUOTE, n: int = 1) -> OrderRequest:
    return OrderRequest(
        client_order_id=f"bt-{n}",
        symbol="AAPL",
        side=side,  # type: ignore[arg-type]
        qty=D(qty),
        limit_price=D(limit),
        tick=t,  # type: ignore[arg-type]
    )


def test_the_simulated_broker_fills_at_the_quote_with_fees_in_cents() -> None:
    config = StrategyConfig(slippage_bps=D(0))
    broker = SimulatedBroker(AAPL, config, cash=D(100_000), seed=1)
    bought = broker.fill(_order("buy", 100, limit="100.27"))
    # 100 at the ask, 10,001.00; fees 1 bp = 1.0001, up to the cent: 1.01.
    assert bought == Fill(
        client_order_id="bt-1",
        order_id="sim-1",
        ts=T0,
        side="buy",
        qty=D(100),
        price=D("100.01"),
        fee=D("1.01"),
    )
    assert broker.cash == D("89997.99") and broker.position == 100
    sold = broker.fill(
        _order("sell", 100, limit="99.74", t=tick("101", bid="100.99", ask="101.01"))
    )
    assert isinstance(sold, Fill) and sold.price == D("100.99") and sold.fee == D("1.01")
    assert broker.position == 0 and broker.ledger.realized_pnl == D("98.00")


def test_slippage_is_seeded_bounded_and_never_past_the_limit() -> None:
    config = StrategyConfig(slippage_bps=D(20), limit_bps=D(25))

    def prices(seed: int) -> list[Decimal]:
        broker = SimulatedBroker(AAPL, config, cash=D(10**9), seed=seed)
        out = []
        for n in range(200):
            fill = broker.fill(_order("buy", 1, limit="100.27", n=n))
            assert isinstance(fill, Fill)
            out.append(fill.price)
        return out

    first = prices(7)
    assert first == prices(7)
    assert first != prices(8)
    # From the ask (100.01) to 20 bps above it, 100.210002 up to the cent: 100.22.
    assert min(first) >= D("100.01") and max(first) <= D("100.22")
    assert len(set(first)) > 10


def test_the_simulated_broker_refuses_what_the_exchange_would() -> None:
    broker = SimulatedBroker(AAPL, StrategyConfig(), cash=D(1000), seed=0)
    too_much = broker.fill(_order("buy", 100, limit="100.27"))
    assert isinstance(too_much, Refusal) and too_much.reason == "insufficient_buying_power"
    not_held = broker.fill(_order("sell", 1, limit="99.74"))
    assert isinstance(not_held, Refusal) and not_held.reason == "insufficient_position"
    assert broker.cash == 1000 and broker.position == 0


async def test_settlement_holds_sizing_until_every_target_issued_is_executed() -> None:
    start = Portfolio(cash=D(100), buying_power=D(100), position=D(0))
    settlement = Settlement(start)
    assert await settlement.current() == start  # nothing issued: at once
    settlement.issue()
    waiting = asyncio.create_task(settlement.current())
    await asyncio.sleep(0)  # let it reach its wait
    assert not waiting.done()
    after = Portfolio(cash=D(0), buying_power=D(0), position=D(1))
    await settlement.settle(after)
    assert await asyncio.wait_for(waiting, 5) == after


class _Broker:
    def __init__(self) -> None:
        self.executed: list[OrderRequest] = []

    async def portfolio(self, book: TradeBook) -> Portfolio:
        return Portfolio(cash=D(1000), buying_power=D(1000), position=book.position)

    async def execute(self, order: OrderRequest) -> Fill | Refusal:
        self.executed.append(order)
        return Fill(
            client_order_id=order.client_order_id,
            order_id="x",
            ts=order.tick.ts,
            side=order.side,
            qty=order.qty,
            price=order.tick.price,
        )

    async def close(self) -> None:
        pass


async def test_live_execution_does_not_trade_on_a_stale_tick_but_still_settles() -> None:
    broker = _Broker()
    settlement = Settlement(Portfolio(cash=D(1000), buying_power=D(1000), position=D(0)))
    execution = Execution(
        broker,
        settlement,
        StrategyConfig(max_tick_age_s=5.0),
        AAPL,
        run_id="live",
        book=TradeBook(),
        tracker=PerformanceTracker(D(1000)),
        max_tick_age_ns=5 * SECOND,
        wall_clock_ns=lambda: T0 + 6 * SECOND,
    )
    settlement.issue()
    await execution.process(_target(5))  # the tick is 6 s old
    assert broker.executed == [] and execution.stale == 1
    assert await asyncio.wait_for(settlement.current(), 5) is settlement.portfolio
    fresh = tick("100.00", bid="99.99", ask="100.01", ts=T0 + 2 * SECOND, seq=2)
    settlement.issue()
    await execution.process(_target(5, fresh))
    assert [o.client_order_id for o in broker.executed] == ["live-1"]
    assert execution.book.position == 5 and settlement.portfolio.position == 5
    await execution.process(Mark(tick=fresh))
    assert execution.tracker.ticks == 3  # each target is marked too
