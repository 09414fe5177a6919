"""A batching pull consumer: collect messages, process them together, acknowledge the batch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from bourse.bus.consume.pull import PullLoop
from bourse.bus.consume.spec import BatchSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
B = TypeVar("B")  # what a batch holds per message

BatchHandler = Callable[[Sequence[T]], Awaitable[None]]

# Below this, a fetch is not worth asking for: the batch closes.
_MIN_WAIT = 0.005


class Batcher(PullLoop[T], Generic[T, B]):
    """The batching loop of `BatchConsumer`, holding `_item(msg, value)` per message: a
    subclass that needs more than the decoded value (its stream sequence, its bytes) says
    what, and gets the same batching, acks and retries."""

    _on_batch: Callable[[Sequence[B]], Awaitable[None]]
    _batch_spec: BatchSpec

    def _item(self, msg: Msg, value: T) -> B:
        raise NotImplementedError

    async def _cycle(self) -> None:
        spec = self._batch_spec
        loop = asyncio.get_running_loop()
        msgs: list[Msg] = []
        values: list[B] = []
        deadline: float | None = None
        with self._settling.keep_alive(msgs):
            while len(msgs) < spec.batch_size and not self._stopping.is_set():
                if deadline is None:
                    # Idle: wait for a first message, and return as soon as one arrives.
                    size, wait = self._fetch_size(spec.batch_size), spec.fetch_timeout
                else:
                    # Collecting: the fetch lingers until the batch fills or time is up.
                    size, wait = spec.batch_size - len(msgs), deadline - loop.time()
                    if wait < _MIN_WAIT:
                        break
                fetched = await self._fetch(size, wait)
                for msg in fetched:
                    value = await self._settling.admit(msg)
                    if value is not None:
                        msgs.append(msg)
                        values.append(self._item(msg, value))
                if deadline is None:
                    if msgs:
                        deadline = loop.time() + spec.batch_timeout
                    elif not fetched:
                        return  # idle and nothing came: let the loop look at stop()
            if not values:
                return
            try:
                await self._on_batch(values)
            except Exception as exc:  # "retry the batch later"
                log.warning(
                    "consumer %s: a batch of %d failed", spec.durable, len(msgs), exc_info=exc
                )
                for msg in msgs:
                    await self._settling.failed(msg, exc, report=False)
            else:
                for msg in msgs:
                    await self._settling.succeeded(msg)


class BatchConsumer(Batcher[T, T]):
    """A durable pull consumer that hands `on_batch` whole batches of decoded messages.

    A batch closes when it holds `batch_size` messages or `batch_timeout` seconds after its
    first message arrived. `on_batch` returning acknowledges every message of the batch;
    raising naks them all (each dead-lettered instead if it was on its last delivery).
    Malformed messages are dead-lettered and redeliveries of applied messages acknowledged
    before the batch is formed, so neither reaches `on_batch`. Keep the pure computation out
    of `on_batch`'s I/O: e.g. `on_batch = lambda batch: sink(batch_stats(batch))`.
    """

    def __init__(
        self,
        nc: NATS,
        spec: BatchSpec,
        on_batch: BatchHandler[T],
        *,
        decode: Callable[[bytes], T],
    ) -> None:
        super().__init__(nc, spec, decode=decode)
        self._batch_spec = spec
        self._on_batch = on_batch

    def _item(self, msg: Msg, value: T) -> T:
        return value
