"""Alpaca Trading API v2 shapes at the HTTP edge, and converters to and from Bourse's types.

Pydantic models here (FastAPI needs them); msgspec on the bus; the functions below are the
only place one becomes the other. Decimals travel as strings, times as RFC 3339, ids as
UUIDs, exactly as Alpaca sends them, so alpaca-py parses Bourse's answers unchanged.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bourse.accounts.readmodel.rows import Fill, Order, Position
from bourse.model.instruments import AssetClass, Instrument

# Stable asset ids: Alpaca gives every asset a UUID; Bourse derives one from the symbol.
_ASSET_NAMESPACE = uuid.UUID("6f1c3d0e-8a2b-4b7e-9a51-0b0c5e1d7a42")
MAX_CLIENT_ORDER_ID = 128


def asset_id(symbol: str) -> str:
    return str(uuid.uuid5(_ASSET_NAMESPACE, symbol))


def exchange(instrument: Instrument) -> str:
    # Alpaca's clients accept only Alpaca's exchange names (or ""), none of which is Bourse.
    return "CRYPTO" if instrument.asset_class is AssetClass.CRYPTO else ""


def rfc3339(ns: int | None) -> str | None:
    if ns is None:
        return None
    moment = datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(
        microsecond=(ns % 1_000_000_000) // 1_000
    )
    return moment.isoformat().replace("+00:00", "Z")


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _decimal_field(value: Any, name: str) -> Decimal | None:
    """Alpaca accepts numbers or decimal strings; anything else, NaN or infinite is refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{name} must be a decimal number or string")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name} must be a decimal number, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be finite, got {value}")
    return number


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: str | None) -> str | None:
    # A client order id travels in the journal message's Nats-Msg-Id header, where a line
    # break would end the header and start another.
    if value is not None and _CONTROL.search(value):
        raise ValueError("must not contain control characters (line breaks, tabs, NUL...)")
    if value is not None and value != value.strip():
        # nats-py trims header values: "abc " and "abc" would be one Nats-Msg-Id.
        raise ValueError("must not start or end with a space")
    return value


class OrderRequest(BaseModel):
    """POST /v2/orders. Unknown fields are refused, so a typo is an error, not a surprise."""

    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=32)
    qty: Decimal | None = None
    notional: Decimal | None = None
    side: Literal["buy", "sell"]
    type: Literal["market", "limit", "stop", "stop_limit"]
    time_in_force: Literal["day", "gtc", "ioc", "fok"]
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    client_order_id: str | None = Field(default=None, min_length=1, max_length=MAX_CLIENT_ORDER_ID)
    extended_hours: bool = False
    order_class: Literal["simple", ""] = "simple"

    @field_validator("qty", "notional", "limit_price", "stop_price", mode="before")
    @classmethod
    def _exact(cls, value: Any, info: Any) -> Decimal | None:
        return _decimal_field(value, info.field_name)

    _client_order_id = field_validator("client_order_id")(_printable)


class ReplaceOrderRequest(BaseModel):
    """PATCH /v2/orders/{id}."""

    model_config = ConfigDict(extra="forbid")

    qty: Decimal | None = None
    time_in_force: Literal["day", "gtc", "ioc", "fok"] | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    client_order_id: str | None = Field(default=None, min_length=1, max_length=MAX_CLIENT_ORDER_ID)

    @field_validator("qty", "limit_price", "stop_price", mode="before")
    @classmethod
    def _exact(cls, value: Any, info: Any) -> Decimal | None:
        return _decimal_field(value, info.field_name)

    _client_order_id = field_validator("client_order_id")(_printable)


# Alpaca's account activity types; Bourse has fills (FILL) and none of the others.
ACTIVITY_TYPES = frozenset(
    {
        "FILL",
        "TRANS",
        "MISC",
        "ACATC",
        "ACATS",
        "CSD",
        "CSW",
        "DIV",
        "DIVCGL",
        "DIVCGS",
        "DIVFEE",
        "DIVFT",
        "DIVNRA",
        "DIVROC",
        "DIVTW",
        "DIVTXEX",
        "INT",
        "INTNRA",
        "INTTW",
        "JNL",
        "JNLC",
        "JNLS",
        "MA",
        "NC",
        "OPASN",
        "OPEXP",
        "OPXRC",
        "PTC",
        "PTR",
        "REORG",
        "SC",
        "SSO",
        "SSP",
        "CFEE",
        "FEE",
    }
)


def activity_id(fill: Fill) -> str:
    """Alpaca's form, `<time to the millisecond>::<unique part>`; ours ends in the fill's
    ORDERS sequence, which orders fills and serves as a page token."""
    moment = datetime.fromtimestamp(fill.ts // 1_000_000_000, UTC)
    millis = (fill.ts // 1_000_000) % 1000
    return f"{moment:%Y%m%d%H%M%S}{millis:03d}::{fill.seq}"


def page_sequence(token: str) -> int | None:
    """The ORDERS sequence a page token (an activity id) ends in; None when it is not one."""
    _, separator, tail = token.rpartition("::")
    return int(tail) if separator and re.fullmatch(r"[0-9]{1,18}", tail) else None


def fill_activity_json(fill: Fill, cum_qty: Decimal) -> dict[str, Any]:
    """A fill as Alpaca's /v2/account/activities answers it."""
    done = fill.leaves_qty == 0
    return {
        "id": activity_id(fill),
        "activity_type": "FILL",
        "transaction_time": rfc3339(fill.ts),
        "type": "fill" if done else "partial_fill",
        "price": _text(fill.price),
        "qty": _text(fill.qty),
        "side": fill.side,
        "symbol": fill.symbol,
        "leaves_qty": _text(fill.leaves_qty),
        "order_id": fill.order_id,
        "cum_qty": _text(cum_qty),
        "order_status": "filled" if done else "partially_filled",
    }


def order_json(order: Order) -> dict[str, Any]:
    """An order as Alpaca's /v2/orders answers it."""
    return {
        "id": order.id,
        "client_order_id": order.client_order_id,
        "created_at": rfc3339(order.created_at),
        "updated_at": rfc3339(order.updated_at),
        "submitted_at": rfc3339(order.submitted_at),
        "filled_at": rfc3339(order.filled_at),
        "expired_at": rfc3339(order.expired_at),
        "expires_at": None,
        "canceled_at": rfc3339(order.canceled_at),
        "failed_at": rfc3339(order.failed_at),
        "replaced_at": rfc3339(order.replaced_at),
        "replaced_by": order.replaced_by,
        "replaces": order.replaces,
        "asset_id": asset_id(order.symbol),
        "symbol": order.symbol,
        "asset_class": order.asset_class,
        "notional": None,
        "qty": _text(order.qty),
        "filled_qty": _text(order.filled_qty),
        "filled_avg_price": _text(order.filled_avg_price),
        "order_class": "simple",
        "order_type": order.type,
        "type": order.type,
        "side": order.side,
        "position_intent": None,
        "time_in_force": order.time_in_force,
        "limit_price": _text(order.limit_price),
        "stop_price": _text(order.stop_price),
        "status": order.status,
        "extended_hours": False,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
    }


def position_json(
    position: Position, instrument: Instrument, mark: Decimal | None
) -> dict[str, Any]:
    """A position as Alpaca's /v2/positions answers it, marked at `mark` (entry if unknown)."""
    price = mark if mark is not None else position.avg_entry_price
    qty = position.qty
    market_value = qty * price
    cost_basis = position.cost_basis
    unrealized = market_value - cost_basis
    unrealized_pct = unrealized / abs(cost_basis) if cost_basis else Decimal(0)
    return {
        "asset_id": asset_id(position.symbol),
        "symbol": position.symbol,
        "exchange": exchange(instrument),
        "asset_class": instrument.asset_class.value,
        "asset_marginable": instrument.asset_class is AssetClass.US_EQUITY,
        "avg_entry_price": _text(position.avg_entry_price),
        "qty": _text(qty),  # negative for a short, as Alpaca shows it
        "qty_available": _text(qty),
        "side": "long" if qty >= 0 else "short",
        "market_value": _text(market_value),
        "cost_basis": _text(cost_basis),
        "unrealized_pl": _text(unrealized),
        "unrealized_plpc": _text(unrealized_pct.quantize(Decimal("0.0000000001"))),
        "unrealized_intraday_pl": _text(unrealized),
        "unrealized_intraday_plpc": _text(unrealized_pct.quantize(Decimal("0.0000000001"))),
        "current_price": _text(price),
        "lastday_price": _text(price),
        "change_today": "0",
    }


def asset_json(instrument: Instrument) -> dict[str, Any]:
    """An instrument as Alpaca's /v2/assets answers it."""
    return {
        "id": asset_id(instrument.symbol),
        "class": instrument.asset_class.value,
        "exchange": exchange(instrument),
        "symbol": instrument.symbol,
        "name": instrument.description or instrument.symbol,
        "status": "active",
        "tradable": True,
        "marginable": instrument.asset_class is AssetClass.US_EQUITY,
        "shortable": instrument.asset_class is AssetClass.US_EQUITY,
        "easy_to_borrow": instrument.asset_class is AssetClass.US_EQUITY,
        "fractionable": instrument.lot_size < 1,
        "min_order_size": _text(instrument.lot_size),
        "min_trade_increment": _text(instrument.lot_size),
        "price_increment": _text(instrument.tick_size),
        "attributes": [],
    }
