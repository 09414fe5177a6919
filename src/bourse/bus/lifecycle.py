"""The lifecycle of a service that runs as one task: start, stop, abort, join.

`OneTaskService` holds what the fold services and the analytics service share: the reading
task, the stop flag, the progress event waiters wake on, and failure reporting. A subclass
runs its loop in `_run()` (checking `_stopping`, setting `_idle` while it waits for the
broker), says what an orderly stop finishes in `_finish()` (flush, snapshot) and what every
ending releases in `_release()` (the publisher, the consumer).
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class OneTaskService:
    """Base of a service running as one task; see the module docstring."""

    name: str

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._idle = False  # the task is waiting for the broker, not inside an input
        self._stopping = False
        self._progress = asyncio.Event()

    # ---- for subclasses ----

    async def _run(self) -> None:
        raise NotImplementedError

    async def _finish(self) -> None:
        """After the task ended without failing, on `stop()`: flush, snapshot..."""

    async def _release(self, *, orderly: bool) -> None:
        """After the task ended, on `stop()` (orderly) and on `abort()` (as a crash would)."""

    def _label(self) -> str:
        """How logs name the service."""
        return self.name

    def _start_task(self, task_name: str) -> None:
        self._task = asyncio.create_task(self._run(), name=task_name)
        self._task.add_done_callback(self._on_done)

    # ---- lifecycle ----

    async def stop(self) -> None:
        """Stop after the input in hand, finish (`_finish`), release, raise a failure."""
        task = self._task
        if task is None or self._stopping:
            return
        self._stopping = True
        if self._idle:
            task.cancel()  # waiting for the broker: nothing half-done to lose
        await asyncio.wait({task})
        failed = not task.cancelled() and task.exception() is not None
        try:
            if not failed:
                await self._finish()
        finally:
            await self._release(orderly=True)
        self._raise_failure()

    async def abort(self) -> None:
        """Stop at once, as a crash would: nothing finished, nothing saved."""
        task = self._task
        if task is None or self._stopping:
            return
        self._stopping = True
        task.cancel()
        await asyncio.wait({task})
        await self._release(orderly=False)

    async def join(self) -> None:
        """Wait until the service ends; raise what made it fail."""
        if self._task is not None:
            await asyncio.wait({self._task})
        self._raise_failure()

    # ---- progress and failure ----

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._idle = False
        self._notify()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", self._label(), exc_info=task.exception())

    def _raise_failure(self) -> None:
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error
