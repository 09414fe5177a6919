"""`bourse streams`: every stream and consumer, with lag and rates, in two tables."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from typing import Annotated

import msgspec
import typer
from nats.errors import Error as NatsError
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from bourse.bus.connection import NATS, connect
from bourse.bus.monitor import StreamsReport, measure, take_snapshot
from bourse.cli.common import NatsOption, nats_url, run_until_signalled, unless_stopped
from bourse.errors import BrokerError, ConfigError

# The client retries an unreachable server forever; a one-off view gives up after this.
CONNECT_DEADLINE = 10.0


def register(app: typer.Typer) -> None:
    app.command("streams")(streams)


def _count(value: float | None) -> str:
    if value is None:
        return "-"
    for prefix in ("", "k", "M", "G"):
        if abs(value) < 1000 or prefix == "G":
            return f"{value:,.0f}" if prefix == "" else f"{value:,.1f}{prefix}"
        value /= 1000
    raise AssertionError("unreachable")


def _size(value: float | None) -> str:
    if value is None:
        return "-"
    for prefix in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or prefix == "GiB":
            return f"{value:,.0f}{prefix}" if prefix == "B" else f"{value:,.1f}{prefix}"
        value /= 1024
    raise AssertionError("unreachable")


def _replicas(replicas: int, current: int) -> str:
    if current >= replicas:
        return f"R{replicas}"
    return f"[yellow]R{replicas} {current}/{replicas}[/]"  # replicas caught up / all


def _table(title: str, names: tuple[str, ...], numbers: tuple[str, ...], *, give_way: str) -> Table:
    # Compact (one space between columns, rates' units in their headers, running counts
    # abbreviated; sequences and lag exact, as `--json` has all) so both tables fit an
    # 80-column terminal. Where they still do not (long consumer names), the column
    # `give_way` is cut with an ellipsis: the first column, the key, and the figures are not.
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,  # the box's column divider is the one space between columns
    )
    for name in names:
        table.add_column(name, no_wrap=name != give_way, overflow="ellipsis")
    for number in numbers:
        table.add_column(number, justify="right", no_wrap=True)
    return table


def render(report: StreamsReport) -> Group:
    """The report as two tables: streams, then consumers. The leader column shows only where
    a stream has one (a cluster): a single server's streams have none."""
    clustered = any(row.stream.leader for row in report.streams)
    streams = _table(
        f"Streams (rates over {report.interval_s:.1f}s)",
        ("Stream", "R", "Leader") if clustered else ("Stream", "R"),
        ("Msgs", "Bytes", "First", "Last", "Cons", "Msgs/s", "Bytes/s"),
        give_way="Leader",
    )
    for row in report.streams:
        s = row.stream
        where = (s.leader or "-",) if clustered else ()
        streams.add_row(
            s.name,
            _replicas(s.replicas, s.current_replicas),
            *where,
            _count(s.messages),
            _size(s.bytes),
            f"{s.first_seq:,}",
            f"{s.last_seq:,}",
            f"{s.consumer_count:,}",
            _count(row.messages_per_s),
            _size(row.bytes_per_s),
        )
    consumers = _table(
        "Consumers",
        ("Stream", "Consumer"),
        ("Lag", "Unacked", "Redeliv", "Delivered", "Deliv/s", "Lag Δ/s"),
        give_way="Consumer",
    )
    for consumer_row in report.consumers:
        c = consumer_row.consumer
        lag_change = consumer_row.lag_change_per_s
        consumers.add_row(
            c.stream,
            c.name,
            f"{c.num_pending:,}",
            f"{c.num_ack_pending:,}",
            f"{c.num_redelivered:,}",
            _count(c.delivered),
            _count(consumer_row.delivered_per_s),
            "-" if lag_change is None else f"{lag_change:+,.1f}",
        )
    if not report.consumers:
        consumers.caption = "no consumers"
    return Group(streams, "", consumers)


def streams(
    nats: NatsOption = None,
    interval: Annotated[
        float, typer.Option(help="Seconds between the two samples that rates come from.")
    ] = 1.0,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every interval.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (one line per sample).")
    ] = False,
) -> None:
    """Show every stream (size, sequences, replicas, rates) and consumer (lag, acks pending)."""
    if not (interval > 0 and math.isfinite(interval)):
        raise ConfigError("--interval", interval, "a number of seconds > 0")
    url = nats_url(nats)
    console = Console()

    def show(report: StreamsReport, live: Live | None) -> None:
        if live is not None:
            live.update(render(report), refresh=True)
        elif as_json:
            sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
            sys.stdout.flush()
        else:
            console.print(render(report))

    async def report() -> None:
        # A live view redraws in place on a terminal; into a pipe, every frame is printed.
        in_place = watch and not as_json and console.is_terminal
        live = Live(console=console, auto_refresh=False) if in_place else None
        nc = await _connect(url)
        try:
            jsm = nc.jetstream()
            before = await take_snapshot(jsm)
            with live or contextlib.nullcontext():
                while True:
                    await asyncio.sleep(interval)  # the sampling interval rates are over
                    after = await take_snapshot(jsm)
                    show(measure(before, after), live)
                    if not watch:
                        return
                    before = after
        except NatsError as exc:  # JetStream disabled, or not answering
            raise BrokerError(f"JetStream at {url} did not answer: {exc!r}") from exc
        finally:
            await nc.close()

    async def main(stop: asyncio.Event) -> None:
        # A read-only view: a signal ends it at once, wherever it is (connecting included).
        await unless_stopped(stop, report())

    run_until_signalled(main)


async def _connect(url: str) -> NATS:
    try:
        return await asyncio.wait_for(connect(url, name="bourse-streams"), CONNECT_DEADLINE)
    except TimeoutError:
        raise BrokerError(
            f"cannot connect to NATS at {url}: no server answered within {CONNECT_DEADLINE:.0f}s"
        ) from None
