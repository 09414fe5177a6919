"""The four stages around their cores, wired into one pipeline, and the run's summary.

This is the one place the strategy is put together; back-test and live differ only by the
source that feeds the pipeline and the broker execution uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from bourse.model.instruments import Instrument
from bourse.strategy.config import StrategyConfig
from bourse.strategy.enrich import Enricher
from bourse.strategy.execution import Broker, Execution, Settlement
from bourse.strategy.performance import PerformanceTracker, Summary, ratio
from bourse.strategy.pipeline import Pipeline
from bourse.strategy.signals import SignalGenerator
from bourse.strategy.sizing import PaperTrades, TradeBook, combined, size_target
from bourse.strategy.types import Direction, Enriched, Mark, Portfolio, Signal, Tick


class EnrichStage:
    name = "enrich"

    def __init__(self, config: StrategyConfig, instrument: Instrument) -> None:
        self.core = Enricher(config, price_places=instrument.price_precision)

    async def process(self, tick: Tick) -> Sequence[Enriched]:
        return (self.core.on_tick(tick),)


class SignalStage:
    name = "signal"

    def __init__(self, config: StrategyConfig) -> None:
        self.core = SignalGenerator(config)
        self.signals = 0

    async def process(self, enriched: Enriched) -> Sequence[Signal | Mark]:
        signal = self.core.on_enriched(enriched)
        if signal is None:
            return (Mark(tick=enriched.tick),)
        self.signals += 1
        return (signal,)


class SizingStage:
    name = "sizing"

    def __init__(
        self, config: StrategyConfig, instrument: Instrument, settlement: Settlement
    ) -> None:
        self._config = config
        self._instrument = instrument
        self._settlement = settlement
        self.paper = PaperTrades(config.fee_bps)

    async def process(self, item: Signal | Mark) -> Sequence[Any]:
        if isinstance(item, Mark):
            return (item,)
        portfolio = await self._settlement.current()
        if item.direction is Direction.FLAT:
            self.paper.exit(item.tick)
        record = combined(portfolio.stats, self.paper.stats)
        target = size_target(
            item, msgspec.structs.replace(portfolio, stats=record), self._config, self._instrument
        )
        if item.direction is Direction.LONG and target.qty == 0:
            self.paper.enter(item.tick)
        self._settlement.issue()
        return (target,)


class StrategyRun:
    """One run of the strategy: its pipeline, its execution stage, and its summary."""

    def __init__(
        self,
        config: StrategyConfig,
        instrument: Instrument,
        broker: Broker,
        portfolio: Portfolio,
        *,
        run_id: str,
        book: TradeBook | None = None,
        live: bool = False,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config.check()
        self.instrument = instrument
        self.settlement = Settlement(portfolio)
        self.signal_stage = SignalStage(config)
        self.sizing_stage = SizingStage(config, instrument, self.settlement)
        self.execution = Execution(
            broker,
            self.settlement,
            config,
            instrument,
            run_id=run_id,
            book=book or TradeBook(),
            tracker=PerformanceTracker(portfolio.cash if not portfolio.position else None),
            max_tick_age_ns=int(config.max_tick_age_s * 1e9) if live else None,
            wall_clock_ns=wall_clock_ns,
        )
        self.pipeline = Pipeline(
            [
                EnrichStage(config, instrument),
                self.signal_stage,
                self.sizing_stage,
                self.execution,
            ],
            queue_size=config.queue_size,
        )

    def stats(self) -> dict[str, Any]:
        """The pipeline's metrics plus the strategy's own counters."""
        execution = self.execution
        return {
            **self.pipeline.stats(),
            "signals": self.signal_stage.signals,
            "paper_round_trips": self.sizing_stage.paper.count,
            "orders": execution.orders,
            "fills": len(execution.fills),
            "refused": dict(execution.refused),
            "unfilled": execution.unfilled,
            "stale": execution.stale,
        }

    def summary(
        self, *, mode: str, venue: str, source: str, seed: int | None, elapsed_s: float
    ) -> Summary:
        execution, tracker, book = self.execution, self.execution.tracker, self.execution.book
        stats = book.stats
        final = self.settlement.portfolio
        net = tracker.equity - tracker.initial_equity
        round_trips = stats.wins + stats.losses
        return Summary(
            mode=mode,
            symbol=self.instrument.symbol,
            venue=venue,
            source=source,
            seed=seed,
            ticks=tracker.ticks,
            first_ts=tracker.first_ts,
            last_ts=tracker.last_ts,
            orders=execution.orders,
            refused=dict(sorted(execution.refused.items())),
            trades=len(execution.fills),
            round_trips=round_trips,
            wins=stats.wins,
            losses=stats.losses,
            paper_round_trips=self.sizing_stage.paper.count,
            win_rate=ratio(Decimal(stats.wins), Decimal(round_trips)),
            initial_equity=tracker.initial_equity,
            final_equity=tracker.equity,
            position=final.position,
            gross_pnl=net + execution.fees,
            fees=execution.fees,
            net_pnl=net,
            return_=ratio(net, tracker.initial_equity),
            max_drawdown=tracker.max_drawdown,
            max_drawdown_pct=tracker.max_drawdown_pct,
            exposure=tracker.exposure,
            fills=list(execution.fills),
            closed_trades=list(book.closed),
            elapsed_s=round(elapsed_s, 3),
            pipeline=self.stats(),
        )
