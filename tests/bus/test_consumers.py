from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, RawStreamMsg

from bourse.analytics.batch_stats import SymbolStats, batch_stats
from bourse.bus.connection import connect
from bourse.bus.consume import (
    AppliedSequences,
    BatchConsumer,
    BatchSpec,
    Consumer,
    DeadLetterHeader,
    DeadLetterReason,
    PullConsumer,
    PullSpec,
    PushConsumer,
    PushSpec,
)
from bourse.bus.publisher import AckedPublisher
from bourse.bus.server import NatsServer
from bourse.bus.streams import DEAD_LETTERS, MARKET_DATA
from bourse.errors import ConfigError
from bourse.model import marketdata, subjects
from bourse.model.marketdata import MarketData, Quote, Trade
from tests.conftest import eventually

D = Decimal
decode = marketdata.decode


def trade(seq: int, symbol: str = "AAPL", venue: str = "nyse", price: str = "10", size: str = "1"):
    return Trade(symbol=symbol, venue=venue, price=D(price), size=D(size), ts=seq, seq=seq)


async def publish(js: JetStreamContext, *messages: MarketData) -> None:
    for message in messages:
        await js.publish(
            subjects.market_data(message.venue, message.symbol), marketdata.encode(message)
        )


async def publish_raw(js: JetStreamContext, subject: str, payload: bytes) -> None:
    await js.publish(subject, payload)


async def dead_letters(js: JetStreamContext) -> list[RawStreamMsg]:
    state = (await js.stream_info(DEAD_LETTERS.name)).state
    return [await js.get_msg(DEAD_LETTERS.name, seq) for seq in range(1, state.last_seq + 1)]


async def consumer_info(js: JetStreamContext, durable: str):
    return await js.consumer_info(MARKET_DATA.name, durable)


def recorder() -> tuple[list[MarketData], Callable[[MarketData], Awaitable[None]]]:
    seen: list[MarketData] = []

    async def handle(message: MarketData) -> None:
        seen.append(message)

    return seen, handle


# -- pull ---------------------------------------------------------------------------------------


async def test_pull_consumer_applies_every_matching_message_and_acks_it(
    nc: NATS, js: JetStreamContext
) -> None:
    for seq in range(1, 31):
        symbol = "MSFT" if seq % 3 == 0 else "AAPL"
        await publish(js, trade(seq, symbol=symbol, venue="nyse" if seq % 2 else "arca"))
    seen, handle = recorder()
    spec = PullSpec(durable="aapl", filter_subjects=("md.*.AAPL",), batch_size=8, fetch_timeout=0.2)
    async with PullConsumer(nc, spec, handle, decode=decode) as consumer:
        await eventually(lambda: len(seen) == 20)

    aapl = [seq for seq in range(1, 31) if seq % 3]
    assert [m.seq for m in seen] == aapl  # stream order, only the filter's subjects
    info = await consumer_info(js, "aapl")
    assert info.config.ack_policy == AckPolicy.EXPLICIT
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert info.ack_floor is not None and info.ack_floor.stream_seq == aapl[-1]
    assert (consumer.stats.processed, consumer.stats.delivered) == (20, 20)
    assert consumer.stats.redelivered == consumer.stats.failed == consumer.stats.unconfirmed == 0
    assert consumer.applied.high_water == aapl[-1]


async def test_a_failing_handler_is_retried_after_a_delay_then_dead_lettered(
    nc: NATS, js: JetStreamContext
) -> None:
    loop = asyncio.get_running_loop()
    attempts: dict[int, list[float]] = defaultdict(list)

    async def handle(message: MarketData) -> None:
        attempts[message.seq].append(loop.time())
        if message.seq == 2:
            raise RuntimeError("reference data missing for AAPL")
        if message.seq == 3 and len(attempts[3]) < 3:
            raise RuntimeError("transient")

    spec = PullSpec(
        durable="retry",
        filter_subjects=("md.>",),
        max_deliver=3,
        retry_delays=(0.2, 0.4),
        fetch_timeout=0.2,
    )
    await publish(js, *(trade(seq) for seq in range(1, 5)))
    async with PullConsumer(nc, spec, handle, decode=decode) as consumer:
        await eventually(
            lambda: consumer.stats.dead_lettered == 1 and consumer.stats.processed == 3
        )

    # Three deliveries each for the failing message, spaced by the nak delays.
    first, second, third = attempts[2]
    assert second - first >= 0.2 * 0.9 and third - second >= 0.4 * 0.9
    assert len(attempts[3]) == 3 and len(attempts[1]) == len(attempts[4]) == 1
    assert consumer.stats.failed == 3 + 2
    assert consumer.stats.redelivered == 2 + 2

    [letter] = await dead_letters(js)
    assert letter.subject == subjects.dead_letter("md.nyse.AAPL") == "deadletter.md.nyse.AAPL"
    assert letter.data == marketdata.encode(trade(2))
    headers = letter.headers or {}
    assert headers[DeadLetterHeader.SUBJECT] == "md.nyse.AAPL"
    assert headers[DeadLetterHeader.STREAM] == MARKET_DATA.name
    assert headers[DeadLetterHeader.SEQUENCE] == "2"
    assert headers[DeadLetterHeader.DELIVERIES] == "3"
    assert headers[DeadLetterHeader.CONSUMER] == "retry"
    assert headers[DeadLetterHeader.REASON] == DeadLetterReason.HANDLER_FAILED
    assert headers[DeadLetterHeader.ERROR] == "RuntimeError: reference data missing for AAPL"
    info = await consumer_info(js, "retry")
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_malformed_messages_are_dead_lettered_and_the_next_good_one_is_applied(
    nc: NATS, js: JetStreamContext
) -> None:
    good = trade(1)
    wrong_type = msgspec.json.encode({**msgspec.to_builtins(trade(3)), "ts": "yesterday"})
    nan_price = msgspec.json.encode({**msgspec.to_builtins(trade(4)), "price": "NaN"})
    unknown = msgspec.json.encode({"type": "bar", "symbol": "AAPL"})
    subject = subjects.market_data("nyse", "AAPL")
    await publish(js, good)
    for payload in (b"\x00not json", wrong_type, nan_price, unknown):
        await publish_raw(js, subject, payload)
    await publish(js, trade(6))

    seen, handle = recorder()
    spec = PullSpec(durable="strict", filter_subjects=("md.>",), fetch_timeout=0.2)
    async with PullConsumer(nc, spec, handle, decode=decode) as consumer:
        await eventually(lambda: len(seen) == 2 and consumer.stats.dead_lettered == 4)

    assert [m.seq for m in seen] == [1, 6]
    assert (consumer.stats.malformed, consumer.stats.failed, consumer.stats.processed) == (4, 0, 2)
    letters = await dead_letters(js)
    assert [(m.headers or {})[DeadLetterHeader.SEQUENCE] for m in letters] == ["2", "3", "4", "5"]
    for letter in letters:
        headers = letter.headers or {}
        assert headers[DeadLetterHeader.REASON] == DeadLetterReason.MALFORMED
        assert headers[DeadLetterHeader.DELIVERIES] == "1"  # parked at once, never retried
    assert letters[2].data == nan_price
    assert "finite" in (letters[2].headers or {})[DeadLetterHeader.ERROR]
    assert "$.ts" in (letters[1].headers or {})[DeadLetterHeader.ERROR]
    assert (await consumer_info(js, "strict")).num_ack_pending == 0


async def test_a_durable_consumer_resumes_where_it_left_off(nc: NATS, js: JetStreamContext) -> None:
    spec = PullSpec(durable="resume", filter_subjects=("md.*.AAPL",), fetch_timeout=0.2)
    await publish(js, *(trade(seq) for seq in range(1, 11)))
    first, handle_first = recorder()
    async with PullConsumer(nc, spec, handle_first, decode=decode):
        await eventually(lambda: len(first) == 10)

    await publish(js, *(trade(seq) for seq in range(11, 21)))
    second, handle_second = recorder()
    async with PullConsumer(nc, spec, handle_second, decode=decode):
        await eventually(lambda: len(second) == 10)
    assert [m.seq for m in first] == list(range(1, 11))
    assert [m.seq for m in second] == list(range(11, 21))


async def test_redelivered_messages_already_applied_are_acked_and_not_applied_again(
    nc: NATS, js: JetStreamContext
) -> None:
    spec = PullSpec(durable="again", filter_subjects=("md.>",), fetch_timeout=0.2)
    seen, handle = recorder()
    consumer = PullConsumer(nc, spec, handle, decode=decode)
    await publish(js, *(trade(seq) for seq in range(1, 6)))
    async with consumer:
        await eventually(lambda: len(seen) == 5)
    # A consumer recreated from scratch delivers the whole stream again, as a lost ack would.
    await js.delete_consumer(MARKET_DATA.name, "again")
    await publish(js, *(trade(seq) for seq in range(6, 9)))
    async with consumer:
        await eventually(lambda: len(seen) == 8 and consumer.stats.duplicates == 5)
    assert [m.seq for m in seen] == list(range(1, 9))
    assert (await consumer_info(js, "again")).num_ack_pending == 0


async def test_a_handler_slower_than_ack_wait_causes_no_redelivery(
    nc: NATS, js: JetStreamContext
) -> None:
    seen, record = recorder()

    async def handle_slowly(message: MarketData) -> None:
        await asyncio.sleep(1.0)  # the work itself: twice ack_wait
        await record(message)

    spec = PullSpec(durable="patient", filter_subjects=("md.>",), ack_wait=0.5, fetch_timeout=0.2)
    await publish(js, trade(1), trade(2))
    async with PullConsumer(nc, spec, handle_slowly, decode=decode) as consumer:
        await eventually(lambda: len(seen) == 2)
    assert [m.seq for m in seen] == [1, 2]
    assert consumer.stats.redelivered == consumer.stats.duplicates == 0
    info = await consumer_info(js, "patient")
    assert info.num_redelivered == 0 and info.num_ack_pending == 0


async def test_the_consumer_rides_out_a_broker_restart_and_loses_nothing(
    nats_server: NatsServer, nc: NATS, js: JetStreamContext
) -> None:
    publisher = await AckedPublisher(nc, ack_timeout=0.5).start()
    subject = subjects.market_data("nyse", "AAPL")

    async def publish_range(seqs: range) -> None:
        for seq in seqs:
            await publisher.publish(subject, marketdata.encode(trade(seq)), msg_id=f"t{seq}")
        await publisher.flush(timeout=30)

    seen: list[int] = []
    restarted = asyncio.Event()

    async def handle(message: MarketData) -> None:
        seen.append(message.seq)
        if len(seen) == 50:
            # Restart the broker in the middle of a fetched batch: the rest of the batch is
            # handled while the broker is away, and their acks may be lost.
            await nats_server.restart()
            restarted.set()

    spec = PullSpec(durable="sturdy", filter_subjects=("md.>",), batch_size=64, fetch_timeout=0.3)
    await publish_range(range(1, 301))
    async with PullConsumer(nc, spec, handle, decode=decode) as consumer:
        await restarted.wait()
        await publish_range(range(301, 401))
        await eventually(lambda: len(seen) >= 400, timeout=30)
    await publisher.close()

    assert sorted(seen) == list(range(1, 401))  # nothing lost, nothing applied twice
    assert consumer.stats.processed == 400
    assert (await consumer_info(js, "sturdy")).num_ack_pending == 0


# -- push, in a queue group ---------------------------------------------------------------------


async def test_a_queue_group_of_three_handles_each_message_exactly_once(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    spec = PushSpec(
        durable="workers",
        filter_subjects=("md.>",),
        idle_heartbeat=1.0,
        max_ack_pending=64,
        pending_msgs_limit=64,
        retry_delays=(0.05,),
    )
    connections = [await connect(nats_server.url, name=f"worker-{i}") for i in range(3)]
    handled: list[list[int]] = [[], [], []]
    refused: set[int] = set()

    def handler(instance: int) -> Callable[[MarketData], Awaitable[None]]:
        async def handle(message: MarketData) -> None:
            if message.seq % 50 == 0 and message.seq not in refused:
                refused.add(message.seq)  # fail once: retried, by whichever instance
                raise RuntimeError("not now")
            handled[instance].append(message.seq)

        return handle

    workers = [
        await PushConsumer(conn, spec, handler(i), decode=decode).start()
        for i, conn in enumerate(connections)
    ]
    await publish(js, *(trade(seq, venue=("nyse", "arca")[seq % 2]) for seq in range(1, 301)))
    await eventually(lambda: sum(map(len, handled)) >= 300)
    for worker in workers:
        await worker.stop()
    for conn in connections:
        await conn.close()

    everything = sorted(itertools.chain.from_iterable(handled))
    assert everything == list(range(1, 301))  # each exactly once across the group
    assert sum(1 for mine in handled if mine) > 1
    assert sum(w.stats.processed for w in workers) == 300
    assert sum(w.stats.failed for w in workers) == sum(w.stats.redelivered for w in workers) == 6
    info = await consumer_info(js, "workers")
    assert info.config.deliver_group == "workers" and info.config.flow_control
    assert info.config.idle_heartbeat == 1.0
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_slow_push_consumer_holds_at_most_max_ack_pending(
    nc: NATS, js: JetStreamContext
) -> None:
    release = asyncio.Event()
    entered: list[int] = []

    async def handle(message: MarketData) -> None:
        entered.append(message.seq)
        await release.wait()

    spec = PushSpec(
        durable="slow",
        filter_subjects=("md.>",),
        idle_heartbeat=1.0,
        max_ack_pending=5,
        pending_msgs_limit=5,
    )
    await publish(js, *(trade(seq) for seq in range(1, 41)))
    async with PushConsumer(nc, spec, handle, decode=decode) as consumer:

        async def held_back() -> bool:
            # The server's word can overtake the last deliveries (they leave it by another
            # queue), so wait for the client's side of the picture as well.
            info = await consumer_info(js, "slow")
            return (
                info.num_ack_pending == 5
                and info.num_pending == 35
                and len(entered) + consumer.pending == 5
            )

        try:
            await eventually(held_back)
            assert entered == [1] and consumer.pending == 4
        finally:
            release.set()  # a failure must not leave the handler blocking the consumer's stop
        await eventually(lambda: consumer.stats.processed == 40)
    assert consumer.stats.delivered == 40 and consumer.stats.redelivered == 0  # nothing dropped


# -- batching -----------------------------------------------------------------------------------


def quote(seq: int, symbol: str, last: str, last_size: str) -> Quote:
    return Quote(
        symbol=symbol,
        venue="arca",
        bid=D(last) - D("0.05"),
        ask=D(last) + D("0.05"),
        bid_size=D(5),
        ask_size=D(5),
        last=D(last),
        last_size=D(last_size),
        volume=D(1000),
        ts=seq,
        seq=seq,
    )


async def test_the_batching_consumer_reports_vwap_high_and_low_per_symbol(
    nc: NATS, js: JetStreamContext
) -> None:
    await publish(
        js,
        trade(1, "AAPL", "nyse", "10.00", "100"),
        quote(2, "MSFT", "400.10", "10"),
        trade(3, "AAPL", "arca", "11.00", "200"),
        quote(4, "MSFT", "399.90", "30"),
        trade(5, "AAPL", "nyse", "13.00", "100"),
    )
    reports: list[dict[str, SymbolStats]] = []

    async def on_batch(batch: Sequence[MarketData]) -> None:
        reports.append(batch_stats(batch))

    spec = BatchSpec(
        durable="vwap",
        filter_subjects=("md.>",),
        batch_size=100,
        batch_timeout=0.3,
        fetch_timeout=0.2,
    )
    async with BatchConsumer(nc, spec, on_batch, decode=decode):
        await eventually(lambda: len(reports) == 1)

    [report] = reports
    aapl, msft = report["AAPL"], report["MSFT"]
    assert (aapl.count, aapl.volume, aapl.high, aapl.low) == (3, D(400), D(13), D(10))
    assert aapl.vwap == D("11.25")  # (10*100 + 11*200 + 13*100) / 400
    assert (msft.count, msft.volume, msft.high, msft.low) == (2, D(40), D("400.10"), D("399.90"))
    assert msft.vwap == D("399.95")  # (400.10*10 + 399.90*30) / 40
    assert (await consumer_info(js, "vwap")).num_ack_pending == 0


async def test_batches_close_at_batch_size_or_timeout_and_a_failed_batch_is_retried(
    nc: NATS, js: JetStreamContext
) -> None:
    sizes: list[int] = []
    failures = 0

    async def on_batch(batch: Sequence[MarketData]) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise RuntimeError("sink unavailable")
        sizes.append(len(batch))

    await publish(js, *(trade(seq) for seq in range(1, 11)))
    spec = BatchSpec(
        durable="sized",
        filter_subjects=("md.>",),
        batch_size=4,
        batch_timeout=0.2,
        fetch_timeout=0.2,
        retry_delays=(0.1,),
    )
    async with BatchConsumer(nc, spec, on_batch, decode=decode) as consumer:
        await eventually(lambda: sum(sizes) == 10)
    assert max(sizes) == 4 and sizes[-1] < 4
    assert consumer.stats.failed == 4 and consumer.stats.redelivered == 4
    assert consumer.stats.processed == 10
    assert (await consumer_info(js, "sized")).num_ack_pending == 0


# -- graceful stop ------------------------------------------------------------------------------

ConsumerFactory = Callable[[NATS, Callable[[MarketData], Awaitable[None]]], Consumer[MarketData]]


def make_pull(nc: NATS, handle: Callable[[MarketData], Awaitable[None]]) -> Consumer[MarketData]:
    spec = PullSpec(durable="flow", filter_subjects=("md.>",), batch_size=20, fetch_timeout=0.2)
    return PullConsumer(nc, spec, handle, decode=decode)


def make_push(nc: NATS, handle: Callable[[MarketData], Awaitable[None]]) -> Consumer[MarketData]:
    spec = PushSpec(
        durable="flow",
        filter_subjects=("md.>",),
        ack_wait=1.0,  # see below: a message caught in transit by stop() comes back this soon
        idle_heartbeat=1.0,
        max_ack_pending=20,
        pending_msgs_limit=20,
    )
    return PushConsumer(nc, spec, handle, decode=decode)


def make_batch(nc: NATS, handle: Callable[[MarketData], Awaitable[None]]) -> Consumer[MarketData]:
    async def on_batch(batch: Sequence[MarketData]) -> None:
        for message in batch:
            await handle(message)

    spec = BatchSpec(durable="flow", filter_subjects=("md.>",), batch_size=20, batch_timeout=0.1)
    return BatchConsumer(nc, spec, on_batch, decode=decode)


@pytest.mark.parametrize("make", [make_pull, make_push, make_batch], ids=["pull", "push", "batch"])
async def test_stop_during_flow_settles_everything_in_hand(
    make: ConsumerFactory, nc: NATS, js: JetStreamContext
) -> None:
    total = 600
    publisher = await AckedPublisher(nc, max_in_flight=32).start()
    subject = subjects.market_data("nyse", "AAPL")

    async def publish_all() -> None:
        for seq in range(1, total + 1):
            await publisher.publish(subject, marketdata.encode(trade(seq)), msg_id=f"f{seq}")
        await publisher.flush()

    first, handle_first = recorder()

    async def handle_slowly(message: MarketData) -> None:
        await asyncio.sleep(0)  # yield, as real work would, so the flow interleaves
        await handle_first(message)

    consumer = await make(nc, handle_slowly).start()
    publishing = asyncio.create_task(publish_all())
    await eventually(lambda: len(first) >= 100)
    await consumer.stop()

    # Right after stop(): everything handled is acknowledged, and JetStream has confirmed it.
    info = await consumer_info(js, "flow")
    assert consumer.stats.processed == len(first)
    assert [m.seq for m in first] == list(range(1, len(first) + 1))
    assert info.ack_floor is not None and info.ack_floor.stream_seq == len(first)
    if isinstance(consumer, PushConsumer):
        # JetStream pushes without being asked, so messages it sent as the subscription
        # closed may never have arrived (a burst, up to max_ack_pending); they stay pending
        # until ack_wait, then come again (checked below: nothing is lost).
        assert info.num_ack_pending <= 20
    else:
        assert info.num_ack_pending == 0

    await publishing
    await publisher.close()
    second, handle_second = recorder()
    async with make(nc, handle_second):
        await eventually(lambda: len(first) + len(second) == total)
    assert sorted(m.seq for m in first + second) == list(range(1, total + 1))


# -- pure pieces --------------------------------------------------------------------------------


def test_applied_sequences_do_not_skip_a_retry_that_arrives_below_the_high_water_mark() -> None:
    applied = AppliedSequences()
    for seq in (1, 2, 4, 5):  # 3 failed and waits for its retry
        applied.add(seq)
    assert applied.high_water == 5
    assert 3 not in applied and all(seq in applied for seq in (1, 2, 4, 5))
    applied.add(3)
    applied.advance_floor(4)  # JetStream: everything up to 4 is acknowledged
    assert len(applied) == 1 and applied.floor == 4
    assert all(seq in applied for seq in range(1, 6)) and 6 not in applied
    applied.advance_floor(2)  # a floor never moves back
    assert applied.floor == 4


def test_specs_reject_what_would_misbehave() -> None:
    with pytest.raises(ConfigError, match="durable"):
        PullSpec(durable="md.aapl", filter_subjects=("md.>",))
    with pytest.raises(ConfigError, match="subject filter"):
        PullSpec(durable="ok", filter_subjects=("md.>.x",))
    with pytest.raises(ConfigError, match="filter_subjects"):
        PullSpec(durable="ok", filter_subjects=())
    with pytest.raises(ConfigError, match="pending_msgs_limit"):
        PushSpec(durable="ok", filter_subjects=("md.>",), max_ack_pending=10, pending_msgs_limit=5)
    with pytest.raises(ConfigError, match="retry_delays"):
        PullSpec(durable="ok", filter_subjects=("md.>",), retry_delays=())
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"durable":"ok","filter_subjects":["md.>"],"bach":1}', type=PullSpec)
    spec = PullSpec(durable="ok", filter_subjects=("md.>",), retry_delays=(0.5, 2.0), max_deliver=3)
    assert [spec.retry_delay(n) for n in (1, 2, 3, 9)] == [0.5, 2.0, 2.0, 2.0]
    assert [spec.is_last_delivery(n) for n in (2, 3)] == [False, True]
