"""Messages of the ORDERS stream: the journal every stateful service folds over.

Subjects (built in `model.subjects`):

| subject | message | from -> to |
|---|---|---|
| `orders.new` | OrderSubmitted | gateway -> accounts |
| `orders.cancel` | CancelRequested | gateway -> accounts |
| `orders.replace` | ReplaceRequested | gateway -> accounts |
| `orders.admin` | AccountOpened, Cash-, AssetDeposited, TradingHalted, -Resumed | admin |
| `orders.session` | SessionClosed (day orders expire) | session clock -> engine |
| `orders.validated.<order_id>` | Order-, Cancel-, ReplaceValidated | accounts -> engine |
| `orders.rejected.<order_id>` | OrderRejected | accounts or engine -> everyone |
| `orders.accepted.<order_id>` | OrderAccepted | engine |
| `orders.executed.<order_id>` | Execution (one per order per match) | engine |
| `orders.cancelled.<order_id>` | OrderCancelled | engine |
| `orders.replaced.<order_id>` | OrderReplaced | engine |

Every message about an order carries its id in the subject, so a client can wait for the
fate of one order (`orders.*.<order_id>`) and the engine reads `orders.validated.>`. For
cancel and replace requests the id is that of the order they act on.

Money and quantities are decimal strings; times are integer nanoseconds since the epoch.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from bourse.model.subjects import Id

Side = Literal["buy", "sell"]
OrderKind = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["day", "gtc", "ioc", "fok"]


class RejectCode(enum.StrEnum):
    """Why a request was refused; stable codes clients can switch on."""

    INSUFFICIENT_BUYING_POWER = "insufficient_buying_power"
    INSUFFICIENT_POSITION = "insufficient_position"
    SHORTING_NOT_ALLOWED = "shorting_not_allowed"
    INVALID_QUANTITY = "invalid_quantity"
    INVALID_PRICE = "invalid_price"
    UNKNOWN_SYMBOL = "unknown_symbol"
    UNKNOWN_ACCOUNT = "unknown_account"
    PRICE_COLLAR = "price_collar"
    MAX_NOTIONAL = "max_notional"
    NO_REFERENCE_PRICE = "no_reference_price"
    DUPLICATE_CLIENT_ORDER_ID = "duplicate_client_order_id"
    UNKNOWN_ORDER = "unknown_order"
    NOT_REPLACEABLE = "not_replaceable"
    TRADING_HALTED = "trading_halted"


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    ts: int


# ---- requests (gateway) ----


class OrderSubmitted(_Event, frozen=True, kw_only=True, tag="order_submitted"):
    order_id: Id
    client_order_id: str
    account_id: Id
    symbol: str
    side: Side
    kind: OrderKind
    time_in_force: TimeInForce
    qty: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    # The gateway's reference price for the symbol when the order arrived, journaled so the
    # collar and buying-power checks are a pure function of the stream.
    reference_price: Decimal | None = None


class CancelRequested(_Event, frozen=True, kw_only=True, tag="cancel_requested"):
    order_id: Id
    account_id: Id


class ReplaceRequested(_Event, frozen=True, kw_only=True, tag="replace_requested"):
    order_id: Id
    new_order_id: Id
    new_client_order_id: str
    account_id: Id
    qty: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    reference_price: Decimal | None = None


# ---- administration (journaled so the ledger is a pure fold) ----


class AccountOpened(_Event, frozen=True, kw_only=True, tag="account_opened"):
    account_id: Id
    shorting_enabled: bool = False


class CashDeposited(_Event, frozen=True, kw_only=True, tag="cash_deposited"):
    account_id: Id
    amount: Decimal


class AssetDeposited(_Event, frozen=True, kw_only=True, tag="asset_deposited"):
    """Units of an instrument transferred into the account from outside (coins moved in from
    a wallet, shares from another broker), at `price` as their cost basis: the position grows
    as a buy at that price would, and cash does not move."""

    account_id: Id
    symbol: str
    qty: Decimal
    price: Decimal


class TradingHalted(_Event, frozen=True, kw_only=True, tag="trading_halted"):
    account_id: Id
    reason: str


class TradingResumed(_Event, frozen=True, kw_only=True, tag="trading_resumed"):
    account_id: Id


# ---- the trading session ----


class SessionClosed(_Event, frozen=True, kw_only=True, tag="session_closed"):
    """The trading day `trading_day` (YYYY-MM-DD, UTC) ended: every open DAY order expires.
    Journaled, so expiry is a pure function of the stream like everything else."""

    trading_day: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$(?!\n)")]


# ---- accounts' decisions ----


class OrderValidated(_Event, frozen=True, kw_only=True, tag="order_validated"):
    order: OrderSubmitted
    # A market order must not trade beyond this price (the collar around the reference);
    # None for limit orders, whose limit is the bound.
    protection_price: Decimal | None = None


class CancelValidated(_Event, frozen=True, kw_only=True, tag="cancel_validated"):
    order_id: Id
    account_id: Id
    symbol: str


class ReplaceValidated(_Event, frozen=True, kw_only=True, tag="replace_validated"):
    request: ReplaceRequested
    symbol: str
    qty: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None


class OrderRejected(_Event, frozen=True, kw_only=True, tag="order_rejected"):
    order_id: Id
    account_id: Id
    request: Literal["new", "cancel", "replace"]
    code: RejectCode
    message: str
    client_order_id: str = ""
    symbol: str = ""
    # Who refused: accounts (pre-trade checks) or the engine (e.g. an unknown order). Accounts
    # reacts only to the engine's refusals; its own never reserved anything.
    source: Literal["accounts", "engine"] = "accounts"


# ---- engine's outcomes ----


class OrderAccepted(_Event, frozen=True, kw_only=True, tag="order_accepted"):
    order_id: Id
    account_id: Id
    symbol: str


class Execution(_Event, frozen=True, kw_only=True, tag="execution"):
    order_id: Id
    account_id: Id
    symbol: str
    side: Side
    price: Decimal
    qty: Decimal
    leaves_qty: Decimal
    liquidity: Literal["maker", "taker"]
    match_id: int  # per-symbol, 1-based; the two sides of one match share it


class OrderCancelled(_Event, frozen=True, kw_only=True, tag="order_cancelled"):
    order_id: Id
    account_id: Id
    symbol: str
    leaves_qty: Decimal
    reason: str  # requested, expired, ioc_remainder, fok_unfilled, no_liquidity, self_trade


class OrderReplaced(_Event, frozen=True, kw_only=True, tag="order_replaced"):
    order_id: Id
    new_order_id: Id
    account_id: Id
    symbol: str
    qty: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    leaves_qty: Decimal
    kept_priority: bool


OrdersEvent = (
    OrderSubmitted
    | CancelRequested
    | ReplaceRequested
    | AccountOpened
    | CashDeposited
    | AssetDeposited
    | TradingHalted
    | TradingResumed
    | SessionClosed
    | OrderValidated
    | CancelValidated
    | ReplaceValidated
    | OrderRejected
    | OrderAccepted
    | Execution
    | OrderCancelled
    | OrderReplaced
)

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[OrdersEvent] = msgspec.json.Decoder(OrdersEvent)


def encode(event: OrdersEvent) -> bytes:
    return _encoder.encode(event)


def decode(payload: bytes) -> OrdersEvent:
    return _decoder.decode(payload)
