"""The engine core's vocabulary: integer ticks and lots, order types, and its output events.

The core never sees Decimal or JSON: prices are whole ticks, quantities whole lots. The shell
converts at the edge with the instrument's tick and lot sizes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Side(enum.IntEnum):
    BUY = 1
    SELL = -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(enum.StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(enum.StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class SelfTradePrevention(enum.StrEnum):
    """What happens when an order would trade with a resting order of the same account."""

    CANCEL_RESTING = "cancel_resting"  # the resting (older) order is cancelled; matching goes on
    CANCEL_TAKER = "cancel_taker"  # the incoming order's remainder is cancelled
    CANCEL_BOTH = "cancel_both"


class CancelReason(enum.StrEnum):
    REQUESTED = "requested"
    IOC_REMAINDER = "ioc_remainder"
    FOK_UNFILLED = "fok_unfilled"
    NO_LIQUIDITY = "no_liquidity"
    SELF_TRADE = "self_trade"
    EXPIRED = "expired"
    REPLACED = "replaced"


class RejectReason(enum.StrEnum):
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    UNKNOWN_ORDER = "unknown_order"
    INVALID_QUANTITY = "invalid_quantity"
    INVALID_PRICE = "invalid_price"
    INVALID_REPLACE = "invalid_replace"


@dataclass(slots=True, kw_only=True)
class NewOrder:
    """An order as the engine receives it (already validated by accounts).

    `price` is the limit in ticks (for a market order, an optional protection price beyond
    which it must not trade, 0 for none); `stop` the trigger price in ticks for stop orders.
    """

    order_id: str
    account: str
    side: Side
    type: OrderType
    tif: TimeInForce
    qty: int
    price: int = 0
    stop: int = 0


# ---- events the core emits, in the order they happen ----


@dataclass(frozen=True, slots=True)
class Accepted:
    order_id: str


@dataclass(frozen=True, slots=True)
class Triggered:
    """A stop order's trigger price was reached; it now works as market or limit."""

    order_id: str


@dataclass(frozen=True, slots=True)
class Fill:
    maker_order_id: str
    taker_order_id: str
    maker_account: str
    taker_account: str
    taker_side: Side
    price: int
    qty: int
    maker_remaining: int
    taker_remaining: int
    match_id: int  # per-book sequence of fills, 1, 2, 3...


@dataclass(frozen=True, slots=True)
class Cancelled:
    order_id: str
    account: str
    remaining: int
    reason: CancelReason


@dataclass(frozen=True, slots=True)
class Replaced:
    """`order_id` was replaced by `new_order_id` (as in Alpaca, a replacement is a new order)."""

    order_id: str
    new_order_id: str
    qty: int  # the new total quantity
    price: int
    stop: int
    remaining: int
    kept_priority: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    order_id: str
    reason: RejectReason
    detail: str


EngineEvent = Accepted | Triggered | Fill | Cancelled | Replaced | Rejected
