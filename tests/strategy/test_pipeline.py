"""The pipeline runner: backpressure, bounded queues, draining, errors, metrics.

Every wait here is on an event the code under test sets (a stage entered, a producer found
its queue full), never on the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from bourse.strategy.metrics import Histogram
from bourse.strategy.pipeline import FunctionStage, Pipeline, Put
from tests.conftest import eventually

WAIT = 5.0  # seconds before a test gives up on an event that should have come


class Gate:
    """A stage that records what it is given and holds each item until released."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[Any] = []
        self.entered = asyncio.Event()
        self._release = asyncio.Event()
        self.closed = False

    def release(self) -> None:
        self._release.set()

    async def process(self, item: Any) -> Sequence[Any]:
        self.seen.append(item)
        self.entered.set()
        await self._release.wait()
        return (item,)

    async def close(self) -> None:
        self.closed = True


class Sink:
    name = "sink"

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.closed = False

    async def process(self, item: Any) -> Sequence[Any]:
        self.seen.append(item)
        return ()

    async def close(self) -> None:
        self.closed = True


async def test_a_slow_stage_makes_the_producer_wait_and_no_queue_passes_its_bound() -> None:
    gate, sink = Gate("slow"), Sink()
    pipeline = Pipeline([FunctionStage("first", lambda x: x), gate, sink], queue_size=2)
    await pipeline.start()
    produced = 0

    async def produce() -> None:
        nonlocal produced
        for n in range(100):
            await pipeline.put(n)
            produced += 1

    producer = asyncio.create_task(produce())
    await asyncio.wait_for(gate.entered.wait(), WAIT)
    # The gate holds item 0; its inbox (2) fills, then the first stage holds one it cannot
    # hand on, then the first stage's inbox (2) fills: the producer must now wait.
    first_inbox, gate_inbox, _ = pipeline.inboxes
    await asyncio.wait_for(first_inbox.producer_waiting.wait(), WAIT)
    assert not producer.done()
    assert produced == 1 + 2 + 1 + 2  # held by gate, gate's inbox, first stage, its inbox
    assert first_inbox.qsize() == 2 and gate_inbox.qsize() == 2
    assert first_inbox.blocked_puts >= 1

    gate.release()
    await asyncio.wait_for(producer, WAIT)
    await asyncio.wait_for(pipeline.drain(), WAIT)
    assert sink.seen == list(range(100))  # in order, none lost
    for inbox in pipeline.inboxes:
        assert inbox.max_depth <= inbox.maxsize == 2
    stats = pipeline.stats()["stages"]
    assert stats["slow"]["processed"] == 100
    assert stats["first"]["inbox"]["blocked_puts"] >= 1
    assert stats["sink"]["inbox"]["max_depth"] <= 2


async def test_stop_ends_the_intake_and_drains_what_was_accepted() -> None:
    gate, sink = Gate("slow"), Sink()
    pipeline = Pipeline([gate, sink], queue_size=3)
    stop = asyncio.Event()
    offered: list[int] = []

    async def source(put: Put) -> None:
        for n in range(1000):
            offered.append(n)
            await put(n)

    running = asyncio.create_task(pipeline.run(source, stop=stop))
    await asyncio.wait_for(gate.entered.wait(), WAIT)
    await asyncio.wait_for(pipeline.inboxes[0].producer_waiting.wait(), WAIT)
    stop.set()  # the source is blocked in put: cancelled there, its item never accepted
    await eventually(lambda: not pipeline.intake_open)  # the drain began, the gate still shut
    gate.release()
    completed = await asyncio.wait_for(running, WAIT)
    assert completed is False
    accepted = offered[:-1]  # the last one offered was in a put that was cancelled
    assert gate.seen == accepted == sink.seen == list(range(len(accepted)))
    assert gate.closed and sink.closed  # each stage closed after its last item
    with pytest.raises(RuntimeError, match="intake is closed"):
        await pipeline.put(-1)


async def test_a_source_that_ends_drains_everything() -> None:
    sink = Sink()
    pipeline = Pipeline([FunctionStage("double", lambda x: 2 * x), sink], queue_size=1)

    async def source(put: Put) -> None:
        for n in range(50):
            await put(n)

    assert await asyncio.wait_for(pipeline.run(source), WAIT) is True
    assert sink.seen == [2 * n for n in range(50)] and sink.closed


async def test_a_failing_item_is_counted_and_the_stage_goes_on() -> None:
    sink = Sink()

    def fragile(n: int) -> int:
        if n == 3:
            raise ValueError("bad item")
        return n

    pipeline = Pipeline([FunctionStage("fragile", fragile), sink], queue_size=4)

    async def source(put: Put) -> None:
        for n in range(6):
            await put(n)

    await asyncio.wait_for(pipeline.run(source), WAIT)
    assert sink.seen == [0, 1, 2, 4, 5]
    stage = pipeline.stats()["stages"]["fragile"]
    assert (stage["processed"], stage["errors"]) == (5, 1)
    assert stage["latency"]["count"] == 5


async def test_an_async_function_stage_and_dropping_results() -> None:
    sink = Sink()

    async def odd_only(n: int) -> int | None:
        return n if n % 2 else None

    pipeline = Pipeline([FunctionStage("odd", odd_only), sink], queue_size=2)

    async def source(put: Put) -> None:
        for n in range(6):
            await put(n)

    await pipeline.run(source)
    assert sink.seen == [1, 3, 5]


async def test_abort_cancels_at_once() -> None:
    gate = Gate("stuck")
    pipeline = Pipeline([gate], queue_size=2)
    await pipeline.start()
    await pipeline.put(1)
    await asyncio.wait_for(gate.entered.wait(), WAIT)
    await asyncio.wait_for(pipeline.abort(), WAIT)
    assert not gate.closed


def test_the_histogram_is_cumulative_like_prometheus() -> None:
    histogram = Histogram((0.001, 0.01, 0.1))
    for value in (0.0005, 0.002, 0.002, 0.05, 3.0):
        histogram.observe(value)
    stats = histogram.stats()
    assert stats["buckets"] == {"0.001": 1, "0.01": 3, "0.1": 4, "+Inf": 5}
    assert stats["count"] == 5 and stats["max"] == 3.0
    assert stats["sum"] == pytest.approx(3.0545)
    assert histogram.quantile(0.5) == 0.01 and histogram.quantile(0.99) == float("inf")
