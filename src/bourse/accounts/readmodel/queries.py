"""What the gateway asks the read model, Alpaca Trading API v2 style.

Every function takes a connection from `Database.read()`, so several queries can share one
consistent snapshot (an account and its positions, say). Every query is scoped to an
account: another account's order is not found, as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Literal

from sqlalchemy import Connection, select

from bourse.accounts.readmodel import schema
from bourse.accounts.readmodel.rows import (
    CLOSED_STATUSES,
    OPEN_STATUSES,
    Account,
    Fill,
    Order,
    Position,
)
from bourse.errors import BourseError

StatusFilter = Literal["open", "closed", "all"]
Direction = Literal["asc", "desc"]
DEFAULT_LIMIT = 50
MAX_LIMIT = 500

_STATUS_FILTERS: dict[str, frozenset[str] | None] = {
    "open": OPEN_STATUSES,
    "closed": CLOSED_STATUSES,
    "all": None,
}


class InvalidQuery(BourseError):
    """A query parameter is out of range; the message says what is accepted."""

    def __init__(self, parameter: str, given: object, accepted: str) -> None:
        self.parameter = parameter
        self.given = given
        self.accepted = accepted
        super().__init__(f"invalid {parameter}: {given!r}; accepted: {accepted}")


def get_account(conn: Connection, account_id: str) -> Account | None:
    row = conn.execute(
        select(schema.accounts).where(schema.accounts.c.id == account_id)
    ).one_or_none()
    return None if row is None else schema.from_db(Account, row)


def list_accounts(conn: Connection) -> list[Account]:
    """Every account, oldest first."""
    accounts = schema.accounts
    query = select(accounts).order_by(accounts.c.created_at, accounts.c.id)
    return [schema.from_db(Account, row) for row in conn.execute(query)]


def get_order(conn: Connection, account_id: str, order_id: str) -> Order | None:
    """The order, if it belongs to `account_id`."""
    orders = schema.orders
    row = conn.execute(
        select(orders).where(orders.c.id == order_id, orders.c.account_id == account_id)
    ).one_or_none()
    return None if row is None else schema.order_from_db(row)


def get_order_by_client_id(conn: Connection, account_id: str, client_order_id: str) -> Order | None:
    """The account's order with this client_order_id.

    The order holding the id (validated first) wins; otherwise, when the id was reused after
    a rejection or is still pending validation, the latest submission with it.
    """
    orders = schema.orders
    row = conn.execute(
        select(orders)
        .where(orders.c.account_id == account_id, orders.c.client_order_id == client_order_id)
        .order_by(
            orders.c.client_order_key.is_(None), orders.c.submitted_at.desc(), orders.c.id.desc()
        )
        .limit(1)
    ).one_or_none()
    return None if row is None else schema.order_from_db(row)


def list_orders(
    conn: Connection,
    account_id: str,
    *,
    status: StatusFilter = "open",
    limit: int = DEFAULT_LIMIT,
    after: int | None = None,
    until: int | None = None,
    direction: Direction = "desc",
    symbols: Sequence[str] | None = None,
    side: str | None = None,
) -> list[Order]:
    """The account's orders, as GET /v2/orders lists them.

    `after` and `until` bound `submitted_at` (nanoseconds, both exclusive); `direction` is the
    order of `submitted_at` (ties broken by id, in the same direction); `symbols` keeps only
    those symbols (None or empty: every symbol).
    """
    if status not in _STATUS_FILTERS:
        raise InvalidQuery("status", status, "open, closed or all")
    if direction not in ("asc", "desc"):
        raise InvalidQuery("direction", direction, "asc or desc")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery("limit", limit, f"an integer from 1 to {MAX_LIMIT}")
    orders = schema.orders
    query = select(orders).where(orders.c.account_id == account_id)
    statuses = _STATUS_FILTERS[status]
    if statuses is not None:
        query = query.where(orders.c.status.in_(sorted(statuses)))
    if after is not None:
        query = query.where(orders.c.submitted_at > after)
    if until is not None:
        query = query.where(orders.c.submitted_at < until)
    if symbols:
        query = query.where(orders.c.symbol.in_(sorted(set(symbols))))
    if side is not None:
        if side not in ("buy", "sell"):
            raise InvalidQuery("side", side, "buy or sell")
        query = query.where(orders.c.side == side)
    if direction == "asc":
        query = query.order_by(orders.c.submitted_at.asc(), orders.c.id.asc())
    else:
        query = query.order_by(orders.c.submitted_at.desc(), orders.c.id.desc())
    return [schema.order_from_db(row) for row in conn.execute(query.limit(limit))]


MAX_FILLS_PAGE = 100


def list_fills(
    conn: Connection,
    account_id: str,
    *,
    after: int | None = None,
    until: int | None = None,
    direction: Direction = "desc",
    page_size: int = MAX_FILLS_PAGE,
    beyond_seq: int | None = None,
) -> list[tuple[Fill, Decimal]]:
    """The account's fills, each with how much of its order was filled once it was done
    (cum_qty: the order's quantity less the fill's leaves), as GET
    /v2/account/activities/FILL lists them.

    `after` and `until` bound the fill's time (nanoseconds, exclusive); fills are ordered by
    their ORDERS sequence in `direction`, and `beyond_seq` (a page token) starts past that
    sequence in that direction.
    """
    if direction not in ("asc", "desc"):
        raise InvalidQuery("direction", direction, "asc or desc")
    if not 1 <= page_size <= MAX_FILLS_PAGE:
        raise InvalidQuery("page_size", page_size, f"an integer from 1 to {MAX_FILLS_PAGE}")
    fills = schema.fills
    query = select(fills).where(fills.c.account_id == account_id)
    if after is not None:
        query = query.where(fills.c.ts > after)
    if until is not None:
        query = query.where(fills.c.ts < until)
    if beyond_seq is not None:
        query = query.where(
            fills.c.seq > beyond_seq if direction == "asc" else fills.c.seq < beyond_seq
        )
    order = fills.c.seq.asc() if direction == "asc" else fills.c.seq.desc()
    page = [
        schema.from_db(Fill, row) for row in conn.execute(query.order_by(order).limit(page_size))
    ]
    # Filled by then: the order's quantity less what this fill left. A replacement order
    # takes over what its predecessor filled, so summing one order id's fills would not do.
    orders = schema.orders
    rows = conn.execute(  # a page's orders: at most MAX_FILLS_PAGE ids, one statement
        select(orders.c.id, orders.c.qty).where(
            orders.c.account_id == account_id,
            orders.c.id.in_(sorted({f.order_id for f in page})),
        )
    )
    quantities: dict[str, Decimal] = {order_id: qty for order_id, qty in rows}
    return [(f, quantities.get(f.order_id, f.qty + f.leaves_qty) - f.leaves_qty) for f in page]


def list_positions(conn: Connection, account_id: str) -> list[Position]:
    """The account's open positions, by symbol."""
    positions = schema.positions
    query = (
        select(positions).where(positions.c.account_id == account_id).order_by(positions.c.symbol)
    )
    return [schema.from_db(Position, row) for row in conn.execute(query)]


def get_position(conn: Connection, account_id: str, symbol: str) -> Position | None:
    """The account's open position in `symbol` (None when flat)."""
    positions = schema.positions
    row = conn.execute(
        select(positions).where(positions.c.account_id == account_id, positions.c.symbol == symbol)
    ).one_or_none()
    return None if row is None else schema.from_db(Position, row)
