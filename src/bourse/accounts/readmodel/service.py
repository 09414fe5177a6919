"""The read model's shell: follows ORDERS and POSITIONS into the database, in stream order.

    service = await ReadModelService(nc, db).start()   # db migrated already
    await service.wait_caught_up(5.0)                   # both streams, as they are now
    await service.stop()                                # the batch in hand is finished

The database is the checkpoint. Each stream is read by an ephemeral pull consumer without
acks, starting after the sequence the database says was applied last, so a restart (of the
service or of the broker) resumes exactly there. Deliveries are checked for gaps by consumer
sequence; after a gap, a lost consumer or a broker restart the consumer is made anew after
the database's mark again. Nothing is applied twice: the projection stores its mark in the
same transaction as the rows, and skips whatever is at or below it.

Deliveries are applied in batches (up to `max_batch` messages, or as many as arrived within
`max_delay`, or as far as the stream goes now and no more is in hand: under load, what
arrives while a batch is written makes the next one), one write transaction each, in a
worker thread so the event loop keeps reading. A database error is retried in place, with backoff:
the batch is never skipped. A message that does not decode is logged and skipped, and the
mark moves past it in the same transaction, so it is not read again on every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from sqlalchemy import Connection, update

from bourse.accounts.readmodel import schema
from bourse.accounts.readmodel.database import Database
from bourse.accounts.readmodel.projection import ReadModelProjection
from bourse.accounts.readmodel.projector import ReadModelEvent
from bourse.bus import pull
from bourse.bus.pull import Delivery, PullRequest, PullStatus
from bourse.bus.streams import ORDERS, POSITIONS
from bourse.errors import BrokerError, ConfigError
from bourse.model import orders, positions
from bourse.model.instruments import DEFAULT_UNIVERSE, Instrument

log = logging.getLogger(__name__)

_PULL_EXPIRES = 1.0  # seconds a pull waits for messages; an idle reader checks for gaps this often
_PULL_GRACE = 1.0  # a pull unanswered this long after it expired: the connection dropped
_CONSUMER_IDLE = 30.0  # the server deletes a consumer this long after its reader died
_API_TIMEOUT = 2.0  # seconds to wait for a JetStream API answer before trying again
_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # backoff for the broker and the database
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,48}$(?!\n)")

_P = ParamSpec("_P")
_R = TypeVar("_R")

Decoder = Callable[[bytes], ReadModelEvent]
# Told of each committed batch: the stream and its (sequence, message) pairs, now readable.
Listener = Callable[[str, Sequence[tuple[int, ReadModelEvent]]], None]
DECODERS: Mapping[str, Decoder] = {ORDERS.name: orders.decode, POSITIONS.name: positions.decode}


@dataclass
class ProjectionStats:
    """What the service did with one stream since it started."""

    stream: str
    last_sequence: int = 0  # the database's mark: the last sequence applied or skipped
    received: int = 0  # deliveries from JetStream
    applied: int = 0  # messages new to the database
    redelivered: int = 0  # messages at or below the mark, left alone
    malformed: int = 0  # messages that did not decode, skipped
    malformed_sequences: list[int] = field(default_factory=list)  # the latest 100 of them
    batches: int = 0  # write transactions committed
    database_retries: int = 0  # failed write attempts, retried
    resubscribes: int = 0  # consumers made anew (gap, consumer lost, broker restart)


class DecodedBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A batch of deliveries, decoded: what to apply, and what to skip."""

    events: tuple[tuple[int, ReadModelEvent], ...]
    malformed: tuple[tuple[int, str, str], ...]  # (stream sequence, subject, error)
    last_sequence: int  # the last delivery's: the mark once the batch is written


def decode_batch(deliveries: Sequence[Delivery], decode: Decoder) -> DecodedBatch:
    """Decode deliveries in order; those that do not decode are set aside, not applied."""
    events: list[tuple[int, ReadModelEvent]] = []
    malformed: list[tuple[int, str, str]] = []
    for delivery in deliveries:
        try:
            events.append((delivery.stream_seq, decode(delivery.data)))
        except msgspec.DecodeError as error:
            malformed.append((delivery.stream_seq, delivery.subject, str(error)))
    return DecodedBatch(
        events=tuple(events),
        malformed=tuple(malformed),
        last_sequence=deliveries[-1].stream_seq if deliveries else 0,
    )


def write_batch(
    db: Database, projection: ReadModelProjection, stream: str, batch: DecodedBatch
) -> int:
    """Apply the batch and move the mark past its last message, in one transaction; return
    how many messages were new."""
    with db.write() as conn:
        applied = projection.apply_in(conn, stream, batch.events)
        if not batch.events or batch.events[-1][0] < batch.last_sequence:
            _raise_mark(conn, stream, batch.last_sequence)  # past skipped messages
    return applied


def _raise_mark(conn: Connection, stream: str, sequence: int) -> None:
    # apply_in took the lock and made the stream's row, even for no events.
    offsets = schema.offsets
    conn.execute(
        update(offsets)
        .where(offsets.c.stream == stream, offsets.c.last_seq < sequence)
        .values(last_seq=sequence)
    )


class ReadModelService:
    """Keeps the read model up to date with the ORDERS and POSITIONS streams."""

    def __init__(
        self,
        nc: NATS,
        db: Database,
        *,
        name: str = "readmodel",
        instruments: Iterable[Instrument] = DEFAULT_UNIVERSE,
        max_batch: int = 500,
        max_delay: float = 0.05,
    ) -> None:
        if not _NAME.match(name):
            raise ConfigError("read model service name", name, "1 to 48 of A-Z a-z 0-9 _ -")
        if max_batch < 1:
            raise ConfigError("max_batch", max_batch, "an integer of at least 1")
        if max_delay < 0:
            raise ConfigError("max_delay", max_delay, "seconds, 0 or more")
        self.name = name
        self._nc = nc
        projection = ReadModelProjection(db, instruments)
        self._progress = asyncio.Event()
        self._stopping = asyncio.Event()
        self._listeners: list[Listener] = []
        self._readers = [
            _StreamReader(
                nc,
                db,
                projection,
                stream,
                decode,
                name=name,
                max_batch=max_batch,
                max_delay=max_delay,
                stopping=self._stopping,
                on_progress=self._notify,
                on_applied=self._applied,
            )
            for stream, decode in DECODERS.items()
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def add_listener(self, listener: Listener) -> None:
        """Call `listener` after each committed batch (in the event loop; keep it short)."""
        self._listeners.append(listener)

    def _applied(self, stream: str, events: Sequence[tuple[int, ReadModelEvent]]) -> None:
        for listener in self._listeners:
            try:
                listener(stream, events)
            except Exception:
                log.exception("%s: a read-model listener failed", self.name)

    @property
    def stats(self) -> Mapping[str, ProjectionStats]:
        """Counters per stream name."""
        return {reader.stream: reader.stats for reader in self._readers}

    async def start(self) -> ReadModelService:
        """Start following both streams; returns at once (the readers retry in the background
        until the broker and the database can be used)."""
        if self._tasks or self._stopping.is_set():
            raise RuntimeError(f"read model service {self.name} was already started")
        self._tasks = [
            asyncio.create_task(reader.run(), name=f"{self.name}-{reader.stream}")
            for reader in self._readers
        ]
        for task in self._tasks:
            task.add_done_callback(self._on_done)
        return self

    async def stop(self) -> None:
        """Stop reading; a batch being written is finished first (retries are not)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for reader in self._readers:
            await reader.drop_consumer()

    async def wait_caught_up(
        self, timeout: float = 30.0, *, streams: Iterable[str] | None = None
    ) -> None:
        """Wait until the streams (default: both) are applied up to their last sequence as of
        the call; raise TimeoutError after `timeout`."""
        wanted = set(streams) if streams is not None else None
        readers = [r for r in self._readers if wanted is None or r.stream in wanted]
        try:
            async with asyncio.timeout(timeout):
                targets = [await self._stream_end(reader.stream) for reader in readers]
                while True:
                    self._raise_failure()
                    progress = self._progress
                    if all(
                        reader.stats.last_sequence >= target
                        for reader, target in zip(readers, targets, strict=True)
                    ):
                        return
                    await progress.wait()
        except TimeoutError:
            where = ", ".join(f"{r.stream} at {r.stats.last_sequence}" for r in self._readers)
            raise TimeoutError(
                f"read model {self.name} did not catch up within {timeout}s ({where})"
            ) from None

    async def _stream_end(self, stream: str) -> int:
        failures = 0
        while True:
            try:
                info = await pull.stream_info(self._nc, stream, timeout=_API_TIMEOUT)
            except (BrokerError, NatsError) as error:
                log.info("%s: cannot read the end of %s (%s); retrying", self.name, stream, error)
                await asyncio.sleep(_RETRY_DELAYS[min(failures, len(_RETRY_DELAYS) - 1)])
                failures += 1
                continue
            return info.state.last_seq

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._notify()
        if not task.cancelled() and task.exception() is not None:
            log.error("read model %s failed", self.name, exc_info=task.exception())

    def _raise_failure(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"read model {self.name} failed") from task.exception()


class _StreamReader:
    """One stream into the read model: a consumer, batches, writes."""

    def __init__(
        self,
        nc: NATS,
        db: Database,
        projection: ReadModelProjection,
        stream: str,
        decode: Decoder,
        *,
        name: str,
        max_batch: int,
        max_delay: float,
        stopping: asyncio.Event,
        on_progress: Callable[[], None],
        on_applied: Listener | None = None,
    ) -> None:
        self._nc = nc
        self._db = db
        self._projection = projection
        self.stream = stream
        self._decode = decode
        self._label = f"{name} {stream}"
        self._consumer_prefix = f"{name}_{stream.lower()}"
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._stopping = stopping
        self._on_progress = on_progress
        self._on_applied = on_applied
        self._consumer = ""
        self.stats = ProjectionStats(stream)

    async def run(self) -> None:
        failures = 0
        # stop() cancels this task, and the loops below also check `_stopping`: on Python 3.11
        # `asyncio.wait_for` (inside `Puller.pull`) can swallow a cancellation that arrives as
        # its wait ends, and the reader must not then go on forever.
        while not self._stopping.is_set():
            try:
                if not self._nc.is_connected:
                    # A request sent while reconnecting may be answered before the client
                    # listens again, and time out; wait for the connection instead.
                    raise BrokerError("not connected")
                puller = await self._open()
                if puller is None:
                    return  # stopping while the database is down
            except (BrokerError, NatsError) as error:
                delay = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("%s: cannot read the stream (%s); retrying", self._label, error)
                await asyncio.sleep(delay)
                continue
            failures = 0
            try:
                await self._read(puller)
            finally:
                await puller.close()

    async def _open(self) -> pull.Puller | None:
        """A new consumer starting after the database's mark."""
        mark = await self._with_database_retry(self._projection.last_sequence, self.stream)
        if mark is None:
            return None
        self.stats.last_sequence = mark
        self._on_progress()
        name = f"{self._consumer_prefix}_{self._nc.new_inbox().rsplit('.', 1)[-1]}"
        config = pull.ConsumerConfig(
            name=name,
            description=f"bourse read model ({self._label})",
            deliver_policy="by_start_sequence",
            opt_start_seq=mark + 1,
            ack_policy="none",
            replay_policy="instant",
            inactive_threshold=pull.nanos(_CONSUMER_IDLE),
            num_replicas=1,
            mem_storage=True,
        )
        await pull.create_consumer(self._nc, self.stream, name, config, timeout=_API_TIMEOUT)
        old, self._consumer = self._consumer, name
        if old:
            self.stats.resubscribes += 1
            await self._drop(old)
        log.info("%s: reading after sequence %d", self._label, mark)
        return await pull.Puller(self._nc, stream=self.stream, consumer=name).start()

    async def _read(self, puller: pull.Puller) -> None:
        """Apply deliveries in order; return when the consumer must be made anew."""
        loop = asyncio.get_running_loop()
        expected = 1
        batch: list[Delivery] = []
        started = 0.0
        while not self._stopping.is_set():
            request = PullRequest(batch=self._max_batch, expires=pull.nanos(_PULL_EXPIRES))
            async for item in puller.pull(request, timeout=_PULL_EXPIRES + _PULL_GRACE):
                if isinstance(item, PullStatus):
                    await self._flush(batch)
                    if not await self._pull_again(item, expected):
                        return
                    break
                if item.consumer_seq != expected:
                    await self._flush(batch)  # what came before the gap is whole
                    log.warning(
                        "%s: delivery %d came where %d was due; reading again after %d",
                        self._label,
                        item.consumer_seq,
                        expected,
                        self.stats.last_sequence,
                    )
                    return
                expected += 1
                self.stats.received += 1
                if not batch:
                    started = loop.time()
                batch.append(item)
                if (
                    len(batch) >= self._max_batch
                    # The end of the stream as it is now, and nothing more in hand: under load
                    # the next deliveries are already here, and join this batch.
                    or (item.pending == 0 and not puller.buffered)
                    or loop.time() - started >= self._max_delay
                ):
                    await self._flush(batch)
            await self._flush(batch)

    async def _pull_again(self, status: PullStatus, expected: int) -> bool:
        """After a pull ended with `status`: True to pull again, False to make a new consumer."""
        if status.code not in (pull.REQUEST_TIMEOUT, pull.NO_MESSAGES):
            log.info("%s: pull ended with %d %s", self._label, status.code, status.description)
            return False  # no answer, consumer lost, server shutting down...
        # Nothing came for a whole pull. Deliveries lost on a dropped connection show as a gap
        # when the next one arrives; ask now so an idle reader does not sit on a hole.
        try:
            info = await pull.consumer_info(
                self._nc, self.stream, self._consumer, timeout=_API_TIMEOUT
            )
        except (BrokerError, NatsError):
            return False
        return info.delivered.consumer_seq == expected - 1

    async def _flush(self, batch: list[Delivery]) -> None:
        """Write the batch in hand; cancelling waits for the write in progress to end."""
        if not batch:
            return
        deliveries = batch.copy()
        batch.clear()
        writing = asyncio.ensure_future(self._write(deliveries))
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            await writing  # finish the batch in hand; it gives up retrying when stopping
            raise

    async def _write(self, deliveries: Sequence[Delivery]) -> None:
        decoded = decode_batch(deliveries, self._decode)
        for sequence, subject, error in decoded.malformed:
            log.error(
                "%s: skipping message %d on %s, which does not decode: %s",
                self._label,
                sequence,
                subject,
                error,
            )
        applied = await self._with_database_retry(
            write_batch, self._db, self._projection, self.stream, decoded
        )
        if applied is None:
            log.warning(
                "%s: stopped before sequences %d to %d were written; they are read again on start",
                self._label,
                deliveries[0].stream_seq,
                decoded.last_sequence,
            )
            return
        stats = self.stats
        stats.batches += 1
        stats.applied += applied
        stats.redelivered += len(decoded.events) - applied
        stats.malformed += len(decoded.malformed)
        stats.malformed_sequences = (
            stats.malformed_sequences + [sequence for sequence, _, _ in decoded.malformed]
        )[-100:]
        stats.last_sequence = max(stats.last_sequence, decoded.last_sequence)
        if self._on_applied is not None and decoded.events:
            self._on_applied(self.stream, decoded.events)
        self._on_progress()

    async def _with_database_retry(
        self, call: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs
    ) -> _R | None:
        """Run `call` in a thread until it succeeds; None if stopping before it did."""
        failures = 0
        while True:
            try:
                return await asyncio.to_thread(call, *args, **kwargs)
            except Exception as error:
                self.stats.database_retries += 1
                delay = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS) - 1)]
                log.warning(
                    "%s: the read-model database failed (%s); retrying in %.1fs",
                    self._label,
                    error,
                    delay,
                    exc_info=failures == 0,
                )
                failures += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return None

    async def drop_consumer(self) -> None:
        if self._consumer:
            await self._drop(self._consumer)
            self._consumer = ""

    async def _drop(self, name: str) -> None:
        if not self._nc.is_connected:
            return  # it expires on its own after _CONSUMER_IDLE
        await pull.drop_consumer(
            self._nc, self.stream, name, owner=self._label, timeout=_API_TIMEOUT
        )
