"""What the streams and their consumers are doing: sizes, lag, and rates.

A `Snapshot` is what JetStream reports at one moment; `measure(before, after)` turns two
snapshots into a `StreamsReport` with rates. Both, and the conversion from the server's
answers, are pure; `take_snapshot` is the only part that talks to NATS.

Rates and what they mean:

- a stream's messages/s counts messages *appended* (from the last sequence), so retention
  deleting old messages does not hide incoming traffic;
- its bytes/s is the growth of stored bytes plus the bytes retention removed in the
  interval (estimated at the stream's average message size), so it too is an inflow;
- a consumer's deliveries/s counts deliveries including redeliveries (consumer sequence),
  and its lag change/s is positive when the consumer falls behind and negative when it
  catches up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import msgspec
from nats.js import JetStreamManager
from nats.js.api import ConsumerInfo, StreamInfo, StreamsListIterator


class StreamSample(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumer_count: int
    replicas: int
    leader: str | None = None
    # Replicas, leader included, that are caught up (equal to `replicas` when healthy).
    current_replicas: int = 1


class ConsumerSample(msgspec.Struct, frozen=True, kw_only=True):
    stream: str
    name: str
    num_pending: int  # messages not yet delivered: the lag
    num_ack_pending: int  # delivered, not yet acknowledged
    num_redelivered: int
    delivered: int  # deliveries so far, redeliveries included (consumer sequence)
    delivered_stream_seq: int
    ack_floor_stream_seq: int
    num_waiting: int = 0  # pull requests waiting for messages


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    taken_at_ns: int  # a monotonic clock reading
    streams: tuple[StreamSample, ...]
    consumers: tuple[ConsumerSample, ...]


class StreamReport(msgspec.Struct, frozen=True, kw_only=True):
    stream: StreamSample
    messages_per_s: float | None  # None: the stream is new since the first sample
    bytes_per_s: float | None


class ConsumerReport(msgspec.Struct, frozen=True, kw_only=True):
    consumer: ConsumerSample
    delivered_per_s: float | None  # None: the consumer is new since the first sample
    lag_change_per_s: float | None


class StreamsReport(msgspec.Struct, frozen=True, kw_only=True):
    interval_s: float
    streams: tuple[StreamReport, ...]
    consumers: tuple[ConsumerReport, ...]


def stream_sample(info: StreamInfo) -> StreamSample:
    """A stream's figures from the server's StreamInfo."""
    state = info.state
    replicas = info.config.num_replicas or 1
    cluster = info.cluster
    leader = cluster.leader if cluster is not None else None
    followers = (cluster.replicas or []) if cluster is not None else []
    current = (1 if leader or cluster is None else 0) + sum(1 for p in followers if p.current)
    return StreamSample(
        name=info.config.name or "",
        messages=state.messages,
        bytes=state.bytes,
        first_seq=state.first_seq,
        last_seq=state.last_seq,
        consumer_count=state.consumer_count,
        replicas=replicas,
        leader=leader,
        current_replicas=current,
    )


def consumer_sample(info: ConsumerInfo) -> ConsumerSample:
    """A consumer's figures from the server's ConsumerInfo."""
    delivered = info.delivered
    ack_floor = info.ack_floor
    return ConsumerSample(
        stream=info.stream_name,
        name=info.name,
        num_pending=info.num_pending or 0,
        num_ack_pending=info.num_ack_pending or 0,
        num_redelivered=info.num_redelivered or 0,
        delivered=delivered.consumer_seq if delivered else 0,
        delivered_stream_seq=delivered.stream_seq if delivered else 0,
        ack_floor_stream_seq=ack_floor.stream_seq if ack_floor else 0,
        num_waiting=info.num_waiting or 0,
    )


def snapshot(
    streams: Iterable[StreamInfo], consumers: Iterable[ConsumerInfo], *, taken_at_ns: int
) -> Snapshot:
    """A snapshot from the server's answers, streams and consumers sorted by name."""
    return Snapshot(
        taken_at_ns=taken_at_ns,
        streams=tuple(sorted((stream_sample(s) for s in streams), key=lambda s: s.name)),
        consumers=tuple(
            sorted((consumer_sample(c) for c in consumers), key=lambda c: (c.stream, c.name))
        ),
    )


def _stream_inflow(before: StreamSample, after: StreamSample, seconds: float) -> StreamReport:
    if after.last_seq < before.last_seq:
        # The stream was deleted and made again in between: the samples do not compare.
        return StreamReport(stream=after, messages_per_s=None, bytes_per_s=None)
    appended = after.last_seq - before.last_seq
    removed = max(0, before.messages + appended - after.messages)
    average_size = before.bytes / before.messages if before.messages else 0.0
    bytes_in = max(0.0, after.bytes - before.bytes + removed * average_size)
    return StreamReport(
        stream=after, messages_per_s=appended / seconds, bytes_per_s=bytes_in / seconds
    )


def _consumer_rates(
    before: ConsumerSample, after: ConsumerSample, seconds: float
) -> ConsumerReport:
    if after.delivered < before.delivered:
        return ConsumerReport(consumer=after, delivered_per_s=None, lag_change_per_s=None)
    return ConsumerReport(
        consumer=after,
        delivered_per_s=(after.delivered - before.delivered) / seconds,
        lag_change_per_s=(after.num_pending - before.num_pending) / seconds,
    )


def measure(before: Snapshot, after: Snapshot) -> StreamsReport:
    """The `after` figures, with rates over the time since `before`."""
    elapsed_ns = after.taken_at_ns - before.taken_at_ns
    if elapsed_ns <= 0:
        raise ValueError(
            f"snapshots must be taken in order: {elapsed_ns} ns between them, need > 0"
        )
    seconds = elapsed_ns / 1e9
    old_streams = {s.name: s for s in before.streams}
    old_consumers = {(c.stream, c.name): c for c in before.consumers}
    streams = []
    for stream in after.streams:
        old_stream = old_streams.get(stream.name)
        if old_stream is None:
            streams.append(StreamReport(stream=stream, messages_per_s=None, bytes_per_s=None))
        else:
            streams.append(_stream_inflow(old_stream, stream, seconds))
    consumers = []
    for consumer in after.consumers:
        old_consumer = old_consumers.get((consumer.stream, consumer.name))
        if old_consumer is None:
            consumers.append(
                ConsumerReport(consumer=consumer, delivered_per_s=None, lag_change_per_s=None)
            )
        else:
            consumers.append(_consumer_rates(old_consumer, consumer, seconds))
    return StreamsReport(interval_s=seconds, streams=tuple(streams), consumers=tuple(consumers))


async def _all_streams(jsm: JetStreamManager) -> list[StreamInfo]:
    streams: list[StreamInfo] = []
    while True:
        page = await jsm.streams_info_iterator(offset=len(streams))
        assert isinstance(page, StreamsListIterator)  # typed as a plain Iterable upstream
        streams.extend(page)
        if not page.streams or len(streams) >= page.total:
            return streams


async def _all_consumers(jsm: JetStreamManager, stream: StreamSample) -> list[ConsumerInfo]:
    consumers: list[ConsumerInfo] = []
    while len(consumers) < stream.consumer_count:
        page = await jsm.consumers_info(stream.name, offset=len(consumers))
        if not page:
            break
        consumers.extend(page)
    return consumers


async def take_snapshot(
    jsm: JetStreamManager, *, clock: Callable[[], int] = time.monotonic_ns
) -> Snapshot:
    """Ask JetStream for every stream and every consumer of the account."""
    taken_at_ns = clock()
    streams = await _all_streams(jsm)
    consumers: list[ConsumerInfo] = []
    for info in streams:
        sample = stream_sample(info)
        if sample.consumer_count:
            consumers.extend(await _all_consumers(jsm, sample))
    return snapshot(streams, consumers, taken_at_ns=taken_at_ns)
