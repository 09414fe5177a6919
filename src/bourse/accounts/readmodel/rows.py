"""The read model's rows as typed values: what the projector writes and the queries return.

Field names follow the Alpaca Trading API v2 where it has one (`type`, `time_in_force`,
`filled_avg_price`, `replaced_by`...), so the gateway's converters stay one-to-one. Times are
integer nanoseconds since the epoch.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from bourse.model.orders import OrderKind, Side, TimeInForce

OrderStatus = Literal[
    "pending_new",
    "accepted",
    "new",
    "partially_filled",
    "filled",
    "canceled",
    "expired",
    "replaced",
    "rejected",
    "pending_cancel",
    "pending_replace",
]
OPEN_STATUSES: frozenset[str] = frozenset(
    {"pending_new", "accepted", "new", "partially_filled", "pending_cancel", "pending_replace"}
)
CLOSED_STATUSES: frozenset[str] = frozenset(
    {"filled", "canceled", "expired", "replaced", "rejected"}
)

AccountStatus = Literal["ONBOARDING", "ACTIVE"]
Role = Literal["trader", "admin"]
ROLES: tuple[Role, ...] = ("trader", "admin")


class Account(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    # ACTIVE once AccountOpened is applied; ONBOARDING for a row made by an earlier halt or
    # position message (the streams are consumed independently).
    status: AccountStatus
    created_at: int | None
    updated_at: int
    trading_blocked: bool
    blocked_reason: str | None
    shorting_enabled: bool
    cash: Decimal
    realized_pnl: Decimal


class Order(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    client_order_id: str
    account_id: str
    symbol: str
    asset_class: str
    side: Side
    type: OrderKind
    time_in_force: TimeInForce
    qty: Decimal  # a replacement's qty includes what its predecessors filled
    filled_qty: Decimal
    filled_notional: Decimal  # sum of price x qty over the fills, exact
    filled_avg_price: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    status: OrderStatus
    created_at: int
    updated_at: int
    submitted_at: int
    filled_at: int | None = None
    canceled_at: int | None = None
    expired_at: int | None = None
    replaced_at: int | None = None
    failed_at: int | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    reject_code: str | None = None
    reject_reason: str | None = None
    # Whether this order holds its client_order_id in the account's namespace (the one
    # `get_order_by_client_id` finds first). Validated orders do, unless another already did.
    holds_client_order_id: bool = False

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    match_id: int
    account_id: str
    symbol: str
    side: Side
    price: Decimal
    qty: Decimal
    leaves_qty: Decimal
    liquidity: Literal["maker", "taker"]
    ts: int
    seq: int


class Position(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    symbol: str
    qty: Decimal  # signed: negative is short
    avg_entry_price: Decimal
    cost_basis: Decimal  # qty x avg_entry_price
    updated_at: int


class PendingReplace(msgspec.Struct, frozen=True, kw_only=True):
    """What a validated replace asked for that OrderReplaced does not repeat."""

    new_order_id: str
    order_id: str
    new_client_order_id: str
    ts: int


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """An API key's public part; the secret exists only as a hash in the database."""

    key_id: str
    account_id: str
    role: Role
    created_at: int
    revoked_at: int | None = None
