"""The gateway's view of every account's alerts: the ALERTS stream, folded into memory.

    view = await AlertsView(nc).start()
    await view.wait_caught_up()                     # the stream as it is now
    view.alerts(account_id)                         # [AlertRecord], oldest first
    view.get(account_id, alert_id)                  # None: unknown, deleted or not theirs
    await view.wait_for(seq)                        # read your writes: seq applied
    stop_listening = view.listen(account_id, on_fired)   # each firing of its alerts, live

The stream keeps each subject's latest message, so reading it from the start gives every
alert's creation, its deletion if any, and its latest firing: the whole state, however long
the platform has run. An alert is `active` until a one-shot alert fires (`triggered`); a
deleted alert is gone. A firing is told to the account's listeners (the WebSocket) only if
the view knows the alert: a firing of an alert deleted meanwhile, or of another account's, is
told to no one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Literal

import msgspec
from nats.aio.client import Client as NATS

from bourse.alerts.follow import StreamFollower
from bourse.analytics import alerts
from bourse.analytics.alerts import AlertCreated, AlertDeleted, AlertFired, AlertsMessage
from bourse.bus import pull
from bourse.bus.pull import Delivery
from bourse.bus.streams import ALERTS

log = logging.getLogger(__name__)

AlertStatus = Literal["active", "triggered"]
FiredListener = Callable[[AlertFired, "AlertRecord"], None]


class AlertRecord(msgspec.Struct, kw_only=True):
    """One alert as its account sees it."""

    created: AlertCreated
    status: AlertStatus = "active"
    fire_count: int = 0
    last_fired: AlertFired | None = None


class AlertRecords:
    """The pure part: ALERTS messages into each account's alerts, in creation order."""

    def __init__(self) -> None:
        self._accounts: dict[str, dict[str, AlertRecord]] = {}

    def apply(self, message: AlertsMessage) -> AlertRecord | None:
        """Fold one message in; for a firing of a known alert, return the alert after it."""
        match message:
            case AlertCreated(account_id=account_id, alert_id=alert_id):
                held = self._accounts.setdefault(account_id, {})
                if alert_id not in held:
                    held[alert_id] = AlertRecord(created=message)
            case AlertDeleted(account_id=account_id, alert_id=alert_id):
                held = self._accounts.get(account_id, {})
                held.pop(alert_id, None)
                if not held:
                    self._accounts.pop(account_id, None)
            case AlertFired(account_id=account_id, alert_id=alert_id):
                record = self.get(account_id, alert_id)
                if record is None or message.fire_count <= record.fire_count:
                    return None  # unknown, deleted, or a firing already seen
                record.fire_count = message.fire_count
                record.last_fired = message
                if not message.recurring:
                    record.status = "triggered"
                return record
        return None

    def alerts(self, account_id: str) -> list[AlertRecord]:
        return list(self._accounts.get(account_id, {}).values())

    def get(self, account_id: str, alert_id: str) -> AlertRecord | None:
        return self._accounts.get(account_id, {}).get(alert_id)

    def count(self, account_id: str) -> int:
        return len(self._accounts.get(account_id, {}))

    def total(self) -> int:
        return sum(len(held) for held in self._accounts.values())


class AlertsView:
    """`AlertRecords` kept up to date from ALERTS; see the module docstring."""

    def __init__(self, nc: NATS, *, name: str = "alerts_view") -> None:
        self._nc = nc
        self.name = name
        self.records = AlertRecords()
        self._follower = StreamFollower(nc, ALERTS.name, name=name)
        self._follower.when_caught_up(self._notify)
        self._listeners: dict[str, dict[int, FiredListener]] = {}
        self._next_listener = 0
        self._stopping = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.applied_seq = 0
        self.applied = 0  # messages applied since start
        self.malformed = 0

    @property
    def listening(self) -> int:
        """Listeners (WebSocket connections) waiting for firings."""
        return sum(len(found) for found in self._listeners.values())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> AlertsView:
        if self._task is not None:
            raise RuntimeError(f"{self.name} was already started")
        self._task = asyncio.create_task(
            self._follower.run(after=0, handle=self._apply, stopping=self._stopping),
            name=self.name,
        )
        self._task.add_done_callback(self._on_done)
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until everything ALERTS held when called is applied; TimeoutError after."""
        end = (await pull.stream_info(self._nc, ALERTS.name)).state.last_seq
        if not await self.wait_for(end, timeout):
            raise TimeoutError(f"{self.name} is at ALERTS {self.applied_seq}, not {end}")

    async def wait_for(self, seq: int, timeout: float = 5.0) -> bool:
        """Wait until ALERTS up to `seq` is applied; False if it is not within `timeout`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.applied_seq < seq and not (
                    self._follower.caught_up and self._follower.last_seq >= seq
                ):
                    if self._task is not None and self._task.done():
                        return False
                    await self._progress.wait()
                return True
        return False

    # ---- reading ----

    def alerts(self, account_id: str) -> list[AlertRecord]:
        return self.records.alerts(account_id)

    def get(self, account_id: str, alert_id: str) -> AlertRecord | None:
        return self.records.get(account_id, alert_id)

    def count(self, account_id: str) -> int:
        return self.records.count(account_id)

    # ---- firings, live ----

    def listen(self, account_id: str, listener: FiredListener) -> Callable[[], None]:
        """Call `listener` for each firing of the account's alerts from now on (in the event
        loop: keep it short); returns the function that stops it."""
        self._next_listener += 1
        token = self._next_listener
        self._listeners.setdefault(account_id, {})[token] = listener

        def unlisten() -> None:
            found = self._listeners.get(account_id)
            if found is not None:
                found.pop(token, None)
                if not found:
                    del self._listeners[account_id]

        return unlisten

    async def _apply(self, delivery: Delivery) -> None:
        try:
            message = alerts.decode(delivery.data)
        except msgspec.DecodeError as error:
            log.warning("%s: skipping ALERTS %d: %s", self.name, delivery.stream_seq, error)
            self.malformed += 1
        else:
            record = self.records.apply(message)
            if record is not None and isinstance(message, AlertFired):
                for listener in list(self._listeners.get(message.account_id, {}).values()):
                    try:
                        listener(message, record)
                    except Exception:
                        log.exception("%s: a firing listener failed", self.name)
        self.applied_seq = delivery.stream_seq
        self.applied += 1
        self._notify()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._notify()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", self.name, exc_info=task.exception())
