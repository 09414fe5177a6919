"""The live market-data WebSocket, in Alpaca's market-data stream protocol.

    stream = MarketDataStream(nc, authenticator, limiter, MarketDataConfig())
    await stream.start()                 # one set of core NATS subscriptions per gateway
    uvicorn.Config(app, ws=stream.upgrades())   # serves /v2/iex, /v2/sip, /v1beta3/crypto/us
    await stream.stop()

**What each path carries** (docs/market-data-stream.md has the whole protocol):

| path | trades | quotes | bars (1 minute) |
|---|---|---|---|
| `/v2/iex` | the `iex_venue` (Bourse's own exchange) | its top of book | its bars |
| `/v2/sip` | every equity venue | the NBBO (`analytics.nbbo.<symbol>`) | consolidated bars |
| `/v1beta3/crypto/us` | every crypto venue | the crypto NBBO | consolidated bars |

Trades and venue quotes come from `md.<venue>.<symbol>`; the NBBO and bars from the
analytics service (`analytics.nbbo.<symbol>`, `analytics.bars.1Min.<venue>.<symbol>`; the
consolidated bars are those of the pseudo-venue `consolidated_venue`).

**Fan-out.** The gateway subscribes once (core NATS: market data is live, a client that
reconnects starts from now, as with Alpaca), not once per client. Each message is decoded
once, and only when some client wants it (the subject says the venue and symbol); it is
turned into Alpaca's message and encoded once per variant that some subscriber needs (JSON
or MessagePack, `BTC/USD` or `BTC-USD`): at most four encodings, whatever the number of
clients. The same frame bytes then go to every subscriber's outbox (`MdConnection.push`);
outboxes are written once per turn of the event loop, so a burst of messages costs one
write per client, not one per message. A slow client is conflated, then dropped (see
`mdconn`); it never holds up the loop or anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from bourse.analytics.bars import Bar
from bourse.analytics.nbbo import Nbbo
from bourse.gateway import mdwire
from bourse.gateway.auth import Authenticator, RateLimiter
from bourse.gateway.mdconn import MdConnection
from bourse.gateway.mdsubs import STAR, Change, Refusal
from bourse.model import marketdata, subjects
from bourse.model.instruments import CRYPTO_VENUES, DEFAULT_UNIVERSE, AssetClass, Instrument

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class MarketDataConfig:
    iex_venue: str = "bourse"  # the one venue /v2/iex carries
    consolidated_venue: str = "consolidated"  # the analytics pseudo-venue of all-venue bars
    bar_timeframe: str = "1Min"  # Alpaca's `bars` are minute bars
    auth_timeout: float = 10.0  # seconds after connecting (Alpaca: 10)
    max_symbols: int = 1_000  # per connection, over every channel (`*` counts none)
    max_connections_per_key: int = 10  # per key and path (Alpaca: 1)
    max_connections: int = 10_000  # per gateway
    max_backlog: int = 1_000  # frames waiting for a client that is not reading
    write_buffer_high: int = 256 * 1024  # bytes the transport holds before it pauses
    socket_send_buffer: int | None = None  # SO_SNDBUF per client; None: the kernel's
    close_timeout: float = 5.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    max_message: int = 1 << 20  # the largest message a client may send


class Route:
    """The subscribers of one (feed, channel): connection -> frame variant."""

    __slots__ = ("named", "star")

    def __init__(self) -> None:
        self.star: dict[MdConnection, int] = {}
        self.named: dict[str, dict[MdConnection, int]] = {}

    def wants(self, symbol: str) -> bool:
        return bool(self.star) or symbol in self.named


Builder = Callable[[str, mdwire.Codec], mdwire.Message]

_CRYPTO_BIT, _CODEC = 2, ("json", "msgpack")
_MD, _NBBO, _BARS = "md", "nbbo", "bars"


class MarketDataStream:
    """Alpaca's market-data stream over Bourse's market data: one per gateway."""

    def __init__(
        self,
        nc: NATS,
        auth: Authenticator,
        limiter: RateLimiter | None,
        config: MarketDataConfig | None = None,
        *,
        instruments: Sequence[Instrument] = DEFAULT_UNIVERSE,
    ) -> None:
        self.nc = nc
        self.auth = auth
        auth.on_revoked(self._key_revoked)
        self.limiter = limiter
        self.config = config or MarketDataConfig()
        self.feeds = {feed.path: feed for feed in mdwire.FEEDS}
        self._asset_classes = {i.symbol: i.asset_class for i in instruments}
        self._routes: dict[tuple[str, str], Route] = {}
        self._connections: set[MdConnection] = set()
        self._per_key: Counter[tuple[str, str]] = Counter()
        self._dirty: list[MdConnection] = []
        self._flush: asyncio.Handle | None = None
        self._subscriptions: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._publishing = False  # while True, the routes are being iterated: do not change them
        self._forget_later: list[MdConnection] = []
        self._json_bar = msgspec.json.Decoder(Bar)
        self._json_nbbo = msgspec.json.Decoder(Nbbo)
        # Totals, over connections closed and open.
        self.received: Counter[str] = Counter()  # NATS messages by source: md, nbbo, bars
        self.malformed = 0
        self.slow_clients = 0
        self._closed_totals: Counter[tuple[str, str]] = Counter()  # (feed, figure)
        self._slow_by_feed: Counter[str] = Counter()

    # ---- lifecycle ----

    async def start(self) -> MarketDataStream:
        tf = self.config.bar_timeframe
        for subject, handler in (
            (subjects.ALL_MARKET_DATA, self._on_market_data),
            (subjects.analytics_nbbo("*"), self._on_nbbo),
            (subjects.analytics_bars(tf, "*", "*"), self._on_bar),
        ):
            self._subscriptions.append(
                await self.nc.subscribe(
                    subject, cb=handler, pending_msgs_limit=1 << 20, pending_bytes_limit=1 << 30
                )
            )
        return self

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._subscriptions.clear()
        for connection in list(self._connections):
            connection.shutdown()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def upgrades(self, fallback: str = "websockets-sansio") -> UpgradeRouter:
        """A uvicorn `ws` protocol factory: the market-data paths are served here, any other
        WebSocket (the trading stream) by uvicorn's own `fallback` implementation."""
        from uvicorn.config import WS_PROTOCOLS
        from uvicorn.importer import import_from_string

        return UpgradeRouter(self, import_from_string(WS_PROTOCOLS.get(fallback, fallback)))

    def protocol(self, registry: set[Any] | None = None) -> MdConnection:
        """A protocol for one raw connection (to serve the stream without uvicorn)."""
        return MdConnection(self, registry)

    # ---- connections (called by MdConnection) ----

    def feed_of(self, target: str) -> mdwire.Feed | None:
        return self.feeds.get(target.partition("?")[0].rstrip("/") or "/")

    def serves(self, target: str) -> bool:
        return self.feed_of(target) is not None

    def opened(self, connection: MdConnection) -> None:
        self._connections.add(connection)

    def full(self) -> bool:
        return len(self._connections) > self.config.max_connections

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _key_revoked(self, key_id: str) -> None:
        for connection in list(self._connections):
            if connection.principal is not None and connection.principal.key_id == key_id:
                connection.fail(402, "API key revoked")

    async def authenticate(self, connection: MdConnection, key: str, secret: str) -> Refusal | None:
        """Check a client's key; on success it is the connection's. A refusal otherwise."""
        feed = connection.feed
        assert feed is not None
        if self.limiter is not None:
            wait = self.limiter.check(key)
            if wait is not None:
                return Refusal(
                    402,
                    f"too many attempts with this key; retry in {RateLimiter.retry_after(wait)}s",
                )
        principal = await self.auth.authenticate(key, secret)
        if principal is None:
            return Refusal(402, "unknown API key or wrong secret")
        if not feed.available:
            offered = ", ".join(f.path for f in mdwire.FEEDS if f.available)
            return Refusal(409, f"Bourse does not serve {feed.path}; it serves {offered}")
        if connection.closing:
            return None
        slot = (principal.key_id, feed.name)
        if self._per_key[slot] >= self.config.max_connections_per_key:
            return Refusal(
                406,
                f"this key has {self.config.max_connections_per_key} connections to {feed.path}; "
                "close one first",
            )
        self._per_key[slot] += 1
        connection.principal = principal
        return None

    def change(self, connection: MdConnection, change: Change) -> mdwire.Message:
        """Apply a subscribe or unsubscribe; the `subscription` message to answer with."""
        feed, subs = connection.feed, connection.subs
        assert feed is not None and subs is not None
        added, removed = subs.apply(change, self.config.max_symbols)
        for channel, symbol in removed:
            route = self._routes.get((feed.name, channel))
            if route is not None:
                _discard(route, symbol, connection)
        for channel, symbol, spelling in added:
            route = self._routes.setdefault((feed.name, channel), Route())
            variant = connection.variant
            if feed.crypto and spelling != mdwire.alpaca_symbol(symbol, feed.asset_class):
                variant |= _CRYPTO_BIT  # written BTC-USD: answered BTC-USD
            if symbol == STAR:
                route.star[connection] = variant
            else:
                route.named.setdefault(symbol, {})[connection] = variant
        return mdwire.subscription_message(feed, subs.lists())

    def forget(self, connection: MdConnection) -> None:
        """A connection ended (or is ending): it hears nothing more."""
        if self._publishing:  # a client dropped while a message goes out
            self._forget_later.append(connection)
            return
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        feed, subs = connection.feed, connection.subs
        if feed is not None and subs is not None:
            for channel, symbols in subs.channels.items():
                route = self._routes.get((feed.name, channel))
                if route is not None:
                    for symbol in symbols:
                        _discard(route, symbol, connection)
        if connection.principal is not None and feed is not None:
            slot = (connection.principal.key_id, feed.name)
            self._per_key[slot] -= 1
            if self._per_key[slot] <= 0:
                del self._per_key[slot]
        name = feed.name if feed is not None else "?"
        self._closed_totals.update(
            {
                (name, "sent"): connection.sent,
                (name, "conflated"): connection.conflated,
                (name, "dropped"): connection.dropped,
            }
        )

    def slow_client(self, connection: MdConnection) -> None:
        self.slow_clients += 1
        self._slow_by_feed[connection.feed.name if connection.feed else "?"] += 1
        log.warning(
            "market-data client %s on %s dropped: not reading (%d frames dropped)",
            connection.principal.key_id if connection.principal else "?",
            connection.feed.path if connection.feed else "?",
            connection.dropped,
        )

    def mark(self, connection: MdConnection) -> None:
        """`connection` has frames to write: write them at the end of this turn of the loop."""
        self._dirty.append(connection)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._write_all)

    def _write_all(self) -> None:
        self._flush = None
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            connection.flush()

    # ---- fan-out ----

    def publish(
        self,
        feed: mdwire.Feed,
        channel: str,
        symbol: str,
        build: Builder,
        conflate: bool = False,
    ) -> None:
        """Send one message to every subscriber of (feed, channel, symbol), encoded at most
        once per variant: bit 0 MessagePack, bit 1 the Bourse spelling of a crypto pair."""
        route = self._routes.get((feed.name, channel))
        if route is None:
            return
        star, named = route.star, route.named.get(symbol)
        if not star and not named:
            return
        frames: list[bytes | None] = [None, None, None, None]

        def made(variant: int) -> bytes:
            codec: mdwire.Codec = "msgpack" if variant & 1 else "json"
            spelled = (
                symbol if variant & _CRYPTO_BIT else mdwire.alpaca_symbol(symbol, feed.asset_class)
            )
            frame = mdwire.message_frame(build(spelled, codec), codec)
            frames[variant] = frame
            return frame

        key = (channel, symbol) if conflate else None
        self._publishing = True
        try:
            for connection, variant in star.items():
                connection.push(frames[variant] or made(variant), key)
            if named:
                for connection, variant in named.items():
                    if connection not in star:
                        connection.push(frames[variant] or made(variant), key)
        finally:
            self._publishing = False
            if self._forget_later:
                dropped, self._forget_later = self._forget_later, []
                for connection in dropped:
                    self.forget(connection)

    def _wants(self, feed: mdwire.Feed, channel: str, symbol: str) -> bool:
        route = self._routes.get((feed.name, channel))
        return route is not None and route.wants(symbol)

    def asset_class(self, symbol: str, venue: str) -> AssetClass:
        """An instrument's class; a symbol outside the universe (a replayed file's) is crypto
        on a crypto venue or when it is a pair, else an equity."""
        known = self._asset_classes.get(symbol)
        if known is not None:
            return known
        if venue in CRYPTO_VENUES or "-" in symbol:
            return AssetClass.CRYPTO
        return AssetClass.US_EQUITY

    async def _on_market_data(self, msg: Msg) -> None:
        if not self._routes:
            return
        self.received[_MD] += 1
        try:
            venue, symbol = subjects.parse_market_data(msg.subject)
        except ValueError:
            return
        asset_class = self.asset_class(symbol, venue)
        crypto = asset_class is AssetClass.CRYPTO
        own = not crypto and venue == self.config.iex_venue
        trade_feeds = (
            (mdwire.CRYPTO,) if crypto else ((mdwire.SIP, mdwire.IEX) if own else (mdwire.SIP,))
        )
        wants_trade = any(self._wants(f, mdwire.TRADES, symbol) for f in trade_feeds)
        wants_quote = own and self._wants(mdwire.IEX, mdwire.QUOTES, symbol)
        if not (wants_trade or wants_quote):
            return
        try:
            message = marketdata.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            self.malformed += 1
            return
        if isinstance(message, marketdata.Trade):
            trade = message
            for feed in trade_feeds:
                self.publish(
                    feed,
                    mdwire.TRADES,
                    symbol,
                    functools.partial(_trade, trade, asset_class),
                )
        elif isinstance(message, marketdata.Quote) and own:
            self.publish(
                mdwire.IEX,
                mdwire.QUOTES,
                symbol,
                functools.partial(_venue_quote, message, asset_class),
                conflate=True,
            )

    async def _on_nbbo(self, msg: Msg) -> None:
        if not self._routes:
            return
        self.received[_NBBO] += 1
        symbol = msg.subject.rpartition(".")[2]
        asset_class = self.asset_class(symbol, "")
        feed = mdwire.CRYPTO if asset_class is AssetClass.CRYPTO else mdwire.SIP
        if not self._wants(feed, mdwire.QUOTES, symbol):
            return
        try:
            nbbo = self._json_nbbo.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.malformed += 1
            return
        self.publish(
            feed,
            mdwire.QUOTES,
            symbol,
            functools.partial(_nbbo_quote, nbbo, asset_class),
            conflate=True,
        )

    async def _on_bar(self, msg: Msg) -> None:
        if not self._routes:
            return
        self.received[_BARS] += 1
        tokens = msg.subject.split(".")
        if len(tokens) != 5:
            return
        venue, symbol = tokens[3], tokens[4]
        asset_class = self.asset_class(symbol, venue)
        if venue == self.config.consolidated_venue:
            feed = mdwire.CRYPTO if asset_class is AssetClass.CRYPTO else mdwire.SIP
        elif venue == self.config.iex_venue and asset_class is not AssetClass.CRYPTO:
            feed = mdwire.IEX
        else:
            return
        if not self._wants(feed, mdwire.BARS, symbol):
            return
        try:
            bar = self._json_bar.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.malformed += 1
            return
        self.publish(feed, mdwire.BARS, symbol, functools.partial(_bar, bar))

    # ---- metrics ----

    def clients(self) -> list[dict[str, Any]]:
        """Each open connection's figures (frames sent, conflated, dropped, backlog...)."""
        return [connection.stats() for connection in self._connections]

    def _figures(self) -> tuple[Counter[str], Counter[tuple[str, str]]]:
        """(open connections by feed, frame totals by (feed, sent|conflated|dropped))."""
        totals = Counter(self._closed_totals)
        by_feed: Counter[str] = Counter()
        for connection in self._connections:
            name = connection.feed.name if connection.feed else "?"
            by_feed[name] += 1
            totals[(name, "sent")] += connection.sent
            totals[(name, "conflated")] += connection.conflated
            totals[(name, "dropped")] += connection.dropped
        return by_feed, totals

    def metrics(self) -> dict[str, Any]:
        by_feed, totals = self._figures()

        def total(figure: str) -> int:
            return sum(count for (_, kind), count in totals.items() if kind == figure)

        return {
            "connections": dict(by_feed),
            "frames_sent": total("sent"),
            "frames_conflated": total("conflated"),
            "frames_dropped": total("dropped"),
            "slow_clients": self.slow_clients,
            "received": dict(self.received),
            "malformed": self.malformed,
        }

    def metric_families(self) -> list[Metric]:
        """Prometheus families, read at each scrape (the gateway's /metrics adds them)."""
        by_feed, totals = self._figures()
        connections = GaugeMetricFamily(
            "bourse_md_stream_connections",
            "Open market-data stream connections",
            labels=("feed",),
        )
        frames = CounterMetricFamily(
            "bourse_md_stream_frames",
            "Market-data frames per feed: sent, conflated (a newer quote replaced it while the "
            "client was not reading) or dropped (the connection ended before they were sent)",
            labels=("feed", "outcome"),
        )
        slow = CounterMetricFamily(
            "bourse_md_stream_slow_clients",
            "Market-data clients dropped for not reading (error 407)",
            labels=("feed",),
        )
        received = CounterMetricFamily(
            "bourse_md_stream_messages",
            "NATS messages the market-data stream took in while it had subscribers",
            labels=("source",),
        )
        for feed in mdwire.FEEDS:
            if not feed.available:
                continue
            connections.add_metric((feed.name,), by_feed[feed.name])
            slow.add_metric((feed.name,), self._slow_by_feed[feed.name])
            for outcome in ("sent", "conflated", "dropped"):
                frames.add_metric((feed.name, outcome), totals[(feed.name, outcome)])
        for source in (_MD, _NBBO, _BARS):
            received.add_metric((source,), self.received[source])
        received.add_metric(("malformed",), self.malformed)
        return [connections, frames, slow, received]


def _discard(route: Route, symbol: str, connection: MdConnection) -> None:
    if symbol == STAR:
        route.star.pop(connection, None)
        return
    named = route.named.get(symbol)
    if named is not None:
        named.pop(connection, None)
        if not named:
            del route.named[symbol]


def _trade(
    trade: marketdata.Trade, asset_class: AssetClass, symbol: str, codec: mdwire.Codec
) -> mdwire.Message:
    return mdwire.trade_message(trade, symbol, codec, asset_class)


def _venue_quote(
    quote: marketdata.Quote, asset_class: AssetClass, symbol: str, codec: mdwire.Codec
) -> mdwire.Message:
    return mdwire.venue_quote_message(quote, symbol, codec, asset_class)


def _nbbo_quote(
    nbbo: Nbbo, asset_class: AssetClass, symbol: str, codec: mdwire.Codec
) -> mdwire.Message:
    return mdwire.nbbo_quote_message(nbbo, symbol, codec, asset_class)


def _bar(bar: Bar, symbol: str, codec: mdwire.Codec) -> mdwire.Message:
    return mdwire.bar_message(bar, symbol, codec)


# ---- serving it from uvicorn, beside the app ----


class UpgradeRouter:
    """uvicorn's `ws` setting: a factory of the protocol that takes over an upgraded socket.

    uvicorn builds it with (config, server_state, app_state), gives it the transport and the
    request's bytes, then makes it the transport's protocol. `_Dispatch` reads the path from
    the request line and hands the socket to a `MdConnection` or to uvicorn's own WebSocket
    protocol (which runs the ASGI app, e.g. the trading stream at /stream)."""

    def __init__(self, stream: MarketDataStream, fallback: Callable[..., asyncio.Protocol]) -> None:
        self.stream = stream
        self.fallback = fallback

    def __call__(self, **uvicorn: Any) -> asyncio.Protocol:
        return _Dispatch(self, uvicorn)


class _Dispatch(asyncio.Protocol):
    def __init__(self, router: UpgradeRouter, uvicorn: dict[str, Any]) -> None:
        self._router = router
        self._uvicorn = uvicorn
        self._transport: asyncio.BaseTransport | None = None
        self._target: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._target is not None:
            self._target.data_received(data)
            return
        assert self._transport is not None
        line = data.split(b"\r\n", 1)[0].split(b" ")
        target = line[1].decode("latin-1") if len(line) > 2 else ""
        stream = self._router.stream
        if stream.serves(target):
            server_state = self._uvicorn.get("server_state")
            self._target = stream.protocol(server_state.connections if server_state else None)
        else:
            self._target = self._router.fallback(**self._uvicorn)
        self._target.connection_made(self._transport)
        self._target.data_received(data)
        # uvicorn sets this dispatcher as the protocol when we return; the target takes over
        # right after, and until then everything is forwarded to it.
        asyncio.get_running_loop().call_soon(self._adopt)

    def _adopt(self) -> None:
        transport = self._transport
        if transport is not None and self._target is not None and not transport.is_closing():
            transport.set_protocol(self._target)

    def eof_received(self) -> bool | None:
        return self._target.eof_received() if self._target is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._target is not None:
            self._target.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._target is not None:
            self._target.pause_writing()

    def resume_writing(self) -> None:
        if self._target is not None:
            self._target.resume_writing()
