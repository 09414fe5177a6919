"""The history service's consumer: MARKET_DATA in batches, with each message's stream sequence.

`bus.consume.BatchConsumer` hands a batch handler decoded values only; the store needs each
message's stream sequence (its identity, for idempotency) and its bytes (parsed in bulk by
the database). `RecordingConsumer` is the same batching pull loop, handing over `Recorded`s.
Everything else, the settling of each message included, is the shared consumer machinery:
malformed or unstorable messages are dead-lettered, a failed batch is retried later,
redeliveries of applied messages are acknowledged without reaching the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from bourse.bus.consume.pull import PullLoop
from bourse.bus.consume.spec import BatchSpec
from bourse.history.rows import Recorded, unstorable
from bourse.model import marketdata
from bourse.model.marketdata import MarketData

log = logging.getLogger(__name__)

_MIN_WAIT = 0.005  # seconds: below this, the batch closes rather than fetch again


def decode_storable(payload: bytes) -> MarketData:
    """A market-data message the store can keep exactly; ValueError (so: dead-lettered as
    malformed, with this reason) for one it cannot."""
    message = marketdata.decode(payload)
    problem = unstorable(message)
    if problem is not None:
        raise ValueError(problem)
    return message


class RecordingConsumer(PullLoop[MarketData]):
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

    async def _cycle(self) -> None:
        # BatchConsumer._cycle, keeping each message's sequence and bytes with its value.
        spec = self._batch_spec
        loop = asyncio.get_running_loop()
        msgs: list[Msg] = []
        batch: list[Recorded] = []
        deadline: float | None = None
        with self._settling.keep_alive(msgs):
            while len(msgs) < spec.batch_size and not self._stopping.is_set():
                if deadline is None:
                    size, wait = self._fetch_size(spec.batch_size), spec.fetch_timeout
                else:
                    size, wait = spec.batch_size - len(msgs), deadline - loop.time()
                    if wait < _MIN_WAIT:
                        break
                fetched = await self._fetch(size, wait)
                for msg in fetched:
                    value = await self._settling.admit(msg)
                    if value is not None:
                        msgs.append(msg)
                        batch.append(Recorded(msg.metadata.sequence.stream, value, msg.data))
                if deadline is None:
                    if msgs:
                        deadline = loop.time() + spec.batch_timeout
                    elif not fetched:
                        return
            if not batch:
                return
            try:
                await self._on_batch(batch)
            except Exception as exc:
                log.warning("%s: a batch of %d failed", spec.durable, len(msgs), exc_info=exc)
                for msg in msgs:
                    await self._settling.failed(msg, exc, report=False)
            else:
                for msg in msgs:
                    await self._settling.succeeded(msg)
