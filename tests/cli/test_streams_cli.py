"""End to end: `bourse streams` in a subprocess against a real server with real traffic."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from rich.console import Console

from bourse.bus.monitor import ConsumerReport, StreamReport, StreamsReport
from bourse.bus.server import NatsServer
from bourse.bus.streams import MARKET_DATA
from bourse.cli.streams import render
from bourse.model import subjects
from tests.bus.test_monitor import consumer as consumer_sample
from tests.bus.test_monitor import stream
from tests.cli.helpers import BOURSE, isolated_env

_symbols = (f"CLI{n}" for n in itertools.count())


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path / "home")


async def start_bourse(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        BOURSE,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_bourse(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await start_bourse(*args, env=env)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
async def busy_stream(js: JetStreamContext) -> AsyncIterator[str]:
    """MARKET_DATA with 10 messages on a subject and a consumer: 3 delivered, unacknowledged."""
    subject = subjects.market_data("test", next(_symbols))
    for i in range(10):
        await js.publish(subject, b"%d" % i)
    await js.add_consumer(
        MARKET_DATA.name,
        ConsumerConfig(
            durable_name="cli-test",
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=60,
        ),
    )
    pull = await js.pull_subscribe_bind("cli-test", stream=MARKET_DATA.name)
    assert len(await pull.fetch(3, timeout=5)) == 3
    yield subject


async def test_the_tables_show_streams_and_a_lagging_consumer(
    nats_server: NatsServer, busy_stream: str, env: dict[str, str]
) -> None:
    code, out, err = await run_bourse(
        "streams", "--nats", nats_server.url, "--interval", "0.2", env=env
    )
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    market = next(row for row in rows if row and row[0] == MARKET_DATA.name and row[1] == "R1")
    assert market[2] == "10"  # messages (a single server: no leader column)
    consumer = next(row for row in rows if "cli-test" in row)
    # stream, consumer, lag, unacknowledged, redelivered, delivered
    assert consumer[:6] == [MARKET_DATA.name, "cli-test", "7", "3", "0", "3"]


async def test_json_reports_rates_while_messages_flow(
    nats_server: NatsServer, js: JetStreamContext, busy_stream: str, env: dict[str, str]
) -> None:
    process = await start_bourse(
        "streams", "--nats", nats_server.url, "--interval", "0.3", "--json", env=env
    )

    async def publish_until_done() -> None:
        while process.returncode is None:
            await js.publish(busy_stream, b"x" * 100)

    publishing = asyncio.create_task(publish_until_done())
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    publishing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await publishing
    assert process.returncode == 0, stderr.decode()

    report = json.loads(stdout)
    market = next(r for r in report["streams"] if r["stream"]["name"] == MARKET_DATA.name)
    assert market["messages_per_s"] > 0
    assert market["bytes_per_s"] > 100 * market["messages_per_s"]  # payload plus headers
    (consumer,) = report["consumers"]
    assert consumer["consumer"]["num_ack_pending"] == 3
    assert consumer["consumer"]["num_pending"] >= 7
    assert consumer["lag_change_per_s"] > 0  # nobody fetches: it falls behind
    assert consumer["delivered_per_s"] == 0


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
async def test_watch_refreshes_until_signalled(
    nats_server: NatsServer, busy_stream: str, env: dict[str, str], as_json: bool
) -> None:
    args = ["streams", "--nats", nats_server.url, "--interval", "0.1", "--watch"]
    process = await start_bourse(*args, *(["--json"] if as_json else []), env=env)
    assert process.stdout is not None
    frames = 0
    while frames < 3:  # three refreshes, each a full report
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line, "the watcher exited early"
        if as_json:
            assert json.loads(line)["streams"]
            frames += 1
        elif line.startswith("Streams (rates over"):
            frames += 1
    process.send_signal(signal.SIGTERM)
    _stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()


async def test_a_bad_interval_is_one_line_of_error(env: dict[str, str]) -> None:
    code, _out, err = await run_bourse(
        "streams", "--nats", "nats://127.0.0.1:1", "--interval", "0", env=env
    )
    assert code == 2
    assert (
        err.strip() == "bourse: error: invalid --interval: 0.0; accepted: a number of seconds > 0"
    )


async def test_without_a_platform_it_says_how_to_find_one(env: dict[str, str]) -> None:
    code, _out, err = await run_bourse("streams", env=env)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bourse: error:")
    assert "--nats" in lines[0]


def _report(*, leader: str | None, consumer: str) -> StreamsReport:
    """Every figure as wide as it gets: millions of messages, a long stream name."""
    big = msgspec.structs.replace(
        stream(
            "KV_bourse_leases",
            messages=1_234_567,
            size=987_654_321,
            first=1_000_001,
            last=2_234_567,
        ),
        consumer_count=12,
        replicas=3,
        leader=leader,
        current_replicas=3,
    )
    sample = msgspec.structs.replace(
        consumer_sample(consumer, delivered=9_876_543, pending=7_654_321),
        stream="MARKET_DATA",
        num_ack_pending=12_345,
        num_redelivered=678,
        ack_floor_stream_seq=9_864_198,
    )
    return StreamsReport(
        interval_s=1.0,
        streams=(StreamReport(stream=big, messages_per_s=12_345.0, bytes_per_s=3.5e6),),
        consumers=(
            ConsumerReport(consumer=sample, delivered_per_s=54_321.0, lag_change_per_s=-1234.5),
        ),
    )


@pytest.mark.parametrize("leader", [None, "bourse-cluster-n2"])
def test_on_80_columns_names_give_way_and_no_figure_is_cut(leader: str | None) -> None:
    consumer = "alerts_requests_12VtljfD320eckXglPGdiG"
    console = Console(width=80, record=True, color_system=None)
    console.print(render(_report(leader=leader, consumer=consumer)))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    stream_row = next(line.split() for line in lines if line.lstrip().startswith("KV_"))
    assert stream_row[:2] == ["KV_bourse_leases", "R3"], text
    figures = ["1.2M", "941.9MiB", "1,000,001", "2,234,567", "12", "12.3k", "3.3MiB"]
    assert stream_row[-7:] == figures, text
    assert ("Leader" in text) == (leader is not None), text
    consumer_row = next(line.split() for line in lines if line.lstrip().startswith("MARKET"))
    assert consumer_row[0] == "MARKET_DATA", text
    assert consumer_row[1].endswith("…") and consumer.startswith(consumer_row[1][:-1]), text
    assert consumer_row[2:] == ["7,654,321", "12,345", "678", "9.9M", "54.3k", "-1,234.5"]
