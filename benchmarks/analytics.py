"""`bourse bench analytics`: the analytics service against a consumer that only decodes.

All readers take the same simulated market data, published once into MARKET_DATA on the same
nats-server before any starts, from the first message to the last:

- ours: `AnalyticsService` (bars in four timeframes, SMA/EMA, VWAP, NBBO, arbitrage), from
  its start until every message is applied and every output it published (bars, indicators,
  VWAP, NBBO, arbitrage) is acknowledged by JetStream in the ANALYTICS stream;
- peer: the leanest decode-only reader we could write on an ephemeral pull consumer without
  acks: pull requests of 512 answered on a core subscription whose callback decodes each
  message and does nothing more;
- context: nats-py's own pull API doing the same (`js.pull_subscribe` + `fetch(512)` +
  decode), the reader most code would write; it is about 4 times slower than the peer.

The ratio ours/peer says what share of the bare reading rate survives all the analytics. The
market is the simulator's (7 symbols on 2-3 venues, trades on ~25% of quotes) at one round
of quotes every 20 ms of market time, ~900 messages per market second. Runs alternate (peer,
ours, peer, ours...; 5 rounds, 2 with --quick) and the best of each counts, so a noisy
neighbour on this shared machine hurts both alike; ticks per CPU-second of this process (the
server excluded) are reported too, a cross-check that such load hardly moves.
`BOURSE_PROFILE=path` writes a cProfile of the whole run.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from benchmarks import Result, at_least
from benchmarks.profiling import PROFILE_ENV, profiled
from bourse.analytics.pipeline import AnalyticsConfig
from bourse.analytics.service import AnalyticsService
from bourse.bus import pull
from bourse.bus.connection import connect
from bourse.bus.server import NatsServer
from bourse.bus.streams import ANALYTICS, MARKET_DATA, provision_stream
from bourse.feed.runner import FeedRunner, replayed_batches
from bourse.feed.simulator import Simulator
from bourse.model import marketdata, subjects
from bourse.model.marketdata import MarketData

TARGET = 0.5
_BATCH = 512  # messages per pull request, for every reader (the service's default too)
STEP_NS = 20_000_000  # market time between two rounds of quotes


def market(count: int, *, seed: int = 1) -> list[MarketData]:
    """`count` simulated messages, one round of quotes every STEP_NS, ending about now."""
    simulator = Simulator(seed=seed)
    per_round = len(simulator.symbols) * 2  # a rough guess: only where the run starts
    start = time.time_ns() - count // per_round * STEP_NS
    out: list[MarketData] = []
    rounds = 0
    while len(out) < count:
        out.extend(simulator.tick(start + rounds * STEP_NS))
        rounds += 1
    return out[:count]


async def _raw_pull(nc: NATS, count: int) -> tuple[float, float]:
    """Ticks per second (wall clock, CPU) of the leanest reader: pull requests of 512
    answered on a core subscription whose callback decodes each message."""
    name = f"raw_{nc.new_inbox().rsplit('.', 1)[-1]}"
    config = pull.ConsumerConfig(
        name=name, deliver_policy="all", ack_policy="none", mem_storage=True, num_replicas=1
    )
    next_subject = pull.next_message_subject(MARKET_DATA.name, name)
    request = msgspec.json.encode(pull.PullRequest(batch=_BATCH, expires=pull.nanos(5)))
    inbox = nc.new_inbox()
    done = asyncio.Event()
    decoded = in_batch = 0
    decode = marketdata.decode

    async def on_message(msg: Msg) -> None:
        nonlocal decoded, in_batch
        if not msg.data:  # a status (the request expired): ask again
            in_batch = 0
            await nc.publish(next_subject, request, reply=inbox)
            return
        decode(msg.data)
        decoded += 1
        in_batch += 1
        if decoded >= count:
            done.set()
        elif in_batch == _BATCH:
            in_batch = 0
            await nc.publish(next_subject, request, reply=inbox)

    started, cpu = time.perf_counter(), time.process_time()
    await pull.create_consumer(nc, MARKET_DATA.name, name, config)
    subscription = await nc.subscribe(inbox, cb=on_message, pending_msgs_limit=-1)
    await nc.publish(next_subject, request, reply=inbox)
    await asyncio.wait_for(done.wait(), 600)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await subscription.unsubscribe()
    await pull.delete_consumer(nc, MARKET_DATA.name, name)
    return count / elapsed, count / cpu


async def _fetch_loop(nc: NATS, count: int) -> float:
    """Ticks per second of nats-py's own pull API, decoding each message and nothing more."""
    js = nc.jetstream()
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
    started = time.perf_counter()
    subscription = await js.pull_subscribe(
        subjects.ALL_MARKET_DATA, stream=MARKET_DATA.name, config=config
    )
    decoded = 0
    decode = marketdata.decode
    while decoded < count:
        for msg in await subscription.fetch(batch=_BATCH, timeout=5):
            decode(msg.data)
            decoded += 1
    elapsed = time.perf_counter() - started
    await subscription.unsubscribe()
    return count / elapsed


async def _ours(nc: NATS, count: int, run: int) -> tuple[float, float, AnalyticsService]:
    """Ticks per second (wall clock, CPU) of the analytics service, from its start until its
    outputs are acknowledged."""
    # A new ANALYTICS for every run: a purge would keep the duplicate window, and the outputs
    # of a second run would be dropped as duplicates instead of stored.
    js = nc.jetstream()
    await js.delete_stream(ANALYTICS.name)
    await provision_stream(js, ANALYTICS, replicas=1)
    config = AnalyticsConfig(start="first", snapshot_interval=3600.0)
    service = AnalyticsService(nc, config, name=f"bench-analytics-{run}")
    started, cpu = time.perf_counter(), time.process_time()
    await service.start()
    await service.wait_caught_up(timeout=600)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await service.abort()  # no final snapshot: not part of the figure
    if service.stats.ticks_in != count:
        raise RuntimeError(f"the service applied {service.stats.ticks_in} of {count} messages")
    return count / elapsed, count / cpu, service


async def run(quick: bool) -> Result:
    count = 20_000 if quick else 200_000
    rounds = 2 if quick else 5
    messages = market(count)
    with tempfile.TemporaryDirectory() as tmp:
        async with NatsServer(store_dir=Path(tmp), monitor=False) as server:
            nc = await connect(server.url, name="bench-analytics")
            js = nc.jetstream()
            for spec in (MARKET_DATA, ANALYTICS):
                await provision_stream(js, spec, replicas=1)
            await FeedRunner(nc, replayed_batches(messages, speed=0)).run()
            stored = (await js.stream_info(MARKET_DATA.name)).state.messages
            raw_rates: list[float] = []
            raw_cpu: list[float] = []
            our_rates: list[float] = []
            our_cpu: list[float] = []
            with profiled(os.environ.get(PROFILE_ENV)):
                fetch = await _fetch_loop(nc, count)  # context only: once
                for i in range(rounds):
                    rate, per_cpu = await _raw_pull(nc, count)
                    raw_rates.append(rate)
                    raw_cpu.append(per_cpu)
                    rate, per_cpu, service = await _ours(nc, count, i)
                    our_rates.append(rate)
                    our_cpu.append(per_cpu)
            outputs = (await js.stream_info(ANALYTICS.name)).state.messages
            await nc.close()
    peer, ours = max(raw_rates), max(our_rates)
    ratio = at_least(ours / peer)
    stats = service.stats
    return {
        "name": "analytics",
        "ratio": ratio,
        "target": TARGET,
        "met": ratio >= TARGET and stored == count and stats.skipped == 0,
        "ours_ticks_per_s": round(ours),
        "peer_ticks_per_s": round(peer),
        "peer": "decode-only reader: pull requests of 512 on a core subscription, no acks",
        "cpu_ratio": round(max(our_cpu) / max(raw_cpu), 3),
        "ours_ticks_per_cpu_s": round(max(our_cpu)),
        "peer_ticks_per_cpu_s": round(max(raw_cpu)),
        "context_nats_py_fetch_decode_ticks_per_s": round(fetch),
        "context_ratio_to_nats_py_fetch": round(ours / fetch, 3),
        "ours": "AnalyticsService: bars 1Sec/1Min/5Min/1Hour per venue and consolidated, SMA 20, "
        "EMA 12/26, VWAP, NBBO, arbitrage; outputs acknowledged by JetStream",
        "ticks": count,
        "ticks_stored": stored,
        "outputs_published": stats.messages_out,
        "outputs_stored": outputs,
        "outputs_per_tick": round(stats.messages_out / count, 3),
        "market_seconds": round((messages[-1].ts - messages[0].ts) / 1e9, 1),
        "runs": {
            "ours": [round(r) for r in our_rates],
            "peer": [round(r) for r in raw_rates],
        },
    }
