"""The risk service: the risk core folded over the ORDERS journal.

It reads `orders.admin` (accounts opened and funded, halts and resumes), `orders.new` (the
order rate), `orders.executed.>` (fills) and `orders.session` (the end of a trading day), in
stream order, and publishes alerts on `risk.alerts.<severity>` (RISK) and the kill switch's
`TradingHalted` on `orders.admin` (ORDERS). `FoldService` does the reading, publishing,
snapshots and recovery.

Marks come from the journal itself, so a replay values positions at the same prices in the
same places: each `OrderSubmitted`'s `reference_price` (the gateway's reference price when
the order arrived) and each `Execution`'s price are the symbol's mark, applied just before
the message that carries them. A price that moves without an order or a trade revalues
nothing until the next one.

The service reads its own halts back on `orders.admin`, as accounts does: the core takes a
`TradingHalted` as the journal's word that the account is halted, which it already knows,
and answers nothing, so reading them back publishes nothing and loops nowhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from nats.aio.client import Client as NATS

from bourse.bus.fold import FoldService
from bourse.bus.snapshots import SnapshotStore
from bourse.bus.streams import ORDERS, RISK
from bourse.model import orders, subjects
from bourse.risk import snapshot
from bourse.risk.core import RiskCore
from bourse.risk.messages import Mark
from bourse.risk.rules import RiskConfig, RiskRules, RuleOverrides

NAME = "risk"
INPUTS = (
    subjects.ORDERS_ADMIN,
    subjects.ORDERS_NEW,
    subjects.order_outcome("executed", ">"),
    subjects.ORDERS_SESSION,
)
OUTPUTS = {
    RISK.name: (subjects.risk_alert("*"),),
    ORDERS.name: (subjects.ORDERS_ADMIN,),
}

# What `bourse up` runs without --risk-config: 10 % of the demo account's opening cash.
DEFAULT_DAILY_LOSS_LIMIT = Decimal(10_000)


def default_config(exempt: Iterable[str] = ()) -> RiskConfig:
    """Every account may lose `DEFAULT_DAILY_LOSS_LIMIT` in a trading day before the kill
    switch halts it; the accounts in `exempt` (the platform's market makers) have no limit.
    Every other rule is off."""
    return RiskConfig(
        defaults=RiskRules(daily_loss_limit=DEFAULT_DAILY_LOSS_LIMIT),
        accounts={account_id: RuleOverrides(daily_loss_limit=None) for account_id in exempt},
    )


def journal_mark(event: orders.OrdersEvent) -> Mark | None:
    """The mark an ORDERS message carries: an order's reference price, a fill's price."""
    match event:
        case orders.OrderSubmitted(symbol=symbol, reference_price=price) if price is not None:
            return Mark(ts=event.ts, symbol=symbol, price=price)
        case orders.Execution(symbol=symbol, price=price):
            return Mark(ts=event.ts, symbol=symbol, price=price)
    return None


class RiskFold:
    """The risk core as a FoldCore: marks taken from the journal, plus snapshots.

    The core's own message ids (`risk-alert:<account>:<n>`, also each alert's `alert_id`)
    are not used as `Nats-Msg-Id`: FoldService gives every output `risk.<seq>.<index>`,
    which is as deterministic and lets a restarted service find what it published.
    """

    def __init__(self, config: RiskConfig | None = None) -> None:
        self._config = config
        self.risk = RiskCore(config)

    def apply(self, event: orders.OrdersEvent) -> list[tuple[str, object]]:
        # The mark first: a fill at a new price is then valued at its own price, not at
        # the previous mark, which would raise an alert for a loss that never was.
        mark = journal_mark(event)
        outputs = [] if mark is None else self.risk.apply(mark)
        outputs += self.risk.apply(event)
        return [(output.subject, output.message) for output in outputs]

    def snapshot(self) -> bytes:
        return snapshot.dump(self.risk)

    def restore(self, data: bytes) -> None:
        self.risk = snapshot.load(data, self._config)

    def state_digest(self) -> str:
        return self.risk.state_digest()


def risk_service(
    nc: NATS,
    *,
    config: RiskConfig | None = None,
    name: str = NAME,
    snapshot_every: int = 1000,
    snapshots: SnapshotStore | None = None,
) -> FoldService[orders.OrdersEvent]:
    """The risk service with `config`'s rules (None: every rule off), not started yet
    (`await service.start()`)."""
    return FoldService(
        nc,
        name=name,
        filter_subjects=INPUTS,
        outputs=OUTPUTS,
        core=RiskFold(config),
        decode=orders.decode,
        snapshot_every=snapshot_every,
        snapshots=snapshots,
    )
