"""`bourse feed sim|replay`: run a market-data feed on its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from bourse.bus.connection import connected
from bourse.bus.streams import provision_streams
from bourse.cli.common import (
    NatsOption,
    SymbolsOption,
    nats_url,
    parse_symbols,
    run_until_signalled,
)
from bourse.errors import ConfigError
from bourse.feed.history_files import SAMPLE_STOCKS, read_file, sample_stocks
from bourse.feed.runner import Batch, FeedRunner, FeedStats, replayed_batches, simulated_batches
from bourse.feed.simulator import Simulator
from bourse.model.instruments import DEFAULT_UNIVERSE
from bourse.model.marketdata import MarketData
from bourse.model.subjects import check_venue

log = logging.getLogger(__name__)
feed_app = typer.Typer(help="Publish market data on md.<venue>.<symbol>.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(feed_app, name="feed")


def simulator_for(symbols: list[str] | None, seed: int) -> Simulator:
    instruments = DEFAULT_UNIVERSE
    if symbols is not None:
        known = {i.symbol for i in DEFAULT_UNIVERSE}
        unknown = [s for s in symbols if s not in known]
        if unknown:
            raise ConfigError("--symbols", ",".join(unknown), ", ".join(sorted(known)))
        instruments = tuple(i for i in DEFAULT_UNIVERSE if i.symbol in symbols)
    return Simulator(instruments, seed=seed)


def check_rate(rate: float) -> float:
    if not rate >= 0 or rate == float("inf"):
        raise ConfigError("--rate", rate, "messages per second, a finite number >= 0 (0 = max)")
    return rate


def _publish(url: str, batches: Iterator[Batch], limit: int | None, what: str) -> None:
    if limit is not None and limit < 1:
        raise ConfigError("--limit", limit, "a whole number >= 1")

    async def main(stop: asyncio.Event) -> FeedStats:
        async with connected(url, name="bourse-feed") as nc:
            await provision_streams(nc.jetstream())
            runner = FeedRunner(nc, batches, limit=limit)
            stopper = asyncio.create_task(_stop_on(stop, runner))
            log.info("%s to %s", what, url)
            try:
                return await runner.run()
            finally:
                stopper.cancel()

    stats = run_until_signalled(main)
    typer.echo(f"published {stats.messages} messages, every one acknowledged by JetStream")


async def _stop_on(stop: asyncio.Event, runner: FeedRunner) -> None:
    await stop.wait()
    runner.stop()


@feed_app.command("sim")
def sim(
    nats: NatsOption = None,
    rate: Annotated[
        float, typer.Option(help="Messages per second (0 = as fast as possible).")
    ] = 1000.0,
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed gives the same prices.")
    ] = 0,
    symbols: SymbolsOption = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
) -> None:
    """Simulated prices: GBM per symbol, quoted on several venues."""
    simulator = simulator_for(parse_symbols(symbols), seed)
    batches = simulated_batches(simulator, rate=check_rate(rate))
    _publish(
        nats_url(nats),
        batches,
        limit,
        f"simulating {', '.join(simulator.symbols)} on {', '.join(simulator.venues)}",
    )


@feed_app.command("replay")
def replay(
    source: Annotated[
        str,
        typer.Argument(
            help=f"'{SAMPLE_STOCKS}' (daily AAPL/GOOG/IBM/MSFT/FB) or a CSV/Parquet file."
        ),
    ] = SAMPLE_STOCKS,
    nats: NatsOption = None,
    speed: Annotated[
        float, typer.Option(help="Times real time; 86400 plays a day a second (0 = max).")
    ] = 86400.0,
    venue: Annotated[str, typer.Option(help="Venue for rows without one.")] = "hist",
    symbols: SymbolsOption = None,
    loop: Annotated[bool, typer.Option(help="Start again at the end.")] = False,
    limit: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
) -> None:
    """Replay real historical data at a chosen speed-up."""
    if not speed >= 0 or speed == float("inf"):
        raise ConfigError("--speed", speed, "a finite number >= 0 (0 = as fast as possible)")
    check_venue(venue)
    wanted = parse_symbols(symbols)
    messages: list[MarketData]
    if source == SAMPLE_STOCKS:
        messages = sample_stocks(venue=venue, symbols=wanted)
    else:
        messages = read_file(Path(source), venue=venue)
        if wanted is not None:
            messages = [m for m in messages if m.symbol in wanted]
    if not messages:
        raise ConfigError("source", source, "a data set with at least one row for the symbols")
    _publish(
        nats_url(nats),
        replayed_batches(messages, speed=speed, loop=loop),
        limit,
        f"replaying {len(messages)} messages from {source} at {speed:g}x",
    )
