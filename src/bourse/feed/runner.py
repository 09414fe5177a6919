"""The feed's async shell: pace a source of messages onto md.<venue>.<symbol>.

A source is anything that yields batches of market data with their due times. The runner
publishes each message through an AckedPublisher (pipelined JetStream acks, bounded in-flight
window, resend with the same Nats-Msg-Id on a broker restart), sleeps until the next batch
is due, and stops cleanly: `stop()` ends intake, then everything sent is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from bourse.bus.publisher import AckedPublisher
from bourse.feed.simulator import Simulator
from bourse.model import marketdata, subjects
from bourse.model.marketdata import MarketData

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Batch:
    """Messages due at `due_s` seconds after the feed starts (wall-clock pacing)."""

    due_s: float
    messages: list[MarketData]


def simulated_batches(
    simulator: Simulator,
    *,
    rate: float,
    clock_ns: Callable[[], int] = time.time_ns,
) -> Iterator[Batch]:
    """Endless batches from the simulator, `rate` messages per second on average.

    Each round quotes every symbol on every venue; rounds are spaced so the total message rate
    is `rate` (0 = as fast as possible).
    """
    per_round = max(1.0, len(simulator.tick(clock_ns())) * 1.0)
    interval = per_round / rate if rate > 0 else 0.0
    round_no = 0
    while True:
        yield Batch(round_no * interval, simulator.tick(clock_ns()))
        round_no += 1


def replayed_batches(
    messages: list[MarketData], *, speed: float, loop: bool = False
) -> Iterator[Batch]:
    """Historical messages at `speed` times real time (0 = as fast as possible).

    Messages with the same timestamp go out together. With `loop`, the data repeats (the
    replay's clock keeps running, so a repetition starts after the previous one ends).
    """
    if not messages:
        return
    first = messages[0].ts
    span = (messages[-1].ts - first) / 1e9 / speed if speed > 0 else 0.0
    offset = 0.0
    while True:
        group: list[MarketData] = []
        group_ts = first
        for message in messages:
            if message.ts != group_ts and group:
                yield Batch(offset + _due(group_ts, first, speed), group)
                group = []
            group_ts = message.ts
            group.append(message)
        if group:
            yield Batch(offset + _due(group_ts, first, speed), group)
        if not loop:
            return
        offset += span + (1.0 / speed if speed > 0 else 0.0)


def _due(ts: int, first: int, speed: float) -> float:
    return (ts - first) / 1e9 / speed if speed > 0 else 0.0


@dataclass
class FeedStats:
    messages: int = 0
    batches: int = 0
    started: float = 0.0

    def rate(self, now: float) -> float:
        elapsed = now - self.started
        return self.messages / elapsed if elapsed > 0 else 0.0


class FeedRunner:
    def __init__(
        self,
        nc: NATS,
        batches: Iterator[Batch],
        *,
        max_in_flight: int = 512,
        run_id: str | None = None,
        limit: int | None = None,
    ) -> None:
        self._nc = nc
        self._batches = batches
        self._publisher = AckedPublisher(nc, max_in_flight=max_in_flight)
        # Message ids are unique per run, so a restarted feed is never mistaken for a resend.
        self._run_id = run_id or uuid.uuid4().hex[:12]
        self._limit = limit
        self._stopping = asyncio.Event()
        self.stats = FeedStats()

    @property
    def publisher(self) -> AckedPublisher:
        return self._publisher

    def stop(self) -> None:
        """Stop taking new batches; `run()` then waits for every ack and returns."""
        self._stopping.set()

    async def run(self) -> FeedStats:
        await self._publisher.start()
        loop = asyncio.get_running_loop()
        start = self.stats.started = loop.time()
        encode, topic, publish = marketdata.encode, subjects.market_data, self._publisher.publish
        run_id, sent = self._run_id, 0
        try:
            for batch in self._batches:
                if self._stopping.is_set():
                    break
                delay = start + batch.due_s - loop.time()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._stopping.wait(), delay)
                        break
                    except TimeoutError:
                        pass
                messages = batch.messages
                if self._limit is not None:
                    messages = messages[: self._limit - self.stats.messages]
                for message in messages:
                    sent += 1
                    await publish(
                        topic(message.venue, message.symbol),
                        encode(message),
                        msg_id=f"{run_id}.{sent}",
                    )
                self.stats.messages += len(messages)
                self.stats.batches += 1
                if self._limit is not None and self.stats.messages >= self._limit:
                    break
            await self._publisher.flush()
        finally:
            await self._publisher.close()
        return self.stats
