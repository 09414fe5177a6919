"""The accounts read model: orders, fills, positions and accounts as the gateway serves them.

A projection of the ORDERS and POSITIONS streams into SQL tables (SQLite file or
PostgreSQL), plus the API keys the gateway authenticates with. It is not the source of
truth — the journal is — except for the API keys.

    db = Database.open("sqlite:///.bourse/readmodel.db")   # or postgresql://...
    migrate(db)                                             # on every start; idempotent
    projection = ReadModelProjection(db)
    projection.apply("ORDERS", [(stream_seq, message), ...])   # in order; redelivery skipped
    with db.read() as conn:
        order = queries.get_order(conn, account_id, order_id)

The parts: `projector` (the pure core: message -> row changes), `projection` (applies them
with the stream's high-water mark, in one transaction), `queries` (reads), `api_keys`,
`migrations`, `schema` (tables) and `rows` (typed rows).
"""

from bourse.accounts.readmodel import api_keys, queries
from bourse.accounts.readmodel.database import Database
from bourse.accounts.readmodel.migrations import migrate, schema_version
from bourse.accounts.readmodel.projection import OutOfOrder, ReadModelProjection
from bourse.accounts.readmodel.projector import Projector, ReadModelEvent
from bourse.accounts.readmodel.queries import InvalidQuery
from bourse.accounts.readmodel.rows import Account, ApiKey, Fill, Order, OrderStatus, Position

__all__ = [
    "Account",
    "ApiKey",
    "Database",
    "Fill",
    "InvalidQuery",
    "Order",
    "OrderStatus",
    "OutOfOrder",
    "Position",
    "Projector",
    "ReadModelEvent",
    "ReadModelProjection",
    "api_keys",
    "migrate",
    "queries",
    "schema_version",
]
