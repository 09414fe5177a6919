"""The matching engine service: the engine core folded over `orders.validated.>`.

It reads the requests accounts validated, in stream order, and publishes the outcomes on
`orders.<accepted|executed|cancelled|replaced|rejected>.<order_id>` (ORDERS) and the bourse
venue's trades, quotes and depth on `md.bourse.<symbol>` (MARKET_DATA). `FoldService` does
the reading, publishing, snapshots and recovery.
"""

from __future__ import annotations

import msgspec
from nats.aio.client import Client as NATS

from bourse.bus.fold import FoldService
from bourse.bus.snapshots import SnapshotStore
from bourse.bus.streams import MARKET_DATA, ORDERS
from bourse.engine import snapshot
from bourse.engine.core import VENUE, EngineInput, MatchingEngine, Output
from bourse.engine.types import SelfTradePrevention
from bourse.model import subjects
from bourse.model.instruments import DEFAULT_UNIVERSE, Instrument

NAME = "engine"
INPUTS = (subjects.ALL_VALIDATED, subjects.ORDERS_SESSION)
OUTCOMES = ("accepted", "executed", "cancelled", "replaced", "rejected")
OUTPUTS = {
    ORDERS.name: tuple(subjects.order_outcome(kind, ">") for kind in OUTCOMES),
    MARKET_DATA.name: (subjects.market_data_filter(VENUE),),
}

_decoder: msgspec.json.Decoder[EngineInput] = msgspec.json.Decoder(EngineInput)


def decode(payload: bytes) -> EngineInput:
    """A validated request; msgspec.DecodeError for anything else."""
    return _decoder.decode(payload)


class EngineFold:
    """The matching engine as a FoldCore: the core, plus its snapshots."""

    def __init__(
        self,
        instruments: tuple[Instrument, ...] = DEFAULT_UNIVERSE,
        *,
        self_trade: SelfTradePrevention = SelfTradePrevention.CANCEL_RESTING,
    ) -> None:
        self._instruments = instruments
        self._self_trade = self_trade
        self.engine = MatchingEngine(instruments, self_trade=self_trade)

    def apply(self, request: EngineInput) -> list[Output]:
        return self.engine.apply(request)

    def snapshot(self) -> bytes:
        return snapshot.dump(self.engine)

    def restore(self, data: bytes) -> None:
        self.engine = snapshot.load(data, self._instruments, self_trade=self._self_trade)

    def state_digest(self) -> str:
        return self.engine.state_digest()


def engine_service(
    nc: NATS,
    *,
    instruments: tuple[Instrument, ...] = DEFAULT_UNIVERSE,
    name: str = NAME,
    snapshot_every: int = 1000,
    snapshots: SnapshotStore | None = None,
) -> FoldService[EngineInput]:
    """The engine service, not started yet (`await service.start()`)."""
    return FoldService(
        nc,
        name=name,
        filter_subjects=INPUTS,
        outputs=OUTPUTS,
        core=EngineFold(instruments),
        decode=decode,
        snapshot_every=snapshot_every,
        snapshots=snapshots,
    )
