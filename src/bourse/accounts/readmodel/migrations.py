"""Schema migrations, run on start: `migrate(db)` is safe to call every time, from any process.

A small numbered list instead of Alembic: the read model has a handful of tables, must
upgrade itself on start (no separate command to forget), and holds one kind of primary data
(API keys) besides what it can rebuild from the streams. The recipe is the one Alembic
documents for new databases: an empty database gets `METADATA.create_all` (the current
schema) and is stamped with the latest version; an older one runs the steps after its
version. Each step is one function of a connection, written with SQLAlchemy's DDL so it works
on SQLite and PostgreSQL alike; a step that changes a column on SQLite rebuilds the table
(SQLite's ALTER TABLE is limited), in the same transaction.

Everything happens in one transaction under a lock (PostgreSQL: an advisory lock; SQLite:
BEGIN IMMEDIATE), so two processes starting together do not both migrate, and a failed step
leaves the database as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, func, insert, inspect, select, text

from bourse.accounts.readmodel.database import Database
from bourse.accounts.readmodel.schema import METADATA, migrations_table
from bourse.errors import BourseError


class SchemaTooNew(BourseError):
    """The database was migrated by a newer Bourse than this one."""

    def __init__(self, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"the read-model schema is at version {found}, newer than the {supported} this "
            "Bourse knows; run a Bourse at least as new, or point it at another database"
        )


Step = Callable[[Connection], None]

# version -> (what it does, the step from version - 1). Version 1 is the first schema; there
# is no step to it, a new database is created at the latest version directly.
STEPS: dict[int, tuple[str, Step | None]] = {
    1: ("accounts, api_keys, orders, fills, positions, pending_replaces, offsets", None),
}
LATEST = max(STEPS)

# Any 64-bit constant; the advisory lock serializes migrations across processes.
_PG_LOCK_KEY = 0x6272_736D_6967_7201


def migrate(db: Database, *, clock: Callable[[], int] = time.time_ns) -> int:
    """Bring the schema to the latest version; return the version it was at before (0: new)."""
    with db.write() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        migrations_table.create(conn, checkfirst=True)
        found = conn.execute(select(func.max(migrations_table.c.version))).scalar_one()
        current = int(found or 0)
        if current > LATEST:
            raise SchemaTooNew(current, LATEST)
        if current == 0:
            METADATA.create_all(conn)
            _stamp(conn, LATEST, "create " + STEPS[LATEST][0], clock())
            return 0
        for version in range(current + 1, LATEST + 1):
            description, step = STEPS[version]
            assert step is not None, f"migration {version} has no step"
            step(conn)
            _stamp(conn, version, description, clock())
        return current


def schema_version(db: Database) -> int:
    """The version the database is at (0 before the first migration)."""
    with db.read() as conn:
        if not inspect(conn).has_table(migrations_table.name):
            return 0
        found = conn.execute(select(func.max(migrations_table.c.version))).scalar_one()
        return int(found or 0)


def _stamp(conn: Connection, version: int, description: str, now: int) -> None:
    conn.execute(
        insert(migrations_table).values(version=version, description=description, applied_at=now)
    )
