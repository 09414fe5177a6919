"""Reading a pull consumer a batch at a time, with the next batch already on its way.

`bus.pull.Puller` yields one delivery at a time through a queue and an async generator, and
sends the next pull request only when asked: right for a fold that awaits between inputs.
The analytics service works on whole batches without awaiting, so this reader keeps the
deliveries of a request in a plain list (the subscription's callback appends to it) and, as
soon as a request is filled, sends the next one, so the server reads and sends the next batch
while the caller works on this one. At most one request is outstanding and two batches are
held, which bounds memory whatever the caller's speed.

Each request has its own reply subject (`<inbox>.<n>`), so a status answering an older request
is recognised and dropped; deliveries come under their own subjects and are kept in arrival
order whichever request they answer (the caller checks consumer sequences for gaps).

**Delivery.** A nats-py subscription with a callback puts each message in an `asyncio.Queue`
that a task of its own empties, awaiting the callback once per message: three hand-overs per
delivery, a good share of the cost of reading. This reader's subscription has no callback and
its queue is replaced by `pull.DirectQueue`, which hands each message to the reader as nats-py's
reading task receives it: appending to a list needs no task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bourse.bus import pull
from bourse.bus.pull import PullRequest, PullStatus


class Batch(msgspec.Struct, frozen=True):
    """The deliveries answering one pull request: their payloads and reply subjects (which
    say their sequences), and the status that ended the request (None: it was filled).
    `NO_ANSWER` means the server never ended it: pull again."""

    payloads: list[bytes]
    replies: list[str]
    status: PullStatus | None


_encoder = msgspec.json.Encoder()


class BatchReader:
    """Pull requests of `batch` messages on one consumer, answered into lists (see the module)."""

    def __init__(
        self, nc: NATS, *, stream: str, consumer: str, batch: int, expires_ns: int
    ) -> None:
        self._nc = nc
        self._batch = batch
        self._next_subject = pull.next_message_subject(stream, consumer)
        self._request = _encoder.encode(PullRequest(batch=batch, expires=expires_ns))
        self._prefix = ""
        self._reply = ""
        self._token = 0
        self._outstanding = False
        self._received = 0
        # Payloads and replies only: a batch of nats `Msg` objects (each with a headers dict)
        # would outlive young garbage collections and make the full ones slow.
        self._payloads: list[bytes] = []
        self._replies: list[str] = []
        self._ready: deque[Batch] = deque()
        self._arrived = asyncio.Event()
        self._subscription: Subscription | None = None
        self._sending: set[asyncio.Task[None]] = set()  # requests sent from `_on_message`

    async def start(self) -> BatchReader:
        self._prefix = self._nc.new_inbox()
        subscription = await self._nc.subscribe(
            f"{self._prefix}.*",
            pending_msgs_limit=-1,  # bounded by one outstanding request of `batch`
            pending_bytes_limit=-1,
        )
        subscription._pending_queue = pull.DirectQueue(subscription, self._on_message)  # type: ignore[assignment]
        self._subscription = subscription
        return self

    @property
    def buffered(self) -> int:
        """Deliveries received and not yet handed out."""
        return len(self._payloads) + sum(len(b.payloads) for b in self._ready)

    async def next(self, timeout: float) -> Batch:
        """The next batch: one already received, else the one being received, waiting at most
        `timeout` seconds for its request to end (then with status NO_ANSWER)."""
        if not self._ready:
            self._arrived.clear()  # before sending: an answer may come while we send
            if not self._outstanding:
                await self._send()
            if not self._ready:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), timeout)
        if self._ready:
            batch = self._ready.popleft()
        else:  # the server never ended the request (the connection dropped?): give it up
            status = PullStatus(pull.NO_ANSWER, f"no answer in {timeout}s")
            batch = Batch(self._payloads, self._replies, status)
            self._payloads, self._replies, self._outstanding = [], [], False
        if batch.status is None and not self._outstanding and len(self._ready) < 2:
            await self._send()  # more is likely there: let it travel while the caller works
        return batch

    async def close(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            with contextlib.suppress(Exception):  # a closed connection has nothing to undo
                await subscription.unsubscribe()

    async def _send(self) -> None:
        await self._nc.publish(self._next_subject, self._request, reply=self._requested())

    def _requested(self) -> str:
        """Mark a new request outstanding; its reply subject."""
        self._token += 1
        self._reply = f"{self._prefix}.{self._token}"
        self._outstanding, self._received = True, 0
        return self._reply

    def _on_message(self, msg: Msg) -> None:
        """Take one delivery or status, in nats-py's reading task (see `pull.DirectQueue`)."""
        if msg.subject.startswith(self._prefix):
            status = pull.status_of(msg)
            if msg.subject == self._reply and status is not None and status.code != pull.HEARTBEAT:
                self._end(status)
            return
        self._payloads.append(msg.data)
        self._replies.append(msg.reply)
        self._received += 1
        if self._received == self._batch:
            self._end(None)
            if len(self._ready) < 2:
                # Not awaited here (nats-py's reading task must not wait on its own
                # connection); marked outstanding at once, so `next` sends no second one.
                reply = self._requested()
                publish = self._nc.publish(self._next_subject, self._request, reply=reply)
                task = asyncio.get_running_loop().create_task(publish)
                self._sending.add(task)
                task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        # A request that could not be sent (the connection dropped) goes unanswered: `next`
        # gives up on it after its timeout, as on a lost answer.
        self._sending.discard(task)
        if not task.cancelled():
            task.exception()

    def _end(self, status: PullStatus | None) -> None:
        self._ready.append(Batch(self._payloads, self._replies, status))
        self._payloads, self._replies, self._outstanding = [], [], False
        self._arrived.set()
