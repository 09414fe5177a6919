"""`bourse schema`: the JSON Schemas of the messages on public subjects."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from bourse.analytics.messages import AnalyticsMessage
from bourse.model.instruments import Instrument
from bourse.model.marketdata import MarketData
from bourse.model.orders import OrdersEvent
from bourse.model.positions import PositionChanged


def schemas() -> dict[str, Any]:
    """One JSON Schema document per public payload, keyed by subject pattern."""
    return {
        "md.<venue>.<symbol>": msgspec.json.schema(MarketData),
        "orders.>": msgspec.json.schema(OrdersEvent),
        "positions.<account>.<symbol>": msgspec.json.schema(PositionChanged),
        "analytics.>": msgspec.json.schema(AnalyticsMessage),
        "instrument": msgspec.json.schema(Instrument),
    }


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)


def schema(
    out: Annotated[
        Path | None, typer.Option(help="Write to this file instead of standard output.")
    ] = None,
) -> None:
    """Print the JSON Schemas of every public message (decimal strings, ns timestamps)."""
    text = msgspec.json.format(msgspec.json.encode(schemas()), indent=2)
    if out is None:
        typer.echo(text.decode())
    else:
        out.write_bytes(text + b"\n")
        typer.echo(f"wrote {out}")
