"""The matching engine service: the engine core folded over `orders.validated.>`.

It reads the requests accounts validated, in stream order, and publishes the outcomes on
`orders.<accepted|executed|cancelled|replaced|rejected>.<order_id>` (ORDERS) and the bourse
venue's trades, quotes and depth on `md.bourse.<symbol>` (MARKET_DATA). `FoldService` does
the reading, publishing, snapshots and recovery.
"""

from __future__ import annotations

import time

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bourse.bus.fold import FoldService
from bourse.bus.snapshots import SnapshotStore
from bourse.bus.streams import MARKET_DATA, ORDERS
from bourse.engine import snapshot
from bourse.engine.core import VENUE, EngineInput, MatchingEngine, Output
from bourse.engine.types import SelfTradePrevention
from bourse.errors import BourseError
from bourse.model import marketdata, subjects
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


# ---- the book as it is now: `engine.depth.<symbol>` request/reply ----


class _DepthError(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="error"):
    message: str


class UnknownBook(BourseError):
    pass


_depth_decoder: msgspec.json.Decoder[marketdata.Depth | _DepthError] = msgspec.json.Decoder(
    marketdata.Depth | _DepthError
)


def decode_depth(payload: bytes) -> marketdata.Depth:
    """The engine's answer to `engine.depth.<symbol>`; UnknownBook for a symbol it has none of."""
    answer = _depth_decoder.decode(payload)
    if isinstance(answer, _DepthError):
        raise UnknownBook(answer.message)
    return answer


async def serve_depth_queries(nc: NATS, service: FoldService[EngineInput]) -> Subscription:
    """Answer `engine.depth.<symbol>` with the book's top levels as the fold has them now (the
    core is asked per request: a restored snapshot replaces it). A client that joins gets the
    book at once instead of at its next change, which on a quiet book may be minutes away;
    the answer's `seq` orders it among the published ones."""
    prefix = subjects.engine_depth("")

    async def on_request(msg: Msg) -> None:
        symbol = msg.subject[len(prefix) :]
        fold = service.core
        assert isinstance(fold, EngineFold)
        depth = fold.engine.depth_now(symbol, time.time_ns())
        if depth is None:
            await msg.respond(msgspec.json.encode(_DepthError(message=f"no book for {symbol!r}")))
        else:
            await msg.respond(marketdata.encode(depth))

    return await nc.subscribe(subjects.engine_depth("*"), queue=NAME, cb=on_request)
