"""`bourse watch`: the account's order updates, price alerts and risk alerts as they arrive.

One line per update (or one JSON object per line with --json), over the gateway's `/stream`
WebSocket (bourse.updates); Ctrl-C stops it, --count N after N updates. A lost connection
(the platform restarting) is one line on stderr and is opened again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from datetime import UTC, datetime
from typing import Annotated

import msgspec
import typer

from bourse.cli.common import run_until_signalled
from bourse.cli.trading import (
    ApiOption,
    KeyIdOption,
    SecretOption,
    fmt_number,
    fmt_prices,
    fmt_qty,
)
from bourse.client import ApiError, resolve_endpoint
from bourse.errors import ConfigError
from bourse.updates import (
    STREAMS,
    AlertFired,
    Connected,
    Reconnecting,
    RiskAlert,
    TradeUpdate,
    Update,
    updates,
)

SHORT_ID = 8


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)


def _clock(moment: datetime | None) -> str:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def format_update(update: TradeUpdate | AlertFired | RiskAlert) -> str:
    """One console line for an update."""
    if isinstance(update, TradeUpdate):
        order = update.order
        head = f"{_clock(update.timestamp)}  {update.event:<13}"
        tail = f"order {order.id[:SHORT_ID]}"
        if update.price is not None and update.qty is not None:
            return (
                f"{head} {order.side} {fmt_qty(update.qty)} {order.symbol} at "
                f"{fmt_number(update.price)}; filled {fmt_qty(order.filled_qty)} of "
                f"{fmt_qty(order.qty)}, position {fmt_qty(update.position_qty)}; {tail}"
            )
        what = f"{order.side} {fmt_qty(order.qty)} {order.symbol} {fmt_prices(order)}"
        return f"{head} {what}, {order.time_in_force}; {tail}"
    if isinstance(update, AlertFired):
        market = "" if update.market_price is None else f" at {fmt_number(update.market_price)}"
        return (
            f"{_clock(update.timestamp)}  {'alert':<13} {update.symbol} {update.condition} "
            f"{fmt_number(update.price)}{market}; alert {update.alert_id[:SHORT_ID]}"
        )
    symbol = f" {update.symbol}" if update.symbol else ""
    return (
        f"{_clock(update.timestamp)}  {'risk ' + update.severity:<13} "
        f"{update.rule}{symbol}: {update.message}"
    )


def watch(
    streams: Annotated[
        str,
        typer.Option(help=f"Which updates, comma-separated: {', '.join(STREAMS)}."),
    ] = ",".join(STREAMS),
    count: Annotated[
        int | None, typer.Option(help="Exit after this many updates.", min=1, show_default=False)
    ] = None,
    api: ApiOption = None,
    key_id: KeyIdOption = None,
    secret: SecretOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print the account's order updates, alert firings and risk alerts as they arrive
    (Ctrl-C to stop)."""
    wanted = [s.strip() for s in streams.split(",") if s.strip()]
    if not wanted or not set(wanted) <= set(STREAMS):
        raise ConfigError("--streams", streams, f"some of {', '.join(STREAMS)}")
    endpoint = resolve_endpoint(api, key_id, secret)
    logging.getLogger("websockets").setLevel(logging.WARNING)

    def show(update: Update) -> None:
        if isinstance(update, Connected):
            print(
                f"bourse: watching {', '.join(update.streams)} at {update.url} (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
        elif isinstance(update, Reconnecting):
            print(
                f"bourse: connection lost ({update.problem}); reconnecting in {update.delay:g} s",
                file=sys.stderr,
                flush=True,
            )
        elif as_json:
            kind = type(update).__name__
            line = msgspec.json.encode({"type": kind, **msgspec.to_builtins(update)})
            print(line.decode(), flush=True)
        else:
            print(format_update(update), flush=True)

    async def main(stop: asyncio.Event) -> int:
        shown = 0

        async def follow() -> None:
            nonlocal shown
            async for update in updates(endpoint, wanted):
                show(update)
                if isinstance(update, TradeUpdate | AlertFired | RiskAlert):
                    shown += 1
                    if count is not None and shown >= count:
                        return

        task = asyncio.create_task(follow())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not task.cancelled():
            task.result()  # what ended it, if it failed
        return shown

    try:
        run_until_signalled(main)
    except ApiError as error:
        typer.echo(f"bourse: error: {error}", err=True)
        raise typer.Exit(1) from None
