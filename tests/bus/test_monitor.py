"""Stream and consumer figures: rates from two snapshots (pure), and a real server's view."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, StreamInfo

from bourse.bus.monitor import (
    ConsumerSample,
    Snapshot,
    StreamSample,
    consumer_sample,
    measure,
    stream_sample,
    take_snapshot,
)
from bourse.bus.streams import MARKET_DATA, PLATFORM_STREAMS
from bourse.model import subjects

SECOND = 1_000_000_000
_symbols = (f"MON{n}" for n in itertools.count())


def stream(name: str = "S", *, messages: int, size: int, first: int, last: int) -> StreamSample:
    return StreamSample(
        name=name,
        messages=messages,
        bytes=size,
        first_seq=first,
        last_seq=last,
        consumer_count=0,
        replicas=1,
    )


def consumer(name: str = "C", *, delivered: int, pending: int) -> ConsumerSample:
    return ConsumerSample(
        stream="S",
        name=name,
        num_pending=pending,
        num_ack_pending=0,
        num_redelivered=0,
        delivered=delivered,
        delivered_stream_seq=delivered,
        ack_floor_stream_seq=0,
    )


def at(seconds: float, *samples: StreamSample | ConsumerSample) -> Snapshot:
    return Snapshot(
        taken_at_ns=int(seconds * SECOND),
        streams=tuple(s for s in samples if isinstance(s, StreamSample)),
        consumers=tuple(c for c in samples if isinstance(c, ConsumerSample)),
    )


def test_rates_are_appends_and_stored_bytes_over_the_interval() -> None:
    before = at(10, stream(messages=100, size=10_000, first=1, last=100))
    after = at(12, stream(messages=300, size=30_000, first=1, last=300))
    report = measure(before, after)
    assert report.interval_s == 2.0
    (row,) = report.streams
    assert row.messages_per_s == 100.0
    assert row.bytes_per_s == 10_000.0
    assert row.stream.messages == 300


def test_retention_removing_old_messages_does_not_hide_the_inflow() -> None:
    # 100 messages of 100 bytes arrived while retention dropped the 50 oldest.
    before = at(0, stream(messages=200, size=20_000, first=1, last=200))
    after = at(1, stream(messages=250, size=25_000, first=51, last=300))
    (row,) = measure(before, after).streams
    assert row.messages_per_s == 100.0
    assert row.bytes_per_s == 10_000.0


def test_streams_and_consumers_new_since_the_first_sample_have_no_rate() -> None:
    before = at(0)
    after = at(1, stream(messages=5, size=50, first=1, last=5), consumer(delivered=5, pending=0))
    report = measure(before, after)
    assert report.streams[0].messages_per_s is None
    assert report.streams[0].bytes_per_s is None
    assert report.consumers[0].delivered_per_s is None


def test_a_stream_made_again_in_between_has_no_rate() -> None:
    before = at(0, stream(messages=500, size=5_000, first=1, last=500))
    after = at(1, stream(messages=3, size=30, first=1, last=3))
    (row,) = measure(before, after).streams
    assert row.messages_per_s is None


def test_consumer_rates_say_whether_it_keeps_up() -> None:
    before = at(0, consumer(delivered=100, pending=50))
    after = at(4, consumer(delivered=300, pending=10))
    (row,) = measure(before, after).consumers
    assert row.delivered_per_s == 50.0
    assert row.lag_change_per_s == -10.0


def test_snapshots_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="in order"):
        measure(at(5), at(5))


@given(
    start=st.integers(0, 10**9),
    appended=st.integers(0, 10**6),
    size=st.integers(1, 4096),
    millis=st.integers(1, 10**6),
)
def test_the_message_rate_times_the_interval_is_what_was_appended(
    start: int, appended: int, size: int, millis: int
) -> None:
    before = at(0, stream(messages=start, size=start * size, first=1, last=start))
    end = start + appended
    after = at(millis / 1000, stream(messages=end, size=end * size, first=1, last=end))
    (row,) = measure(before, after).streams
    assert row.messages_per_s is not None and row.bytes_per_s is not None
    assert row.messages_per_s * millis / 1000 == pytest.approx(appended)
    assert row.bytes_per_s * millis / 1000 == pytest.approx(appended * size)


def info(**fields: Any) -> dict[str, Any]:
    return fields


def test_figures_come_from_the_servers_answers() -> None:
    stream_info = StreamInfo.from_response(
        info(
            config=info(name="ORDERS", subjects=["orders.>"], num_replicas=3),
            state=info(messages=7, bytes=700, first_seq=3, last_seq=9, consumer_count=1),
            cluster=info(
                name="c",
                leader="n0",
                replicas=[info(name="n1", current=True), info(name="n2", current=False)],
            ),
        )
    )
    assert stream_sample(stream_info) == StreamSample(
        name="ORDERS",
        messages=7,
        bytes=700,
        first_seq=3,
        last_seq=9,
        consumer_count=1,
        replicas=3,
        leader="n0",
        current_replicas=2,
    )
    consumer_info = ConsumerInfo.from_response(
        info(
            name="engine",
            stream_name="ORDERS",
            config=info(durable_name="engine"),
            created=datetime.now(UTC).isoformat(),
            delivered=info(consumer_seq=12, stream_seq=9),
            ack_floor=info(consumer_seq=8, stream_seq=6),
            num_ack_pending=3,
            num_redelivered=2,
            num_waiting=1,
            num_pending=0,
        )
    )
    assert consumer_sample(consumer_info) == ConsumerSample(
        stream="ORDERS",
        name="engine",
        num_pending=0,
        num_ack_pending=3,
        num_redelivered=2,
        delivered=12,
        delivered_stream_seq=9,
        ack_floor_stream_seq=6,
        num_waiting=1,
    )


def market_data(snapshot: Snapshot) -> StreamSample:
    return next(s for s in snapshot.streams if s.name == MARKET_DATA.name)


async def test_a_real_consumer_with_lag_and_unacknowledged_messages(js: JetStreamContext) -> None:
    subject = subjects.market_data("test", next(_symbols))
    for i in range(10):
        await js.publish(subject, b"%d" % i)
    durable = "monitor-test"
    await js.add_consumer(
        MARKET_DATA.name,
        ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=60,
            # With four unacknowledged, only a redelivery can come next: no race with the nak.
            max_ack_pending=4,
        ),
    )
    pull = await js.pull_subscribe_bind(durable, stream=MARKET_DATA.name)
    first = await pull.fetch(4, timeout=5)
    await first[0].nak()
    again = await pull.fetch(1, timeout=5)
    assert again[0].data == first[0].data

    clock = iter((1 * SECOND, 3 * SECOND))
    before = await take_snapshot(js, clock=lambda: next(clock))
    for i in range(10, 16):
        await js.publish(subject, b"%d" % i)
    after = await take_snapshot(js, clock=lambda: next(clock))

    assert [s.name for s in after.streams] == sorted(spec.name for spec in PLATFORM_STREAMS)
    market = market_data(after)
    assert (market.messages, market.first_seq, market.last_seq) == (16, 1, 16)
    assert market.consumer_count == 1 and market.replicas == 1
    (seen,) = after.consumers
    assert (seen.stream, seen.name) == (MARKET_DATA.name, durable)
    assert seen.num_pending == 12  # 6 never fetched before, 6 published since
    assert seen.num_ack_pending == 4
    assert seen.num_redelivered == 1
    assert seen.delivered == 5  # deliveries, the redelivery included
    assert seen.delivered_stream_seq == 4

    report = measure(before, after)
    assert report.interval_s == 2.0
    market_rates = next(r for r in report.streams if r.stream.name == MARKET_DATA.name)
    assert market_rates.messages_per_s == 3.0
    assert market_rates.bytes_per_s == (market.bytes - market_data(before).bytes) / 2
    (consumer_rates,) = report.consumers
    assert consumer_rates.delivered_per_s == 0.0
    assert consumer_rates.lag_change_per_s == 3.0
