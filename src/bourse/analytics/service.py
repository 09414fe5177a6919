"""The analytics service: MARKET_DATA in, bars, indicators, VWAP, NBBO and arbitrage out.

The async shell around `AnalyticsPipeline` (the pure core). It reads `md.>` in stream order,
folds each message into the pipeline, lets market time pass on a timer (bars close in a
quiet market, quotes go stale), and publishes what comes out on `analytics.*` (the ANALYTICS
stream) through an `AckedPublisher`. Subjects, payloads and message ids: docs/analytics.md.

**Reading.** An ephemeral pull consumer without acks (like `FoldService`), read a batch of
up to `batch` messages at a time by `BatchReader` (the next batch is requested as soon as one
arrives), waiting at most `tick_interval` when the stream is quiet (so the timer runs
between batches, in the same task: no locks). Deliveries are checked for gaps by consumer
sequence; after a gap, a lost consumer or a broker restart a new consumer starts after the
last message applied, so every message is applied once and in order.

**Market time.** The pipeline's clock is the venues' own timestamps. While the service is
behind (the last delivery said more is pending) market time is the latest timestamp seen, so
a replay closes bars exactly as the messages dictate. Once caught up, market time also runs
with the wall clock since that timestamp arrived, so bars close `allowed_lateness_ns` after
their end and quotes expire although nothing else comes. (A historical feed replayed with old
timestamps works the same way: its time is its own.)

**Restart.** Every `snapshot_interval` seconds, and on `stop()`, the service waits for
JetStream to acknowledge every output, then saves the pipeline's state with the MARKET_DATA
sequence it covers and ANALYTICS' last sequence (the `SNAPSHOTS` object store, as fold
services). On start it restores the snapshot and replays MARKET_DATA after that sequence. The
replay reproduces the outputs published after the snapshot, with the same content-made
message ids; JetStream drops those resent within its duplicate window, and for an older
crash the service first reads the ids ANALYTICS holds after the snapshot's mark and skips
them itself, so a bar is never published twice. Without a snapshot it starts where
`AnalyticsConfig.start` says (by default at the start of the longest timeframe's current
bar), skipping ids already in ANALYTICS since that time.

Counters for monitoring are plain attributes of `service.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from bourse.analytics import messages
from bourse.analytics.pipeline import AnalyticsConfig, AnalyticsPipeline, digest
from bourse.analytics.published import published_ids
from bourse.analytics.reader import BatchReader
from bourse.bus import pull
from bourse.bus.lifecycle import OneTaskService
from bourse.bus.publisher import AckedPublisher, PublishError
from bourse.bus.snapshots import FoldSnapshot, SnapshotError, SnapshotStore
from bourse.bus.streams import ANALYTICS, MARKET_DATA
from bourse.errors import BourseError, BrokerError
from bourse.model import marketdata, subjects

log = logging.getLogger(__name__)

SERVICE_NAME = "analytics"

_PULL_GRACE = 1.0  # a pull unanswered this long after it expired: the connection dropped
_CONSUMER_IDLE = 30.0  # the server deletes a consumer this long after its service died
_API_TIMEOUT = 2.0
_FLUSH_TIMEOUT = 10.0
_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)


class AnalyticsError(BourseError):
    """The analytics service cannot go on (JetStream refused its consumer's settings)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"analytics service: {problem}")


@dataclass
class AnalyticsStats:
    """What the service did since it started; plain attributes for a metrics endpoint."""

    ticks_in: int = 0  # market-data messages applied
    skipped: int = 0  # messages that could not be decoded (or broke a core): logged, skipped
    messages_out: int = 0  # analytics messages published
    suppressed: int = 0  # outputs an earlier run had already published, not sent again
    lag_messages: int = 0  # MARKET_DATA messages not yet read, as of the last delivery
    lag_ns: int = 0  # wall clock minus the time the last applied message was stored
    last_seq: int = 0  # the MARKET_DATA sequence applied up to
    snapshots: int = 0
    resets: int = 0  # consumers made anew (gap, consumer lost, broker restart)
    restored_seq: int = 0  # the sequence of the snapshot it started from (0: none)
    publish_errors: int = 0  # outputs JetStream refused (logged)


class AnalyticsService(OneTaskService):
    """Run the analytics pipeline over MARKET_DATA; see the module."""

    def __init__(
        self,
        nc: NATS,
        config: AnalyticsConfig | None = None,
        *,
        name: str = SERVICE_NAME,
        snapshots: SnapshotStore | None = None,
        clock: Callable[[], int] = time.time_ns,
        price_places: Callable[[str], int] | None = None,
    ) -> None:
        super().__init__()
        self.config = config or AnalyticsConfig()
        self.name = name
        self._nc = nc
        self._clock = clock
        self._price_places = price_places
        self._snapshots = snapshots if snapshots is not None else SnapshotStore(nc)
        self._publisher = AckedPublisher(nc, max_in_flight=self.config.max_in_flight)
        self.pipeline = AnalyticsPipeline(self.config, price_places=price_places)
        self.stats = AnalyticsStats()
        # Ids an earlier run published after the snapshot, each dropped when met again. Kept
        # past the catch-up: a bar of a quiet series closes on the timer only after it.
        self._answered: set[str] = set()
        self._start_ns: int | None = None  # where a start without a snapshot reads from
        self._caught_up = False
        self._seen_event_ns = 0
        self._wall_at_event = 0
        self._since_snapshot = 0
        self._next_snapshot = 0.0
        self._snapshot_requested = False
        self._settled_seq = 0  # applied, and its outputs handed to the publisher
        self._consumer = ""

    # ---- lifecycle ----

    async def start(self) -> AnalyticsService:
        """Restore the latest snapshot, find the outputs already published, start reading."""
        if self._task is not None:
            raise RuntimeError(f"{self.name} was already started")
        journal = (await pull.stream_info(self._nc, MARKET_DATA.name)).state
        snapshot = await self._load_snapshot(journal.last_seq)
        if snapshot is not None:
            if journal.first_seq > snapshot.input_seq + 1:
                log.warning(
                    "%s: MARKET_DATA no longer holds sequences %d to %d: bars over that time "
                    "are built without them",
                    self.name,
                    snapshot.input_seq + 1,
                    journal.first_seq - 1,
                )
            mark = snapshot.output_marks.get(ANALYTICS.name, 0)
            self._answered = await self._published(after_seq=mark)
        else:
            self._start_ns = self._first_start_ns()
            if self.config.start != "new":
                self._answered = await self._published(since_ns=self._start_ns)
        self._seen_event_ns, self._wall_at_event = self.pipeline.event_ns, self._clock()
        await self._publisher.start()
        log.info(
            "%s: starting after MARKET_DATA sequence %d (%d outputs already published)",
            self.name,
            self.stats.last_seq,
            len(self._answered),
        )
        self._start_task(self.name)
        return self

    async def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until every message MARKET_DATA held when called is applied and every output
        so far is acknowledged; raise the service's error if it failed."""
        target = (await pull.stream_info(self._nc, MARKET_DATA.name)).state.last_seq
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._settled_seq < target:
            self._raise_failure()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self.name} is at MARKET_DATA sequence {self._settled_seq}, not "
                    f"{target}, after {timeout}s"
                )
            progress = self._progress
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.25)):
                    await progress.wait()
        await self._publisher.flush(timeout=max(deadline - loop.time(), 0.1))

    async def checkpoint(self, timeout: float = 30.0) -> None:
        """Save a snapshot at the next pause between pulls, and wait until it is saved."""
        saved = self.stats.snapshots
        self._snapshot_requested = True
        async with asyncio.timeout(timeout):
            while self.stats.snapshots == saved:
                self._raise_failure()
                progress = self._progress
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.25):
                        await progress.wait()

    # stop(), abort() and join() are OneTaskService's: stop() reads no more after the pull in
    # hand, then publishes what is due, waits for every ack and saves a snapshot (open bars
    # carry on after a restart).

    async def _finish(self) -> None:
        await self._publish()
        await self._checkpoint()

    async def _release(self, *, orderly: bool) -> None:
        await self._publisher.close()
        if orderly:
            await self._drop_consumer()

    # ---- reading ----

    async def _run(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        self._next_snapshot = loop.time() + self.config.snapshot_interval
        while not self._stopping:
            try:
                if not self._nc.is_connected:
                    raise BrokerError("not connected")
                reader = await self._open()
            except pull.JetStreamApiError as exc:
                if exc.code == pull.BAD_REQUEST:
                    raise AnalyticsError(str(exc)) from exc
                error: Exception = exc
            except (BrokerError, NatsError) as exc:
                error = exc
            else:
                failures = 0
                try:
                    await self._read(reader)
                finally:
                    await reader.close()
                continue
            delay = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS) - 1)]
            failures += 1
            log.warning("%s: cannot read MARKET_DATA (%s); retrying", self.name, error)
            self._idle = True
            await asyncio.sleep(delay)
            self._idle = False

    async def _open(self) -> BatchReader:
        """A new consumer starting after the last message applied (or where a first start
        begins)."""
        name = f"{self.name}_{self._nc.new_inbox().rsplit('.', 1)[-1]}"
        config = self._positioned(
            pull.ConsumerConfig(
                name=name,
                description=f"bourse {self.name}",
                ack_policy="none",
                filter_subjects=(subjects.ALL_MARKET_DATA,),
                replay_policy="instant",
                inactive_threshold=pull.nanos(_CONSUMER_IDLE),
                num_replicas=1,
                mem_storage=True,
            )
        )
        await pull.create_consumer(self._nc, MARKET_DATA.name, name, config, timeout=_API_TIMEOUT)
        old, self._consumer = self._consumer, name
        if old:
            self.stats.resets += 1
            await self._drop_consumer(old)
        return await BatchReader(
            self._nc,
            stream=MARKET_DATA.name,
            consumer=name,
            batch=self.config.batch,
            expires_ns=pull.nanos(self.config.tick_interval),
        ).start()

    def _positioned(self, config: pull.ConsumerConfig) -> pull.ConsumerConfig:
        """`config` starting after the last message applied, or where a first start begins."""
        replace = msgspec.structs.replace
        if self.stats.last_seq or self._start_ns is None:
            seq = self.stats.last_seq + 1
            return replace(config, deliver_policy="by_start_sequence", opt_start_seq=seq)
        if self.config.start == "first":
            return replace(config, deliver_policy="all")
        if self.config.start == "new":
            return replace(config, deliver_policy="new")
        since = pull.rfc3339(self._start_ns)
        return replace(config, deliver_policy="by_start_time", opt_start_time=since)

    def _first_start_ns(self) -> int:
        """Where a start without a snapshot reads from (stored time), for `aligned`: the start
        of the longest timeframe's current bar."""
        now = self._clock()
        return self.pipeline.longest_timeframe.start_of(now) if self.config.start != "first" else 0

    async def _read(self, reader: BatchReader) -> None:
        """Apply batches in order, pass time, publish; return to make a new consumer."""
        expected = 1  # the next consumer sequence
        timeout = self.config.tick_interval + _PULL_GRACE
        while not self._stopping:
            self._idle = True
            batch = await reader.next(timeout)
            self._idle = False
            if batch.payloads:
                applied = self._apply(batch.payloads, batch.replies, expected)
                expected += applied
                if applied < len(batch.payloads):
                    return  # a gap: read again after the last message applied
                last = pull.parse_ack_subject(batch.replies[-1])
                self._caught_up = last.pending == 0 and not reader.buffered
                self.stats.lag_messages = last.pending
                self.stats.lag_ns = max(0, self._clock() - last.time_ns)
            status = batch.status
            if status is not None:
                if status.code not in (pull.REQUEST_TIMEOUT, pull.NO_MESSAGES):
                    if status.code == pull.BAD_REQUEST:
                        raise AnalyticsError(f"pull refused: {status.description}")
                    log.info(
                        "%s: pull ended with %d %s", self.name, status.code, status.description
                    )
                    return
                self._caught_up = True
                self.stats.lag_messages = 0
            self.pipeline.advance(self._market_now())
            await self._publish()
            self._settled_seq = self.stats.last_seq
            await self._checkpoint_if_due()
            self._notify()

    def _apply(self, payloads: list[bytes], replies: list[str], expected: int) -> int:
        """Fold in a batch of deliveries whose consumer sequences start at `expected`; return
        how many were applied (fewer when a delivery went missing)."""
        first = pull.parse_ack_subject(replies[0])
        last = pull.parse_ack_subject(replies[-1])
        if first.consumer_seq != expected or last.consumer_seq - expected + 1 != len(replies):
            # Rare: find where the gap is, one delivery at a time, and apply up to it.
            for index, reply in enumerate(replies):
                if pull.parse_ack_subject(reply).consumer_seq != expected + index:
                    log.warning(
                        "%s: a delivery went missing after MARKET_DATA sequence %d; reading "
                        "again from there",
                        self.name,
                        self.stats.last_seq,
                    )
                    if index:
                        self._apply(payloads[:index], replies[:index], expected)
                    return index
        decode, on_message = marketdata.decode, self.pipeline.on_message
        skipped = 0
        for index, payload in enumerate(payloads):
            try:
                on_message(decode(payload))
            except Exception as exc:  # undecodable (a ValueError), or a bug in a core
                self._skip(replies[index], exc)
                skipped += 1
        self.stats.ticks_in += len(payloads) - skipped
        self.stats.last_seq = last.stream_seq
        self._since_snapshot += len(payloads)
        return len(payloads)

    def _skip(self, reply: str, error: Exception) -> None:
        seq = pull.parse_ack_subject(reply).stream_seq
        self.stats.skipped += 1
        if isinstance(error, msgspec.DecodeError):  # not market data: logged, skipped
            log.warning("%s: skipping MARKET_DATA sequence %d: %s", self.name, seq, error)
        else:  # a bug in a core: the other series must go on
            log.error("%s: MARKET_DATA sequence %d broke a core", self.name, seq, exc_info=error)

    def _market_now(self) -> int:
        """Market time: the latest venue timestamp, plus the wall time since it arrived once
        the service is caught up (see the module)."""
        event_ns = self.pipeline.event_ns
        wall = self._clock()
        if event_ns != self._seen_event_ns:
            self._seen_event_ns, self._wall_at_event = event_ns, wall
        if not self._caught_up or not event_ns:
            return event_ns
        return event_ns + max(0, wall - self._wall_at_event)

    # ---- publishing and snapshots ----

    async def _publish(self) -> None:
        encode, publish = messages.encode, self._publisher.publish
        answered = self._answered
        for subject, msg_id, message in self.pipeline.drain():
            if answered and msg_id in answered:
                answered.discard(msg_id)
                self.stats.suppressed += 1
                continue
            await publish(subject, encode(message), msg_id=msg_id)
            self.stats.messages_out += 1
        try:
            self._publisher.raise_errors()
        except PublishError as exc:
            self.stats.publish_errors += 1
            log.error("%s: JetStream refused an output: %s", self.name, exc)

    async def _checkpoint_if_due(self) -> None:
        now = asyncio.get_running_loop().time()
        due = now >= self._next_snapshot and self._since_snapshot
        if due or self._snapshot_requested:
            self._snapshot_requested = False
            self._next_snapshot = now + self.config.snapshot_interval
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        """Wait for every output's ack, then save the state with the sequences it covers."""
        try:
            await self._publisher.flush(timeout=_FLUSH_TIMEOUT)
            mark = (await pull.stream_info(self._nc, ANALYTICS.name)).state.last_seq
            state = self.pipeline.snapshot()
            await self._snapshots.save(
                FoldSnapshot(
                    service=self.name,
                    stream=MARKET_DATA.name,
                    input_seq=self.stats.last_seq,
                    processed=self.stats.last_seq,
                    output_marks={ANALYTICS.name: mark},
                    state_digest=digest(state),
                    state=state,
                )
            )
        except (BrokerError, NatsError, PublishError, TimeoutError) as exc:
            # Not fatal: the previous snapshot and a longer replay give the same state.
            log.warning(
                "%s: snapshot at sequence %d failed: %s", self.name, self.stats.last_seq, exc
            )
            return
        self._since_snapshot = 0
        self.stats.snapshots += 1

    async def _published(self, *, after_seq: int | None = None, since_ns: int = 0) -> set[str]:
        """Ids ANALYTICS holds after a sequence or since a time; none if it cannot be read
        (then only JetStream's duplicate window keeps a replayed output from being stored
        twice)."""
        try:
            return await published_ids(
                self._nc, ANALYTICS.name, after_seq=after_seq, since_ns=since_ns
            )
        except (BrokerError, NatsError) as exc:
            log.warning("%s: cannot read the ids ANALYTICS holds: %s", self.name, exc)
            return set()

    async def _load_snapshot(self, stream_last_seq: int) -> FoldSnapshot | None:
        """The snapshot to resume from, restored into the pipeline; None to start afresh."""
        try:
            snapshot = await self._snapshots.load(self.name)
            if snapshot is None:
                return None
            if snapshot.stream != MARKET_DATA.name:
                raise SnapshotError(self.name, f"it reads {snapshot.stream}, not MARKET_DATA")
            if snapshot.input_seq > stream_last_seq:
                raise SnapshotError(
                    self.name,
                    f"it covers MARKET_DATA up to {snapshot.input_seq} but the stream ends at "
                    f"{stream_last_seq} (was it recreated?)",
                )
            if digest(snapshot.state) != snapshot.state_digest:
                raise SnapshotError(self.name, "its state does not match its digest")
            try:
                self.pipeline = AnalyticsPipeline.restore(
                    snapshot.state, self.config, price_places=self._price_places
                )
            except (ValueError, TypeError) as exc:
                raise SnapshotError(self.name, str(exc)) from exc
        except SnapshotError as exc:
            log.warning("%s: not resuming from the snapshot: %s; starting afresh", self.name, exc)
            return None
        self.stats.last_seq = self.stats.restored_seq = self._settled_seq = snapshot.input_seq
        return snapshot

    # ---- bookkeeping ----

    async def _drop_consumer(self, name: str | None = None) -> None:
        name = name if name is not None else self._consumer
        await pull.drop_consumer(self._nc, MARKET_DATA.name, name, owner=self.name, timeout=2.0)
