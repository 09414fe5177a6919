from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from bourse.bus import pull
from bourse.bus.connection import connect
from bourse.bus.consume import DeadLetterHeader
from bourse.bus.server import NatsServer
from bourse.bus.single_active import (
    MemoryCheckpoint,
    SingleActiveConfig,
    SingleActiveConsumer,
)
from bourse.bus.streams import DEAD_LETTERS, MARKET_DATA
from bourse.errors import ConfigError
from bourse.model import subjects
from tests.bus import single_active_worker
from tests.conftest import eventually

SUBJECT = subjects.market_data("sa", "AAPL")


def _config(**overrides: object) -> SingleActiveConfig:
    settings: dict[str, object] = {
        "stream": MARKET_DATA.name,
        "consumer": "single",
        "filter_subjects": (subjects.market_data_filter("sa"),),
        "priority_timeout": 2.0,
    }
    settings.update(overrides)
    return SingleActiveConfig(**settings)  # type: ignore[arg-type]


async def _publish(js: JetStreamContext, count: int, subject: str = SUBJECT) -> None:
    for i in range(count):
        await js.publish(subject, b"%d" % i)


@pytest.fixture
async def clients(nats_server: NatsServer) -> AsyncIterator[list[NATS]]:
    """One connection per instance, as separate processes would have."""
    connections = [await connect(nats_server.url, name=f"instance-{i}") for i in range(3)]
    yield connections
    for connection in connections:
        if not connection.is_closed:
            await connection.close()


async def test_exactly_one_of_three_instances_processes_every_message_in_order(
    js: JetStreamContext, clients: list[NATS]
) -> None:
    seen: list[tuple[str, int]] = []
    instances = []
    for i, nc in enumerate(clients):
        name = f"instance-{i}"

        async def handler(delivery: pull.Delivery, name: str = name) -> None:
            seen.append((name, delivery.stream_seq))

        instances.append(await SingleActiveConsumer(nc, _config(), handler, name=name).start())

    await _publish(js, 300)
    await eventually(lambda: len(seen) >= 300, message=f"processed {len(seen)} of 300")

    assert [seq for _, seq in seen] == list(range(1, 301))
    assert len({name for name, _ in seen}) == 1
    assert [instance.is_active for instance in instances].count(True) == 1
    active = next(instance for instance in instances if instance.is_active)
    assert active.stats.processed == 300
    assert active.high_water_mark == 300
    for instance in instances:
        await instance.stop()


async def test_graceful_stop_hands_over_at_once_without_gap_or_duplicate(
    js: JetStreamContext, clients: list[NATS]
) -> None:
    seen: list[tuple[str, int]] = []
    reached = asyncio.Event()
    release = asyncio.Event()

    async def handler(name: str, delivery: pull.Delivery) -> None:
        if delivery.stream_seq == 50 and not release.is_set():
            reached.set()
            await release.wait()  # in flight when stop() is called
        seen.append((name, delivery.stream_seq))

    # A priority timeout far longer than the test: only the unpin can explain a handover.
    # At most 40 messages wait for the first instance: it finishes those when it stops.
    config = _config(priority_timeout=60.0, batch=20, max_ack_pending=40)
    first = await SingleActiveConsumer(
        clients[0], config, lambda d: handler("first", d), name="first"
    ).start()
    await _publish(js, 200)
    await asyncio.wait_for(reached.wait(), 10)
    second = await SingleActiveConsumer(
        clients[1], config, lambda d: handler("second", d), name="second"
    ).start()

    stopping = asyncio.create_task(first.stop())
    release.set()
    await stopping
    assert not first.is_active
    await eventually(lambda: len(seen) >= 200, message=f"processed {len(seen)} of 200")

    assert [seq for _, seq in seen] == list(range(1, 201))
    handed_over_at = next(i for i, (name, _) in enumerate(seen) if name == "second")
    assert 50 <= handed_over_at <= 90  # what was in flight was finished by the first instance
    assert {name for name, _ in seen[:handed_over_at]} == {"first"}
    assert {name for name, _ in seen[handed_over_at:]} == {"second"}
    assert second.is_active
    await second.stop()


async def test_a_failing_handler_parks_the_message_and_the_loop_goes_on(
    js: JetStreamContext, clients: list[NATS]
) -> None:
    attempts: dict[int, int] = {}
    applied: list[int] = []

    async def handler(delivery: pull.Delivery) -> None:
        attempts[delivery.stream_seq] = attempts.get(delivery.stream_seq, 0) + 1
        if delivery.stream_seq == 3:
            raise ValueError("cannot apply this one")
        applied.append(delivery.stream_seq)

    consumer = await SingleActiveConsumer(clients[0], _config(max_attempts=2), handler).start()
    await _publish(js, 6)
    await eventually(lambda: len(applied) == 5)

    assert applied == [1, 2, 4, 5, 6]
    assert attempts[3] == 2
    assert consumer.stats.handler_errors == 2
    await eventually(lambda: consumer.stats.dead_lettered == 1)
    parked = await js.get_last_msg(DEAD_LETTERS.name, subjects.dead_letter(SUBJECT))
    assert parked.data == b"2"
    assert parked.headers is not None
    assert parked.headers[DeadLetterHeader.SEQUENCE] == "3"
    assert parked.headers[DeadLetterHeader.SUBJECT] == SUBJECT
    assert "ValueError: cannot apply this one" in parked.headers[DeadLetterHeader.ERROR]
    await consumer.stop()


async def test_messages_at_or_below_the_checkpoint_are_acked_not_processed(
    js: JetStreamContext, clients: list[NATS]
) -> None:
    applied: list[int] = []

    async def handler(delivery: pull.Delivery) -> None:
        applied.append(delivery.stream_seq)

    checkpoint = MemoryCheckpoint(seq=4)
    consumer = await SingleActiveConsumer(
        clients[0], _config(), handler, checkpoint=checkpoint
    ).start()
    await _publish(js, 10)
    await eventually(lambda: len(applied) == 6)

    assert applied == [5, 6, 7, 8, 9, 10]
    assert consumer.stats.duplicates == 4
    assert checkpoint.seq == 10
    await eventually(lambda: _ack_floor_is(clients[1], 10))
    await consumer.stop()


async def _ack_floor_is(nc: NATS, seq: int) -> bool:
    info = await pull.consumer_info(nc, MARKET_DATA.name, "single")
    return info.ack_floor.stream_seq == seq and info.num_ack_pending == 0


async def test_a_standby_stays_idle_and_reports_it(
    js: JetStreamContext, clients: list[NATS]
) -> None:
    applied: list[str] = []
    first = await SingleActiveConsumer(
        clients[0], _config(), lambda d: _record(applied, "first"), name="first"
    ).start()
    await _publish(js, 1)
    await first.wait_active()
    second = await SingleActiveConsumer(
        clients[1], _config(), lambda d: _record(applied, "second"), name="second"
    ).start()
    await _publish(js, 20)
    await eventually(lambda: len(applied) == 21)

    assert set(applied) == {"first"}
    assert first.is_active and first.pin_id
    assert not second.is_active and second.pin_id is None
    assert second.stats.processed == 0
    await second.stop()
    await first.stop()


async def test_after_an_operator_unpins_one_instance_goes_on_and_nothing_is_lost(
    js: JetStreamContext, clients: list[NATS]
) -> None:
    seen: list[tuple[str, int]] = []

    async def handler(name: str, delivery: pull.Delivery) -> None:
        seen.append((name, delivery.stream_seq))

    config = _config()
    first = await SingleActiveConsumer(
        clients[0], config, lambda d: handler("first", d), name="first"
    ).start()
    await _publish(js, 10)
    await eventually(lambda: len(seen) == 10)
    second = await SingleActiveConsumer(
        clients[1], config, lambda d: handler("second", d), name="second"
    ).start()

    # `nats consumer unpin`: the server forgets the pin and pins anew (either instance) when
    # it next has a message to deliver; an instance left with the old pin id stands by.
    old_pin = first.pin_id
    await pull.unpin_consumer(clients[2], MARKET_DATA.name, config.consumer, config.group)
    await _publish(js, 30)
    await eventually(lambda: len(seen) == 40, message=f"processed {len(seen)} of 40")

    assert [seq for _, seq in seen] == list(range(1, 41))
    assert [first.is_active, second.is_active].count(True) == 1
    active = first if first.is_active else second
    assert active.pin_id != old_pin
    assert first.stats.activations + second.stats.activations == 2
    await first.stop()
    await second.stop()


async def _record(applied: list[str], name: str) -> None:
    applied.append(name)


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"consumer": "has.dots"}, "consumer"),
        ({"group": ""}, "group"),
        ({"priority_timeout": 0.0}, "priority_timeout"),
        ({"batch": 0}, "batch"),
        ({"filter_subjects": ("md..x",)}, "subject filter"),
    ],
)
def test_bad_settings_are_refused_with_what_is_accepted(
    overrides: dict[str, object], setting: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(**overrides)
    assert caught.value.setting == setting
    assert "accepted" in str(caught.value)


# --- failover of a killed process -------------------------------------------------------------


def _ledger(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS processed (seq INTEGER, instance TEXT)")
    db.execute("CREATE TABLE IF NOT EXISTS workers (name TEXT, pid INTEGER)")
    db.commit()
    return db


def _count(db: sqlite3.Connection, table: str) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


async def test_a_standby_continues_when_the_active_process_is_killed(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    db = _ledger(tmp_path / "ledger.sqlite")
    subject = subjects.market_data("failover", "AAPL")
    names = [f"worker-{i}" for i in range(3)]
    processes = []
    try:
        for name in names:
            log = (tmp_path / f"{name}.log").open("wb")
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    single_active_worker.__file__,
                    nats_server.url,
                    str(tmp_path / "ledger.sqlite"),
                    name,
                    "1.0",
                    stdout=log,
                    stderr=log,
                )
            )
        await eventually(lambda: _count(db, "workers") == 3, timeout=30)

        await _publish(js, 100, subject)
        await eventually(lambda: _count(db, "processed") == 100)
        rows = db.execute("SELECT instance FROM processed ORDER BY rowid").fetchall()
        active = rows[-1][0]
        (pid,) = db.execute("SELECT pid FROM workers WHERE name = ?", (active,)).fetchone()

        await _publish(js, 300, subject)
        await eventually(lambda: _count(db, "processed") > 120)
        os.kill(pid, signal.SIGKILL)  # mid-stream, without unpinning or acking
        await eventually(
            lambda: _count(db, "processed") >= 400,
            timeout=30,
            message=f"processed {_count(db, 'processed')} of 400",
        )

        processed = db.execute("SELECT seq, instance FROM processed ORDER BY rowid").fetchall()
        assert [seq for seq, _ in processed] == list(range(1, 401)), "a gap or a duplicate"
        owners = [instance for _, instance in processed]
        switch = next(i for i, owner in enumerate(owners) if owner != active)
        assert switch > 120
        assert set(owners[:switch]) == {active}
        assert len(set(owners[switch:])) == 1  # exactly one standby took over
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        db.close()
