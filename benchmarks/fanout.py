"""`bourse bench fanout`: quote frames per second delivered to 1,000 WebSocket clients.

Two servers run in this process, in the same run, and are measured in turn:

- **Bourse**: the real gateway (uvicorn, the app, the read model) with its market-data stream
  at `/v2/iex`. Its input is Bourse's own: `Quote` messages published on `md.bourse.AAPL`,
  which the gateway's one NATS subscription decodes, turns into Alpaca quotes and fans out to
  every client subscribed to `quotes: ["AAPL"]` (each client authenticated and subscribed as
  alpaca-py would, in JSON).
- **The peer**: a bare `websockets` server whose NATS subscription hands each message to
  `websockets.broadcast` for all its connections. It is fed the very frames Bourse sends (the
  Alpaca JSON of the same quotes, encoded in advance), so it does no work but the fan-out.

The clients run in child processes (one per server), so this process's CPU is the servers'
alone. They are minimal WebSocket clients (asyncio protocols that count frames as they parse
them), so they keep up with either server. Each round publishes `quotes` quotes as fast as
NATS takes them; a round ends when every client has the last one (the clients tell when);
its rate is the frames the clients received divided by the time from the first publish to
the last client's last frame. Rounds alternate between the servers; each one's best round
is its figure (the least disturbed by the shared machine). A slow client of Bourse would be
conflated (the latest quote per symbol): the frames it did not get are not counted, and are
reported (`conflated`).

A burst is where Bourse's design pays most: the quotes that arrive together go to a client
in one write, where `broadcast` writes each frame to each client. So each server also gets a
**paced** round, one quote every 10 ms (each handled on its own), and every round reports this
process's CPU time per frame delivered (`cpu_us_per_frame`): the cost of a frame when no write
can be shared.

Target: Bourse delivers at least 0.7x the peer's frames per second (the burst rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from benchmarks import Result, at_least

TARGET = 0.7
SYMBOL = "AAPL"
VENUE = "bourse"  # /v2/iex carries the bourse venue's quotes
PEER_SUBJECT = "bench.fanout.frames"
MARKER_BID = Decimal("1.23")  # the last quote of a round, and only it, bids this
MARKER = b'"bp":1.23,'
ROUND_TIMEOUT = 120.0
PACED_INTERVAL = 0.01  # seconds between quotes in the paced rounds
_REPOSITORY = str(Path(__file__).resolve().parent.parent)  # the child imports benchmarks/


def _sizes(quick: bool) -> tuple[int, int, int]:
    """(clients, quotes per round, rounds per server)"""
    return (100, 300, 2) if quick else (1_000, 2_000, 3)


async def run(quick: bool) -> Result:
    from bourse.bus.connection import connect
    from bourse.bus.server import NatsServer
    from bourse.bus.streams import provision_streams
    from bourse.gateway.app import open_account
    from bourse.gateway.mdstream import MarketDataConfig
    from bourse.gateway.server import Gateway, GatewayConfig
    from bourse.model import subjects

    clients, quotes, rounds = _sizes(quick)
    paced = 50 if quick else 200
    _raise_file_limit(4 * clients + 256)
    with TemporaryDirectory(prefix="bourse-fanout-") as tmp:
        home = Path(tmp)
        async with NatsServer(store_dir=home / "nats") as server:
            nc = await connect(server.url, name="bench-fanout")
            await provision_streams(nc.jetstream())
            gateway = await Gateway(
                nc,
                GatewayConfig(
                    port=0,
                    rate=1e6,
                    burst=10 * clients,
                    market_data=MarketDataConfig(
                        max_connections_per_key=clients, max_connections=2 * clients
                    ),
                ),
                home=home,
            ).start()
            peer = _Peer(nc)
            ours: _ClientProcess | None = None
            theirs: _ClientProcess | None = None
            try:
                assert gateway.context is not None and gateway.market_data is not None
                key = await open_account(gateway.context, cash=Decimal(0), role="admin")
                await peer.start()
                ours = await _ClientProcess.start(
                    gateway.url.replace("http://", "ws://") + "/v2/iex",
                    clients,
                    auth=(key["key_id"], key["secret"]),
                )
                theirs = await _ClientProcess.start(peer.url, clients, auth=None)
                ours_subject = subjects.market_data(VENUE, SYMBOL)

                def publisher(
                    subject: str, payloads: list[bytes], interval: float
                ) -> Callable[[], Awaitable[None]]:
                    async def publish() -> None:
                        for payload in payloads:
                            await nc.publish(subject, payload)
                            if interval:
                                await asyncio.sleep(interval)
                        await nc.flush()

                    return publish

                quote_payloads, frame_payloads = _round_messages(quotes)
                results: dict[str, list[dict[str, Any]]] = {"bourse": [], "peer": []}
                for number in range(rounds):
                    order: list[tuple[str, _ClientProcess, Callable[[], Awaitable[None]]]] = [
                        ("bourse", ours, publisher(ours_subject, quote_payloads, 0)),
                        ("peer", theirs, publisher(PEER_SUBJECT, frame_payloads, 0)),
                    ]
                    if number % 2:
                        order.reverse()
                    for name, process, publish in order:
                        results[name].append(await _round(process, publish, quotes, clients))
                # One quote at a time: what each server's CPU costs per frame when nothing
                # arrives together (no write can be shared between quotes).
                paced_quotes, paced_frames = _round_messages(paced)
                slow = {
                    "bourse": await _round(
                        ours, publisher(ours_subject, paced_quotes, PACED_INTERVAL), paced, clients
                    ),
                    "peer": await _round(
                        theirs,
                        publisher(PEER_SUBJECT, paced_frames, PACED_INTERVAL),
                        paced,
                        clients,
                    ),
                }
                md = gateway.market_data.metrics()
            finally:
                for child in (ours, theirs):
                    if child is not None:
                        await child.stop()
                await peer.stop()
                await gateway.stop()
                await nc.close()

    best = {
        name: max(rounds_, key=lambda r: r["frames_per_s"]) for name, rounds_ in results.items()
    }
    ratio = at_least(best["bourse"]["frames_per_s"] / max(1, best["peer"]["frames_per_s"]))
    complete = all(r["clients_done"] == clients for rs in results.values() for r in rs)
    return {
        "name": "fanout",
        "ratio": ratio,
        "target": TARGET,
        "met": complete and ratio >= TARGET,
        "complete": complete,  # every client of every round got the last quote
        "clients": clients,
        "quotes_per_round": quotes,
        "bourse_frames_per_s": best["bourse"]["frames_per_s"],
        "peer_frames_per_s": best["peer"]["frames_per_s"],
        "rounds": results,
        "paced": {"quotes": paced, "interval_s": PACED_INTERVAL, **slow},
        "bourse_stream": {
            "frames_conflated": md["frames_conflated"],
            "frames_dropped": md["frames_dropped"],
            "slow_clients": md["slow_clients"],
        },
        "method": (
            "same process, same run; clients in child processes; quotes published on NATS as "
            "fast as it takes them; rate = frames received by all clients / (last client's "
            "last frame - first publish); best round of each"
        ),
    }


def _round_messages(quotes: int) -> tuple[list[bytes], list[bytes]]:
    """The NATS payloads of one round: Bourse's quotes, and the Alpaca frames they become."""
    from bourse.gateway import mdwire
    from bourse.model import marketdata
    from bourse.model.instruments import AssetClass

    ours, theirs = [], []
    now = time.time_ns()
    for i in range(quotes):
        last = i == quotes - 1
        bid = MARKER_BID if last else Decimal("100.00") + Decimal(i % 500) / 100
        quote = marketdata.Quote(
            symbol=SYMBOL,
            venue=VENUE,
            bid=bid,
            ask=bid + Decimal("0.02"),
            bid_size=Decimal(100 + i % 7),
            ask_size=Decimal(200),
            last=bid,
            last_size=Decimal(1),
            volume=Decimal(1000 + i),
            ts=now + i,
            seq=i + 1,
        )
        ours.append(marketdata.encode(quote))
        message = mdwire.venue_quote_message(quote, SYMBOL, "json", AssetClass.US_EQUITY)
        theirs.append(mdwire.encode(message, "json"))
    return ours, theirs


async def _round(
    process: _ClientProcess, publish: Callable[[], Awaitable[None]], quotes: int, clients: int
) -> dict[str, Any]:
    await process.command("go")  # the clients reset their counts and answer when ready
    started, cpu = time.monotonic_ns(), time.process_time()
    await publish()
    report = await process.reply(ROUND_TIMEOUT)
    cpu = time.process_time() - cpu  # this process: the servers (one of them busy) and NATS
    elapsed = (report["last_ns"] - started) / 1e9
    frames = report["frames"]
    return {
        "cpu_us_per_frame": round(cpu / frames * 1e6, 3) if frames else None,
        "frames": frames,
        "expected": quotes * clients,
        "conflated": quotes * clients - frames,
        "clients_done": report["done"],
        "seconds": round(elapsed, 4),
        "frames_per_s": round(frames / elapsed) if elapsed > 0 else 0,
    }


def _raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


# ---- the peer: a bare websockets broadcast server ----


class _Peer:
    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._connections: set[Any] = set()
        self._server: Any = None
        self._subscription: Any = None
        self.url = ""

    async def start(self) -> None:
        from websockets.asyncio.server import ServerConnection, broadcast, serve

        async def handler(connection: ServerConnection) -> None:
            self._connections.add(connection)
            try:
                await connection.wait_closed()
            finally:
                self._connections.discard(connection)

        async def on_frame(msg: Msg) -> None:
            broadcast(self._connections, msg.data, text=True)

        # No compression: Bourse's market-data stream does not compress either.
        quiet = logging.getLogger("benchmarks.fanout.peer")  # not a line per connection
        quiet.setLevel(logging.WARNING)
        self._server = await serve(handler, "127.0.0.1", 0, compression=None, logger=quiet)
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        self.url = f"ws://{host}:{port}/"
        self._subscription = await self._nc.subscribe(
            PEER_SUBJECT, cb=on_frame, pending_msgs_limit=1 << 20, pending_bytes_limit=1 << 30
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 10)


# ---- the clients, in a child process ----


class _ClientProcess:
    """A child process holding `clients` connections; it takes commands on stdin and answers
    one JSON line on stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, url: str, clients: int, *, auth: tuple[str, str] | None) -> _ClientProcess:
        args = [sys.executable, "-m", "benchmarks.fanout", url, str(clients)]
        env = dict(os.environ)
        if auth is not None:
            env["BOURSE_FANOUT_KEY"], env["BOURSE_FANOUT_SECRET"] = auth
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            cwd=_REPOSITORY,
        )
        child = cls(process)
        ready = await child.reply(120.0)
        if ready.get("connected") != clients:
            await child.stop()
            raise RuntimeError(f"the clients of {url} could not all connect: {ready}")
        return child

    async def command(self, word: str) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(word.encode() + b"\n")
        await self._process.stdin.drain()
        return await self.reply(30.0)

    async def reply(self, timeout: float) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the client process ended")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            assert self._process.stdin is not None
            self._process.stdin.write(b"quit\n")
            await self._process.stdin.drain()
        try:
            await asyncio.wait_for(self._process.wait(), 30)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


class _Client(asyncio.Protocol):
    """A WebSocket client that does the handshake by hand and counts frames as it parses
    them; before a round it hands frames to `setup` (the server's control messages)."""

    def __init__(self, host: str, path: str, counter: _Counter) -> None:
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._counter = counter
        self._buffer = bytearray()
        self._upgraded = False
        self.transport: asyncio.Transport | None = None
        self.setup: asyncio.Queue[bytes] | None = asyncio.Queue()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))

    def send_text(self, text: str) -> None:
        self.send(0x1, text.encode())

    def send(self, opcode: int, payload: bytes) -> None:
        """One masked frame, as a client must send it (payloads under 64 KiB)."""
        mask = os.urandom(4)
        size = len(payload)
        first = 0x80 | opcode
        header = (
            bytes((first, 0x80 | size))
            if size < 126
            else bytes((first, 0xFE)) + size.to_bytes(2, "big")
        )
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None
        self.transport.write(header + mask + masked)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(bytes(buffer[:end]).decode()))
                return
            del buffer[: end + 4]
            self._upgraded = True
            self.opened.set_result(None)
        size = len(buffer)
        position = count = 0
        last_start = last_end = 0
        while size - position >= 2:
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = (buffer[position + 2] << 8) | buffer[position + 3]
                start = position + 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                start = position + 10
            end = start + length
            if end > size:
                break
            opcode = buffer[position] & 0x0F
            if opcode == 0x9:  # a ping: both servers close a connection that never answers
                self.send(0xA, bytes(buffer[start:end]))
            elif self.setup is not None:
                self.setup.put_nowait(bytes(buffer[start:end]))
            elif opcode in (1, 2):
                count += 1
                last_start, last_end = start, end
            position = end
        if count:
            self._counter.frames += count
            self._counter.last_frame_ns = time.monotonic_ns()
            if not self.done and buffer.find(MARKER, last_start, last_end) >= 0:
                self.done = True
                self._counter.finished(self)
        del buffer[:position]


class _Counter:
    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.frames = 0
        self.done = 0
        self.last_ns = 0  # when the last client got the last quote
        self.last_frame_ns = 0  # when any client last got a frame
        self.all_done = asyncio.Event()

    def reset(self) -> None:
        self.frames = self.done = self.last_ns = self.last_frame_ns = 0
        self.all_done = asyncio.Event()

    def finished(self, client: _Client) -> None:
        self.done += 1
        self.last_ns = time.monotonic_ns()
        if self.done == self.clients:
            self.all_done.set()


async def _open(url: str, counter: _Counter, auth: tuple[str, str] | None) -> _Client:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: _Client(f"{host}:{port}", parts.path or "/", counter), host, port
    )
    await asyncio.wait_for(client.opened, 30)
    if auth is not None:
        assert client.setup is not None
        await _expect(client.setup, b'"connected"')
        key, secret = auth
        client.send_text(json.dumps({"action": "auth", "key": key, "secret": secret}))
        await _expect(client.setup, b'"authenticated"')
        client.send_text(json.dumps({"action": "subscribe", "quotes": [SYMBOL]}))
        await _expect(client.setup, b'"subscription"')
    client.setup = None
    return client


async def _expect(frames: asyncio.Queue[bytes], word: bytes) -> None:
    frame = await asyncio.wait_for(frames.get(), 30)
    if word not in frame:
        raise ConnectionError(f"expected {word!r}, got {frame!r}")


async def _clients_main(url: str, clients: int) -> None:
    key, secret = os.environ.get("BOURSE_FANOUT_KEY"), os.environ.get("BOURSE_FANOUT_SECRET")
    auth = (key, secret) if key and secret else None
    _raise_file_limit(clients + 256)
    counter = _Counter(clients)
    opened = [await _open(url, counter, auth)]  # the first pays for the key check alone
    for first in range(1, clients, 50):
        batch = range(first, min(first + 50, clients))
        opened += await asyncio.gather(*(_open(url, counter, auth) for _ in batch))
    _say({"connected": len(opened)})
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).strip()
        if line in (b"", b"quit"):
            break
        counter.reset()
        for client in opened:
            client.done = False
        _say({"ready": True})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(counter.all_done.wait(), ROUND_TIMEOUT)
        _say(
            {
                "frames": counter.frames,
                "done": counter.done,
                "last_ns": counter.last_ns or counter.last_frame_ns,
                "lost": sum(client.lost for client in opened),
            }
        )
    for client in opened:
        if client.transport is not None:
            client.transport.close()


def _say(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="fanout benchmark clients (a child process)")
    parser.add_argument("url")
    parser.add_argument("clients", type=int)
    args = parser.parse_args()
    asyncio.run(_clients_main(args.url, args.clients))


if __name__ == "__main__":
    main()
