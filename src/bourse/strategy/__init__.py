"""The signal pipeline: enrichment -> signal -> Kelly sizing -> execution, live or back-test.

Pure, deterministic cores (`enrich`, `signals`, `sizing`, `execution.order_for`,
`performance`) wrapped as stages of an async pipeline with bounded queues (`pipeline`), wired
in one place (`stages.StrategyRun`), fed by recorded data with simulated fills
(`backtest.run_backtest`) or by NATS with orders through the public API
(`live.LiveStrategy`). `bourse strategy run` is the command; docs/strategy.md the manual.
"""

from bourse.strategy.backtest import FileSource, NoMarketData, StreamSource, run_backtest
from bourse.strategy.config import StrategyConfig
from bourse.strategy.live import LiveStrategy
from bourse.strategy.performance import Summary

__all__ = [
    "FileSource",
    "LiveStrategy",
    "NoMarketData",
    "StrategyConfig",
    "StreamSource",
    "Summary",
    "run_backtest",
]
