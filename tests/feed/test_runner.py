from __future__ import annotations

import asyncio

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bourse.bus.streams import MARKET_DATA
from bourse.feed.history_files import sample_stocks
from bourse.feed.runner import FeedRunner, replayed_batches, simulated_batches
from bourse.feed.simulator import Simulator
from bourse.model import marketdata
from tests.conftest import eventually


async def test_simulated_feed_lands_every_message_in_the_stream(nc, js: JetStreamContext) -> None:
    runner = FeedRunner(nc, simulated_batches(Simulator(seed=1), rate=0), limit=2000)
    stats = await runner.run()
    assert stats.messages >= 2000
    info = await js.stream_info(MARKET_DATA.name)
    assert info.state.messages == stats.messages
    assert runner.publisher.stats.acked == stats.messages


async def test_subscribers_see_one_symbol_across_venues(nc, js: JetStreamContext) -> None:
    seen: list[marketdata.MarketData] = []

    async def collect(msg: Msg) -> None:
        seen.append(marketdata.decode(msg.data))

    sub = await nc.subscribe("md.*.AAPL", cb=collect)
    runner = FeedRunner(nc, simulated_batches(Simulator(seed=2), rate=0), limit=500)
    await runner.run()
    await eventually(lambda: len({m.venue for m in seen}) == 2)
    assert {m.symbol for m in seen} == {"AAPL"}
    await sub.unsubscribe()


async def test_stop_ends_intake_and_acknowledges_everything_sent(nc, js) -> None:
    runner = FeedRunner(nc, simulated_batches(Simulator(seed=3), rate=2000))
    task = asyncio.create_task(runner.run())
    await eventually(lambda: runner.stats.messages > 100)
    runner.stop()
    stats = await task
    assert runner.publisher.in_flight == 0
    assert (await js.stream_info(MARKET_DATA.name)).state.messages == stats.messages


async def test_replayed_history_is_published_in_order(nc, js: JetStreamContext) -> None:
    messages = sample_stocks(venue="hist", symbols=["IBM"])[:400]
    runner = FeedRunner(nc, replayed_batches(messages, speed=0))
    await runner.run()
    sub = await js.subscribe("md.hist.IBM", ordered_consumer=True)
    got = [marketdata.decode((await sub.next_msg(timeout=5)).data) for _ in range(400)]
    assert got == messages
