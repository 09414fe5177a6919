"""The alerts service: the alert book folded over the accounts' requests and the market.

    service = await AlertsService(nc).start()
    await service.wait_caught_up()
    await service.stop()          # finishes the input in hand, waits for acks, snapshots

**Inputs.** The accounts' requests, `alerts.created.<account>.<id>` and
`alerts.deleted.<account>.<id>` on ALERTS (the gateway journals them after validating them),
and every quote on MARKET_DATA (`md.>`, decoded with `bourse.model.marketdata`). Each stream
is read in order, without gaps, by its own `StreamFollower`; the two are folded into one
`AlertBook` one message at a time.

**Outputs.** Each firing goes out on `alerts.fired.<account>.<id>` (ALERTS, so the gateway's
view and any NATS client see it) with `Nats-Msg-Id: alert-fired:<id>:<n>`, the alert's n-th
firing, through an `AckedPublisher`.

**Never twice for the same crossing.** The two streams have no common order, so which quote
a request lands between is decided here, when it is read. The service makes that decision
durable before it can matter: after applying a request it waits for every output's ack and
saves a snapshot (the book, the MARKET_DATA and ALERTS sequences it covers, and the ALERTS
stream's last sequence as a mark) before it folds in another quote. So every firing it ever
published follows from a snapshot and the quotes after it, which are read again in the same
order after a restart: the restarted service fires the same alerts with the same ids. The
ids of the firings already published after the snapshot's mark are read back at start and
those firings are not sent again (JetStream's duplicate window alone would cover only two
minutes). A request read after the snapshot had not been applied in any lasting way, and is
applied again where it is read now. Snapshots are also taken every `snapshot_every` quotes
or `snapshot_interval` seconds, so a restart replays little.

Without a snapshot (the first start) the service reads every request on ALERTS and the
market from now on. After a long stop it reads all the quotes MARKET_DATA still holds
since its snapshot (24 hours), so an alert crossed meanwhile fires, late; its event's `ts`
says when the price crossed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from bourse.alerts.follow import StreamFollower
from bourse.analytics import alerts
from bourse.analytics.alerts import AlertBook, AlertFired
from bourse.bus import pull
from bourse.bus.publisher import AckedPublisher, PublishError, PublisherStats
from bourse.bus.pull import Delivery
from bourse.bus.snapshots import FoldSnapshot, SnapshotError, SnapshotStore
from bourse.bus.streams import ALERTS, MARKET_DATA
from bourse.errors import BourseError, BrokerError
from bourse.model import marketdata, subjects
from bourse.model.instruments import DEFAULT_UNIVERSE, Instrument

log = logging.getLogger(__name__)

NAME = "alerts"
_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_CAUGHT_UP_POLL = 0.25
_FLUSH_PATIENCE = 10.0


class AlertsServiceError(BourseError):
    """The alerts service cannot go on (JetStream refused a firing, a bad snapshot...)."""

    def __init__(self, service: str, problem: str) -> None:
        self.service = service
        self.problem = problem
        super().__init__(f"alerts service {service}: {problem}")


@dataclass
class AlertsStats:
    """What one instance of the alerts service did since it started."""

    quotes: int = 0  # market-data messages folded in (trades and depth included)
    requests: int = 0  # created / deleted requests applied
    fired: int = 0  # firings published
    suppressed: int = 0  # firings an earlier run had published, not sent again
    skipped: int = 0  # messages that did not decode
    snapshots: int = 0
    restored_seq: int = 0  # the MARKET_DATA sequence of the snapshot it started from


class _State(msgspec.Struct, frozen=True, kw_only=True):
    """What the snapshot's `state` holds: the book and the ALERTS request sequence."""

    book: bytes
    requests_seq: int


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(_State)


class AlertsService:
    """The alert book over ALERTS requests and MARKET_DATA quotes; see the module docstring."""

    def __init__(
        self,
        nc: NATS,
        *,
        name: str = NAME,
        instruments: Iterable[Instrument] = DEFAULT_UNIVERSE,
        snapshots: SnapshotStore | None = None,
        snapshot_every: int = 10_000,
        snapshot_interval: float = 30.0,
        max_in_flight: int = 256,
        ack_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._nc = nc
        self._instruments = tuple(instruments)
        self._book = AlertBook(self._instruments)
        self._snapshots = snapshots if snapshots is not None else SnapshotStore(nc)
        self._snapshot_every = snapshot_every
        self._snapshot_interval = snapshot_interval
        self._clock = clock
        self._publisher = AckedPublisher(nc, max_in_flight=max_in_flight, ack_timeout=ack_timeout)
        self._market = StreamFollower(nc, MARKET_DATA.name, name=f"{name}_md", batch=512)
        self._requests = StreamFollower(
            nc,
            ALERTS.name,
            name=f"{name}_requests",
            filters=(subjects.alert_filter("created"), subjects.alert_filter("deleted")),
        )
        self._lock = asyncio.Lock()  # one input at a time, whichever stream it comes from
        self._stopping = asyncio.Event()
        self._progress = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._md_seq = 0  # MARKET_DATA folded in up to here
        self._requests_seq = 0  # ALERTS requests applied up to here
        self._published: dict[str, int] = {}  # alert id -> firings an earlier run published
        self._since_snapshot = 0
        self._snapshot_at = 0.0
        self.processed = 0  # quotes and requests folded in since the book began
        self.stats = AlertsStats()

    # ---- public surface ----

    @property
    def book(self) -> AlertBook:
        return self._book

    @property
    def md_seq(self) -> int:
        """The MARKET_DATA sequence folded in up to (every quote at or before it)."""
        return self._md_seq

    @property
    def requests_seq(self) -> int:
        """The ALERTS sequence of the last request applied."""
        return self._requests_seq

    @property
    def publisher_stats(self) -> PublisherStats:
        return self._publisher.stats

    @property
    def in_flight(self) -> int:
        return self._publisher.in_flight

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def start(self) -> AlertsService:
        """Restore the latest snapshot, find the firings already published, start reading."""
        if self._tasks:
            raise RuntimeError(f"alerts service {self.name} was already started")
        snapshot = await self._snapshots.load(self.name)
        market_end = (await pull.stream_info(self._nc, MARKET_DATA.name)).state.last_seq
        alerts_end = (await pull.stream_info(self._nc, ALERTS.name)).state.last_seq
        marks: dict[str, int] = {}
        if snapshot is not None:
            self._restore(snapshot)
            marks = dict(snapshot.output_marks)
            if self._requests_seq > alerts_end:
                log.warning(
                    "%s: ALERTS ends at %d, before the snapshot's %d: it was made anew, and "
                    "the alerts the snapshot holds with it; starting without them",
                    self.name,
                    alerts_end,
                    self._requests_seq,
                )
                snapshot, marks = None, {}
                self._book, self._requests_seq = AlertBook(self._instruments), 0
                self.processed = self.stats.restored_seq = 0
            elif self._md_seq > market_end:
                log.warning(
                    "%s: MARKET_DATA ends at %d, before the snapshot's %d: it was made anew; "
                    "reading it from its end",
                    self.name,
                    market_end,
                    self._md_seq,
                )
                self._md_seq = market_end
        if snapshot is None:
            # A first start: every request there is, and the market from now on.
            self._md_seq = market_end
        self._published = await self._published_firings(after=marks.get(ALERTS.name, 0))
        await self._publisher.start()
        if snapshot is None:
            await self._checkpoint(required=True)  # where the market was first read from
        self._snapshot_at = self._clock()
        log.info(
            "%s: starting after MARKET_DATA %d and ALERTS %d with %d alerts (%d already fired "
            "since the snapshot)",
            self.name,
            self._md_seq,
            self._requests_seq,
            len(self._book),
            len(self._published),
        )
        self._market.when_caught_up(self._notify)
        self._requests.when_caught_up(self._notify)
        self._tasks = [
            asyncio.create_task(
                self._market.run(
                    after=self._md_seq, handle=self._on_market_data, stopping=self._stopping
                ),
                name=f"{self.name}-market",
            ),
            asyncio.create_task(
                self._requests.run(
                    after=self._requests_seq, handle=self._on_request, stopping=self._stopping
                ),
                name=f"{self.name}-requests",
            ),
        ]
        for task in self._tasks:
            task.add_done_callback(self._on_done)
        return self

    async def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the quotes MARKET_DATA held when called and every request on ALERTS are
        folded in and the firings acknowledged; TimeoutError after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target = (await pull.stream_info(self._nc, MARKET_DATA.name)).state.last_seq
        while True:
            self._raise_failure()
            progress = self._progress
            market = self._md_seq >= target or await self._market.drained()
            if market and await self._requests.drained():
                try:
                    await self._publisher.flush(timeout=max(0.1, deadline - loop.time()))
                except PublishError as error:
                    if self._publisher.in_flight:  # late, not refused
                        raise TimeoutError(f"alerts service {self.name}: {error}") from error
                    raise
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"alerts service {self.name} is at MARKET_DATA {self._md_seq}, not {target}, "
                    f"after {timeout}s"
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, _CAUGHT_UP_POLL)):
                    await progress.wait()

    async def stop(self) -> None:
        """Stop after the input in hand, wait for every firing's ack, save a snapshot."""
        if not self._tasks or self._stopping.is_set():
            return
        self._stopping.set()
        async with self._lock:
            # The input in hand is finished; the readers are waiting for the broker or for
            # this lock, with nothing half-done: cancel them rather than wait for a pull.
            for task in self._tasks:
                task.cancel()
            await asyncio.wait(self._tasks)
            try:
                if not self._failed():
                    await self._checkpoint(required=False)
            finally:
                await self._publisher.close()
        self._raise_failure()

    async def abort(self) -> None:
        """Stop at once, as a crash would: no flush, no snapshot."""
        if not self._tasks or self._stopping.is_set():
            return
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks)
        await self._publisher.close()

    async def join(self) -> None:
        """Wait until the service ends; raise what made it fail."""
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._raise_failure()

    # ---- the inputs ----

    async def _on_market_data(self, delivery: Delivery) -> None:
        async with self._lock:
            seq = delivery.stream_seq
            if seq <= self._md_seq:
                return
            if seq > self._md_seq + 1 and self.stats.quotes == 0 and self._md_seq:
                log.warning(
                    "%s: MARKET_DATA %d to %d aged out while it was stopped; alerts crossed "
                    "then are judged on the prices from %d on",
                    self.name,
                    self._md_seq + 1,
                    seq - 1,
                    seq,
                )
            try:
                message = marketdata.decode(delivery.data)
            except msgspec.DecodeError as error:
                log.warning("%s: skipping MARKET_DATA %d: %s", self.name, seq, error)
                self.stats.skipped += 1
            else:
                for event in self._book.apply(message):
                    await self._publish(event)
            self._md_seq = seq
            self.stats.quotes += 1
            self.processed += 1
            self._since_snapshot += 1
            if (
                self._since_snapshot >= self._snapshot_every
                or self._clock() - self._snapshot_at >= self._snapshot_interval
            ):
                await self._checkpoint(required=False)
        self._notify()

    async def _on_request(self, delivery: Delivery) -> None:
        async with self._lock:
            seq = delivery.stream_seq
            if seq <= self._requests_seq:
                return
            try:
                request = alerts.decode(delivery.data)
            except msgspec.DecodeError as error:
                log.warning("%s: skipping ALERTS %d: %s", self.name, seq, error)
                self.stats.skipped += 1
            else:
                if not isinstance(request, AlertFired):
                    self._book.apply(request)
                    self.stats.requests += 1
            self._requests_seq = seq
            self.processed += 1
            # Before any other quote: see the module docstring.
            await self._checkpoint(required=True)
        self._notify()

    async def _publish(self, event: AlertFired) -> None:
        if event.fire_count <= self._published.get(event.alert_id, 0):
            self.stats.suppressed += 1
            return
        await self._publisher.publish(
            subjects.alert_event("fired", event.account_id, event.alert_id),
            alerts.encode(event),
            msg_id=alerts.fired_msg_id(event.alert_id, event.fire_count),
        )
        self.stats.fired += 1

    # ---- snapshots and recovery ----

    def _restore(self, snapshot: FoldSnapshot) -> None:
        if snapshot.stream != MARKET_DATA.name:
            raise SnapshotError(self.name, f"it folds {snapshot.stream}, not {MARKET_DATA.name}")
        try:
            state = _state_decoder.decode(snapshot.state)
        except msgspec.DecodeError as exc:
            raise SnapshotError(self.name, f"unreadable state ({exc})") from exc
        self._book = AlertBook.restore(state.book, self._instruments)
        if self._book.state_digest() != snapshot.state_digest:
            raise SnapshotError(self.name, "the restored state differs from the saved one")
        self._md_seq = snapshot.input_seq
        self._requests_seq = state.requests_seq
        self.processed = snapshot.processed
        self.stats.restored_seq = snapshot.input_seq

    async def _published_firings(self, *, after: int) -> dict[str, int]:
        """The highest firing number of each alert published on ALERTS after `after`."""
        end = (await pull.stream_info(self._nc, ALERTS.name)).state.last_seq
        found: dict[str, int] = {}
        if end <= after:
            return found
        done = asyncio.Event()
        scan = StreamFollower(
            self._nc,
            ALERTS.name,
            name=f"{self.name}_scan",
            filters=(subjects.alert_filter("fired"),),
        )
        scan.when_caught_up(done.set)

        async def take(delivery: Delivery) -> None:
            with contextlib.suppress(msgspec.DecodeError):
                event = alerts.decode(delivery.data)
                if isinstance(event, AlertFired):
                    known = found.get(event.alert_id, 0)
                    found[event.alert_id] = max(known, event.fire_count)
            if delivery.stream_seq >= end:
                done.set()

        await scan.run(after=after, handle=take, stopping=done)
        return found

    async def _checkpoint(self, *, required: bool) -> None:
        """Wait for every firing's ack, then save a snapshot. `required`: retry until it is
        saved (or the service stops), since no quote may be folded in before it is."""
        failures = 0
        while True:
            try:
                await self._flush()
                mark = (await pull.stream_info(self._nc, ALERTS.name)).state.last_seq
                await self._snapshots.save(
                    FoldSnapshot(
                        service=self.name,
                        stream=MARKET_DATA.name,
                        input_seq=self._md_seq,
                        processed=self.processed,
                        output_marks={ALERTS.name: mark},
                        state_digest=self._book.state_digest(),
                        state=_state_encoder.encode(
                            _State(book=self._book.snapshot(), requests_seq=self._requests_seq)
                        ),
                    )
                )
            except (BrokerError, NatsError, TimeoutError, PublishError) as error:
                if not required or self._stopping.is_set():
                    log.warning("%s: snapshot at %d failed: %s", self.name, self._md_seq, error)
                    return
                delay = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("%s: snapshot failed (%s); retrying", self.name, error)
                await asyncio.sleep(delay)
                continue
            break
        self._since_snapshot = 0
        self._snapshot_at = self._clock()
        self.stats.snapshots += 1

    async def _flush(self) -> None:
        try:
            await self._publisher.flush(timeout=_FLUSH_PATIENCE)
        except PublishError as error:
            if self._publisher.in_flight == 0:  # refused, not merely late
                raise AlertsServiceError(self.name, str(error)) from error
            raise

    # ---- bookkeeping ----

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._notify()
        if not task.cancelled() and task.exception() is not None:
            log.error("alerts service %s failed", self.name, exc_info=task.exception())
            self._stopping.set()  # the other reader too: the fold cannot go on with one

    def _failed(self) -> bool:
        return any(
            task.done() and not task.cancelled() and task.exception() is not None
            for task in self._tasks
        )

    def _raise_failure(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error
