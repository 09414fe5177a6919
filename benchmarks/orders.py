"""`bourse bench orders`: an order's trip through the exchange, over NATS, HTTP and WebSocket.

The exchange runs in a child process wired as `bourse up` wires it (the broker apart), on the
event loop `bourse up` runs (uvloop; `BOURSE_EVENT_LOOP=asyncio` for the standard one): the
platform's streams, the accounts and engine services, the accounts' ledger queries and the
gateway (read model and REST API), with two funded accounts and a reference price for AAPL.
This process is the client, so its pacing and its clocks do not share an event loop with the
services they measure.

Every order is a limit order for 1 AAPL at the reference price, alternately a sell from one
account (it rests) and a buy from the other (it crosses), so half of them execute.

- Over NATS: OrderSubmitted, stamped with the reference price as the gateway stamps it, goes
  to `orders.new` through JetStream (pipelined acks, a `Nats-Msg-Id` per order); it is timed
  from the publish to the engine's first word on it (`orders.<accepted|executed|cancelled|
  rejected>.<id>`, read with core NATS wildcard subscriptions).
- Over HTTP: POST /v2/orders on keep-alive connections (at most 32 requests at once), timed
  from request to response; the gateway answers once the engine has spoken (gateway/desk.py).
- Over WebSocket: `submit_order` on the gateway's `/stream`, one connection per account,
  timed from the frame sent to its `order_responses` answer (the same desk behind it).

Each path runs at a moderate fixed rate (its latency), then in steps of a few seconds at
doubling rates, then bisecting between the highest rate held and the lowest one missed until
they are within 12.5 % of each other. A step is held when every order got the expected
answer within GRACE of the step's scheduled end: a platform slower than the offered rate
builds a backlog that cannot drain that fast.
Each step also reports the exchange process's CPU time per order (all its threads, and the
event loop's alone), a figure that moves far less than wall-clock ones on a shared machine.

Peers, in the same run on the same server: a NATS request/reply round trip to a trivial
responder in the exchange process (target: the order p50 over NATS at most 30x its p50), and
the raw rate of nats-py's `js.publish_async` with 512 in flight and message ids, into a
scratch stream configured as ORDERS is, measured before the NATS ramp and again after it, the
faster of the two counting (target: the rate held over NATS at least 0.1x of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import resource
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from benchmarks import Result, at_least, at_most
from bourse.accounts.service import accounts_service, serve_queries
from bourse.bus.connection import connect
from bourse.bus.publisher import MSG_ID_HEADER, AckedPublisher, LatencySample
from bourse.bus.server import NatsServer
from bourse.bus.streams import HOUR, StreamSpec, provision_stream, provision_streams
from bourse.engine.service import engine_service
from bourse.gateway.app import open_account
from bourse.gateway.server import Gateway, GatewayConfig
from bourse.model import marketdata, orders, subjects

log = logging.getLogger(__name__)

RATE_TARGET = 0.1  # orders/s held over NATS, at least this fraction of the raw publish rate
LATENCY_TARGET = 30.0  # order p50 over NATS, at most this multiple of a request/reply p50
SYMBOL = "AAPL"
PRICE = Decimal("100.00")
CASH = Decimal(10**9)  # enough for every buy of a full run (one share each)
ECHO_SUBJECT = "bench.echo"
CPU_SUBJECT = "bench.cpu"  # the exchange process answers with the CPU time it has used
PEER_STREAM = StreamSpec(
    name="BENCH_PEER",
    subjects=("bench.peer",),
    description="scratch stream of the orders benchmark's publish peer",
    max_age=HOUR,
)
IN_FLIGHT = 512  # unacknowledged publishes, ours and the peer's alike
HTTP_CONNECTIONS = 32
PRECISION = 1.125  # the ramp stops when the lowest rate missed is within 12.5 % of the highest held
GRACE = 0.5  # seconds after a step's scheduled end for its last answer
DRAIN_TIMEOUT = 30.0  # seconds to wait for late answers before counting an order lost
ENGINE_OUTCOMES = frozenset({"accepted", "executed", "cancelled", "rejected"})
NATS_ANSWERS = frozenset({"accepted", "executed"})
HTTP_ANSWERS = frozenset({"new", "partially_filled", "filled"})


@dataclass(frozen=True)
class Plan:
    paced_seconds: float
    step_seconds: float
    nats_paced: float  # orders/s
    nats_ramp: tuple[float, float]  # first rate, highest rate tried
    http_paced: float
    http_ramp: tuple[float, float]
    warmup: int  # orders per path before anything is measured
    round_trips: int
    peer_messages: int


FULL = Plan(
    paced_seconds=5.0,
    step_seconds=3.0,
    nats_paced=100,
    nats_ramp=(250, 64_000),
    http_paced=20,
    http_ramp=(25, 6_400),
    warmup=100,
    round_trips=2_000,
    peer_messages=50_000,
)
QUICK = Plan(
    paced_seconds=0.5,
    step_seconds=0.5,
    nats_paced=100,
    nats_ramp=(100, 200),
    http_paced=20,
    http_ramp=(20, 40),
    warmup=10,
    round_trips=100,
    peer_messages=2_000,
)


# ---- the exchange, in its own process ----


async def serve_exchange(nats_url: str, home: str) -> None:
    """Run the exchange until stdin closes. Prints one JSON line with the gateway's URL and
    two traders' credentials once it is ready, and one with its services' counts at the end."""
    nc = await connect(nats_url, name="bench-exchange")
    await provision_streams(nc.jetstream())
    accounts, engine = accounts_service(nc), engine_service(nc)
    await accounts.start()
    await engine.start()
    queries = await serve_queries(nc, accounts)

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    async def cpu(msg: Msg) -> None:
        # User + system seconds: the whole process, and the event loop's thread alone.
        await msg.respond(json.dumps([time.process_time(), time.thread_time()]).encode())

    echoes = await nc.subscribe(ECHO_SUBJECT, cb=echo)
    cpu_queries = await nc.subscribe(CPU_SUBJECT, cb=cpu)
    gateway = Gateway(nc, GatewayConfig(port=0, rate=1e9, burst=10**9), home=Path(home))
    await gateway.start()
    assert gateway.context is not None
    await _quote_reference(nc, gateway)
    traders = [
        await open_account(gateway.context, cash=CASH, shorting_enabled=True) for _ in range(2)
    ]
    print(json.dumps({"url": gateway.url, "traders": traders}), flush=True)
    await asyncio.to_thread(sys.stdin.buffer.read)  # the client closes it when done
    await gateway.stop()
    await echoes.unsubscribe()
    await cpu_queries.unsubscribe()
    await queries.unsubscribe()
    await engine.stop()
    await accounts.stop()
    counts = {
        service.name: {"applied": service.stats.applied, "published": service.stats.published}
        for service in (accounts, engine)
    }
    assert gateway.readmodel is not None
    read_model = {
        stream: {"applied": stats.applied, "batches": stats.batches}
        for stream, stats in gateway.readmodel.stats.items()
    }
    rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(
        json.dumps({"services": counts, "read_model": read_model, "peak_rss_mb": rss_mb}),
        flush=True,
    )
    await nc.drain()


async def _quote_reference(nc: NATS, gateway: Gateway) -> None:
    """Quote SYMBOL around PRICE on two external venues; wait until the gateway has it."""
    instrument = gateway.desk.instruments[SYMBOL]
    for seq, venue in enumerate(instrument.venues[:2], start=1):
        quote = marketdata.Quote(
            symbol=SYMBOL,
            venue=venue,
            bid=PRICE - instrument.tick_size,
            ask=PRICE + instrument.tick_size,
            bid_size=Decimal(100),
            ask_size=Decimal(100),
            last=PRICE,
            last_size=Decimal(1),
            volume=Decimal(1000),
            ts=time.time_ns(),
            seq=seq,
        )
        await nc.publish(subjects.market_data(venue, SYMBOL), marketdata.encode(quote))
    for _ in range(1000):  # the gateway has no event for a new price: poll, for up to 10 s
        if gateway.prices.get(SYMBOL) == PRICE:
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the gateway never saw the reference price of {SYMBOL}")


# BOURSE_PROFILE=<path> in the environment: cProfile the whole exchange process, every thread,
# into <path> (benchmarks/profiling.py).
EXCHANGE = (
    "import os, sys\n"
    "from benchmarks.orders import serve_exchange\n"
    "from benchmarks.profiling import PROFILE_ENV, profiled\n"
    "from bourse.cli.common import run_loop\n"
    "with profiled(os.environ.get(PROFILE_ENV)):\n"
    "    run_loop(serve_exchange(sys.argv[1], sys.argv[2]))\n"
)


@dataclass(frozen=True)
class Trader:
    account_id: str
    key_id: str
    secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"APCA-API-KEY-ID": self.key_id, "APCA-API-SECRET-KEY": self.secret}


class ExchangeProcess:
    def __init__(self, process: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self._process = process
        self.url: str = ready["url"]
        self.seller, self.buyer = (
            Trader(t["account_id"], t["key_id"], t["secret"]) for t in ready["traders"]
        )

    @classmethod
    async def start(cls, nats_url: str, home: Path) -> ExchangeProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            EXCHANGE,
            nats_url,
            str(home),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process, await cls._line(process, "start"))

    async def stop(self) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            return await self._line(self._process, "stop")
        finally:
            await self._process.wait()

    def kill(self) -> None:
        if self._process.returncode is None:
            self._process.kill()

    @staticmethod
    async def _line(process: asyncio.subprocess.Process, what: str) -> dict[str, Any]:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 120)
        if not line:
            code = await process.wait()
            raise RuntimeError(f"the exchange process failed to {what} (exit {code}; see stderr)")
        answer: dict[str, Any] = json.loads(line)
        return answer


# ---- one step: orders at a fixed rate, and their answers ----


class Tracker:
    """When each order of one step was sent and first answered, and how."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.latency: dict[str, int] = {}
        self.outcomes: Counter[str] = Counter()
        self.first_sent = 0
        self.last_answer = 0
        self._changed = asyncio.Event()

    def on_sent(self, key: str) -> None:
        now = time.perf_counter_ns()
        self.sent[key] = now
        self.first_sent = self.first_sent or now

    def on_answer(self, key: str, outcome: str) -> None:
        sent = self.sent.get(key)
        if sent is None or key in self.latency:
            return  # another step's order, or a later outcome of an answered one
        self.last_answer = time.perf_counter_ns()
        self.latency[key] = self.last_answer - sent
        self.outcomes[outcome] += 1
        self._changed.set()

    async def wait(self, count: int, deadline: float) -> bool:
        """Wait until `count` orders are answered or `perf_counter()` passes `deadline`."""
        while len(self.latency) < count:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True


Send = Callable[[Tracker, int], Awaitable[None]]


async def run_step(rate: float, seconds: float, send: Send, expected: frozenset[str]) -> Result:
    """Send orders 0..n-1 at `rate` per second for `seconds`; report what came back."""
    count = max(2, 2 * round(rate * seconds / 2))  # whole sell/buy pairs
    tracker = Tracker()
    started = time.perf_counter()
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(tracker, i)
    behind = time.perf_counter() - (started + (count - 1) / rate)
    in_time = await tracker.wait(count, started + count / rate + GRACE)
    answered_in_time = len(tracker.latency)
    if not in_time:
        await tracker.wait(count, time.perf_counter() + DRAIN_TIMEOUT)
    sample = LatencySample(capacity=len(tracker.latency) or 1)
    for value in tracker.latency.values():
        sample.add(value)
    span = (tracker.last_answer - tracker.first_sent) / 1e9
    unexpected = sum(n for outcome, n in tracker.outcomes.items() if outcome not in expected)
    return {
        "offered_per_s": rate,
        "orders": count,
        "answered": len(tracker.latency),
        "answered_in_time": answered_in_time,
        "outcomes": dict(tracker.outcomes),
        "answered_per_s": round(len(tracker.latency) / span) if span > 0 else 0,
        "latency_ms": {
            "p50": round(sample.percentile(50) / 1e6, 3),
            "p99": round(sample.percentile(99) / 1e6, 3),
            "max": round(sample.percentile(100) / 1e6, 3),
        },
        "client_behind_s": round(max(0.0, behind), 3),
        "held": answered_in_time == count and unexpected == 0,
    }


async def ramp(step: Callable[[float], Awaitable[Result]], first: float, last: float) -> Result:
    """Double the rate from `first` while steps are held (or halve it while they are not, down
    to first / 16), then bisect between the highest rate held and the lowest one missed until
    they are within PRECISION of each other."""
    steps: list[Result] = []
    held, missed = 0.0, 0.0
    rate = first
    while first / 16 <= rate <= last:
        result = await step(rate)
        steps.append(result)
        if result["held"]:
            held, rate = rate, rate * 2
        else:
            missed, rate = rate, rate / 2
        if held and missed:
            break
    while held and missed and missed > held * PRECISION:
        rate = round((held + missed) / 2)
        if rate in (held, missed):
            break  # a few orders/s apart: nothing between them to try
        result = await step(rate)
        steps.append(result)
        if result["held"]:
            held = rate
        else:
            missed = rate
    return {"held_orders_per_s": held, "lowest_missed_per_s": missed or None, "steps": steps}


# ---- the two clients ----


def _role(exchange: ExchangeProcess, i: int) -> tuple[Trader, orders.Side]:
    return (exchange.seller, "sell") if i % 2 == 0 else (exchange.buyer, "buy")


class NatsOrders:
    """Publishes OrderSubmitted on the journal; reads the engine's outcomes off the bus."""

    def __init__(self, nc: NATS, exchange: ExchangeProcess) -> None:
        self._nc = nc
        self._exchange = exchange
        self.publisher = AckedPublisher(nc, max_in_flight=IN_FLIGHT)
        self.tracker = Tracker()
        self.fills = 0  # executions of the current step's orders, both sides of each match
        self.last: tuple[Trader, str] | None = None

    async def start(self) -> None:
        await self.publisher.start()
        # The engine's outcomes only, as a trading client listens: not the accounts'
        # `orders.validated.<id>` too, one message per order that the client, sharing the
        # machine's two cores with the exchange, would decode for nothing. (Each kind is its own
        # subscription, so an order's fills may be seen before its `accepted`: either is the
        # engine's first word, published in the same batch.)
        for kind in sorted(ENGINE_OUTCOMES):
            await self._nc.subscribe(subjects.order_outcome(kind, "*"), cb=self._on_outcome)

    async def _on_outcome(self, msg: Msg) -> None:
        _, kind, order_id = msg.subject.split(".", 2)
        self.tracker.on_answer(order_id, kind)
        if kind == "executed" and order_id in self.tracker.sent:
            self.fills += 1

    async def send(self, tracker: Tracker, i: int) -> None:
        self.tracker = tracker
        trader, side = _role(self._exchange, i)
        order_id = str(uuid.uuid4())
        event = orders.OrderSubmitted(
            ts=time.time_ns(),
            order_id=order_id,
            client_order_id=order_id,
            account_id=trader.account_id,
            symbol=SYMBOL,
            side=side,
            kind="limit",
            time_in_force="gtc",
            qty=Decimal(1),
            limit_price=PRICE,
            reference_price=PRICE,
        )
        payload = orders.encode(event)
        tracker.on_sent(order_id)
        await self.publisher.publish(
            subjects.ORDERS_NEW, payload, msg_id=f"{trader.account_id}:{order_id}"
        )
        self.last = (trader, order_id)


class HttpOrders:
    """POSTs /v2/orders at most HTTP_CONNECTIONS at a time; the response is the answer."""

    def __init__(self, exchange: ExchangeProcess) -> None:
        self._exchange = exchange
        limits = httpx.Limits(
            max_connections=HTTP_CONNECTIONS, max_keepalive_connections=HTTP_CONNECTIONS
        )
        self.client = httpx.AsyncClient(base_url=exchange.url, limits=limits, timeout=30)
        self._slots = asyncio.Semaphore(HTTP_CONNECTIONS)
        self._requests: set[asyncio.Task[None]] = set()

    async def send(self, tracker: Tracker, i: int) -> None:
        await self._slots.acquire()  # a full pipe holds the sender back, behind schedule
        request = asyncio.create_task(self._post(tracker, i))
        self._requests.add(request)
        request.add_done_callback(self._requests.discard)

    async def _post(self, tracker: Tracker, i: int) -> None:
        trader, side = _role(self._exchange, i)
        body = _order_body(side)
        key = str(i)
        tracker.on_sent(key)
        try:
            response = await self.client.post("/v2/orders", json=body, headers=trader.headers)
            ok = response.status_code == 200
            tracker.on_answer(
                key, response.json()["status"] if ok else f"http {response.status_code}"
            )
        except httpx.HTTPError as error:
            tracker.on_answer(key, type(error).__name__)
        finally:
            self._slots.release()

    async def visible(self, trader: Trader, order_id: str, timeout: float = 60.0) -> float:
        """Seconds until the read model shows the order with the engine's outcome."""
        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            while True:
                response = await self.client.get(f"/v2/orders/{order_id}", headers=trader.headers)
                if response.status_code == 200 and response.json()["status"] in HTTP_ANSWERS:
                    return time.perf_counter() - started
                await asyncio.sleep(0.05)  # each poll costs the exchange an HTTP request


class WsOrders:
    """Sends submit_order on one /stream connection per trader; the answer is the response."""

    def __init__(self, exchange: ExchangeProcess) -> None:
        self._exchange = exchange
        self._url = exchange.url.replace("http", "ws", 1) + "/stream"
        self._connections: dict[str, ClientConnection] = {}
        self._readers: list[asyncio.Task[None]] = []
        # request id -> the step's tracker and the order's key there: ids run on across steps,
        # so a late answer from a missed step is not taken for the next step's order.
        self._sent: dict[int, tuple[Tracker, str]] = {}
        self._ids = itertools.count()

    async def start(self) -> None:
        for trader in (self._exchange.seller, self._exchange.buyer):
            ws = await ws_connect(self._url, max_queue=None)
            auth = {"action": "auth", "key": trader.key_id, "secret": trader.secret}
            await ws.send(_ws_encode(auth))
            authorized = msgspec.json.decode(await ws.recv())
            if authorized["data"]["status"] != "authorized":
                raise RuntimeError(f"/stream refused the benchmark's key: {authorized}")
            self._connections[trader.account_id] = ws
            self._readers.append(asyncio.create_task(self._read(ws)))

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        for ws in self._connections.values():
            await ws.close()

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                message = msgspec.json.decode(frame)
                if message["stream"] == "order_responses":
                    answer = message["data"]
                    tracker, key = self._sent.pop(answer["request_id"])
                    ok = answer["status"] == 200
                    tracker.on_answer(
                        key, answer["order"]["status"] if ok else f"ws {answer['status']}"
                    )
        except Exception:
            log.exception("the benchmark's /stream reader failed")
            raise

    async def send(self, tracker: Tracker, i: int) -> None:
        trader, side = _role(self._exchange, i)
        request_id = next(self._ids)
        self._sent[request_id] = (tracker, str(i))
        tracker.on_sent(str(i))
        await self._connections[trader.account_id].send(
            _ws_encode(
                {"action": "submit_order", "request_id": request_id, "data": _order_body(side)}
            )
        )


def _order_body(side: orders.Side) -> dict[str, str]:
    """POST /v2/orders's body (and submit_order's data) for one benchmark order."""
    return {
        "symbol": SYMBOL,
        "qty": "1",
        "side": side,
        "type": "limit",
        "time_in_force": "gtc",
        "limit_price": str(PRICE),
    }


def _ws_encode(message: dict[str, Any]) -> str:
    return msgspec.json.encode(message).decode()


# ---- peers ----


async def request_reply(nc: NATS, payload: bytes, count: int) -> LatencySample:
    for _ in range(max(10, count // 10)):  # warm-up
        await nc.request(ECHO_SUBJECT, payload, timeout=5)
    sample = LatencySample(capacity=count)
    for _ in range(count):
        started = time.perf_counter_ns()
        await nc.request(ECHO_SUBJECT, payload, timeout=5)
        sample.add(time.perf_counter_ns() - started)
    return sample


async def publish_async_rate(
    nc: NATS, payload: bytes, count: int, *, run: str
) -> tuple[float, int]:
    """Messages per second stored by `js.publish_async`, and how many were refused (`run`
    keeps each run's message ids apart: a repeated id would be a duplicate, not stored)."""
    js = nc.jetstream(publish_async_max_pending=IN_FLIGHT)
    await provision_stream(js, PEER_STREAM, replicas=1)
    subject = PEER_STREAM.subjects[0]
    await js.publish(subject, payload, headers={MSG_ID_HEADER: f"peer-{run}-warmup"})
    acks = []
    started = time.perf_counter()
    for i in range(count):
        headers = {MSG_ID_HEADER: f"peer-{run}-{i}"}
        acks.append(await js.publish_async(subject, payload, headers=headers))
    results = await asyncio.gather(*acks, return_exceptions=True)
    elapsed = time.perf_counter() - started
    return count / elapsed, sum(isinstance(r, BaseException) for r in results)


def _sample_payload(exchange: ExchangeProcess) -> bytes:
    order = orders.OrderSubmitted(
        ts=time.time_ns(),
        order_id=str(uuid.uuid4()),
        client_order_id=str(uuid.uuid4()),
        account_id=exchange.seller.account_id,
        symbol=SYMBOL,
        side="sell",
        kind="limit",
        time_in_force="gtc",
        qty=Decimal(1),
        limit_price=PRICE,
        reference_price=PRICE,
    )
    return orders.encode(order)


# ---- the benchmark ----


async def _measure(nc: NATS, exchange: ExchangeProcess, plan: Plan) -> Result:
    ours = NatsOrders(nc, exchange)
    await ours.start()
    http = HttpOrders(exchange)
    ws = WsOrders(exchange)
    await ws.start()
    steps: list[Result] = []

    async def exchange_cpu() -> tuple[float, float]:
        process, loop = json.loads((await nc.request(CPU_SUBJECT, b"", timeout=5)).data)
        return process, loop

    async def costed(step: Awaitable[Result]) -> Result:
        """The step, and the exchange process's CPU time over it (until the platform is idle)."""
        (process, loop), started = await exchange_cpu(), time.perf_counter()
        result = await step
        await asyncio.sleep(0.2)  # the accounts' position updates after the last fills
        process_end, loop_end = await exchange_cpu()
        used, wall = process_end - process, time.perf_counter() - started
        result["exchange_cpu_ms_per_order"] = {
            "process": round(used * 1000 / result["orders"], 2),
            "event_loop_thread": round((loop_end - loop) * 1000 / result["orders"], 2),
        }
        result["exchange_cpu_cores"] = round(used / wall, 2)
        steps.append(result)
        return result

    async def nats_orders(rate: float, seconds: float) -> Result:
        ours.fills = 0
        result = await run_step(rate, seconds, ours.send, NATS_ANSWERS)
        assert ours.last is not None
        # Not on the order's path, but the platform must keep up with it too.
        result["read_model_lag_s"] = round(await http.visible(*ours.last), 3)
        result["fills"] = ours.fills
        return result

    async def nats_step(rate: float, seconds: float = plan.step_seconds) -> Result:
        return await costed(nats_orders(rate, seconds))

    async def http_step(rate: float, seconds: float = plan.step_seconds) -> Result:
        return await costed(run_step(rate, seconds, http.send, HTTP_ANSWERS))

    async def ws_step(rate: float, seconds: float = plan.step_seconds) -> Result:
        return await costed(run_step(rate, seconds, ws.send, HTTP_ANSWERS))

    try:
        await nats_step(plan.nats_paced, plan.warmup / plan.nats_paced)
        await http_step(plan.http_paced, plan.warmup / plan.http_paced)
        await ws_step(plan.http_paced, plan.warmup / plan.http_paced)
        payload = _sample_payload(exchange)
        round_trip = await request_reply(nc, payload, plan.round_trips)
        peer_before, refused_before = await publish_async_rate(
            nc, payload, plan.peer_messages, run="before"
        )
        nats_paced = await nats_step(plan.nats_paced, plan.paced_seconds)
        nats_ramp = await ramp(nats_step, *plan.nats_ramp)
        # Again after the ramp: the machine's pace moves within a run, and a peer measured
        # in a slow moment alone would flatter the ratio. The faster of the two counts.
        peer_after, refused_after = await publish_async_rate(
            nc, payload, plan.peer_messages, run="after"
        )
        http_paced = await http_step(plan.http_paced, plan.paced_seconds)
        http_ramp = await ramp(http_step, *plan.http_ramp)
        ws_paced = await ws_step(plan.http_paced, plan.paced_seconds)
        ws_ramp = await ramp(ws_step, *plan.http_ramp)
    finally:
        await ours.publisher.close()
        await http.client.aclose()
        await ws.close()
    sent = sum(s["orders"] for s in steps)
    answered = sum(s["answered"] for s in steps)
    outcomes: Counter[str] = Counter()
    for s in steps:
        outcomes.update(s["outcomes"])
    return {
        "nats": {"paced": nats_paced, **nats_ramp},
        "http": {"paced": http_paced, **http_ramp},
        "websocket": {"paced": ws_paced, **ws_ramp},
        "peers": {
            "request_reply_ms": {
                "p50": round(round_trip.percentile(50) / 1e6, 3),
                "p99": round(round_trip.percentile(99) / 1e6, 3),
            },
            "jetstream_publish_async_per_s": round(max(peer_before, peer_after)),
            "jetstream_publish_async_samples_per_s": [round(peer_before), round(peer_after)],
            "jetstream_publish_async_refused": refused_before + refused_after,
            "peer": "nats-py js.publish_async, 512 in flight, Nats-Msg-Id, order-sized payload",
        },
        "orders_sent": sent,
        "orders_answered": answered,
        "lost": sent - answered,
        "outcomes": dict(outcomes),
        "journal_publish_failed": ours.publisher.stats.failed,
    }


async def run(quick: bool) -> Result:
    plan = QUICK if quick else FULL
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    load_before = round(os.getloadavg()[0], 2)
    with TemporaryDirectory() as tmp:
        async with NatsServer(store_dir=Path(tmp) / "nats", monitor=False) as server:
            home = Path(tmp) / "home"
            home.mkdir()
            exchange = await ExchangeProcess.start(server.url, home)
            try:
                nc = await connect(server.url, name="bench-orders")
                try:
                    figures = await _measure(nc, exchange, plan)
                finally:
                    await nc.close()
                exchange_stats = await exchange.stop()
            finally:
                exchange.kill()
    nats, peers = figures["nats"], figures["peers"]
    rate_ratio = at_least(nats["held_orders_per_s"] / peers["jetstream_publish_async_per_s"], 4)
    latency_ratio = at_most(nats["paced"]["latency_ms"]["p50"] / peers["request_reply_ms"]["p50"])
    rate_met = rate_ratio >= RATE_TARGET
    latency_met = latency_ratio <= LATENCY_TARGET
    sound = (
        figures["lost"] == 0
        and figures["journal_publish_failed"] == 0
        and peers["jetstream_publish_async_refused"] == 0
    )
    return {
        "name": "orders",
        "ratio": rate_ratio,
        "target": RATE_TARGET,
        "met": rate_met and latency_met and sound,
        "targets": {
            "rate": {
                "ratio": rate_ratio,
                "target": RATE_TARGET,
                "met": rate_met,
                "what": "orders/s held over NATS / raw JetStream publish_async msgs/s, >= target",
            },
            "latency": {
                "ratio": latency_ratio,
                "target": LATENCY_TARGET,
                "met": latency_met,
                "what": "order p50 over NATS (paced) / NATS request-reply p50, <= target",
            },
        },
        **figures,
        "exchange": exchange_stats,
        "machine_load_1m": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
        "client_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
