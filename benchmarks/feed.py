"""`bourse bench feed`: simulator -> MARKET_DATA -> consumer, against a raw nats-py loop.

Ours: the simulator's ticks published through the feed runner (pipelined JetStream acks with
a bounded window and message ids), stored in MARKET_DATA, and read back by a durable pull
consumer in a second process that decodes and counts every tick; the clock stops when the
consumer has counted the last one.

Peer: the plainest correct nats-py loop that stores ticks in the same stream on the same
server, `await js.publish(subject, payload)` once per pre-encoded tick (it waits for each
ack, as a publish that matters must). Also reported, for context only: the rate of core
`nc.publish` with no ack at all (fire and forget; nothing confirms it was stored).
"""

from __future__ import annotations

import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import Result, at_least
from bourse.bus.connection import connect
from bourse.bus.server import NatsServer
from bourse.bus.streams import MARKET_DATA, provision_stream
from bourse.feed.runner import FeedRunner, simulated_batches
from bourse.feed.simulator import Simulator
from bourse.model import marketdata, subjects

TARGET = 3.0


async def _peer_rate(url: str, payload: bytes, count: int) -> float:
    nc = await connect(url, name="bench-peer")
    js = nc.jetstream()
    subject = subjects.market_data("nyse", "AAPL")
    started = time.perf_counter()
    for _ in range(count):
        await js.publish(subject, payload)
    elapsed = time.perf_counter() - started
    await nc.close()
    return count / elapsed


async def _core_rate(url: str, payload: bytes, count: int) -> float:
    nc = await connect(url, name="bench-core")
    subject = subjects.market_data("nyse", "AAPL")
    started = time.perf_counter()
    for _ in range(count):
        await nc.publish(subject, payload)
    await nc.flush()
    elapsed = time.perf_counter() - started
    await nc.close()
    return count / elapsed


CONSUMER = """
import asyncio, sys, time
from nats.js.api import AckPolicy, ConsumerConfig
from bourse.bus.connection import connect
from bourse.model import marketdata
async def main(url, durable, total):
    nc = await connect(url, name="bench-consumer")
    js = nc.jetstream()
    # Ack-all: acknowledging the last message of a fetched batch acknowledges the batch.
    config = ConsumerConfig(ack_policy=AckPolicy.ALL, max_ack_pending=20_000)
    sub = await js.pull_subscribe("md.>", durable=durable, stream="MARKET_DATA", config=config)
    print("ready", flush=True)
    count = bad = 0
    while count < total:
        try:
            msgs = await sub.fetch(batch=2000, timeout=1)
        except Exception:
            continue
        for msg in msgs:
            try:
                marketdata.decode(msg.data)
                count += 1
            except Exception:
                bad += 1
        await msgs[-1].ack()
    print(count, bad, time.time(), flush=True)
    await nc.close()
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def run(quick: bool) -> Result:
    total = 20_000 if quick else 200_000
    peer_count = 3_000 if quick else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        async with NatsServer(store_dir=Path(tmp), monitor=False) as server:
            nc = await connect(server.url, name="bench-feed")
            js = nc.jetstream()
            await provision_stream(js, MARKET_DATA, replicas=1)
            consumer = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CONSUMER,
                server.url,
                "bench",
                str(total),
                stdout=asyncio.subprocess.PIPE,
            )
            assert consumer.stdout is not None
            await consumer.stdout.readline()  # "ready"
            runner = FeedRunner(nc, simulated_batches(Simulator(seed=1), rate=0), limit=total)
            started_wall = time.time()
            stats = await runner.run()
            line = (await consumer.stdout.readline()).decode().split()
            await consumer.wait()
            consumed, bad, finished_wall = int(line[0]), int(line[1]), float(line[2])
            elapsed = finished_wall - started_wall
            ours = consumed / elapsed
            latency = runner.publisher.stats.latency
            info = await js.stream_info(MARKET_DATA.name)
            # Ack latency without queueing: the same feed paced well below saturation.
            paced = FeedRunner(
                nc, simulated_batches(Simulator(seed=2), rate=2000), limit=total // 50
            )
            await paced.run()
            paced_latency = paced.publisher.stats.latency
            await nc.close()
            # The peers run after ours, so nothing they publish can reach our consumer.
            sample = Simulator(seed=0).tick(time.time_ns())[0]
            payload = marketdata.encode(sample)
            peer = await _peer_rate(server.url, payload, peer_count)
            core = await _core_rate(server.url, payload, peer_count * 5)
    lost = stats.messages - consumed
    ratio = at_least(ours / peer)
    return {
        "name": "feed",
        "ratio": ratio,
        "target": TARGET,
        "met": ratio >= TARGET and lost == 0 and bad == 0,
        "ours_ticks_per_s": round(ours),
        "peer_ticks_per_s": round(peer),
        "peer": "nats-py loop: await js.publish(subject, pre-encoded tick), one tick per message",
        "context_core_publish_no_ack_per_s": round(core),
        "ticks_published": stats.messages,
        "ticks_stored": info.state.messages,
        "ticks_consumed": consumed,
        "lost": lost,
        "publish_ack_latency_ms": {
            "p50": round(latency.percentile(50) / 1e6, 3),
            "p99": round(latency.percentile(99) / 1e6, 3),
            "note": "feed at full speed: includes queueing in the bounded in-flight window",
        },
        "publish_ack_latency_ms_paced_2000_per_s": {
            "p50": round(paced_latency.percentile(50) / 1e6, 3),
            "p99": round(paced_latency.percentile(99) / 1e6, 3),
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
