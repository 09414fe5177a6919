"""Follow one stream in order from a sequence on, with no gap and no duplicate.

    follower = StreamFollower(nc, "ALERTS", name="alerts_view")
    await follower.run(after=0, handle=apply, stopping=stop_event)   # until stop_event is set

The reader is an ephemeral pull consumer without acks (the server forgets it 30 s after its
reader is gone), as the fold services and the read model read: deliveries are checked for
gaps by consumer sequence, and after a gap, a lost consumer or a broker restart a new
consumer starts after the last message handled. `handle` is awaited for each delivery in
turn, so a slow handler slows the reading (backpressure), never loses a message. Messages the
stream no longer holds (aged out) are simply not delivered: the first delivery then comes
after a jump in stream sequence, which `handle` can see.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from bourse.bus import pull
from bourse.bus.pull import Delivery, PullRequest, PullStatus
from bourse.errors import BrokerError

log = logging.getLogger(__name__)

_PULL_EXPIRES = 1.0  # seconds a pull waits; an idle follower checks for gaps this often
_PULL_GRACE = 1.0  # a pull unanswered this long after it expired: the connection dropped
_CONSUMER_IDLE = 30.0  # the server deletes a consumer this long after its reader died
_API_TIMEOUT = 2.0
_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)

Handler = Callable[[Delivery], Awaitable[None]]


def _ending(stopping: asyncio.Event) -> bool:
    """Whether to stop: asked to, or cancelled. On Python 3.11 `asyncio.wait_for` (inside
    `Puller.pull`) can swallow a cancellation that arrives as its wait ends; the task still
    says it is being cancelled, and the reader must not then go on forever."""
    task = asyncio.current_task()
    return stopping.is_set() or (task is not None and task.cancelling() > 0)


class StreamFollower:
    """`stream` (optionally only `filters`) delivered to a handler in order; see the module."""

    def __init__(
        self,
        nc: NATS,
        stream: str,
        *,
        name: str,
        filters: Sequence[str] = (),
        batch: int = 256,
    ) -> None:
        self._nc = nc
        self.stream = stream
        self.name = name
        self._filters = tuple(filters) or None
        self._batch = batch
        self._consumer = ""
        self.last_seq = 0  # the last stream sequence handled
        self.caught_up = False  # the last pull found the end of the stream
        self.resets = 0  # consumers made anew
        self._on_caught_up: list[Callable[[], None]] = []

    def when_caught_up(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time the follower reaches the end of the stream."""
        self._on_caught_up.append(callback)

    async def run(self, *, after: int, handle: Handler, stopping: asyncio.Event) -> None:
        """Deliver every message after sequence `after` to `handle` until `stopping` is set."""
        self.last_seq = after
        failures = 0
        try:
            while not _ending(stopping):
                try:
                    if not self._nc.is_connected:
                        raise BrokerError("not connected")
                    puller = await self._open()
                except (BrokerError, NatsError) as error:
                    delay = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS) - 1)]
                    failures += 1
                    log.warning("%s: cannot read %s (%s); retrying", self.name, self.stream, error)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                try:
                    await self._read(puller, handle, stopping)
                finally:
                    await puller.close()
        finally:
            await self.drop_consumer()

    async def drained(self) -> bool:
        """Whether the consumer has nothing more to deliver and every delivery was handled."""
        if not self._consumer:
            return False
        try:
            info = await pull.consumer_info(
                self._nc, self.stream, self._consumer, timeout=_API_TIMEOUT
            )
        except (BrokerError, NatsError):
            return False
        return info.num_pending == 0 and self.last_seq >= info.delivered.stream_seq

    async def drop_consumer(self) -> None:
        name, self._consumer = self._consumer, ""
        await self._drop(name)

    async def _drop(self, name: str) -> None:
        await pull.drop_consumer(self._nc, self.stream, name, owner=self.name, timeout=_API_TIMEOUT)

    async def _open(self) -> pull.Puller:
        name = f"{self.name}_{self._nc.new_inbox().rsplit('.', 1)[-1]}"
        config = pull.ConsumerConfig(
            name=name,
            description=f"bourse {self.name}",
            deliver_policy="by_start_sequence",
            opt_start_seq=self.last_seq + 1,
            ack_policy="none",
            filter_subjects=self._filters,
            replay_policy="instant",
            inactive_threshold=pull.nanos(_CONSUMER_IDLE),
            num_replicas=1,
            mem_storage=True,
        )
        info = await pull.create_consumer(self._nc, self.stream, name, config, timeout=_API_TIMEOUT)
        old, self._consumer = self._consumer, name
        if old:
            self.resets += 1
            await self._drop(old)
        if info.num_pending == 0:
            self._reached_end()
        return await pull.Puller(self._nc, stream=self.stream, consumer=name).start()

    async def _read(self, puller: pull.Puller, handle: Handler, stopping: asyncio.Event) -> None:
        expected = 1
        while not _ending(stopping):
            request = PullRequest(batch=self._batch, expires=pull.nanos(_PULL_EXPIRES))
            async for item in puller.pull(request, timeout=_PULL_EXPIRES + _PULL_GRACE):
                if isinstance(item, PullStatus):
                    if not await self._pull_again(item, expected):
                        return
                    self._reached_end()
                    break
                if item.consumer_seq != expected:
                    log.warning(
                        "%s: delivery %d came where %d was due; reading again after %d",
                        self.name,
                        item.consumer_seq,
                        expected,
                        self.last_seq,
                    )
                    return
                expected += 1
                if item.stream_seq > self.last_seq:
                    self.caught_up = False
                    await handle(item)
                    self.last_seq = item.stream_seq
                if item.pending == 0 and not puller.buffered:
                    self._reached_end()
                if _ending(stopping):
                    return

    async def _pull_again(self, status: PullStatus, expected: int) -> bool:
        """After a pull ended with `status`: True to pull again, False to make a new consumer."""
        if status.code not in (pull.REQUEST_TIMEOUT, pull.NO_MESSAGES):
            if status.code == pull.BAD_REQUEST:
                raise BrokerError(f"{self.name}: pull refused: {status.description}")
            log.info("%s: pull ended with %d %s", self.name, status.code, status.description)
            return False
        try:
            info = await pull.consumer_info(
                self._nc, self.stream, self._consumer, timeout=_API_TIMEOUT
            )
        except (BrokerError, NatsError):
            return False
        return info.delivered.consumer_seq == expected - 1

    def _reached_end(self) -> None:
        self.caught_up = True
        for callback in self._on_caught_up:
            try:
                callback()
            except Exception:
                log.exception("%s: a caught-up callback failed", self.name)
