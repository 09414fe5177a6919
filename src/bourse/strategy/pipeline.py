"""The async pipeline runner: stages joined by bounded queues, with backpressure and a drain.

    source --put--> [enrich inbox] enrich --> [signal inbox] signal --> ... --> execution

Each stage is a task that takes an item from its inbox, processes it, and puts what comes out
into the next stage's inbox. Every inbox is bounded (`queue_size`): when one is full, the
stage (or the source) putting into it waits, so a slow stage slows everything upstream of it
down to its own pace and memory stays bounded. Nothing is dropped or conflated: the source
feels the wait too (a replay pulls more slowly; a live JetStream consumer's flow control holds
the server back), so the strategy sees every tick, late rather than never.

A stage whose `process` raises loses that item only: the error is logged and counted and the
stage goes on (a failing callback never kills the loop; cancellation is never swallowed).

Shutdown: `run` ends the intake first (the source is cancelled when `stop` is set, or returns
at the end of its data), then drains: an end marker follows the last item down the stages, so
every item already accepted is processed, each stage's `close()` (if it has one) runs once
its inbox is empty, and `run` returns when the last stage has finished. `abort()` cancels at
once instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from bourse.strategy.metrics import BoundedQueue, StageMetrics

log = logging.getLogger(__name__)

Put = Callable[[Any], Awaitable[None]]
Source = Callable[[Put], Awaitable[None]]


class Stage(Protocol):
    """One step: `process(item)` returns what to hand to the next stage (maybe nothing)."""

    name: str

    async def process(self, item: Any) -> Sequence[Any]: ...


class _End:
    """Follows the last item down the pipeline."""


_END = _End()


class FunctionStage:
    """A stage around a plain function (sync or async) returning one result or None."""

    def __init__(self, name: str, function: Callable[[Any], Any]) -> None:
        self.name = name
        self._function = function

    async def process(self, item: Any) -> Sequence[Any]:
        result = self._function(item)
        if inspect.isawaitable(result):
            result = await result
        return () if result is None else (result,)


class Pipeline:
    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        queue_size: int,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = tuple(stages)
        self.inboxes = [BoundedQueue(stage.name, queue_size) for stage in self.stages]
        self.metrics = [StageMetrics(stage.name) for stage in self.stages]
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self.intake_open = False

    # ---- running ----

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("the pipeline is running already")
        self.intake_open = True
        for index in range(len(self.stages)):
            self._tasks.append(
                asyncio.create_task(self._run_stage(index), name=f"stage-{self.stages[index].name}")
            )

    async def put(self, item: Any) -> None:
        """Hand an item to the first stage; waits while its inbox is full."""
        if not self.intake_open:
            raise RuntimeError("the pipeline's intake is closed")
        await self.inboxes[0].put(item)

    async def drain(self) -> None:
        """Close the intake, let every accepted item through, wait for the stages to finish."""
        if self.intake_open:
            self.intake_open = False
            await self.inboxes[0].put(_END)
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def abort(self) -> None:
        """Stop at once: the stages are cancelled, queued items are dropped."""
        self.intake_open = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run(self, source: Source, *, stop: asyncio.Event | None = None) -> bool:
        """Feed the pipeline from `source(put)` until it returns or `stop` is set, then drain.

        Returns True if the source ran to its end, False if `stop` ended it.
        """
        await self.start()
        try:
            completed = await _unless(stop, source(self.put))
            await self.drain()
        except BaseException:
            await self.abort()
            raise
        return completed

    async def _run_stage(self, index: int) -> None:
        stage, inbox, metrics = self.stages[index], self.inboxes[index], self.metrics[index]
        outbox = self.inboxes[index + 1] if index + 1 < len(self.inboxes) else None
        while True:
            item = await inbox.get()
            if item is _END:
                await _close(stage)
                if outbox is not None:
                    await outbox.put(_END)
                return
            started = self._clock()
            try:
                results = await stage.process(item)
            except Exception:
                metrics.errors += 1
                log.exception("strategy: stage %s failed on %r; item dropped", stage.name, item)
                continue
            metrics.processed += 1
            metrics.latency.observe(self._clock() - started)
            if outbox is not None:
                for result in results:
                    await outbox.put(result)

    # ---- metrics ----

    def stats(self) -> dict[str, Any]:
        """Per stage: processed, errors, latency histogram, and its inbox's depth and waits."""
        return {
            "stages": {
                stage.name: {**metrics.stats(), "inbox": inbox.stats()}
                for stage, metrics, inbox in zip(
                    self.stages, self.metrics, self.inboxes, strict=True
                )
            }
        }


async def _close(stage: Stage) -> None:
    close = getattr(stage, "close", None)
    if close is None:
        return
    try:
        await close()
    except Exception:
        log.exception("strategy: stage %s failed to close", stage.name)


async def _unless(stop: asyncio.Event | None, work: Awaitable[None]) -> bool:
    """Run `work` unless `stop` is set first (then cancel it); True if it completed."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait() if stop is not None else asyncio.Event().wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return not task.cancelled()
