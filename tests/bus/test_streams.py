from __future__ import annotations

import pytest
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from bourse.bus.streams import (
    DAY,
    DUPLICATE_WINDOW,
    MARKET_DATA,
    PLATFORM_STREAMS,
    provision_stream,
    provision_streams,
)
from bourse.errors import StreamConfigConflict


async def test_provisioning_creates_the_streams_as_specified(nc) -> None:
    js: JetStreamContext = nc.jetstream()
    infos = await provision_streams(js)
    by_name = {info.config.name: info.config for info in infos}
    assert set(by_name) >= {"MARKET_DATA", "ORDERS", "POSITIONS", "RISK", "DEAD_LETTERS"}
    assert set(by_name) == {spec.name for spec in PLATFORM_STREAMS}
    assert by_name["MARKET_DATA"].subjects == ["md.>"]
    assert by_name["MARKET_DATA"].max_age == 24 * 3600
    assert by_name["ORDERS"].max_age == 30 * DAY
    assert by_name["POSITIONS"].max_bytes == 1024**3
    assert by_name["RISK"].max_age == 7 * DAY
    assert by_name["ANALYTICS"].subjects == ["analytics.>"]
    assert by_name["ANALYTICS"].max_age == 7 * DAY
    for config in by_name.values():
        assert config.storage == StorageType.FILE
        assert config.duplicate_window == DUPLICATE_WINDOW == 120
        assert config.num_replicas == 1


async def test_provisioning_twice_changes_nothing(nc) -> None:
    js: JetStreamContext = nc.jetstream()
    first = await provision_streams(js)
    second = await provision_streams(js)
    assert [i.created for i in first] == [i.created for i in second]
    assert [i.config for i in first] == [i.config for i in second]


async def test_a_drifted_setting_is_brought_back(nc) -> None:
    js: JetStreamContext = nc.jetstream()
    await js.add_stream(
        StreamConfig(name="MARKET_DATA", subjects=["md.>"], storage=StorageType.FILE, max_age=60)
    )
    info = await provision_stream(js, MARKET_DATA, replicas=1)
    assert info.config.max_age == 24 * 3600
    assert info.config.duplicate_window == DUPLICATE_WINDOW


async def test_a_setting_nats_cannot_change_is_reported(nc) -> None:
    js: JetStreamContext = nc.jetstream()
    await js.add_stream(
        StreamConfig(name="MARKET_DATA", subjects=["md.>"], storage=StorageType.MEMORY)
    )
    with pytest.raises(StreamConfigConflict) as caught:
        await provision_stream(js, MARKET_DATA, replicas=1)
    assert caught.value.field == "storage"
    assert "nats stream rm MARKET_DATA" in str(caught.value)
    info = await js.stream_info("MARKET_DATA")
    assert info.config.storage == StorageType.MEMORY, "nothing was changed"
