"""Pull consumers: fetch messages in batches, handle them, acknowledge each explicitly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections import deque
from collections.abc import Callable
from typing import TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from bourse.bus.consume.base import Consumer
from bourse.bus.consume.settle import Handler
from bourse.bus.consume.spec import PullSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_ERROR_PAUSE = 2.0


class PullLoop(Consumer[T]):
    """The fetch loop shared by pull consumers: a failing cycle is logged and retried after a
    growing pause (the broker restarting, say), and never ends the loop; only `stop()` does,
    after the cycle in progress has finished."""

    def __init__(self, nc: NATS, spec: PullSpec, *, decode: Callable[[bytes], T]) -> None:
        super().__init__(nc, spec, decode=decode)
        self._pull_spec = spec
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backlog = 0

    async def _open(self, stream: str, info: ConsumerInfo) -> None:
        self._subscription = await self._js.pull_subscribe_bind(
            durable=self._spec.durable, stream=stream
        )
        self._backlog = info.num_pending or 0
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self._spec.durable}")

    async def _close(self) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.wait({task})  # the loop ends after its cycle; it never raises
            if task.cancelled():
                log.warning("consumer %s: its loop was cancelled", self._spec.durable)
        if self._subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._cycle()
                self._settling.confirm()
                await self._settling.forget_settled()
                failures = 0
            except Exception as exc:
                failures += 1
                if isinstance(exc, nats.errors.Error):
                    log.warning("consumer %s: %r; retrying", self._spec.durable, exc)
                else:
                    log.exception("consumer %s: cycle failed; retrying", self._spec.durable)
                await self._pause(min(_MAX_ERROR_PAUSE, 0.05 * 2**failures))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _fetch(self, size: int, timeout: float) -> list[Msg]:
        """Up to `size` messages, waiting at most `timeout` seconds; [] when none came.

        The client's fetch returns a partial batch at once when messages are waiting, but once
        it has to wait it lingers until the batch is full or the time is up. So the size asked
        for is the backlog JetStream last reported, and 1 when there is none: an idle consumer
        gets the next message as soon as it is published.
        """
        assert self._subscription is not None
        try:
            msgs = await self._subscription.fetch(size, timeout=timeout)
        except TimeoutError:  # nats' fetch timeouts are TimeoutErrors
            return []
        self._backlog = msgs[-1].metadata.num_pending if msgs else 0
        return msgs

    def _fetch_size(self, room: int) -> int:
        return max(1, min(room, self._backlog))

    @abstractmethod
    async def _cycle(self) -> None:
        """Fetch and process one round of messages, settling every one of them."""


class PullConsumer(PullLoop[T]):
    """A durable pull consumer that hands each message to `handler`, one at a time, in the
    order JetStream delivers them: stream order, except that a retried message comes later.

    The handler returning means "applied": the message is acknowledged. The handler raising
    means "retry later": the message is nak'd with the spec's delay, and dead-lettered if that
    was its last allowed delivery. A message that cannot be decoded is dead-lettered at once.
    A redelivery of a message already applied is acknowledged without calling the handler.
    """

    def __init__(
        self,
        nc: NATS,
        spec: PullSpec,
        handler: Handler[T],
        *,
        decode: Callable[[bytes], T],
    ) -> None:
        super().__init__(nc, spec, decode=decode)
        self._handler = handler

    async def _cycle(self) -> None:
        msgs = await self._fetch(
            self._fetch_size(self._pull_spec.batch_size), self._pull_spec.fetch_timeout
        )
        unsettled = deque(msgs)
        with self._settling.keep_alive(unsettled):
            while unsettled:
                await self._settling.process(unsettled[0], self._handler)
                unsettled.popleft()
