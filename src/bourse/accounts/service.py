"""The accounts service: the accounts core folded over requests and the engine's outcomes.

It reads `orders.new`, `orders.cancel`, `orders.replace` and `orders.admin` (requests) and
`orders.<accepted|executed|cancelled|replaced|rejected>.>` (outcomes), in stream order, and
publishes its decisions on `orders.validated.<id>` / `orders.rejected.<id>` (ORDERS) and
positions after each fill on `positions.<account>.<symbol>` (POSITIONS). `FoldService` does
the reading, publishing, snapshots and recovery.

Accounts also reads its own rejections back (they share `orders.rejected.>` with the
engine's), exactly as the in-memory fold does, and its core cannot tell the two apart: see
"Known limits" in docs/fold-services.md for the two cases where that matters.
"""

from __future__ import annotations

from typing import cast

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from bourse.accounts import snapshot
from bourse.accounts.core import AccountsConfig, AccountsCore, Output
from bourse.accounts.query import serve_ledger_queries
from bourse.bus.fold import FoldService
from bourse.bus.snapshots import SnapshotStore
from bourse.bus.streams import ORDERS, POSITIONS
from bourse.model import orders, subjects
from bourse.model.instruments import DEFAULT_UNIVERSE, Instrument

NAME = "accounts"
REQUESTS = (
    subjects.ORDERS_NEW,
    subjects.ORDERS_CANCEL,
    subjects.ORDERS_REPLACE,
    subjects.ORDERS_ADMIN,
)
OUTCOMES = ("accepted", "executed", "cancelled", "replaced", "rejected")
INPUTS = REQUESTS + tuple(subjects.order_outcome(kind, ">") for kind in OUTCOMES)
OUTPUTS = {
    ORDERS.name: (
        subjects.order_outcome("validated", ">"),
        subjects.order_outcome("rejected", ">"),
    ),
    POSITIONS.name: (subjects.positions("*", "*"),),
}


class AccountsFold:
    """The accounts core as a FoldCore: the core, plus its snapshots."""

    def __init__(
        self,
        instruments: tuple[Instrument, ...] = DEFAULT_UNIVERSE,
        config: AccountsConfig | None = None,
    ) -> None:
        self._instruments = instruments
        self._config = config
        self.accounts = AccountsCore(instruments, config)

    def apply(self, event: orders.OrdersEvent) -> list[Output]:
        return self.accounts.apply(event)

    def snapshot(self) -> bytes:
        return snapshot.dump(self.accounts)

    def restore(self, data: bytes) -> None:
        self.accounts = snapshot.load(data, self._instruments, self._config)

    def state_digest(self) -> str:
        return self.accounts.state_digest()


def accounts_service(
    nc: NATS,
    *,
    instruments: tuple[Instrument, ...] = DEFAULT_UNIVERSE,
    config: AccountsConfig | None = None,
    name: str = NAME,
    snapshot_every: int = 1000,
    snapshots: SnapshotStore | None = None,
) -> FoldService[orders.OrdersEvent]:
    """The accounts service, not started yet (`await service.start()`)."""
    return FoldService(
        nc,
        name=name,
        filter_subjects=INPUTS,
        outputs=OUTPUTS,
        core=AccountsFold(instruments, config),
        decode=orders.decode,
        snapshot_every=snapshot_every,
        snapshots=snapshots,
    )


async def serve_queries(nc: NATS, service: FoldService[orders.OrdersEvent]) -> Subscription:
    """Answer `accounts.ledger.<id>` requests from a running accounts service's ledgers."""

    def core() -> AccountsCore:
        return cast(AccountsFold, service.core).accounts

    return await serve_ledger_queries(nc, core, lambda: service.last_seq)
