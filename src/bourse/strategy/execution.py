"""Stage 4, execution: targets become orders, orders become fills, fills become the record.

`order_for` (pure) turns a target into the one IOC limit order that moves the position to it:
buy or sell the difference, limited `limit_bps` through the tick's quote. A `Broker` carries
it out: `SimulatedBroker` in a back-test (backtest.py), `ApiBroker` live (live.py).

`Execution` is the stage around them. After each target it hands the account as it now is
to `Settlement`, which sizing waits on before it sizes the next signal: sizing always sees
every earlier target executed, so what it decides does not depend on how far ahead of
execution the pipeline's tasks happen to run. That is what makes a back-test deterministic;
live, it keeps the strategy from buying twice for the same signal.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Protocol

import msgspec

from bourse.model.instruments import Instrument
from bourse.strategy.config import StrategyConfig
from bourse.strategy.performance import PerformanceTracker, TradeRecord
from bourse.strategy.prices import limit_price
from bourse.strategy.sizing import TradeBook
from bourse.strategy.types import Fill, Mark, OrderRequest, Portfolio, Side, Target, Tick

log = logging.getLogger(__name__)

_ZERO = Decimal(0)


def order_for(
    target: Target,
    held: Decimal,
    config: StrategyConfig,
    instrument: Instrument,
    client_order_id: str,
) -> OrderRequest | None:
    """The order that takes the position from `held` to the target; None if there is none."""
    difference = target.qty - held
    if difference == 0:
        return None
    side: Side = "buy" if difference > 0 else "sell"
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=instrument.symbol,
        side=side,
        qty=abs(difference),
        limit_price=limit_price(side, target.tick, config.limit_bps, instrument),
        tick=target.tick,
    )


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """The broker (or the exchange) would not take the order: a reason code and its words."""

    reason: str
    message: str


class Broker(Protocol):
    """Where orders go: a simulation, or the exchange through its API."""

    async def portfolio(self, stats: TradeBook) -> Portfolio:
        """The account now: cash, buying power, position (with the trade record given)."""
        ...

    async def execute(self, order: OrderRequest) -> Fill | Refusal: ...

    async def close(self) -> None:
        """Shutting down: cancel whatever of this run's orders is still open."""
        ...


class Settlement:
    """Sizing's view of the account, valid once every target it issued has been executed."""

    def __init__(self, portfolio: Portfolio) -> None:
        self.portfolio = portfolio
        self._issued = 0
        self._settled = 0
        self._changed = asyncio.Condition()

    def issue(self) -> None:
        """Sizing sent a target down the pipeline."""
        self._issued += 1

    async def settle(self, portfolio: Portfolio) -> None:
        """Execution finished a target (whatever came of it); the account is `portfolio`."""
        async with self._changed:
            self._settled += 1
            self.portfolio = portfolio
            self._changed.notify_all()

    async def current(self) -> Portfolio:
        """The account once every target issued so far has been executed."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._settled >= self._issued)
            return self.portfolio


class Execution:
    """The execution stage: orders through `broker`, the record, the marks (see module)."""

    name = "execution"

    def __init__(
        self,
        broker: Broker,
        settlement: Settlement,
        config: StrategyConfig,
        instrument: Instrument,
        *,
        run_id: str,
        book: TradeBook,
        tracker: PerformanceTracker,
        max_tick_age_ns: int | None = None,
        wall_clock_ns: Callable[[], int] | None = None,
    ) -> None:
        self._broker = broker
        self._settlement = settlement
        self._config = config
        self._instrument = instrument
        self._run_id = run_id
        self.book = book
        self.tracker = tracker
        self.fills: list[TradeRecord] = []
        self.refused: Counter[str] = Counter()
        self.orders = 0
        self.fees = _ZERO
        self.stale = 0
        self.unfilled = 0
        self._max_age = max_tick_age_ns
        self._now = wall_clock_ns

    async def process(self, item: Mark | Target) -> list[object]:
        portfolio = self._settlement.portfolio
        if isinstance(item, Target):
            # Settle whatever happens: sizing waits for it, and must never wait forever.
            try:
                await self._execute(item)
                portfolio = await self._broker.portfolio(self.book)
            finally:
                await self._settlement.settle(portfolio)
        self._mark(item.tick, portfolio)
        return []

    def _mark(self, tick: Tick, portfolio: Portfolio) -> None:
        self.tracker.mark(tick.ts, portfolio.equity(tick.price), portfolio.position)

    def _stale(self, tick: Tick) -> bool:
        if self._max_age is None or self._now is None:
            return False
        return self._now() - tick.ts > self._max_age

    async def _execute(self, target: Target) -> None:
        held = self._settlement.portfolio.position
        order = order_for(
            target, held, self._config, self._instrument, f"{self._run_id}-{self.orders + 1}"
        )
        if order is None:
            return
        if self._stale(target.tick):
            self.stale += 1
            log.warning(
                "strategy: not trading on tick %d, older than %.1f s",
                target.tick.seq,
                self._config.max_tick_age_s,
            )
            return
        self.orders += 1
        outcome = await self._broker.execute(order)
        if isinstance(outcome, Refusal):
            self.refused[outcome.reason] += 1
            log.warning("strategy: order %s refused: %s", order.client_order_id, outcome.message)
            return
        if outcome.qty <= 0:
            self.unfilled += 1  # an IOC that met nothing at its limit
            return
        self.book.on_fill(outcome)
        self.fees += outcome.fee
        self.fills.append(
            TradeRecord(
                tick_seq=target.tick.seq,
                ts=outcome.ts,
                side=outcome.side,
                qty=outcome.qty,
                price=outcome.price,
                fee=outcome.fee,
                limit_price=order.limit_price,
                client_order_id=order.client_order_id,
                reason=target.reason,
            )
        )

    async def close(self) -> None:
        await self._broker.close()
