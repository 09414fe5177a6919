from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from bourse.bus.publisher import AckedPublisher, PublishError
from bourse.bus.server import NatsServer
from bourse.bus.streams import MARKET_DATA
from bourse.model import subjects


async def test_every_message_is_acknowledged_and_stored(nc, js: JetStreamContext) -> None:
    publisher = await AckedPublisher(nc, max_in_flight=64).start()
    for i in range(1000):
        await publisher.publish(subjects.market_data("nyse", "AAPL"), b"%d" % i, msg_id=f"m{i}")
        assert publisher.in_flight <= 64
    await publisher.flush()
    await publisher.close()
    info = await js.stream_info(MARKET_DATA.name)
    assert info.state.messages == 1000
    assert publisher.stats.acked == 1000
    assert publisher.stats.latency.percentile(99) >= publisher.stats.latency.percentile(50) > 0


async def test_duplicate_msg_ids_are_stored_once(nc, js: JetStreamContext) -> None:
    publisher = await AckedPublisher(nc).start()
    for _ in range(3):
        await publisher.publish(subjects.market_data("nyse", "AAPL"), b"x", msg_id="same")
    await publisher.flush()
    await publisher.close()
    assert (await js.stream_info(MARKET_DATA.name)).state.messages == 1
    assert publisher.stats.duplicates == 2


async def test_a_subject_without_a_stream_is_reported(nc, js: JetStreamContext) -> None:
    publisher = await AckedPublisher(nc, ack_timeout=0.2).start()
    await publisher.publish("nowhere.at.all", b"x")
    # No stream listens: the server answers "no responders", which the publisher treats as
    # not yet stored; without a msg id it is never resent, so flush times out and says so.
    with pytest.raises(PublishError, match="unacknowledged"):
        await publisher.flush(timeout=0.5)
    await publisher.close()


async def test_broker_restart_loses_no_acknowledged_message(
    nats_server: NatsServer, nc, js: JetStreamContext
) -> None:
    publisher = await AckedPublisher(nc, max_in_flight=256, ack_timeout=0.5).start()
    subject = subjects.market_data("nyse", "MSFT")
    for i in range(500):
        await publisher.publish(subject, b"%d" % i, msg_id=f"r{i}")
    await nats_server.restart()
    for i in range(500, 1000):
        await publisher.publish(subject, b"%d" % i, msg_id=f"r{i}")
    await publisher.flush(timeout=30)
    await publisher.close()
    assert publisher.stats.acked == 1000
    info = await js.stream_info(MARKET_DATA.name)
    assert info.state.messages == 1000
