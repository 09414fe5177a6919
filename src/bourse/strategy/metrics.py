"""Plain counters and histograms for the pipeline, readable by a /metrics collector.

Nothing here knows Prometheus: `Histogram` keeps cumulative bucket counts, a sum and a count
exactly as a Prometheus histogram exposes them (`le` bounds in seconds, `+Inf` last), and
`stats()` dictionaries hold only numbers and strings, so a collector can turn them into
`bourse_strategy_stage_latency_seconds_bucket{stage="signal",le="0.001"}` and the like.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

# Seconds: 10 µs to 10 s, the range between a pure core's step and an HTTP order.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last is +Inf
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def observe(self, value: float) -> None:
        index = len(self.bounds)
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                index = i
                break
        self._counts[index] += 1
        self.count += 1
        self.sum += value
        self.max = max(self.max, value)

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding the q-quantile (+inf past the last)."""
        if not self.count:
            return 0.0
        wanted = math.ceil(q * self.count)
        seen = 0
        for bound, count in zip((*self.bounds, math.inf), self._counts, strict=True):
            seen += count
            if seen >= wanted:
                return bound
        return math.inf

    def stats(self) -> dict[str, Any]:
        cumulative: dict[str, int] = {}
        running = 0
        for bound, count in zip(self.bounds, self._counts, strict=False):
            running += count
            cumulative[f"{bound:g}"] = running
        cumulative["+Inf"] = self.count
        return {"count": self.count, "sum": self.sum, "max": self.max, "buckets": cumulative}


class StageMetrics:
    """One stage: items processed, items that raised, time spent processing each item (not
    counting time blocked handing the results on, which the next queue counts)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.processed = 0
        self.errors = 0
        self.latency = Histogram()

    def stats(self) -> dict[str, Any]:
        return {"processed": self.processed, "errors": self.errors, "latency": self.latency.stats()}


class BoundedQueue:
    """An asyncio.Queue with its bound and what backpressure did to its producer.

    `put` waits while the queue is full; each such wait is counted, timed, and shown by
    `producer_waiting` while it lasts (tests await it instead of sleeping).
    """

    def __init__(self, name: str, maxsize: int) -> None:
        self.name = name
        self.maxsize = maxsize
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.puts = 0
        self.blocked_puts = 0
        self.blocked_seconds = 0.0
        self.max_depth = 0
        self.producer_waiting = asyncio.Event()

    def qsize(self) -> int:
        return self._queue.qsize()

    async def put(self, item: Any) -> None:
        if self._queue.full():
            self.blocked_puts += 1
            loop = asyncio.get_running_loop()
            started = loop.time()
            self.producer_waiting.set()
            try:
                await self._queue.put(item)
            finally:
                self.producer_waiting.clear()
                self.blocked_seconds += loop.time() - started
        else:
            self._queue.put_nowait(item)
        self.puts += 1
        self.max_depth = max(self.max_depth, self._queue.qsize())

    async def get(self) -> Any:
        return await self._queue.get()

    def stats(self) -> dict[str, Any]:
        return {
            "depth": self._queue.qsize(),
            "maxsize": self.maxsize,
            "max_depth": self.max_depth,
            "puts": self.puts,
            "blocked_puts": self.blocked_puts,
            "blocked_seconds": self.blocked_seconds,
        }
