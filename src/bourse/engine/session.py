"""The session clock: closes each trading day on the journal, so DAY orders expire.

Bourse's venue trades around the clock; a trading day is a UTC calendar day. At each UTC
midnight the clock publishes `SessionClosed(trading_day=<the day that ended>)` on
`orders.session`, and the engine expires every open DAY order (`orders.cancelled.<id>` with
reason `expired`), which accounts and the read model follow like any cancel.

A platform that was down at midnight closes the missed day when it starts: the clock reads the
last `SessionClosed` on the stream and publishes the latest day that ended after it (one
close covers any number of missed days, since it expires every DAY order open at the time).
The message id is `session:<day>`, so two clocks do not close a day twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from bourse.bus.streams import ORDERS
from bourse.model import orders, subjects

log = logging.getLogger(__name__)


def day_to_close(last_closed: date | None, now: datetime, first_day: date | None) -> date | None:
    """The trading day to close now, if any: the latest day that has ended (yesterday, UTC)
    when it is after the last one closed and not before the journal began (`first_day`)."""
    ended = (now.astimezone(UTC) - timedelta(days=1)).date()
    if last_closed is not None and ended <= last_closed:
        return None
    if first_day is not None and ended < first_day:
        return None
    return ended


def next_midnight(now: datetime) -> datetime:
    return (now.astimezone(UTC) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )


class SessionClock:
    def __init__(self, nc: NATS, *, clock: Callable[[], datetime] | None = None) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.closed: list[str] = []  # days this clock closed

    async def start(self) -> SessionClock:
        await self.catch_up()
        self._task = asyncio.create_task(self._run(), name="session-clock")
        return self

    async def catch_up(self) -> date | None:
        """Close the day that ended last if the journal has not; return it if closed."""
        last = await self._last_closed()
        first = await self._first_day()
        due = day_to_close(last, self._clock(), first)
        if due is not None:
            await self.close(due)
        return due

    async def close(self, day: date) -> None:
        event = orders.SessionClosed(ts=time.time_ns(), trading_day=day.isoformat())
        await self._js.publish(
            subjects.ORDERS_SESSION,
            orders.encode(event),
            headers={"Nats-Msg-Id": f"session:{day.isoformat()}"},
        )
        self.closed.append(day.isoformat())
        log.info("closed the trading day %s: DAY orders expire", day.isoformat())

    async def _last_closed(self) -> date | None:
        try:
            message = await self._js.get_last_msg(ORDERS.name, subjects.ORDERS_SESSION)
        except NotFoundError:
            return None
        try:
            event = orders.decode(message.data or b"")
        except msgspec.DecodeError:
            return None
        if not isinstance(event, orders.SessionClosed):
            return None
        try:
            return date.fromisoformat(event.trading_day)
        except ValueError:  # anyone may publish on orders.session: not a reason to stop
            log.warning("the last session close names no day: %r", event.trading_day)
            return None

    async def _first_day(self) -> date | None:
        """The day the journal's first message was written (None: an empty journal)."""
        info = await self._js.stream_info(ORDERS.name)
        first = info.state.first_seq
        if not info.state.messages or not first:
            return None
        message = await self._js.get_msg(ORDERS.name, seq=first)
        try:
            event = orders.decode(message.data or b"")
        except msgspec.DecodeError:
            return None
        return datetime.fromtimestamp(event.ts / 1e9, UTC).date()

    async def _run(self) -> None:
        failed = False
        while not self._stop.is_set():
            now = self._clock()
            wait = 5.0 if failed else (next_midnight(now) - now).total_seconds()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                await self.catch_up()
                failed = False
            except Exception:
                log.exception("closing the trading day failed; retrying in 5 s")
                failed = True

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
