"""The history service's consumer: MARKET_DATA in batches, with each message's stream sequence.

`bus.consume.BatchConsumer` hands a batch handler decoded values only; the store needs each
message's stream sequence (its identity, for idempotency) and its bytes (parsed in bulk by
the database). `RecordingConsumer` is the same batching pull loop, handing over `Recorded`s.
Everything else, the settling of each message included, is the shared consumer machinery:
malformed or unstorable messages are dead-lettered, a failed batch is retried later,
redeliveries of applied messages are acknowledged without reaching the store.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from bourse.bus.consume.batch import Batcher
from bourse.bus.consume.spec import BatchSpec
from bourse.history.rows import Recorded, unstorable
from bourse.model import marketdata
from bourse.model.marketdata import MarketData

log = logging.getLogger(__name__)


def decode_storable(payload: bytes) -> MarketData:
    """A market-data message the store can keep exactly; ValueError (so: dead-lettered as
    malformed, with this reason) for one it cannot."""
    message = marketdata.decode(payload)
    problem = unstorable(message)
    if problem is not None:
        raise ValueError(problem)
    return message


class RecordingConsumer(Batcher[MarketData, Recorded]):
    """A durable pull consumer handing `on_batch` batches of `Recorded` messages.

    A batch closes at `batch_size` messages or `batch_timeout` seconds after its first one;
    `on_batch` returning acknowledges it, raising naks it for a later retry."""

    def __init__(
        self,
        nc: NATS,
        spec: BatchSpec,
        on_batch: Callable[[Sequence[Recorded]], Awaitable[None]],
    ) -> None:
        super().__init__(nc, spec, decode=decode_storable)
        self._batch_spec = spec
        self._on_batch = on_batch

    def _item(self, msg: Msg, value: MarketData) -> Recorded:
        # Each message's stream sequence and bytes travel with its value to the store.
        return Recorded(msg.metadata.sequence.stream, value, msg.data)
