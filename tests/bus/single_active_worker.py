"""One SingleActiveConsumer instance in its own process, for the failover test to SIGKILL.

Usage: python single_active_worker.py NATS_URL LEDGER_PATH NAME PRIORITY_TIMEOUT

The handler's effect is a row in a SQLite ledger shared by every instance, and the checkpoint
reads its high-water mark from the same ledger: the effect and the high-water mark are one
transaction, as a real stateful consumer keeps them. A duplicate or a gap shows in the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys

from bourse.bus.connection import connect
from bourse.bus.pull import Delivery
from bourse.bus.single_active import SingleActiveConfig, SingleActiveConsumer

CONSUMER = "failover"
FILTER = "md.failover.>"


class LedgerCheckpoint:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def load(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM processed").fetchone()
        return int(row[0])

    async def save(self, seq: int) -> None:
        pass  # saved by the handler, in the same transaction as its effect


async def main(url: str, ledger: str, name: str, priority_timeout: float) -> None:
    db = sqlite3.connect(ledger, timeout=30)

    async def handler(delivery: Delivery) -> None:
        await asyncio.sleep(0.002)  # the work this instance does for a message
        with db:
            db.execute(
                "INSERT INTO processed (seq, instance) VALUES (?, ?)", (delivery.stream_seq, name)
            )

    nc = await connect(url, name=name)
    config = SingleActiveConfig(
        stream="MARKET_DATA",
        consumer=CONSUMER,
        filter_subjects=(FILTER,),
        priority_timeout=priority_timeout,
    )
    await SingleActiveConsumer(
        nc, config, handler, checkpoint=LedgerCheckpoint(db), name=name
    ).start()
    with db:
        db.execute("INSERT INTO workers (name, pid) VALUES (?, ?)", (name, os.getpid()))
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
