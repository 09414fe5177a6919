"""Back-tests end to end: from a file and from the MARKET_DATA stream on a real nats-server;
the same data and seed give the same trades and P&L, every time."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from bourse.bus.replay import replay_spec
from bourse.model import marketdata, subjects
from bourse.strategy.backtest import FileSource, NoMarketData, StreamSource, run_backtest
from bourse.strategy.config import StrategyConfig
from bourse.strategy.performance import Summary
from tests.strategy.factories import AAPL, SECOND, T0, csv_text, quote, wave

CONFIG = StrategyConfig(fast=4, slow=12, slippage_bps=Decimal(5))
QUOTES = wave(400)


def _source(*, start_ns: int | None = None, end_ns: int | None = None) -> FileSource:
    return FileSource(messages=QUOTES, description="wave", start_ns=start_ns, end_ns=end_ns)


async def _file_run(
    seed: int, *, start_ns: int | None = None, end_ns: int | None = None
) -> Summary:
    source = _source(start_ns=start_ns, end_ns=end_ns)
    return await run_backtest(CONFIG, AAPL, source, venue="nyse", cash=Decimal(100_000), seed=seed)


async def test_a_file_backtest_trades_and_adds_up() -> None:
    summary = await _file_run(3)
    assert summary.ticks == 400 and summary.mode == "backtest" and summary.seed == 3
    assert summary.round_trips >= 3 and summary.trades >= 2 * summary.round_trips
    assert summary.orders == summary.trades and summary.refused == {}
    assert summary.wins + summary.losses == summary.round_trips
    fills = summary.fills
    assert sum(f.fee for f in fills) == summary.fees > 0
    # Net P&L is what the fills did to the cash, plus the position still held at the last mid.
    cash = summary.initial_equity + sum(
        (-1 if f.side == "buy" else 1) * f.qty * f.price - f.fee for f in fills
    )
    held = sum((1 if f.side == "buy" else -1) * f.qty for f in fills)
    assert held == summary.position
    last_mid = (QUOTES[-1].bid + QUOTES[-1].ask) / 2
    assert summary.final_equity == cash + held * last_mid
    assert summary.net_pnl == summary.final_equity - summary.initial_equity
    assert summary.gross_pnl == summary.net_pnl + summary.fees
    assert summary.return_ == (summary.net_pnl / summary.initial_equity).quantize(Decimal("1e-6"))
    assert Decimal(0) < summary.exposure < Decimal(1)
    assert summary.max_drawdown >= 0
    # Sizing never spent more than it had: the cash never went below zero.
    running = summary.initial_equity
    for f in fills:
        running += (-1 if f.side == "buy" else 1) * f.qty * f.price - f.fee
        assert running >= 0
    stages = summary.pipeline["stages"]
    assert isinstance(stages, dict) and stages["enrich"]["processed"] == 400


async def test_the_same_file_and_seed_give_identical_trades_and_pnl_twice() -> None:
    first, second = await _file_run(11), await _file_run(11)
    assert first.deterministic() == second.deterministic()
    assert first.fills == second.fills and first.net_pnl == second.net_pnl
    other = await _file_run(12)
    assert other.fills != first.fills  # the seed moves the simulated slippage


async def test_a_time_range_of_the_file_and_an_empty_one() -> None:
    part = await _file_run(1, start_ns=T0 + 100 * SECOND, end_ns=T0 + 199 * SECOND)
    assert part.ticks == 100 and part.first_ts == T0 + 100 * SECOND
    with pytest.raises(NoMarketData, match="no market data for AAPL on venue nyse in wave"):
        await _file_run(1, start_ns=T0 + 10_000 * SECOND)
    with pytest.raises(NoMarketData, match="it has AAPL@nyse"):
        _source().check("AAPL", "nasdaq")


async def test_a_csv_file_reads_like_the_messages(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.write_text(csv_text(QUOTES))
    from_csv = await run_backtest(
        CONFIG, AAPL, FileSource.load(str(path), venue="nyse"), venue="nyse", seed=11
    )
    assert from_csv.fills == (await _file_run(11)).fills


async def _publish(js: JetStreamContext, quotes: list[marketdata.Quote]) -> tuple[int, int]:
    """Publish the quotes (and another venue's, which must be left out); first and last seq."""
    sequences = []
    for q in quotes:
        ack = await js.publish(subjects.market_data(q.venue, q.symbol), marketdata.encode(q))
        sequences.append(ack.seq)
        noise = quote(q.bid + 5, 0, venue="nasdaq")
        await js.publish(subjects.market_data("nasdaq", "AAPL"), marketdata.encode(noise))
    return sequences[0], sequences[-1]


async def test_a_stream_range_replays_to_identical_trades_twice(
    nc: NATS, js: JetStreamContext
) -> None:
    before = await js.publish(
        subjects.market_data("nyse", "AAPL"), marketdata.encode(quote(Decimal(500), 0))
    )
    first_seq, last_seq = await _publish(js, QUOTES)
    await js.publish(subjects.market_data("nyse", "AAPL"), marketdata.encode(quote(Decimal(1), 0)))
    spec = replay_spec(f"seq:{first_seq}", f"seq:{last_seq}", symbols=["AAPL"])
    assert before.seq < first_seq

    async def stream_run() -> Summary:
        return await run_backtest(
            CONFIG, AAPL, StreamSource(nc, spec), venue="nyse", cash=Decimal(100_000), seed=11
        )

    first, second = await stream_run(), await stream_run()
    assert first.ticks == 400  # the range, one venue: not the quotes outside it nor nasdaq's
    assert first.deterministic() == second.deterministic()
    assert first.round_trips >= 3
    # The stream holds the same data as the file: the same trades, to the cent.
    from_file = await _file_run(11)
    assert first.fills == from_file.fills and first.net_pnl == from_file.net_pnl
    assert first.source == f"MARKET_DATA from seq:{first_seq} until seq:{last_seq}"


async def test_a_stream_range_without_the_symbol_is_an_error(
    nc: NATS, js: JetStreamContext
) -> None:
    await js.publish(
        subjects.market_data("nyse", "MSFT"), marketdata.encode(quote(Decimal(9), 0, symbol="MSFT"))
    )
    spec = replay_spec("first", symbols=["AAPL"])
    with pytest.raises(NoMarketData, match="no market data for AAPL on venue nyse"):
        await run_backtest(CONFIG, AAPL, StreamSource(nc, spec), venue="nyse")
