"""What every consumer does with a delivered message, whichever way it was delivered.

Admit it (recognise a redelivery of something already applied; decode it, dead-lettering what
cannot be decoded), then settle it after the handler ran: ack on success, nak with a delay on
failure, dead-letter and terminate on the last allowed delivery.

Settlements are plain publishes (no round trip per message). To know the acks and terms
arrived, `confirm()` sends the latest one once more, as a request: JetStream answers every
settlement that asks for a reply, a repeated ack or term changes nothing, and it processes
one connection's settlements in the order they came, so its answer vouches for every one
before it (unless the client reconnected in between; then they are all sent again).
`wait_settled()` confirms and waits for the answers, which is what lets `stop()` promise that
nothing it acknowledged is still pending. (Naks are not confirmed: a lost nak only means the
retry comes after ack_wait instead of after the delay.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bourse.bus.consume.applied import AppliedSequences
from bourse.bus.consume.deadletter import DeadLetterReason, publish_dead_letter
from bourse.bus.consume.spec import ConsumerSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

Handler = Callable[[T], Awaitable[None]]

_ACK = b"+ACK"
_TERM = b"+TERM"
_IN_PROGRESS = b"+WPI"
_CONFIRM_TIMEOUT = 5.0
_CONFIRM_ATTEMPTS = 3
_CONFIRM_EVERY = 1000  # settlements; a push consumer under steady load confirms this often
# Ask JetStream for its ack floor (to forget old sequences) when this many are remembered.
_PRUNE_AT = 10_000


@dataclass
class ConsumerStats:
    """Counters of one consumer instance.

    - `delivered`: messages received, first deliveries and redeliveries alike.
    - `redelivered`: received messages that JetStream had delivered before.
    - `processed`: messages the handler applied successfully.
    - `failed`: handler failures (each failed delivery counts once).
    - `malformed`: messages that could not be decoded.
    - `dead_lettered`: messages parked on the DEAD_LETTERS stream (malformed or failed).
    - `duplicates`: redeliveries of messages already applied, acknowledged and skipped.
    - `unconfirmed`: acks and terms JetStream never confirmed (the broker stayed away); if
      they were lost, those messages come again and are recognised as applied.
    """

    delivered: int = 0
    redelivered: int = 0
    processed: int = 0
    failed: int = 0
    malformed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    unconfirmed: int = 0


def nak_payload(delay: float) -> bytes:
    return b"-NAK " + json.dumps({"delay": int(delay * 1e9)}).encode()


class Settler(Generic[T]):
    """Admits and settles the messages of one consumer (see the module docstring)."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        spec: ConsumerSpec,
        *,
        decode: Callable[[bytes], T],
        stream: str,
        stats: ConsumerStats,
        applied: AppliedSequences,
    ) -> None:
        self._nc = nc
        self._js = js
        self._spec = spec
        self._decode = decode
        self._stream = stream
        self.stats = stats
        self.applied = applied
        self._confirming: set[asyncio.Task[None]] = set()
        self._touching: set[asyncio.Task[None]] = set()
        # Acks and terms sent but not yet confirmed, and the connection they went out on.
        self._unconfirmed: list[tuple[str, bytes]] = []
        self._unconfirmed_epoch = 0
        self._prune_at = _PRUNE_AT

    async def admit(self, msg: Msg) -> T | None:
        """The decoded message, or None when it was settled here (a duplicate, or malformed)."""
        meta = msg.metadata
        self.stats.delivered += 1
        if meta.num_delivered > 1:
            self.stats.redelivered += 1
        if meta.sequence.stream in self.applied:
            self.stats.duplicates += 1
            await self._settle(msg, _ACK)
            return None
        try:
            return self._decode(msg.data)
        except ValueError as exc:  # msgspec's DecodeError and ValidationError are ValueErrors
            self.stats.malformed += 1
            log.warning(
                "%s: malformed message %s #%d: %s",
                self._spec.durable,
                msg.subject,
                meta.sequence.stream,
                exc,
            )
            await self._dead_letter(msg, DeadLetterReason.MALFORMED, exc)
            return None

    async def process(self, msg: Msg, handler: Handler[T]) -> None:
        """Admit `msg`, run `handler` on it, and settle it by the outcome."""
        value = await self.admit(msg)
        if value is None:
            return
        try:
            await handler(value)
        except Exception as exc:  # the handler's way of saying "retry later"
            await self.failed(msg, exc)
        else:
            await self.succeeded(msg)

    async def succeeded(self, msg: Msg) -> None:
        self.stats.processed += 1
        self.applied.add(msg.metadata.sequence.stream)
        await self._settle(msg, _ACK)

    async def failed(self, msg: Msg, error: Exception, *, report: bool = True) -> None:
        """The handler raised: retry after a delay, or dead-letter on the last delivery.

        `report=False` when the caller has logged the error already (once for a batch)."""
        self.stats.failed += 1
        meta = msg.metadata
        if self._spec.is_last_delivery(meta.num_delivered):
            log.error(
                "%s: %s #%d failed on its last delivery (%d); dead-lettering it",
                self._spec.durable,
                msg.subject,
                meta.sequence.stream,
                meta.num_delivered,
                exc_info=error,
            )
            await self._dead_letter(msg, DeadLetterReason.HANDLER_FAILED, error)
            return
        delay = self._spec.retry_delay(meta.num_delivered)
        if report:
            log.warning(
                "%s: %s #%d failed (delivery %d); retrying in %.3gs",
                self._spec.durable,
                msg.subject,
                meta.sequence.stream,
                meta.num_delivered,
                delay,
                exc_info=error,
            )
        await self._settle(msg, nak_payload(delay))

    async def _dead_letter(self, msg: Msg, reason: DeadLetterReason, error: Exception) -> None:
        meta = msg.metadata
        try:
            await publish_dead_letter(self._js, msg, reason, error)
        except Exception:
            # Not parked, so not terminated: JetStream delivers it again (unless this was the
            # last delivery, in which case its max-deliveries advisory is the only trace).
            log.exception(
                "%s: could not dead-letter %s #%d",
                self._spec.durable,
                msg.subject,
                meta.sequence.stream,
            )
            await self._settle(msg, nak_payload(self._spec.retry_delay(meta.num_delivered)))
            return
        self.stats.dead_lettered += 1
        self.applied.add(meta.sequence.stream)
        await self._settle(msg, _TERM)

    async def _settle(self, msg: Msg, payload: bytes) -> None:
        if payload in (_ACK, _TERM):
            if not self._unconfirmed:
                # Read before publishing: a reconnect from here on voids the confirmation.
                self._unconfirmed_epoch = self._connection_epoch()
            self._unconfirmed.append((msg.reply, payload))
        await self._nc.publish(msg.reply, payload)
        if len(self._unconfirmed) >= _CONFIRM_EVERY:
            self.confirm()

    def _connection_epoch(self) -> int:
        return int(self._nc.stats["reconnects"])

    def confirm(self) -> None:
        """Have JetStream confirm the acks and terms sent so far; returns without waiting."""
        if not self._unconfirmed:
            return
        settlements, self._unconfirmed = self._unconfirmed, []
        task = asyncio.create_task(
            self._confirm(settlements, self._unconfirmed_epoch), name="confirm-settled"
        )
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirm(self, settlements: list[tuple[str, bytes]], epoch: int) -> None:
        # One connection delivers in order, so JetStream's answer to the last settlement
        # vouches for the earlier ones only if no reconnect came in between: settlements
        # written to a dying connection are lost. Then send them all again (acks and terms
        # are idempotent) and ask again.
        reply, payload = settlements[-1]
        for attempt in range(_CONFIRM_ATTEMPTS):
            if attempt:
                epoch = self._connection_epoch()
                for earlier_reply, earlier_payload in settlements[:-1]:
                    await self._nc.publish(earlier_reply, earlier_payload)
            try:
                await self._nc.request(reply, payload, timeout=_CONFIRM_TIMEOUT)
            except Exception as exc:  # the broker is away
                log.warning("%s: confirming settlements: %s", self._spec.durable, exc)
                continue
            if self._connection_epoch() == epoch:
                return
        # What was lost comes again after ack_wait, and is recognised as applied.
        self.stats.unconfirmed += len(settlements)
        log.warning("%s: %d settlements not confirmed", self._spec.durable, len(settlements))

    async def wait_settled(self) -> None:
        """Return when JetStream has answered (or not, in time) for every settlement sent."""
        self.confirm()
        while self._confirming:
            await asyncio.wait(set(self._confirming))

    async def forget_settled(self) -> None:
        """Drop remembered sequences JetStream will never redeliver, once there are many."""
        if len(self.applied) < self._prune_at:
            return
        try:
            info = await self._js.consumer_info(self._stream, self._spec.durable)
        except Exception as exc:
            log.warning("%s: consumer info unavailable: %s", self._spec.durable, exc)
            return
        if info.ack_floor is not None:
            self.applied.advance_floor(info.ack_floor.stream_seq)
        self._prune_at = max(_PRUNE_AT, 2 * len(self.applied))

    @contextmanager
    def keep_alive(self, unsettled: Collection[Msg]) -> Iterator[None]:
        """While the block runs, tell JetStream the messages in `unsettled` are being worked
        on (every third of ack_wait), so a slow handler or a long batch causes no redelivery.
        `unsettled` is read at each tick: remove messages from it as they are settled."""
        loop = asyncio.get_running_loop()
        interval = self._spec.ack_wait / 3
        timer: asyncio.TimerHandle

        def tick() -> None:
            nonlocal timer
            task = asyncio.create_task(self._touch(list(unsettled)), name="keep-alive")
            self._touching.add(task)
            task.add_done_callback(self._touching.discard)
            timer = loop.call_later(interval, tick)

        # A timer rather than a task: entering and leaving costs next to nothing per message.
        timer = loop.call_later(interval, tick)
        try:
            yield
        finally:
            timer.cancel()

    async def _touch(self, msgs: list[Msg]) -> None:
        try:
            for msg in msgs:
                await self._nc.publish(msg.reply, _IN_PROGRESS)
        except Exception as exc:
            log.warning("%s: progress update failed: %s", self._spec.durable, exc)
