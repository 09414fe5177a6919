"""The live web dashboard: its static page at `/`, and the three endpoints only it needs.

    GET  /                         the page (src/bourse/dashboard/static/index.html)
    GET  /dashboard/static/...     its ES modules, CSS and vendored lightweight-charts
    GET  /dashboard/demo-keys      the demo account's keys, to loopback clients of a loopback
                                   gateway only (204 otherwise; see docs/dashboard.md)
    GET  /v2/ops/streams           every stream's and consumer's figures with rates (auth)
    WS   /dashboard/ws             market data for the page (auth), conflated per client

Why a WebSocket of its own rather than Alpaca's market-data stream (`/v2/iex`, ...): the page
shows every venue's quotes, the `bourse` venue's depth and arbitrage events, none of which
Alpaca's protocol carries. The relay holds one core-NATS subscription to `md.>` and
`analytics.arb.>` while at least one page is connected, and gives each page a `Conflation`:
the latest quote and depth per subject (older ones are superseded, never queued) and a
bounded ring of trades and arbitrage events (the oldest are dropped and counted). A page
gets at most one frame per `frame_interval`, so 2,000 updates per second cost it a few
dozen frames, and a slow page only ever holds one frame's worth of data.

    -> {"action": "auth", "key": KEY_ID, "secret": SECRET}
    <- {"type": "authorized"}                 (or {"type": "error", "message": ...}, closed)
    <- {"type": "md", "dropped": 0, "items": [<md.> or analytics.arb.> messages as published]}
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from fastapi import FastAPI, Request, WebSocket
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocketDisconnect

from bourse.bus.monitor import (
    ConsumerReport,
    Snapshot,
    StreamReport,
    StreamsReport,
    measure,
    take_snapshot,
)
from bourse.engine.core import VENUE
from bourse.gateway.app import GatewayContext, Who
from bourse.model import subjects

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent.parent / "dashboard" / "static"
POLICY_VIOLATION = 1008
MARKET_SUBJECTS = (subjects.ALL_MARKET_DATA, f"{subjects.ANALYTICS_ROOT}.arb.>")


# ---- per-client conflation: pure ----


class _Kind(msgspec.Struct):
    type: str = ""


_kind_decoder = msgspec.json.Decoder(_Kind)
_CONFLATED = frozenset({"quote", "depth"})  # only the latest per subject matters


def kind_of(payload: bytes) -> str | None:
    """A message's `type` field; None when it is not a JSON object the page could use."""
    try:
        return _kind_decoder.decode(payload).type
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class Conflation:
    """What one page has not been sent yet: the latest quote and depth per subject, and the
    newest `max_events` trades and arbitrage events (older ones dropped, and counted)."""

    def __init__(self, *, max_events: int = 500) -> None:
        self._latest: dict[tuple[str, str], bytes] = {}
        self._events: deque[bytes] = deque(maxlen=max_events)
        self.dropped = 0
        self.pending = asyncio.Event()

    def offer(self, subject: str, kind: str, payload: bytes) -> None:
        """Take one message of type `kind` (see `kind_of`) published on `subject`."""
        if kind in _CONFLATED:
            self._latest[(subject, kind)] = payload
        else:
            if len(self._events) == self._events.maxlen:
                self.dropped += 1
            self._events.append(payload)
        self.pending.set()

    def offer_if_newer_absent(self, subject: str, kind: str, payload: bytes) -> None:
        """A snapshot taken on joining: pending only if nothing live of its kind on `subject`
        is (a live message taken after it was made is newer; the page orders by `seq` the
        ones it has already been sent)."""
        if (subject, kind) not in self._latest:
            self.offer(subject, kind, payload)

    def take(self) -> bytes | None:
        """One frame with everything pending (None when nothing is), and start afresh."""
        self.pending.clear()
        if not self._latest and not self._events:
            return None
        items = [*self._events, *self._latest.values()]
        frame = b'{"type":"md","dropped":%d,"items":[%s]}' % (self.dropped, b",".join(items))
        self._latest = {}
        self._events.clear()
        self.dropped = 0
        return frame


# ---- the NATS side: one subscription shared by every page ----


class MarketRelay:
    """Pages join and leave; while any is here, `md.>` and arbitrage events go to each. A page
    that joins first gets the bourse venue's book and top of book for each of `books` from
    the engine (`engine.depth.<symbol>`, `engine.quote.<symbol>`): a quiet book may not
    change for minutes."""

    def __init__(
        self,
        nc: NATS,
        *,
        books: tuple[str, ...] = (),
        max_events: int = 500,
        book_timeout: float = 2.0,
    ) -> None:
        self._nc = nc
        self._books = books
        self._max_events = max_events
        self._book_timeout = book_timeout
        self._pages: set[Conflation] = set()
        self._subscriptions: list[Subscription] = []
        self._seeding: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    async def join(self) -> Conflation:
        page = Conflation(max_events=self._max_events)
        async with self._lock:
            self._pages.add(page)
            if not self._subscriptions:
                for subject in MARKET_SUBJECTS:
                    self._subscriptions.append(
                        await self._nc.subscribe(
                            subject, cb=self._on_message, pending_msgs_limit=65_536
                        )
                    )
        if self._books:
            task = asyncio.create_task(self._seed(page), name="dashboard books")
            self._seeding.add(task)
            task.add_done_callback(self._seeding.discard)
        return page

    async def _seed(self, page: Conflation) -> None:
        async def book(symbol: str) -> None:
            try:
                reply = await self._nc.request(
                    subjects.engine_depth(symbol), b"", timeout=self._book_timeout
                )
            except Exception as error:  # no engine here, or a slow one: live depth will do
                log.debug("no book of %s for a new page: %r", symbol, error)
                return
            if kind_of(reply.data) == "depth" and page in self._pages:
                subject = subjects.market_data(VENUE, symbol)
                page.offer_if_newer_absent(subject, "depth", reply.data)

        async def top(symbol: str) -> None:  # the venue's row among the symbol's venues
            try:
                reply = await self._nc.request(
                    subjects.engine_quote(symbol), b"", timeout=self._book_timeout
                )
            except Exception as error:
                log.debug("no quote of %s for a new page: %r", symbol, error)
                return
            if kind_of(reply.data) == "quote" and page in self._pages:
                subject = subjects.market_data(VENUE, symbol)
                page.offer_if_newer_absent(subject, "quote", reply.data)

        await asyncio.gather(*(task(symbol) for symbol in self._books for task in (book, top)))

    async def leave(self, page: Conflation) -> None:
        async with self._lock:
            self._pages.discard(page)
            if not self._pages:
                await self._unsubscribe()

    async def stop(self) -> None:
        for task in list(self._seeding):
            task.cancel()
        async with self._lock:
            self._pages.clear()
            await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        kind = kind_of(msg.data)  # once, however many pages there are
        if kind is None:
            return
        for page in self._pages:
            page.offer(msg.subject, kind, msg.data)


# ---- operations: stream and consumer figures with rates ----


class OpsSampler:
    """Snapshots of JetStream taken at most once per `min_interval` however many pages ask,
    each measured against the one before it."""

    def __init__(
        self, nc: NATS, *, min_interval: float = 0.9, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._jsm = nc.jetstream()
        self._min_interval = min_interval
        self._clock = clock
        self._lock = asyncio.Lock()
        self._previous: Snapshot | None = None
        self._report: StreamsReport | None = None
        self._taken_at = float("-inf")

    async def report(self) -> StreamsReport:
        async with self._lock:
            if self._report is None or self._clock() - self._taken_at >= self._min_interval:
                current = await take_snapshot(self._jsm)
                if self._previous is None:
                    self._report = _figures_only(current)
                else:
                    self._report = measure(self._previous, current)
                self._previous = current
                self._taken_at = self._clock()
            return self._report


def _figures_only(snapshot: Snapshot) -> StreamsReport:
    """A report of the first snapshot: the figures, no rates yet."""
    return StreamsReport(
        interval_s=0.0,
        streams=tuple(
            StreamReport(stream=s, messages_per_s=None, bytes_per_s=None) for s in snapshot.streams
        ),
        consumers=tuple(
            ConsumerReport(consumer=c, delivered_per_s=None, lag_change_per_s=None)
            for c in snapshot.consumers
        ),
    )


# ---- the demo keys ----


class _DemoKeys(msgspec.Struct):
    """The demo account's part of `<home>/credentials.json`, which `bourse up` writes."""

    account_id: str
    key_id: str
    secret: str


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_demo_keys(home: Path) -> _DemoKeys | None:
    path = home / "credentials.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=_DemoKeys)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


# ---- the routes ----


def register_dashboard(
    app: FastAPI,
    ctx: GatewayContext,
    *,
    relay: MarketRelay,
    ops: OpsSampler,
    home: Path,
    bound_host: str,
    frame_interval: float = 0.05,
    auth_timeout: float = 30.0,
    readiness: Callable[[], Awaitable[dict[str, str]]] | None = None,
) -> None:
    """Serve the dashboard from `app`; `bound_host` is the address the gateway listens on
    (the demo keys are offered only when that, and the asking client, are loopback).
    `readiness` (the gateway's `/readyz` checks) gives the operations view each service's
    health."""
    offer_demo_keys = _loopback(bound_host)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/dashboard/demo-keys", include_in_schema=False, response_model=None)
    async def demo_keys(request: Request) -> Response | dict[str, str]:
        client = request.client.host if request.client is not None else None
        # The Host header too: a page served from elsewhere that re-points its own name at
        # 127.0.0.1 (DNS rebinding) would otherwise read the keys as same-origin.
        named = request.url.hostname
        local = _loopback(client) and _loopback(named)
        keys = read_demo_keys(home) if offer_demo_keys and local else None
        if keys is None:
            # 204, not 404: the page asks on every load, and a 404 is a console error.
            return Response(status_code=204)
        return {"account_id": keys.account_id, "key_id": keys.key_id, "secret": keys.secret}

    @app.get("/v2/ops/streams", summary="Streams and consumers, with rates (operations)")
    async def ops_streams(_: Who) -> dict[str, Any]:
        report = await ops.report()
        return {
            "nats_connected": ctx.nc.is_connected,
            # Each service's readiness, as /readyz has it: "ok" or what is wrong.
            "services": await readiness() if readiness is not None else {},
            **msgspec.to_builtins(report),
        }

    pages: dict[str, set[asyncio.Event]] = {}  # key id -> its pages' "revoked" events

    def key_revoked(key_id: str) -> None:
        for revoked in pages.get(key_id, ()):
            revoked.set()

    ctx.auth.on_revoked(key_revoked)

    @app.websocket("/dashboard/ws")
    async def market(websocket: WebSocket) -> None:
        await websocket.accept()
        with contextlib.suppress(WebSocketDisconnect):
            key_id = await _authenticate(websocket, ctx, auth_timeout)
            if key_id is None:
                return
            revoked = asyncio.Event()
            pages.setdefault(key_id, set()).add(revoked)
            page = await relay.join()
            try:
                await _pump(websocket, page, frame_interval, revoked)
            finally:
                await relay.leave(page)
                pages[key_id].discard(revoked)
                if not pages[key_id]:
                    del pages[key_id]
            if revoked.is_set():
                await websocket.send_json({"type": "error", "message": "API key revoked"})
                await websocket.close(POLICY_VIOLATION, "API key revoked")


async def _authenticate(websocket: WebSocket, ctx: GatewayContext, timeout: float) -> str | None:
    """The key id the page authenticated with; None once it is refused (and closed)."""

    async def refuse(message: str) -> None:
        await websocket.send_json({"type": "error", "message": message})
        await websocket.close(POLICY_VIOLATION, message[:120])

    try:
        text = await asyncio.wait_for(websocket.receive_text(), timeout)
    except TimeoutError:
        await refuse(f"not authenticated within {timeout:g} s")
        return None
    try:
        message = msgspec.json.decode(text)
    except msgspec.DecodeError:
        await refuse('send {"action": "auth", "key": KEY_ID, "secret": SECRET} first')
        return None
    if not (
        isinstance(message, dict)
        and message.get("action") == "auth"
        and isinstance(message.get("key"), str)
        and isinstance(message.get("secret"), str)
    ):
        await refuse('send {"action": "auth", "key": KEY_ID, "secret": SECRET} first')
        return None
    principal = await ctx.auth.authenticate(message["key"], message["secret"])
    if principal is None:
        await refuse("unknown API key or wrong secret")
        return None
    await websocket.send_json({"type": "authorized"})
    return principal.key_id


async def _pump(
    websocket: WebSocket, page: Conflation, frame_interval: float, revoked: asyncio.Event
) -> None:
    """Send `page` its pending data at most once per `frame_interval`, until it goes away
    or its key is revoked."""
    closed = asyncio.create_task(_until_closed(websocket))
    stopped = asyncio.create_task(revoked.wait())
    try:
        while not closed.done() and not revoked.is_set():
            waiting = asyncio.create_task(page.pending.wait())
            await asyncio.wait({waiting, closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if closed.done() or revoked.is_set():
                return
            frame = page.take()
            if frame is not None:
                await websocket.send_bytes(frame)
            # A pacing interval, not synchronization: updates arriving meanwhile are
            # conflated into the next frame.
            await asyncio.sleep(frame_interval)
    finally:
        stopped.cancel()
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await closed


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the page sends, until it disconnects."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
