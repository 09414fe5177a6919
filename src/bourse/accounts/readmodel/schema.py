"""The read model's tables, one definition for SQLite and PostgreSQL.

Money and quantities are exact: NUMERIC (unbounded precision, scale kept) on PostgreSQL and
TEXT holding the decimal string on SQLite, whose NUMERIC affinity would turn them into
floats. Both read back as the `Decimal` that was written. Times are integer nanoseconds
since the epoch, as on the bus, on both databases.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Dialect,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Row,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import NUMERIC
from sqlalchemy.types import TypeDecorator, TypeEngine

from bourse.accounts.readmodel.rows import (
    CLOSED_STATUSES,
    OPEN_STATUSES,
    ROLES,
    Account,
    ApiKey,
    Fill,
    Order,
    PendingReplace,
    Position,
)


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal stored without loss: NUMERIC on PostgreSQL, its string on SQLite."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(NUMERIC(asdecimal=True))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"expected a finite Decimal, got {value!r}")
        return value if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(value)


def _one_of(table: str, column: str, values: Iterable[str]) -> CheckConstraint:
    listed = ", ".join(f"'{value}'" for value in sorted(values))
    return CheckConstraint(f"{column} IN ({listed})", name=f"ck_{table}_{column}")


NANOS = BigInteger
METADATA = MetaData()

accounts = Table(
    "accounts",
    METADATA,
    Column("id", String(64), primary_key=True),
    # ONBOARDING until AccountOpened is seen (a halt or a position can arrive first).
    Column("status", String(16), nullable=False),
    Column("created_at", NANOS),
    Column("updated_at", NANOS, nullable=False),
    Column("trading_blocked", Boolean, nullable=False),
    Column("blocked_reason", Text),
    Column("shorting_enabled", Boolean, nullable=False),
    Column("cash", ExactDecimal, nullable=False),
    Column("realized_pnl", ExactDecimal, nullable=False),
)

api_keys = Table(
    "api_keys",
    METADATA,
    Column("key_id", String(32), primary_key=True),
    Column("account_id", String(64), nullable=False),
    Column("secret_hash", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", NANOS, nullable=False),
    Column("revoked_at", NANOS),
    _one_of("api_keys", "role", ROLES),
    Index("ix_api_keys_account", "account_id"),
)

orders = Table(
    "orders",
    METADATA,
    Column("id", String(64), primary_key=True),
    Column("client_order_id", String(128), nullable=False),
    # The client_order_id this order holds in its account's namespace (the unique key
    # lookups use), or NULL: pending, rejected before validation, or a journaled duplicate.
    Column("client_order_key", String(128)),
    Column("account_id", String(64), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("asset_class", String(16), nullable=False),
    Column("side", String(4), nullable=False),
    Column("type", String(16), nullable=False),
    Column("time_in_force", String(8), nullable=False),
    Column("qty", ExactDecimal, nullable=False),
    Column("filled_qty", ExactDecimal, nullable=False),
    # Sum of price x qty over the fills, exact; filled_avg_price is derived from it.
    Column("filled_notional", ExactDecimal, nullable=False),
    Column("filled_avg_price", ExactDecimal),
    Column("limit_price", ExactDecimal),
    Column("stop_price", ExactDecimal),
    Column("status", String(16), nullable=False),
    Column("created_at", NANOS, nullable=False),
    Column("updated_at", NANOS, nullable=False),
    Column("submitted_at", NANOS, nullable=False),
    Column("filled_at", NANOS),
    Column("canceled_at", NANOS),
    Column("expired_at", NANOS),
    Column("replaced_at", NANOS),
    Column("failed_at", NANOS),
    Column("replaced_by", String(64)),
    Column("replaces", String(64)),
    Column("reject_code", String(64)),
    Column("reject_reason", Text),
    _one_of("orders", "status", OPEN_STATUSES | CLOSED_STATUSES),
    _one_of("orders", "side", ("buy", "sell")),
    Index("ux_orders_client_order_key", "account_id", "client_order_key", unique=True),
    Index("ix_orders_client_order_id", "account_id", "client_order_id"),
    Index("ix_orders_submitted", "account_id", "submitted_at", "id"),
)

fills = Table(
    "fills",
    METADATA,
    Column("order_id", String(64), nullable=False),
    Column("match_id", BigInteger, nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(4), nullable=False),
    Column("price", ExactDecimal, nullable=False),
    Column("qty", ExactDecimal, nullable=False),
    Column("leaves_qty", ExactDecimal, nullable=False),
    Column("liquidity", String(8), nullable=False),
    Column("ts", NANOS, nullable=False),
    # The ORDERS stream sequence of the execution: a unique, ordered id for pagination.
    Column("seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("order_id", "match_id"),
    Index("ix_fills_account", "account_id", "seq"),
)

positions = Table(
    "positions",
    METADATA,
    Column("account_id", String(64), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("qty", ExactDecimal, nullable=False),
    Column("avg_entry_price", ExactDecimal, nullable=False),
    Column("cost_basis", ExactDecimal, nullable=False),
    Column("updated_at", NANOS, nullable=False),
    PrimaryKeyConstraint("account_id", "symbol"),
)

# A validated replace waiting for the engine: OrderReplaced does not repeat the request's
# new client_order_id, so it is kept from ReplaceValidated until then.
pending_replaces = Table(
    "pending_replaces",
    METADATA,
    Column("new_order_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("new_client_order_id", String(128), nullable=False),
    Column("ts", NANOS, nullable=False),
    Index("ix_pending_replaces_order", "order_id"),
)

# The last stream sequence applied, per stream, written in the same transaction as the rows.
offsets = Table(
    "readmodel_offsets",
    METADATA,
    Column("stream", String(64), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)

# Which schema migrations have run (see migrations.py).
migrations_table = Table(
    "readmodel_migrations",
    MetaData(),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", NANOS, nullable=False),
)


# ---- rows <-> typed values (column names are the field names) ----

AnyRow = Row[*tuple[Any, ...]]
_Typed = TypeVar("_Typed", Account, Fill, Position, PendingReplace, ApiKey)


def row_values(row: AnyRow) -> dict[str, Any]:
    # Column names come back as str subclasses (quoted_name), which strict conversion refuses.
    return {str(name): value for name, value in row._mapping.items()}


def from_db(kind: type[_Typed], row: AnyRow) -> _Typed:
    return msgspec.convert(row_values(row), kind, strict=True)


def to_db(value: Account | Fill | Position | PendingReplace) -> dict[str, Any]:
    return msgspec.structs.asdict(value)


def order_from_db(row: AnyRow) -> Order:
    values = row_values(row)
    values["holds_client_order_id"] = values.pop("client_order_key") is not None
    return msgspec.convert(values, Order, strict=True)


def order_to_db(order: Order) -> dict[str, Any]:
    values = msgspec.structs.asdict(order)
    held = values.pop("holds_client_order_id")
    values["client_order_key"] = order.client_order_id if held else None
    return values
