"""`bourse replay`: market data from the MARKET_DATA stream, from any position, per symbol."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, TextIO

import msgspec
import typer

from bourse.bus import replay as replaying
from bourse.bus.connection import connected
from bourse.bus.pull import Delivery
from bourse.cli.common import (
    PROGRESS_THRESHOLD,
    NatsOption,
    SymbolsOption,
    nats_url,
    progress_bar,
    run_until_signalled,
)
from bourse.cli.ticker import format_line
from bourse.model import marketdata


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)


def message_line(delivery: Delivery) -> str:
    """One compact line: the stream sequence, then the message as `bourse ticker` shows it."""
    try:
        text = format_line(marketdata.decode(delivery.data))
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = f"{delivery.subject} ({len(delivery.data)} bytes, not a quote or trade)"
    return f"{delivery.stream_seq:>9}  {text}"


def summary_lines(summary: replaying.ReplaySummary) -> list[str]:
    """The summary printed when a replay ends."""
    lines = [
        f"replayed {summary.messages:,} messages in {summary.duration_s:.2f} s "
        f"({summary.rate:,.0f} msg/s); stopped: {summary.stopped_by}"
    ]
    if summary.first_seq is not None and summary.first_time_ns is not None:
        first_time = replaying.format_time(summary.first_time_ns)
        last_time = replaying.format_time(summary.last_time_ns or summary.first_time_ns)
        lines.append(f"  sequences  {summary.first_seq} .. {summary.last_seq}")
        lines.append(f"  stored     {first_time} .. {last_time} ({summary.span_s:,.3f} s)")
    width = max((len(symbol) for symbol in summary.per_symbol), default=0)
    lines.extend(f"  {symbol:<{width}}  {count:,}" for symbol, count in summary.per_symbol.items())
    return lines


def wants_progress(total: int | None, *, quiet: bool, stdout: TextIO, stderr: TextIO) -> bool:
    """A bar for a replay of known length, on a terminal or when long; not when the message
    lines scroll on the same terminal (they show the progress, and a bar would garble them)."""
    if total is None or total <= 0 or (not quiet and stdout.isatty()):
        return False
    return stderr.isatty() or total >= PROGRESS_THRESHOLD


def replay(
    start: Annotated[
        str,
        typer.Option(
            "--from",
            help="first | last | new | seq:N | time:ISO-8601 (UTC unless an offset is given).",
        ),
    ] = "first",
    until: Annotated[
        str | None,
        typer.Option("--until", help="Stop after this position (inclusive): seq:N | time:ISO."),
    ] = None,
    symbols: SymbolsOption = None,
    nats: NatsOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Stop after this many messages.")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Keep going with live messages after the end of the stream."),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the progress and the summary.")
    ] = False,
) -> None:
    """Replay market data from the stream, one line per message, then a summary.

    Messages go to stdout; the progress bar and the summary go to stderr. Without --follow,
    the replay ends at the end of the stream as it was when it began (`--from new` always
    waits for live messages). Ctrl-C stops it and still prints the summary.
    """
    spec = replaying.replay_spec(start, until, symbols=symbols, limit=limit, follow=follow)
    url = nats_url(nats)
    stdout, stderr = sys.stdout, sys.stderr

    async def main(stop: asyncio.Event) -> replaying.ReplaySummary:
        def on_message(delivery: Delivery) -> None:
            if not quiet:
                stdout.write(message_line(delivery) + "\n")

        def wanted(total: int | None) -> bool:
            return wants_progress(total, quiet=quiet, stdout=stdout, stderr=stderr)

        async with connected(url, name="bourse-replay") as nc:
            try:
                with progress_bar("replay", stderr, wanted) as on_progress:
                    return await replaying.replay(
                        nc, spec, on_message=on_message, on_progress=on_progress, stop=stop
                    )
            finally:
                stdout.flush()

    summary = run_until_signalled(main)
    for line in summary_lines(summary):
        print(line, file=stderr)
