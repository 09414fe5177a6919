"""A single active consumer with automatic failover: JetStream priority groups, pinned client.

Several instances run the same `SingleActiveConsumer` on one durable pull consumer. The
consumer has the `pinned_client` priority policy (ADR-42, nats-server 2.11+): the server pins
one instance, marks every message it delivers to it with a `Nats-Pin-Id` header, and serves
nobody else while that instance keeps pulling with the pin id. Standbys keep pull requests
waiting without an id; the server holds them. When the pinned instance stops pulling for
`priority_timeout` (it died, or its connection did), the server pins a standby. A graceful
`stop()` unpins at once, so a standby takes over without waiting for the timeout.

Order and exactly-once across a takeover. The server does not wait for the old instance's
unacknowledged messages before serving the new one: left alone, the new instance would get
newer messages first and the old ones only after `ack_wait`. So a new active instance:

1. discards the messages of the pull request that made it active (it acknowledges nothing
   before step 2) and waits for that request to end;
2. resets the consumer to its ack floor (`$JS.API.CONSUMER.RESET`, nats-server 2.14+), so
   delivery starts again at the first unacknowledged message, in stream order;
3. loads the high-water mark (the last stream sequence applied) from its `Checkpoint`, and
   acknowledges without processing anything at or below it.

An instance acknowledges a message only after its handler returned and the checkpoint was
saved, one message at a time, in stream order; so the ack floor is the last message handled,
and the next active instance continues from the message after it. A message handled by an
instance that died before its ack reached the server is delivered again: a `Checkpoint`
shared by the instances (ideally saved in the same transaction as the handler's effects)
makes that harmless; the default one only remembers what this instance applied.

The pin is a lease, not a lock (ADR-42 says so): an instance that is frozen for longer than
`priority_timeout` and then wakes up may finish the message it was handling while the new
active instance starts. The shared checkpoint is what makes that window harmless too.

A handler that raises is retried `max_attempts` times; then the message is parked on the
DEAD_LETTERS stream (`deadletter.<subject>`) and the consumer moves on. It never stops the
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import msgspec
from nats.aio.client import Client as NATS

from bourse.bus import pull
from bourse.bus.consume.deadletter import DeadLetterReason, build_dead_letter_headers
from bourse.bus.pull import Delivery, PullRequest, PullStatus
from bourse.errors import BrokerError, ConfigError
from bourse.model import subjects

log = logging.getLogger(__name__)

Handler = Callable[[Delivery], Awaitable[None]]


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$(?!\n)")
_ACK = b"+ACK"


class Checkpoint(Protocol):
    """Where the last applied stream sequence (the high-water mark) is kept."""

    async def load(self) -> int:
        """The last stream sequence applied, 0 if none."""
        ...

    async def save(self, seq: int) -> None:
        """Record that `seq` was applied (after the handler returned, before the ack)."""
        ...


class MemoryCheckpoint:
    """A high-water mark kept in this process: dedups redeliveries to this instance only."""

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq

    async def load(self) -> int:
        return self.seq

    async def save(self, seq: int) -> None:
        self.seq = max(self.seq, seq)


@dataclass
class SingleActiveStats:
    processed: int = 0  # handler returned (or the message was parked after failing)
    duplicates: int = 0  # at or below the high-water mark: acknowledged, not processed
    handler_errors: int = 0  # handler calls that raised (each attempt counts)
    dead_lettered: int = 0
    activations: int = 0  # times this instance became the active one
    pins_lost: int = 0  # times the server told this instance another one is active
    discarded: int = 0  # delivered around a takeover or after losing the pin; not acked


class SingleActiveConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the durable consumer and its pulls are set up; durations in seconds."""

    stream: str
    consumer: str
    filter_subjects: tuple[str, ...] = ()
    group: str = "active"
    priority_timeout: float = 5.0  # the active instance is replaced after this long silent
    ack_wait: float = 30.0
    max_ack_pending: int = 1000
    batch: int = 100
    max_attempts: int = 3  # handler attempts before a message is parked as a dead letter

    def __post_init__(self) -> None:
        for setting, value in (
            ("stream", self.stream),
            ("consumer", self.consumer),
            ("group", self.group),
        ):
            if not _NAME.match(value):
                raise ConfigError(setting, value, "letters, digits, '-' and '_' (up to 64)")
        for pattern in self.filter_subjects:
            subjects.check_filter(pattern)
        if self.priority_timeout < 0.2:
            raise ConfigError("priority_timeout", self.priority_timeout, "at least 0.2 seconds")
        if self.ack_wait <= 0:
            raise ConfigError("ack_wait", self.ack_wait, "a positive number of seconds")
        for setting, count in (
            ("max_ack_pending", self.max_ack_pending),
            ("batch", self.batch),
            ("max_attempts", self.max_attempts),
        ):
            if count < 1:
                raise ConfigError(setting, count, "a whole number of at least 1")

    @property
    def expires(self) -> float:
        """How long one pull request waits: well inside the priority timeout, so an active
        instance always has a fresh pull on the server and keeps its pin."""
        return min(2.0, self.priority_timeout / 3)

    def consumer_config(self) -> pull.ConsumerConfig:
        return pull.ConsumerConfig(
            name=self.consumer,
            durable_name=self.consumer,
            description="single active consumer (pinned client)",
            deliver_policy="all",
            ack_policy="explicit",
            ack_wait=pull.nanos(self.ack_wait),
            max_deliver=-1,
            filter_subjects=self.filter_subjects or None,
            replay_policy="instant",
            max_ack_pending=self.max_ack_pending,
            priority_policy="pinned_client",
            priority_groups=(self.group,),
            priority_timeout=pull.nanos(self.priority_timeout),
        )


class SingleActiveConsumer:
    """One instance of a consumer of which exactly one instance processes at a time.

    `handler` is called once per message, in stream order, only while this instance is the
    active one. Start with `await consumer.start()`, stop with `await consumer.stop()`.
    """

    def __init__(
        self,
        nc: NATS,
        config: SingleActiveConfig,
        handler: Handler,
        *,
        checkpoint: Checkpoint | None = None,
        name: str = "",
    ) -> None:
        self._nc = nc
        self.config = config
        self._handler = handler
        self._checkpoint: Checkpoint = checkpoint if checkpoint is not None else MemoryCheckpoint()
        self.name = name or config.consumer
        self.stats = SingleActiveStats()
        self._puller = pull.Puller(nc, stream=config.stream, consumer=config.consumer)
        self._queue: asyncio.Queue[tuple[int, Delivery]] = asyncio.Queue()
        self._pin_id: str | None = None
        self._tenure = 0  # bumped whenever the pin is won or lost: older deliveries are void
        self._high_water_mark = 0
        self._next_delivery = 0  # the consumer sequence due next while active
        self._stopping = False
        self._pull_task: asyncio.Task[None] | None = None
        self._process_task: asyncio.Task[None] | None = None
        self._became_active = asyncio.Event()

    @property
    def is_active(self) -> bool:
        """Whether the server has pinned this instance (and it has taken over)."""
        return self._pin_id is not None

    @property
    def pin_id(self) -> str | None:
        return self._pin_id

    @property
    def high_water_mark(self) -> int:
        """The last stream sequence this instance applied or skipped as already applied."""
        return self._high_water_mark

    async def wait_active(self) -> None:
        await self._became_active.wait()

    async def start(self) -> SingleActiveConsumer:
        await self._ensure_consumer()
        await self._puller.start()
        self._pull_task = asyncio.create_task(self._pull_loop(), name=f"{self.name}-pull")
        self._process_task = asyncio.create_task(self._process_loop(), name=f"{self.name}-process")
        return self

    async def _ensure_consumer(self) -> None:
        try:
            await pull.create_consumer(
                self._nc, self.config.stream, self.config.consumer, self.config.consumer_config()
            )
        except pull.JetStreamApiError as exc:
            raise BrokerError(
                f"cannot set up consumer {self.config.consumer} on {self.config.stream}: "
                f"{exc.description} (pinned clients need nats-server 2.11+, an existing "
                f"consumer of that name must have the same priority policy)"
            ) from exc

    # --- intake -------------------------------------------------------------------------

    async def _pull_loop(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                reset_for = await self._pull_once()
                if reset_for is not None:
                    await self._take_over(reset_for)
                elif self._pin_id is None:
                    await self._rescue_orphans()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception("%s: pulling failed; retrying", self.name)
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(failures, 6)))

    async def _pull_once(self) -> str | None:
        """One pull request. Return a pin id when the consumer must be reset before going on:
        the server just pinned this instance, or deliveries to it have a gap."""
        config = self.config
        request = PullRequest(
            # A standby asks for one message: the one that pins it ends its request at once,
            # so the reset (and the takeover) follows without waiting for the request to expire.
            batch=config.batch if self._pin_id is not None else 1,
            expires=pull.nanos(config.expires),
            group=config.group,
            id=self._pin_id,
        )
        reset_for: str | None = None
        async for item in self._puller.pull(request, timeout=config.expires + 2.0):
            if isinstance(item, PullStatus):
                await self._on_status(item)
                continue
            pin_id = item.pin_id
            in_order = item.consumer_seq == self._next_delivery
            if reset_for is None and pin_id is not None and pin_id == self._pin_id and in_order:
                self._next_delivery += 1
                self._queue.put_nowait((self._tenure, item))
                continue
            if reset_for is None and pin_id is not None and pin_id == self._pin_id:
                log.warning(
                    "%s: delivery %d arrived where %d was due; resetting to stay in order",
                    self.name,
                    item.consumer_seq,
                    self._next_delivery,
                )
            # Delivered before the reset that puts the consumer back in order: it comes
            # again after it. Nothing of this request is acknowledged.
            reset_for = reset_for or pin_id or ""
            self.stats.discarded += 1
        return reset_for

    async def _on_status(self, status: PullStatus) -> None:
        if status.code == pull.PIN_ID_MISMATCH:
            if self._pin_id is not None:
                log.warning("%s: another instance is active now; standing by", self.name)
                self._lose_pin()
        elif status.code == pull.CONFLICT and "deleted" in status.description.lower():
            log.warning("%s: consumer was deleted; creating it again", self.name)
            self._lose_pin()
            await self._ensure_consumer()
        elif status.code in (pull.BAD_REQUEST, pull.NO_RESPONDERS):
            raise BrokerError(f"pull refused: {status.code} {status.description}")
        # 404/408 (nothing to deliver), other 409s (leadership change, server shutdown...)
        # and NO_ANSWER (a dropped connection) just end this request; the next one follows.

    async def _rescue_orphans(self) -> None:
        """Release messages a vanished active instance still holds, when nobody is pinned.

        The server pins a standby only when it has a message to deliver. If the instance that
        died held every outstanding message (delivered, never acknowledged), there is none
        until `ack_wait` expires; resetting the consumer to its ack floor makes them
        deliverable now, and the standby that gets them resets again under its new pin.
        """
        config = self.config
        info = await pull.consumer_info(self._nc, config.stream, config.consumer)
        pinned = any(g.pinned_client_id for g in info.priority_groups if g.group == config.group)
        if pinned or info.num_ack_pending == 0:
            return
        log.warning(
            "%s: no instance is active and %d messages await an ack from a vanished one; "
            "resetting the consumer to its ack floor (stream sequence %d)",
            self.name,
            info.num_ack_pending,
            info.ack_floor.stream_seq,
        )
        await pull.reset_consumer(self._nc, config.stream, config.consumer)

    def _lose_pin(self) -> None:
        self._pin_id = None
        self._tenure += 1
        self._became_active.clear()
        self.stats.pins_lost += 1

    async def _take_over(self, pin_id: str) -> None:
        """Reset the consumer to its ack floor and (re)start processing under `pin_id`."""
        if not pin_id:
            raise BrokerError(
                f"consumer {self.config.consumer} delivered a message without a pin id: "
                f"it is not a pinned_client consumer"
            )
        self._tenure += 1
        info = await pull.reset_consumer(self._nc, self.config.stream, self.config.consumer)
        applied = await self._checkpoint.load()
        self._high_water_mark = max(self._high_water_mark, applied)
        self._next_delivery = info.delivered.consumer_seq + 1
        if pin_id != self._pin_id:
            self._pin_id = pin_id
            self.stats.activations += 1
            self._became_active.set()
            log.info(
                "%s: active (pin %s); resuming at stream sequence %d, applied up to %d",
                self.name,
                pin_id,
                info.reset_seq,
                self._high_water_mark,
            )

    # --- processing ---------------------------------------------------------------------

    async def _process_loop(self) -> None:
        while True:
            tenure, delivery = await self._queue.get()
            try:
                if tenure != self._tenure:
                    self.stats.discarded += 1  # the pin changed hands since it arrived
                else:
                    await self._process(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "%s: processing stream sequence %d failed", self.name, delivery.stream_seq
                )
            finally:
                self._queue.task_done()

    async def _process(self, delivery: Delivery) -> None:
        if delivery.stream_seq <= self._high_water_mark:
            self.stats.duplicates += 1
            await self._ack(delivery)
            return
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                await self._handler(delivery)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.handler_errors += 1
                log.exception(
                    "%s: handler failed on %s (stream sequence %d), attempt %d of %d",
                    self.name,
                    delivery.subject,
                    delivery.stream_seq,
                    attempt,
                    self.config.max_attempts,
                )
                if attempt == self.config.max_attempts:
                    await self._dead_letter(delivery, exc)
        self._high_water_mark = delivery.stream_seq
        self.stats.processed += 1
        await self._checkpoint.save(delivery.stream_seq)
        await self._ack(delivery)

    async def _ack(self, delivery: Delivery) -> None:
        if self._stopping:
            # Confirmed acks while handing over: the next active instance must not get
            # these again because the ack was still on its way.
            await self._nc.request(delivery.reply, _ACK, timeout=5.0)
        else:
            await self._nc.publish(delivery.reply, _ACK)

    async def _dead_letter(self, delivery: Delivery, error: Exception) -> None:
        config = self.config
        headers = build_dead_letter_headers(
            subject=delivery.subject,
            stream=config.stream,
            sequence=delivery.stream_seq,
            consumer=config.consumer,
            deliveries=delivery.delivered,
            reason=DeadLetterReason.HANDLER_FAILED,
            error=error,
            original=delivery.headers,
        )
        try:
            answer = await self._nc.request(
                subjects.dead_letter(delivery.subject), delivery.data, timeout=5.0, headers=headers
            )
            if b'"error"' in answer.data:
                raise BrokerError(f"DEAD_LETTERS refused it: {answer.data[:200]!r}")
            self.stats.dead_lettered += 1
        except Exception:
            log.exception(
                "%s: could not park stream sequence %d as a dead letter; dropping it",
                self.name,
                delivery.stream_seq,
            )

    # --- stopping -----------------------------------------------------------------------

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking messages, finish and ack those already here, and hand over at once."""
        self._stopping = True
        await _cancel(self._pull_task)
        self._pull_task = None
        await self._puller.close()  # no interest: the server drops our waiting pulls
        if self._process_task is not None:
            try:
                await asyncio.wait_for(self._queue.join(), timeout)
            except TimeoutError:
                log.warning(
                    "%s: stopping before finishing %d messages", self.name, self._queue.qsize()
                )
            await _cancel(self._process_task)
            self._process_task = None
        if self._pin_id is not None:
            self._pin_id = None
            self._became_active.clear()
            try:
                await self._nc.flush()
                await pull.unpin_consumer(
                    self._nc, self.config.stream, self.config.consumer, self.config.group
                )
            except Exception:
                log.exception(
                    "%s: unpinning failed; a standby takes over after the timeout", self.name
                )


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run_single_active(
    nc: NATS,
    config: SingleActiveConfig,
    handler: Handler,
    *,
    stop: asyncio.Event,
    checkpoint: Checkpoint | None = None,
    name: str = "",
) -> SingleActiveStats:
    """Run one instance until `stop` is set, then hand over gracefully."""
    consumer = await SingleActiveConsumer(
        nc, config, handler, checkpoint=checkpoint, name=name
    ).start()
    try:
        await stop.wait()
    finally:
        await consumer.stop()
    return consumer.stats


__all__ = [
    "Checkpoint",
    "Delivery",
    "Handler",
    "MemoryCheckpoint",
    "SingleActiveConfig",
    "SingleActiveConsumer",
    "SingleActiveStats",
    "run_single_active",
]
