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
    the answer's `seq` orders it among the published ones. `engine.quote.<symbol>` likewise
    answers with the top of the book (a `Quote`; an error while the book is one-sided)."""
    prefix = subjects.engine_depth("")
    quote_prefix = subjects.engine_quote("")

    async def on_request(msg: Msg) -> None:
        fold = service.core
        assert isinstance(fold, EngineFold)
        now = time.time_ns()
        answer: marketdata.Depth | marketdata.Quote | None
        if msg.subject.startswith(quote_prefix):  # engine.quote.<symbol>: its top of book
            symbol = msg.subject[len(quote_prefix) :]
            answer = fold.engine.quote_now(symbol, now)
            missing = f"no two-sided book for {symbol!r}"
        elif msg.subject.startswith(prefix):
            symbol = msg.subject[len(prefix) :]
            answer = fold.engine.depth_now(symbol, now)
            missing = f"no book for {symbol!r}"
        else:
            return  # not a question this answers
        if answer is None:
            await msg.respond(msgspec.json.encode(_DepthError(message=missing)))
        else:
            await msg.respond(marketdata.encode(answer))

    return await nc.subscribe("engine.*.*", queue=NAME, cb=on_request)
