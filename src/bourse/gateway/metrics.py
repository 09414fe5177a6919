"""Prometheus metrics for every service of the process, read when Prometheus scrapes.

Nothing is counted into prometheus_client's metric objects: `PlatformCollector` is a custom
Collector that reads each figure from its owner at scrape time (JetStream through a fresh
`StreamsSampler` sample, the fold services' and publishers' own counters, the gateway's
request counts), and each gateway has its own `CollectorRegistry`, so two gateways in one
process (tests) never mix their figures. The families are listed in docs/monitoring.md.

Lag warnings: `StreamsSampler` samples every stream and consumer every `interval` seconds
(`bourse.bus.monitor`) and `LagWatch` says when a consumer's lag (messages not yet delivered
to it, `num_pending`) crosses its stream's threshold: one structured warning per crossing,
logged with `stream`, `consumer`, `lag` and `threshold` fields, and counted in
`bourse_consumer_lag_warnings_total`; the consumer is re-armed once its lag is back at half
the threshold or below (an info line), so a lag hovering at the threshold warns once.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bourse.bus.monitor import (
    ConsumerReport,
    ConsumerSample,
    Snapshot,
    StreamReport,
    StreamsReport,
    measure,
    take_snapshot,
)
from bourse.bus.publisher import PublisherStats
from bourse.errors import BrokerError, ConfigError

log = logging.getLogger(__name__)

DEFAULT_LAG_THRESHOLD = 10_000  # messages a consumer may be behind before a warning


# ---- configuration ----


@dataclass(frozen=True, kw_only=True)
class MonitorConfig:
    """How often JetStream is sampled, and how far behind a consumer may fall."""

    interval: float = 5.0  # seconds between samples (lag warnings)
    lag_threshold: int = DEFAULT_LAG_THRESHOLD  # 0: no warnings
    stream_lag_thresholds: Mapping[str, int] = field(default_factory=dict)  # per stream
    # Consumers whose backlog is their job, not a fault (shell patterns on the name): replays
    # of history, and the scans services make of their own outputs when they start.
    unwatched_consumers: tuple[str, ...] = ("replay_*", "*_scan_*")

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ConfigError("monitor interval", self.interval, "seconds, more than 0")
        for stream, threshold in {
            "(default)": self.lag_threshold,
            **self.stream_lag_thresholds,
        }.items():
            if threshold < 0:
                raise ConfigError(f"lag threshold of {stream}", threshold, "messages, 0 or more")

    def threshold(self, stream: str) -> int:
        return self.stream_lag_thresholds.get(stream, self.lag_threshold)

    def watched(self, consumer: str) -> bool:
        return not any(fnmatch.fnmatchcase(consumer, p) for p in self.unwatched_consumers)


# ---- lag warnings: a pure core ----


@dataclass(frozen=True, slots=True)
class LagEvent:
    kind: Literal["lagging", "recovered"]
    stream: str
    consumer: str
    lag: int
    threshold: int


class LagWatch:
    """Once per crossing: a consumer whose lag goes above its stream's threshold is reported
    (`lagging`) once; it is re-armed (`recovered`) when its lag is at half the threshold or
    below. A consumer that is gone is forgotten."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.lagging: set[tuple[str, str]] = set()
        self.warnings: dict[tuple[str, str], int] = {}

    def check(self, consumers: Iterable[ConsumerSample]) -> list[LagEvent]:
        events = []
        present = set()
        for consumer in consumers:
            key = (consumer.stream, consumer.name)
            present.add(key)
            threshold = self.config.threshold(consumer.stream)
            if not self.config.watched(consumer.name):
                threshold = 0
            lag = consumer.num_pending
            if key not in self.lagging:
                if threshold and lag > threshold:
                    self.lagging.add(key)
                    self.warnings[key] = self.warnings.get(key, 0) + 1
                    events.append(LagEvent("lagging", *key, lag, threshold))
            elif not threshold or lag <= threshold // 2:
                self.lagging.discard(key)
                events.append(LagEvent("recovered", *key, lag, threshold))
        self.lagging &= present
        for gone in set(self.warnings) - present:
            del self.warnings[gone]
        return events


# ---- sampling JetStream ----


def _first_report(snapshot: Snapshot) -> StreamsReport:
    """A report without rates, for the first sample."""
    return StreamsReport(
        interval_s=0.0,
        streams=tuple(
            StreamReport(stream=s, messages_per_s=None, bytes_per_s=None) for s in snapshot.streams
        ),
        consumers=tuple(
            ConsumerReport(consumer=c, delivered_per_s=None, lag_change_per_s=None)
            for c in snapshot.consumers
        ),
    )


class StreamsSampler:
    """The latest JetStream figures and lag warnings. Rates are over the time since the
    latest earlier sample at least `rate_window` seconds old (or the oldest kept), so two
    scrapes a moment apart do not divide a count of a few messages by a few milliseconds."""

    def __init__(
        self,
        nc: NATS,
        config: MonitorConfig,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        rate_window: float = 1.0,
    ) -> None:
        self._nc = nc
        self.config = config
        self.lag = LagWatch(config)
        self._clock = clock
        self._rate_window_ns = int(rate_window * 1e9)
        self._lock = asyncio.Lock()
        self._history: deque[Snapshot] = deque(maxlen=16)
        self.report: StreamsReport | None = None
        self.sampled_at_ns = 0
        self.failures = 0  # samples that failed since the last one that worked
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> StreamsReport:
        """Ask JetStream now; log a lag warning for each consumer that crossed its threshold.
        Callers that overlap share one sample taken after they all asked."""
        asked_at = self._clock()
        async with self._lock:
            if self.report is not None and self.sampled_at_ns >= asked_at:
                return self.report
            try:
                snapshot = await take_snapshot(self._nc.jsm(), clock=self._clock)
            except (NatsError, BrokerError, TimeoutError):
                self.failures += 1
                raise
            base = self._rate_base(snapshot.taken_at_ns)
            self._history.append(snapshot)
            report = _first_report(snapshot) if base is None else measure(base, snapshot)
            self.report, self.sampled_at_ns, self.failures = report, snapshot.taken_at_ns, 0
            for event in self.lag.check(snapshot.consumers):
                _log_lag(event)
            return report

    def _rate_base(self, now_ns: int) -> Snapshot | None:
        earlier = [s for s in self._history if s.taken_at_ns < now_ns]
        old_enough = [s for s in earlier if now_ns - s.taken_at_ns >= self._rate_window_ns]
        if old_enough:
            return old_enough[-1]
        return earlier[0] if earlier else None

    async def fresh(self, max_age: float) -> StreamsReport | None:
        """The latest report if younger than `max_age` seconds, else a new sample (None when
        JetStream cannot be asked)."""
        if self.report is not None and self._clock() - self.sampled_at_ns <= max_age * 1e9:
            return self.report
        try:
            return await self.sample()
        except (NatsError, BrokerError, TimeoutError) as error:
            log.info("cannot sample JetStream for metrics: %s", error)
            return None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="streams-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except (NatsError, BrokerError, TimeoutError) as error:
                log.info("cannot sample JetStream (%s); trying again", error)
            except Exception:
                log.exception("sampling JetStream failed; trying again")
            await asyncio.sleep(self.config.interval)


def _log_lag(event: LagEvent) -> None:
    fields = {
        "event": f"consumer_{event.kind}",
        "stream": event.stream,
        "consumer": event.consumer,
        "lag": event.lag,
        "threshold": event.threshold,
    }
    if event.kind == "lagging":
        log.warning(
            "consumer %s on %s is %d messages behind (threshold %d)",
            event.consumer,
            event.stream,
            event.lag,
            event.threshold,
            extra=fields,
        )
    else:
        log.info(
            "consumer %s on %s caught up: %d messages behind",
            event.consumer,
            event.stream,
            event.lag,
            extra=fields,
        )


# ---- HTTP requests ----

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"  # the route label of a request no route matched (no cardinality blow-up)


@dataclass
class _Latencies:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0


class HttpStats:
    """Requests by method, route template and status, their latencies by method and route."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latencies: dict[tuple[str, str], _Latencies] = {}
        self.in_progress = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        latencies = self.latencies.setdefault((method, route), _Latencies())
        latencies.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latencies.total += seconds

    def families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "bourse_http_requests",
            "HTTP requests answered, by method, route template and status",
            labels=("method", "route", "status"),
        )
        for labels, count in sorted(self.requests.items()):
            requests.add_metric(labels, count)
        yield requests
        durations = HistogramMetricFamily(
            "bourse_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            labels=("method", "route"),
        )
        for route_labels, latencies in sorted(self.latencies.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*LATENCY_BUCKETS, float("inf")), latencies.counts, strict=True
            ):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            durations.add_metric(route_labels, buckets, latencies.total)
        yield durations
        yield GaugeMetricFamily(
            "bourse_http_requests_in_progress", "HTTP requests being answered", self.in_progress
        )


class HttpMetrics:
    """ASGI middleware recording every HTTP request in `stats` (add it inside the app, where
    the router has named the route)."""

    def __init__(self, app: ASGIApp, stats: HttpStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escapes to the server's handler

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.stats.in_progress += 1
        try:
            await self.app(scope, receive, sending)
        finally:
            self.stats.in_progress -= 1
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.stats.observe(scope["method"], route, status, time.perf_counter() - started)


# ---- what the collector reads ----


@dataclass(frozen=True, kw_only=True)
class FoldFigures:
    """A stateful service's progress through its input stream."""

    service: str
    stream: str
    applied_seq: int  # the stream sequence it has applied up to
    inputs: int
    outputs: int = 0
    suppressed: int = 0  # outputs an earlier run had published
    skipped: int = 0  # inputs that did not decode
    snapshots: int = 0
    resets: int = 0  # consumers made anew
    # Its consumers' name prefix when they see only some subjects of the stream: the lag is
    # then their undelivered messages, not the stream's end minus `applied_seq`.
    consumer_prefix: str | None = None
    running: bool = True


@dataclass
class MetricSources:
    """Everything the process's metrics are read from; services add themselves at start."""

    sampler: StreamsSampler
    http: HttpStats = field(default_factory=HttpStats)
    folds: list[Callable[[], Iterable[FoldFigures]]] = field(default_factory=list)
    publishers: dict[str, Callable[[], PublisherStats]] = field(default_factory=dict)
    gauges: list[Callable[[], Iterable[Metric]]] = field(default_factory=list)


def in_flight(stats: PublisherStats) -> int:
    """Messages published and neither acknowledged nor refused yet (resends are not new)."""
    return max(0, stats.published - stats.acked - stats.failed)


class PlatformCollector(Collector):
    """Every family of docs/monitoring.md, read from `sources` when collected. The JetStream
    figures are the sampler's latest report: `/metrics` refreshes it just before."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        sources = self.sources
        report = sources.sampler.report
        yield from self._jetstream(report)
        yield from self._folds(report)
        yield from self._publishers()
        yield from sources.http.families()
        for gauges in sources.gauges:
            yield from gauges()

    def _jetstream(self, report: StreamsReport | None) -> Iterator[Metric]:
        sampler = self.sources.sampler
        yield GaugeMetricFamily(
            "bourse_jetstream_up",
            "1 when the latest attempt to sample JetStream worked",
            1 if report is not None and sampler.failures == 0 else 0,
        )
        if report is None:
            return
        stream = _Families(
            ("stream",),
            [
                ("gauge", "bourse_stream_messages", "Messages the stream holds"),
                ("gauge", "bourse_stream_bytes", "Bytes the stream holds"),
                ("counter", "bourse_stream_appended", "Messages ever appended (last sequence)"),
                ("gauge", "bourse_stream_first_sequence", "Sequence of the oldest message held"),
                ("gauge", "bourse_stream_consumers", "Consumers of the stream"),
                ("gauge", "bourse_stream_replicas", "Replicas of the stream"),
                ("gauge", "bourse_stream_current_replicas", "Replicas caught up, leader included"),
                ("gauge", "bourse_stream_messages_per_second", "Messages appended per second"),
                ("gauge", "bourse_stream_bytes_per_second", "Bytes appended per second"),
                ("gauge", "bourse_stream_lag_threshold", "Lag that warns, per consumer (0: none)"),
            ],
        )
        for row in report.streams:
            s = row.stream
            stream.add(
                (s.name,),
                s.messages,
                s.bytes,
                s.last_seq,
                s.first_seq,
                s.consumer_count,
                s.replicas,
                s.current_replicas,
                row.messages_per_s,
                row.bytes_per_s,
                sampler.config.threshold(s.name),
            )
        yield from stream.families()
        consumer = _Families(
            ("stream", "consumer"),
            [
                ("gauge", "bourse_consumer_pending_messages", "Messages not yet delivered: lag"),
                ("gauge", "bourse_consumer_ack_pending_messages", "Delivered, not acknowledged"),
                ("gauge", "bourse_consumer_redelivered_messages", "Redelivered, not acknowledged"),
                ("counter", "bourse_consumer_delivered", "Deliveries, redeliveries included"),
                ("gauge", "bourse_consumer_waiting_pulls", "Pull requests waiting for messages"),
                ("gauge", "bourse_consumer_delivered_per_second", "Deliveries per second"),
                ("gauge", "bourse_consumer_lag_change_per_second", "Lag growth per second"),
                ("gauge", "bourse_consumer_lagging", "1 while the lag is above its threshold"),
                ("counter", "bourse_consumer_lag_warnings", "Times the lag crossed the threshold"),
            ],
        )
        lag = sampler.lag
        for consumer_row in report.consumers:
            c = consumer_row.consumer
            key = (c.stream, c.name)
            consumer.add(
                key,
                c.num_pending,
                c.num_ack_pending,
                c.num_redelivered,
                c.delivered,
                c.num_waiting,
                consumer_row.delivered_per_s,
                consumer_row.lag_change_per_s,
                1 if key in lag.lagging else 0,
                lag.warnings.get(key, 0),
            )
        yield from consumer.families()

    def _folds(self, report: StreamsReport | None) -> Iterator[Metric]:
        ends = {row.stream.name: row.stream.last_seq for row in report.streams} if report else {}
        consumers = report.consumers if report else ()
        folds = _Families(
            ("service", "stream"),
            [
                ("gauge", "bourse_fold_applied_sequence", "Input stream sequence applied up to"),
                ("gauge", "bourse_fold_lag_messages", "Input messages not applied yet"),
                ("gauge", "bourse_fold_running", "1 while the service runs"),
                ("counter", "bourse_fold_inputs", "Inputs applied since start"),
                ("counter", "bourse_fold_outputs", "Outputs published since start"),
                ("counter", "bourse_fold_suppressed", "Outputs found already published"),
                ("counter", "bourse_fold_skipped", "Inputs that did not decode"),
                ("counter", "bourse_fold_snapshots", "Snapshots saved since start"),
                ("counter", "bourse_fold_resets", "Consumers made anew since start"),
            ],
        )
        for figures in self.sources.folds:
            for f in figures():
                lag: int | None = None
                if f.consumer_prefix is not None:
                    pending = [
                        r.consumer.num_pending
                        for r in consumers
                        if r.consumer.stream == f.stream
                        and r.consumer.name.startswith(f.consumer_prefix)
                        and "_scan_" not in r.consumer.name
                    ]
                    lag = sum(pending) if pending else None
                elif f.stream in ends:
                    lag = max(0, ends[f.stream] - f.applied_seq)
                folds.add(
                    (f.service, f.stream),
                    f.applied_seq,
                    lag,
                    1 if f.running else 0,
                    f.inputs,
                    f.outputs,
                    f.suppressed,
                    f.skipped,
                    f.snapshots,
                    f.resets,
                )
        yield from folds.families()

    def _publishers(self) -> Iterator[Metric]:
        publishers = _Families(
            ("publisher",),
            [
                ("gauge", "bourse_publisher_in_flight", "Published, not yet acknowledged"),
                ("counter", "bourse_publisher_published", "Messages published"),
                ("counter", "bourse_publisher_acked", "Messages JetStream acknowledged"),
                ("counter", "bourse_publisher_duplicates", "Acks saying it was a duplicate"),
                ("counter", "bourse_publisher_resent", "Resends after an ack timeout"),
                ("counter", "bourse_publisher_failed", "Messages JetStream refused"),
            ],
        )
        for name, read in sorted(self.sources.publishers.items()):
            stats = read()
            publishers.add(
                (name,),
                in_flight(stats),
                stats.published,
                stats.acked,
                stats.duplicates,
                stats.resent,
                stats.failed,
            )
        yield from publishers.families()


class _Families:
    """Several families sharing labels, filled a row at a time (None: no sample)."""

    def __init__(self, labels: tuple[str, ...], specs: list[tuple[str, str, str]]) -> None:
        self._families: list[CounterMetricFamily | GaugeMetricFamily] = [
            (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, documentation, labels=labels
            )
            for kind, name, documentation in specs
        ]

    def add(self, labels: tuple[str, ...], *values: float | None) -> None:
        for family, value in zip(self._families, values, strict=True):
            if value is not None:
                family.add_metric(labels, value)

    def families(self) -> list[Metric]:
        return list(self._families)
