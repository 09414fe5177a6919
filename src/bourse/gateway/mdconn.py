"""One market-data client: its WebSocket, its session (auth, subscriptions) and its outbox.

`MdConnection` is an asyncio Protocol over websockets' Sans-I/O `ServerProtocol`, which does
the opening handshake and reads the client's frames. Data frames go out as bytes built once
for every client (`mdwire.frame`), written straight to the transport: no task, no await and
no copy per client.

**The outbox.** While the transport takes data, frames are gathered for one turn of the event
loop and written together (`flush`, called by the stream). When the client stops reading, its
kernel buffer fills, then the transport's (`write_buffer_high`), and asyncio pauses writing:
from then on frames wait in a bounded backlog, where a quote replaces the client's previous
quote of the same symbol (**conflation**: a slow client gets the latest quote, not every
quote). A backlog that grows past `max_backlog` frames (trades and bars are never conflated)
ends the connection: error 407 "slow client", then a close frame (1008), both behind what
the client has not read, and the socket is aborted if it is not closed within
`close_timeout`. Nothing here ever waits for a client, so a slow client slows no one else.

Counters per connection (`sent`, `conflated`, `dropped`) feed the stream's metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

import msgspec
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from bourse.gateway import mdwire
from bourse.gateway.auth import Principal
from bourse.gateway.mdsubs import Auth, Change, Refusal, Subscriptions, parse_request

if TYPE_CHECKING:
    from bourse.gateway.mdstream import MarketDataStream

log = logging.getLogger(__name__)
_ws_log = logging.getLogger("bourse.gateway.mdstream.ws")
_ws_log.setLevel(logging.WARNING)  # websockets logs every connection at INFO

POLICY_VIOLATION = 1008
GOING_AWAY = 1001
KEY_HEADER, SECRET_HEADER = "APCA-API-KEY-ID", "APCA-API-SECRET-KEY"


class MdConnection(asyncio.Protocol):
    def __init__(self, stream: MarketDataStream, registry: set[Any] | None = None) -> None:
        self.stream = stream
        self.config = stream.config
        self._registry = registry
        self.ws = ServerProtocol(max_size=self.config.max_message, logger=_ws_log)
        self.transport: asyncio.Transport | None = None
        self.feed: mdwire.Feed | None = None
        self.codec: mdwire.Codec = "json"
        self.variant = 0  # bit 0: MessagePack (see MarketDataStream.publish)
        self.principal: Principal | None = None
        self.subs: Subscriptions | None = None
        self.opened_at = time.time()
        self.paused = False
        self.closing = False
        self.dirty = False
        self._out: list[bytes] = []
        self._backlog: OrderedDict[object, bytes] = OrderedDict()
        self._unique = 0
        self._fragments: list[bytes] = []
        self._fragment_binary = False
        self._inbox: deque[Any] = deque()
        self._authenticating = False
        self._auth_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._ping: bytes | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self.sent = 0  # frames written to the socket (data and control)
        self.conflated = 0  # quotes replaced by a newer one of the same symbol
        self.dropped = 0  # frames never sent: the connection ended with them waiting

    # ---- asyncio.Protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=self.config.write_buffer_high)
        if self.config.socket_send_buffer is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.socket_send_buffer)
        if self._registry is not None:
            self._registry.add(self)

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        self._events()
        self._write_protocol()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._events()
        self._write_protocol()
        return None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._backlog and not self.closing and self.transport is not None:
            frames = list(self._backlog.values())
            self._backlog.clear()
            self.sent += len(frames)
            self.transport.write(b"".join(frames))

    def connection_lost(self, exc: Exception | None) -> None:
        self.dropped += len(self._out) + len(self._backlog)
        self._out.clear()
        self._backlog.clear()
        self.closing = True
        for timer in (self._auth_timer, self._ping_timer, self._pong_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self.stream.forget(self)
        if self._registry is not None:
            self._registry.discard(self)

    def shutdown(self) -> None:
        """The server is stopping (uvicorn calls this on every connection it tracks)."""
        self._close(GOING_AWAY, "the server is shutting down")

    # ---- frames in ----

    def _events(self) -> None:
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self._fragments = [bytes(frame.data)]
            self._fragment_binary = opcode is Opcode.BINARY
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
        elif opcode is Opcode.PONG:
            if self._ping is not None and bytes(frame.data) == self._ping:
                self._ping = None
                if self._pong_timer is not None:
                    self._pong_timer.cancel()
                    self._pong_timer = None
            return
        else:
            return  # ping (answered by the protocol) and close
        if not frame.fin:
            return
        payload = b"".join(self._fragments)
        self._fragments = []
        if self.closing or self.feed is None:
            return
        try:
            message = mdwire.decode_request(payload, self._fragment_binary)
        except (msgspec.DecodeError, UnicodeDecodeError) as error:
            self.error(400, f"not JSON or MessagePack ({error})")
            return
        if self._authenticating:
            self._inbox.append(message)
        else:
            self._request(message)

    def _handshake(self, request: Request) -> None:
        response = self.ws.accept(request)
        feed = self.stream.feed_of(request.path)
        if response.status_code == 101 and feed is None:
            response = self.ws.reject(404, "no market-data stream here")
        self.ws.send_response(response)
        self._write_protocol()
        if response.status_code != 101 or feed is None:
            return
        self.feed = feed
        self.subs = Subscriptions(feed)
        if "msgpack" in request.headers.get("Content-Type", "").lower():
            self.codec, self.variant = "msgpack", 1
        self.stream.opened(self)
        self.control(mdwire.CONNECTED)
        if self.stream.full():
            self.fail(406, f"the server has its {self.config.max_connections} connections")
            return
        loop = asyncio.get_running_loop()
        self._ping_timer = loop.call_later(self.config.ping_interval, self._send_ping)
        key, secret = request.headers.get(KEY_HEADER), request.headers.get(SECRET_HEADER)
        if key and secret:
            self._start_auth(key, secret)
        else:
            self._auth_timer = loop.call_later(self.config.auth_timeout, self._auth_timed_out)

    def _request(self, message: Any) -> None:
        assert self.feed is not None
        try:
            request = parse_request(message, self.feed)
            match request:
                case Auth(key=key, secret=secret):
                    self._start_auth(key, secret)
                case Change():
                    if self.principal is None:
                        raise Refusal(
                            401, 'authenticate first: {"action":"auth","key":..,"secret":..}'
                        )
                    self.control(self.stream.change(self, request))
        except Refusal as refusal:
            self.error(refusal.code, refusal.detail)
        except Exception:
            log.exception("market-data request %r failed", message)
            self.error(500, "the server failed on this request; it changed nothing")

    # ---- authentication ----

    def _start_auth(self, key: str, secret: str) -> None:
        if self.principal is not None:
            self.error(403, "this connection is authenticated; open another for another key")
            return
        if not key or not secret:
            self.fail(402, "give key and secret")
            return
        self._authenticating = True
        self.stream.spawn(self._authenticate(key, secret))

    async def _authenticate(self, key: str, secret: str) -> None:
        try:
            refusal = await self.stream.authenticate(self, key, secret)
        except Exception:
            log.exception("authentication of a market-data client failed")
            refusal = Refusal(500, "the server could not check the key; try again")
        self._authenticating = False
        if self.closing:
            return
        if refusal is not None:
            self.fail(refusal.code, refusal.detail)
            return
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        self.control(mdwire.AUTHENTICATED)
        while self._inbox and not self._authenticating and not self.closing:
            self._request(self._inbox.popleft())

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self.principal is None and not self._authenticating and not self.closing:
            self.fail(404, f"authenticate within {self.config.auth_timeout:g}s of connecting")

    # ---- frames out ----

    def push(self, frame: bytes, conflate: object | None = None) -> None:
        """Queue a frame for this client; never blocks. `conflate`: a quote's key, so a newer
        quote of the same symbol replaces it while the client is not reading."""
        if self.closing:
            return
        if not self.paused:
            self._out.append(frame)
            if not self.dirty:
                self.dirty = True
                self.stream.mark(self)
            return
        backlog = self._backlog
        if conflate is not None and conflate in backlog:
            del backlog[conflate]
            self.conflated += 1
        elif len(backlog) >= self.config.max_backlog:
            self.dropped += len(backlog) + 1
            backlog.clear()
            self.stream.slow_client(self)
            self.fail(407, f"{self.config.max_backlog} messages were waiting; read faster")
            return
        elif conflate is None:
            self._unique += 1
            conflate = self._unique
        backlog[conflate] = frame

    def flush(self) -> None:
        """Write what this turn of the loop gathered (the stream calls it once per turn)."""
        self.dirty = False
        out = self._out
        if not out or self.closing or self.transport is None:
            return
        self._out = []
        self.sent += len(out)
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def control(self, message: mdwire.Message) -> None:
        self.push(mdwire.message_frame(message, self.codec))

    def error(self, code: int, detail: str) -> None:
        self.push(mdwire.message_frame(mdwire.error_message(code, detail), self.codec))

    def fail(self, code: int, detail: str) -> None:
        """Error `code`, then close. The error goes behind what this turn gathered, but ahead
        of a backlog, which is dropped: the client is told even if it was not reading."""
        if self.closing or self.transport is None:
            return
        if self._out:
            self.flush()
        self.sent += 1
        self.transport.write(mdwire.message_frame(mdwire.error_message(code, detail), self.codec))
        self._close(POLICY_VIOLATION, f"{code} {mdwire.ERRORS[code]}")

    def _close(self, code: int, reason: str) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.ws.state is OPEN:
            # The backlog of a client that is not reading is dropped; the error above is not.
            if self._out:
                self.flush()
            self.dropped += len(self._backlog)
            self._backlog.clear()
            self.ws.send_close(code, reason)
            self._write_protocol()
        self.closing = True
        self.stream.forget(self)
        transport.close()  # after the buffered bytes are written...
        self._abort_timer = asyncio.get_running_loop().call_later(
            self.config.close_timeout,
            transport.abort,  # ...which a stalled client never takes
        )

    def _write_protocol(self) -> None:
        """What the protocol itself has to send: the handshake, pongs, close frames."""
        transport = self.transport
        if transport is None:
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            elif not transport.is_closing():
                self.closing = True
                self.stream.forget(self)
                transport.close()

    # ---- keepalive ----

    def _send_ping(self) -> None:
        self._ping_timer = None
        if self.closing or self.ws.state is not OPEN:
            return
        self._ping = os.urandom(4)
        self.ws.send_ping(self._ping)
        self._write_protocol()
        loop = asyncio.get_running_loop()
        self._pong_timer = loop.call_later(self.config.ping_timeout, self._no_pong)
        self._ping_timer = loop.call_later(self.config.ping_interval, self._send_ping)

    def _no_pong(self) -> None:
        self._pong_timer = None
        if self.closing:
            return
        if self.paused:
            self.dropped += len(self._backlog)
            self._backlog.clear()
            self.stream.slow_client(self)
            self.fail(407, f"no answer to a ping in {self.config.ping_timeout:g}s; read faster")
        else:
            self._close(1011, "keepalive ping timeout")

    # ---- what the stream reads ----

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def stats(self) -> dict[str, Any]:
        return {
            "feed": self.feed.name if self.feed else None,
            "key_id": self.principal.key_id if self.principal else None,
            "codec": self.codec,
            "opened_at": self.opened_at,
            "subscriptions": self.subs.lists() if self.subs else {},
            "sent": self.sent,
            "conflated": self.conflated,
            "dropped": self.dropped,
            "backlog": len(self._backlog),
            "paused": self.paused,
        }
