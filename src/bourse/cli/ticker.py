"""`bourse ticker [PATTERN]`: live quotes and trades in the console."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime
from typing import Annotated

import msgspec
import typer
from nats.aio.msg import Msg

from bourse.bus.connection import connected
from bourse.cli.common import NatsOption, nats_url, run_until_signalled
from bourse.errors import ConfigError
from bourse.model import marketdata, subjects
from bourse.model.marketdata import MarketData, Quote, Trade

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command("ticker")(ticker)


def format_line(message: MarketData) -> str:
    """One aligned console line for a quote or trade."""
    clock = datetime.fromtimestamp(message.ts / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]
    head = f"{clock}  {message.venue:<9} {message.symbol:<8}"
    if isinstance(message, Quote):
        return (
            f"{head} quote {message.bid:>12} x {message.ask:<12} "
            f"({message.bid_size} x {message.ask_size})  last {message.last}"
        )
    if isinstance(message, Trade):
        return f"{head} trade {message.price:>12} size {message.size} {message.side}"
    best_bid = f"{message.bids[0][0]} ({message.bids[0][1]})" if message.bids else "-"
    best_ask = f"{message.asks[0][0]} ({message.asks[0][1]})" if message.asks else "-"
    return (
        f"{head} depth {len(message.bids)}x{len(message.asks)} levels, best {best_bid} / {best_ask}"
    )


def ticker(
    pattern: Annotated[
        str, typer.Argument(help="Subject filter: md.> (all), md.nyse.>, md.*.AAPL ...")
    ] = subjects.ALL_MARKET_DATA,
    nats: NatsOption = None,
    count: Annotated[int | None, typer.Option(help="Exit after this many messages.", min=1)] = None,
    quotes_only: Annotated[bool, typer.Option("--quotes-only", help="Hide trades.")] = False,
) -> None:
    """Print live market data as it arrives (Ctrl-C to stop)."""
    subjects.check_filter(pattern)
    if not pattern.startswith(f"{subjects.MARKET_DATA_ROOT}."):
        raise ConfigError("pattern", pattern, "a market-data filter starting with 'md.'")
    url = nats_url(nats)

    async def main(stop: asyncio.Event) -> int:
        shown = bad = 0
        done = asyncio.Event()

        async def on_message(msg: Msg) -> None:
            nonlocal shown, bad
            if done.is_set():
                return
            try:
                message = marketdata.decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                bad += 1
                log.warning("skipping a bad message on %s: %s", msg.subject, exc)
                return
            if quotes_only and not isinstance(message, Quote):
                return
            shown += 1
            print(format_line(message), flush=False)
            if count is not None and shown >= count:
                done.set()

        async with connected(url, name="bourse-ticker") as nc:
            # A live view: a slow terminal drops messages (bounded) rather than growing memory.
            await nc.subscribe(pattern, cb=on_message, pending_msgs_limit=10_000)
            waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(done.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        sys.stdout.flush()
        if bad:
            print(f"{bad} malformed message(s) skipped", file=sys.stderr)
        return shown

    run_until_signalled(main)
