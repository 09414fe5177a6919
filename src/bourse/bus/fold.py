"""A stateful service as a deterministic fold over a stream: the shell around a pure core.

`FoldService` reads a filtered view of a stream (ORDERS by default) in stream order, applies
each message to its core, and publishes what the core returns, in order, through an
`AckedPublisher`. Every output carries `Nats-Msg-Id: <service>.<input seq>.<index>` and
`Bourse-Input-Seq: <input seq>`, so an output is a pure function of its input's place in the
journal: JetStream drops a resend within its duplicate window, and a restarted service can
tell which outputs already exist.

Reading: an ephemeral pull consumer without acks, one pull request at a time, checked for
gaps by consumer sequence. After a gap, a lost consumer or a broker restart the service makes
a new consumer starting after the last message it read, so it applies every input once and
in order. A single filter subject is applied by the server; several are matched here on the
unfiltered stream (see `_local_patterns` for why).

Snapshots: every `snapshot_every` inputs (and on `stop()`) the service waits until JetStream
has acknowledged every output so far, then saves the core's state with the input sequence it
covers (`bourse.bus.snapshots`). On start it restores the latest snapshot and replays the
tail of the stream from the next sequence. A snapshot costs time in proportion to the state
(encoding, digest, compression, storage), and a state can grow with the journal (accounts
remember every client order id), so the next snapshot also waits for at least one input per
`SNAPSHOT_BYTES_PER_INPUT` bytes of the last one: its cost per input stays bounded however
large the state grows (a 4 MB state is saved every ~31,000 inputs, not every 1,000), and the
tail to replay stays proportionate to the state to restore.

Never publishing an output twice, even long after the duplicate window: the snapshot also
records each output stream's last sequence when it was taken, and every output of a later
input lies after that mark. On start the service reads the message ids (headers only) of its
output subjects after the marks, and while replaying it publishes only the outputs whose id
is not among them. Without a snapshot the marks are the start of the streams. So a crash
between publishing and snapshotting costs a scan of the tail, never a duplicate or a gap.

Lifecycle: `await service.start()`; `await service.wait_caught_up()` to wait for the stream
as it is now; `await service.stop()` to finish the input in hand, wait for every ack and save
a snapshot; `await service.abort()` to stop as a crash would (tests, fail-over);
`await service.join()` to wait for the end and raise what made it fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from bourse.bus import pull
from bourse.bus.lifecycle import OneTaskService
from bourse.bus.publisher import MSG_ID_HEADER, AckedPublisher, PublishError, PublisherStats
from bourse.bus.pull import Delivery, PullRequest, PullStatus
from bourse.bus.snapshots import FoldSnapshot, SnapshotError, SnapshotStore
from bourse.bus.streams import ORDERS
from bourse.errors import BourseError, BrokerError, ConfigError
from bourse.model import subjects

log = logging.getLogger(__name__)

INPUT_SEQ_HEADER: Final = "Bourse-Input-Seq"

_PULL_EXPIRES = 1.0  # seconds a pull waits for messages; an idle service checks for gaps this often
_PULL_GRACE = 1.0  # a pull unanswered this long after it expired: the connection dropped
_CONSUMER_IDLE = 30.0  # the server deletes a consumer this long after its service died
_FLUSH_PATIENCE = 10.0  # seconds between warnings while JetStream does not acknowledge outputs
_API_TIMEOUT = 2.0  # seconds to wait for a JetStream API answer before trying again
_CAUGHT_UP_POLL = 0.25  # how often wait_caught_up re-reads the consumer when nothing happens
_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)  # backoff when the broker cannot be used
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$(?!\n)")
# Inputs between two snapshots: at least one per this many bytes of the last snapshot's state.
SNAPSHOT_BYTES_PER_INPUT: Final = 128

E = TypeVar("E")
E_contra = TypeVar("E_contra", contravariant=True)


class FoldCore(Protocol[E_contra]):
    """What a FoldService runs: a deterministic core that can save and restore its state."""

    def apply(self, event: E_contra, /) -> Sequence[tuple[str, object]]:
        """Fold one input into the state; return (subject, message) pairs to publish."""
        ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes, /) -> None: ...

    def state_digest(self) -> str: ...


class FoldError(BourseError):
    """A fold service cannot go on (a core published outside its declared outputs, JetStream
    refused an output, the journal lost messages no snapshot covers...)."""

    def __init__(self, service: str, problem: str) -> None:
        self.service = service
        self.problem = problem
        super().__init__(f"fold service {service}: {problem}")


@dataclass
class FoldStats:
    """What one instance of a fold service did since it started."""

    applied: int = 0  # inputs applied (a replayed tail included)
    published: int = 0  # outputs sent
    suppressed: int = 0  # outputs found already published by an earlier run, not sent again
    skipped: int = 0  # inputs that could not be decoded; every replay skips them alike
    snapshots: int = 0
    resets: int = 0  # consumers made anew (gap, consumer lost, broker restart)
    restored_seq: int = 0  # the input sequence of the snapshot it started from (0: none)


class _ScanConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A consumer reading headers only (pull.ConsumerConfig has no `headers_only`)."""

    name: str
    filter_subjects: tuple[str, ...] | None  # null: the whole stream
    opt_start_seq: int
    deliver_policy: str = "by_start_sequence"
    ack_policy: str = "none"
    headers_only: bool = True  # only the ids are wanted
    inactive_threshold: int = pull.nanos(_CONSUMER_IDLE)
    num_replicas: int = 1
    mem_storage: bool = True


class _CreateScan(msgspec.Struct, frozen=True):
    stream_name: str
    config: _ScanConfig


_ANY_TOKEN = r"[^.]*"  # `*`: one token
_REST = r"[^.]*(?:\.[^.]*)*"  # `>`: one token or more


def subject_matcher(filters: Iterable[str]) -> re.Pattern[str]:
    """One regular expression whose `fullmatch` is true for the subjects any of `filters`
    matches: `*` is one token, `>` one or more at the end. (Every input and output of a fold
    is matched; one compiled expression costs a fraction of comparing tokens in Python.)"""
    alternatives = []
    for pattern in filters:
        tokens = subjects.check_filter(pattern).split(".")
        parts = [_ANY_TOKEN if t == "*" else _REST if t == ">" else re.escape(t) for t in tokens]
        alternatives.append(r"\.".join(parts))
    return re.compile("|".join(f"(?:{alternative})" for alternative in alternatives))


def _local_matcher(filters: tuple[str, ...]) -> re.Pattern[str] | None:
    """The filters to match here, or None to let the server filter.

    nats-server (2.15) serves a consumer with several wildcard filters some 50 times slower
    than an unfiltered one on a stream with a subject per order (`orders.executed.<id>`):
    measured 1.6k against 80k messages a second. So one filter goes to the server and
    several are matched here, on the unfiltered stream.
    """
    return subject_matcher(filters) if len(filters) > 1 else None


def _server_filter(filters: tuple[str, ...]) -> tuple[str, ...] | None:
    return filters if len(filters) == 1 else None


class FoldService(OneTaskService, Generic[E]):
    """Run `core` over the `filter_subjects` view of `stream`; see the module docstring.

    `outputs` maps each stream the core publishes to onto the subject filters its outputs
    use there (e.g. `{"POSITIONS": ("positions.*.*",)}`); publishing anywhere else is a
    FoldError. `decode` turns a message's payload into the core's input; an input it cannot
    decode (msgspec.DecodeError or ValueError) is logged and skipped.
    """

    def __init__(
        self,
        nc: NATS,
        *,
        name: str,
        filter_subjects: Sequence[str],
        outputs: Mapping[str, Sequence[str]],
        core: FoldCore[E],
        decode: Callable[[bytes], E],
        stream: str = ORDERS.name,
        snapshot_every: int = 1000,
        snapshots: SnapshotStore | None = None,
        batch: int = 256,
        max_in_flight: int = 512,
        ack_timeout: float = 2.0,
    ) -> None:
        if not _NAME.match(name):
            raise ConfigError("fold service name", name, "letters, digits, '-' and '_' (1-64)")
        if not filter_subjects:
            raise ConfigError("filter_subjects", filter_subjects, "at least one subject filter")
        if not outputs or not all(outputs.values()):
            raise ConfigError("outputs", outputs, "each output stream with its subject filters")
        if snapshot_every < 1 or batch < 1:
            raise ConfigError("snapshot_every / batch", (snapshot_every, batch), "at least 1")
        super().__init__()
        self.name = name
        self.stream = stream
        self.filter_subjects = tuple(subjects.check_filter(f) for f in filter_subjects)
        self._input_matcher = _local_matcher(self.filter_subjects)
        self.outputs = {s: tuple(subjects.check_filter(f) for f in fs) for s, fs in outputs.items()}
        self._output_matcher = subject_matcher(f for fs in self.outputs.values() for f in fs)
        self._nc = nc
        self._core = core
        self._decode = decode
        self._snapshot_every = snapshot_every
        self._snapshots = snapshots if snapshots is not None else SnapshotStore(nc)
        self._batch = batch
        self._publisher = AckedPublisher(nc, max_in_flight=max_in_flight, ack_timeout=ack_timeout)
        self._encoder = msgspec.json.Encoder()
        self.stats = FoldStats()
        self.processed = 0  # inputs folded into the state since the start of the journal
        self._last_seq = 0  # stream sequence read up to (inputs up to it are applied)
        self._flushed_seq = 0  # ... and their outputs all acknowledged by JetStream
        self._since_snapshot = 0
        self._snapshot_interval = snapshot_every  # inputs before the next snapshot
        self._marks: dict[str, int] = {}
        self._answered: set[str] = set()  # ids of outputs an earlier run already published
        self._consumer = ""

    # ---- public surface ----

    @property
    def core(self) -> FoldCore[E]:
        return self._core

    @property
    def last_seq(self) -> int:
        """The stream sequence the service has read up to: every input at or before it is
        applied (0: none yet)."""
        return self._last_seq

    @property
    def snapshot_interval(self) -> int:
        """Inputs between two snapshots now: `snapshot_every`, or more for a large state."""
        return self._snapshot_interval

    @property
    def publisher_stats(self) -> PublisherStats:
        return self._publisher.stats

    async def start(self) -> FoldService[E]:
        """Restore the latest snapshot, find the outputs already published, start reading.

        Returns once the service reads the stream; the tail after the snapshot is replayed in
        the background (`wait_caught_up()` waits for it).
        """
        if self._task is not None:
            raise RuntimeError(f"fold service {self.name} was already started")
        journal = (await pull.stream_info(self._nc, self.stream)).state
        snapshot = await self._snapshots.load(self.name)
        if snapshot is not None:
            self._restore(snapshot, journal.last_seq)
            if journal.first_seq > snapshot.input_seq + 1:
                raise FoldError(
                    self.name,
                    f"stream {self.stream} starts at sequence {journal.first_seq}: messages "
                    f"after the snapshot (sequence {snapshot.input_seq}) are gone, so the state "
                    "cannot be brought up to date",
                )
        elif journal.first_seq > 1:
            raise FoldError(
                self.name,
                f"stream {self.stream} starts at sequence {journal.first_seq}: earlier messages "
                "are gone and no snapshot covers them, so the state cannot be rebuilt",
            )
        self._answered = await self._published_outputs()
        await self._publisher.start()
        self._flushed_seq = self._last_seq
        log.info(
            "%s: starting after %s sequence %d (%d outputs of the tail already published)",
            self.name,
            self.stream,
            self._last_seq,
            len(self._answered),
        )
        self._start_task(f"fold-{self.name}")
        return self

    async def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until every input the stream held when called is applied and its outputs are
        acknowledged; raise the service's error if it failed, TimeoutError after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target = (await pull.stream_info(self._nc, self.stream)).state.last_seq
        while True:
            self._raise_failure()
            progress = self._progress
            if self._flushed_seq >= target or await self._consumer_drained():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"fold service {self.name} is at {self.stream} sequence {self._flushed_seq}, "
                    f"not {target}, after {timeout}s"
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, _CAUGHT_UP_POLL)):
                    await progress.wait()

    # stop(), abort() and join() are OneTaskService's: stop() reads no more after the input in
    # hand, then waits for every output's ack and saves a snapshot.

    async def _finish(self) -> None:
        await self._flush()
        if self._since_snapshot:
            await self._checkpoint()

    async def _release(self, *, orderly: bool) -> None:
        await self._publisher.close()
        if orderly:
            await self._drop_consumer(self._consumer)  # else it expires, as after a crash

    def _label(self) -> str:
        return f"fold service {self.name}"

    # ---- recovery ----

    def _restore(self, snapshot: FoldSnapshot, stream_last_seq: int) -> None:
        if snapshot.stream != self.stream:
            raise SnapshotError(self.name, f"it folds {snapshot.stream}, not {self.stream}")
        if snapshot.input_seq > stream_last_seq:
            raise SnapshotError(
                self.name,
                f"it covers {self.stream} up to sequence {snapshot.input_seq} but the stream "
                f"ends at {stream_last_seq} (was it recreated?); delete the snapshot to rebuild "
                "from the journal",
            )
        self._core.restore(snapshot.state)
        if self._core.state_digest() != snapshot.state_digest:
            raise SnapshotError(self.name, "the restored state differs from the saved one")
        self._last_seq = snapshot.input_seq
        self.processed = snapshot.processed
        self._marks = dict(snapshot.output_marks)
        self._space_snapshots(snapshot.state)
        self.stats.restored_seq = snapshot.input_seq

    async def _published_outputs(self) -> set[str]:
        """Ids of this service's outputs after the snapshot's marks."""
        prefix = f"{self.name}."
        found: set[str] = set()
        for stream, filters in self.outputs.items():
            start = self._marks.get(stream, 0) + 1
            async for delivery in self._scan(stream, filters, start):
                msg_id = delivery.headers.get(MSG_ID_HEADER, "")
                if msg_id.startswith(prefix):
                    found.add(msg_id)
        return found

    async def _scan(
        self, stream: str, filters: tuple[str, ...], start: int
    ) -> AsyncIterator[Delivery]:
        """The headers of `stream`'s messages matching `filters` from `start` to its end."""
        name = f"{self.name}_scan_{self._nc.new_inbox().rsplit('.', 1)[-1]}"
        config = _ScanConfig(
            name=name, filter_subjects=_server_filter(filters), opt_start_seq=start
        )
        matcher = _local_matcher(filters)
        info = await pull.api_request(
            self._nc,
            pull.consumer_subject("CREATE", stream, name),
            _CreateScan(stream, config),
            pull.ConsumerInfo,
        )
        remaining = info.num_pending
        puller = await pull.Puller(self._nc, stream=stream, consumer=name).start()
        try:
            expected = 1
            while remaining > 0:
                request = PullRequest(batch=min(remaining, 1000), expires=pull.nanos(_PULL_EXPIRES))
                async for item in puller.pull(request, timeout=_PULL_EXPIRES + _PULL_GRACE):
                    if isinstance(item, PullStatus):
                        if item.code in (pull.REQUEST_TIMEOUT, pull.NO_MESSAGES):
                            return  # fewer than counted: some aged out meanwhile
                        raise BrokerError(
                            f"{self.name}: reading {stream} for published outputs failed: "
                            f"{item.code} {item.description}"
                        )
                    if item.consumer_seq != expected:
                        raise BrokerError(f"{self.name}: a delivery from {stream} went missing")
                    expected += 1
                    remaining -= 1
                    if matcher is None or matcher.fullmatch(item.subject):
                        yield item
        finally:
            await puller.close()
            await self._drop_consumer(name, stream)

    # ---- reading ----

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                if not self._nc.is_connected:
                    # A request sent while reconnecting may be answered before the client
                    # listens again, and time out; wait for the connection instead.
                    raise BrokerError("not connected")
                puller = await self._open()
            except pull.JetStreamApiError as exc:
                if exc.code == pull.BAD_REQUEST:  # a filter outside the stream, a bad setting
                    raise FoldError(self.name, str(exc)) from exc
                error: Exception = exc
            except (BrokerError, NatsError) as exc:
                error = exc
            else:
                failures = 0
                try:
                    await self._read(puller)
                finally:
                    await puller.close()
                continue
            delay = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS) - 1)]
            failures += 1
            log.warning("%s: cannot read %s (%s); retrying", self.name, self.stream, error)
            self._idle = True
            await asyncio.sleep(delay)
            self._idle = False

    async def _open(self) -> pull.Puller:
        """A new consumer starting after the last input applied."""
        name = f"{self.name}_{self._nc.new_inbox().rsplit('.', 1)[-1]}"
        config = pull.ConsumerConfig(
            name=name,
            description=f"bourse fold service {self.name}",
            deliver_policy="by_start_sequence",
            opt_start_seq=self._last_seq + 1,
            ack_policy="none",
            filter_subjects=_server_filter(self.filter_subjects),
            replay_policy="instant",
            inactive_threshold=pull.nanos(_CONSUMER_IDLE),
            num_replicas=1,
            mem_storage=True,
        )
        info = await pull.create_consumer(self._nc, self.stream, name, config, timeout=_API_TIMEOUT)
        old, self._consumer = self._consumer, name
        if old:
            self.stats.resets += 1
            await self._drop_consumer(old)
        if info.num_pending == 0:
            await self._flush()  # caught up already: let wait_caught_up see it
        return await pull.Puller(self._nc, stream=self.stream, consumer=name).start()

    async def _read(self, puller: pull.Puller) -> None:
        """Apply deliveries in order; return when the consumer must be made anew (or on stop)."""
        expected = 1
        while not self._stopping:
            request = PullRequest(batch=self._batch, expires=pull.nanos(_PULL_EXPIRES))
            self._idle = True
            async for item in puller.pull(request, timeout=_PULL_EXPIRES + _PULL_GRACE):
                self._idle = False
                if isinstance(item, PullStatus):
                    if not await self._idle_check(item, expected):
                        return
                    break
                if item.consumer_seq != expected:
                    log.warning(
                        "%s: delivery %d came where %d was due; reading again after %d",
                        self.name,
                        item.consumer_seq,
                        expected,
                        self._last_seq,
                    )
                    return
                expected += 1
                if item.stream_seq > self._last_seq:
                    if self._wanted(item.subject):
                        await self._apply(item)
                    else:
                        self._last_seq = item.stream_seq
                if item.pending == 0 and not puller.buffered:
                    # Caught up, nothing more in hand: bound what is unacknowledged while idle.
                    # Under load, when more has already arrived, the flush waits for a pause,
                    # not for each input's acks in turn.
                    await self._flush()
                if self._since_snapshot >= self._snapshot_interval:
                    await self._checkpoint()
                if self._stopping:
                    return
                self._idle = True
            self._idle = False

    async def _idle_check(self, status: PullStatus, expected: int) -> bool:
        """After a pull ended with `status`: True to pull again, False to make a new consumer."""
        if status.code not in (pull.REQUEST_TIMEOUT, pull.NO_MESSAGES):
            if status.code == pull.BAD_REQUEST:
                raise FoldError(self.name, f"pull refused: {status.description}")
            log.info("%s: pull ended with %d %s", self.name, status.code, status.description)
            return False  # no answer, consumer lost, server shutting down...
        await self._flush()
        # Nothing came for a whole pull. Deliveries lost on a dropped connection show as a gap
        # when the next one arrives; ask now so an idle service does not sit on a hole.
        try:
            info = await pull.consumer_info(self._nc, self.stream, self._consumer)
        except BrokerError:
            return False
        return info.delivered.consumer_seq == expected - 1

    def _wanted(self, subject: str) -> bool:
        matcher = self._input_matcher
        return matcher is None or matcher.fullmatch(subject) is not None

    async def _apply(self, delivery: Delivery) -> None:
        seq = delivery.stream_seq
        try:
            event = self._decode(delivery.data)
        except (msgspec.DecodeError, ValueError) as exc:
            log.warning("%s: skipping %s sequence %d: %s", self.name, self.stream, seq, exc)
            self.stats.skipped += 1
        else:
            headers = {INPUT_SEQ_HEADER: str(seq)}
            for index, (subject, message) in enumerate(self._core.apply(event)):
                if not self._output_matcher.fullmatch(subject):
                    raise FoldError(self.name, f"output on {subject} is outside {self.outputs}")
                msg_id = f"{self.name}.{seq}.{index}"
                if msg_id in self._answered:
                    self._answered.discard(msg_id)
                    self.stats.suppressed += 1
                    continue
                payload = self._encoder.encode(message)
                await self._publisher.publish(subject, payload, msg_id=msg_id, headers=headers)
                self.stats.published += 1
            self.stats.applied += 1
        self._last_seq = seq
        self.processed += 1
        self._since_snapshot += 1

    # ---- acknowledgements and snapshots ----

    async def _flush(self) -> None:
        """Wait until JetStream has acknowledged every output so far (however long it takes)."""
        while True:
            try:
                await self._publisher.flush(timeout=_FLUSH_PATIENCE)
                break
            except PublishError as exc:
                if self._publisher.in_flight == 0:  # refused, not merely late
                    raise FoldError(self.name, str(exc)) from exc
                problem = str(exc)
            except NatsError as exc:  # the connection's own flush timed out (reconnecting)
                if self._nc.is_closed:
                    raise
                problem = str(exc)
            log.warning("%s: outputs not acknowledged yet (%s); waiting", self.name, problem)
        if self._flushed_seq != self._last_seq:
            self._flushed_seq = self._last_seq
            self._notify()

    async def _checkpoint(self) -> None:
        await self._flush()
        try:
            # Read after the flush, so this run's outputs so far are all at or before the marks.
            marks = {
                stream: (await pull.stream_info(self._nc, stream)).state.last_seq
                for stream in self.outputs
            }
            state = self._core.snapshot()
            await self._snapshots.save(
                FoldSnapshot(
                    service=self.name,
                    stream=self.stream,
                    input_seq=self._last_seq,
                    processed=self.processed,
                    output_marks=marks,
                    state_digest=self._core.state_digest(),
                    state=state,
                )
            )
        except (BrokerError, NatsError, TimeoutError) as exc:
            # Not fatal: the previous snapshot and a longer replay still give the same state.
            # Tried again after another `snapshot_every` inputs, not after every input.
            log.warning("%s: snapshot at sequence %d failed: %s", self.name, self._last_seq, exc)
            self._snapshot_interval = self._since_snapshot + self._snapshot_every
            return
        self._since_snapshot = 0
        self._space_snapshots(state)
        self.stats.snapshots += 1

    def _space_snapshots(self, state: bytes) -> None:
        """Inputs before the next snapshot, after one of `state` (see the module docstring)."""
        self._snapshot_interval = max(self._snapshot_every, len(state) // SNAPSHOT_BYTES_PER_INPUT)

    # ---- bookkeeping ----

    async def _consumer_drained(self) -> bool:
        """Whether the consumer has nothing left to deliver and every delivery is applied."""
        if not self._consumer:
            return False
        try:
            info = await pull.consumer_info(self._nc, self.stream, self._consumer)
        except BrokerError:
            return False  # being made anew
        return info.num_pending == 0 and self._flushed_seq >= info.delivered.stream_seq

    async def _drop_consumer(self, name: str, stream: str | None = None) -> None:
        await pull.drop_consumer(
            self._nc, stream or self.stream, name, owner=self.name, timeout=2.0
        )
