"""End to end: the real `bourse` CLI in subprocesses, as a newcomer would run it."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import BOURSE, bourse, children_of, isolated_env, wait_for
from tests.conftest import eventually


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path / "home")


@pytest.fixture
def platform(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    # Output to a file, not a pipe nobody reads: once the pipe's 64 KiB filled (a loaded
    # machine logs more), the platform blocked on its next log line and stopped serving.
    log = tmp_path / "up.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [BOURSE, "up", "--rate", "2000"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    runtime = Path(env["BOURSE_HOME"]) / "runtime.json"
    wait_for(lambda: runtime.exists() or process.poll() is not None, "runtime.json")
    assert process.poll() is None, log.read_text()
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_up_serves_quotes_for_seven_symbols_on_four_venues_and_stops_cleanly(
    platform: subprocess.Popen[str], env: dict[str, str]
) -> None:
    runtime = json.loads((Path(env["BOURSE_HOME"]) / "runtime.json").read_text())
    assert runtime["nats_url"].startswith("nats://127.0.0.1:")
    assert runtime["pid"] == platform.pid
    servers = children_of(platform.pid)
    assert len(servers) == 1, "one embedded nats-server"

    ticker = bourse("ticker", "--count", "400", env=env)
    assert ticker.returncode == 0, ticker.stderr
    lines = ticker.stdout.splitlines()
    assert len(lines) == 400
    assert len({line.split()[2] for line in lines}) >= 7  # symbols
    assert len({line.split()[1] for line in lines}) >= 4  # venues

    only_aapl = bourse("ticker", "md.*.AAPL", "--count", "20", env=env)
    assert {line.split()[2] for line in only_aapl.stdout.splitlines()} == {"AAPL"}

    second = bourse("up", env=env)
    assert second.returncode == 2
    assert "already serves" in second.stderr

    platform.send_signal(signal.SIGTERM)
    assert platform.wait(timeout=30) == 0
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in servers), "server exit")
    assert not (Path(env["BOURSE_HOME"]) / "runtime.json").exists()


def test_replaying_sample_data_into_a_running_platform(
    platform: subprocess.Popen[str], env: dict[str, str]
) -> None:
    result = bourse(
        "feed",
        "replay",
        "sample:stocks",
        "--symbols",
        "MSFT",
        "--speed",
        "0",
        "--limit",
        "300",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "published 300 messages" in result.stdout
    platform.send_signal(signal.SIGINT)
    assert platform.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["feed", "sim", "--rate", "-1", "--nats", "nats://127.0.0.1:1"], "--rate"),
        (["feed", "sim", "--symbols", "NOPE", "--nats", "nats://127.0.0.1:1"], "AAPL"),
        (["feed", "replay", "/no/such.csv", "--nats", "nats://127.0.0.1:1"], "no such file"),
        (["ticker", "md..x"], "subject filter"),
        (["ticker"], "bourse up"),
        (["up", "--port", "70000"], "--port"),
        (["up", "--processes", "4"], "1 to 3"),
        (["up", "--processes", "0"], "--processes"),
        (["feed", "sim", "--nats", "nats://127.0.0.1:1"], "cannot connect to NATS"),
    ],
)
def test_bad_arguments_get_one_line_that_says_what_is_accepted(
    args: list[str], says: str, env: dict[str, str]
) -> None:
    result = bourse(*args, env=env)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("bourse: error:")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_schema_describes_every_market_data_message(env: dict[str, str]) -> None:
    result = bourse("schema", env=env)
    assert result.returncode == 0
    document = json.loads(result.stdout)
    market_data = document["md.<venue>.<symbol>"]
    assert set(market_data["discriminator"]["mapping"]) == {"quote", "trade", "depth"}
    assert "Execution" in document["orders.>"]["$defs"]
    assert "PositionChanged" in document["positions.<account>.<symbol>"]["$defs"]
    analytics = set(document["analytics.>"]["discriminator"]["mapping"])
    assert analytics == {
        "bar",
        "indicators",
        "vwap",
        "nbbo",
        "arbitrage_opened",
        "arbitrage_closed",
    }
    quote = market_data["$defs"]["Quote"]
    assert quote["properties"]["bid"] == {"type": "string", "format": "decimal"}


async def test_the_platform_runs_the_exchange(
    platform: subprocess.Popen[str], env: dict[str, str]
) -> None:
    """Orders published on the journal are validated, matched and booked by `bourse up`."""
    from decimal import Decimal

    from nats.aio.msg import Msg

    from bourse.bus.connection import connect
    from bourse.model import orders, positions, subjects

    url = json.loads((Path(env["BOURSE_HOME"]) / "runtime.json").read_text())["nats_url"]
    nc = await connect(url, name="test-exchange")
    js = nc.jetstream()
    executions: list[orders.Execution] = []
    booked: list[positions.PositionChanged] = []

    async def on_execution(msg: Msg) -> None:
        event = orders.decode(msg.data)
        assert isinstance(event, orders.Execution)
        executions.append(event)

    async def on_position(msg: Msg) -> None:
        position = positions.decode(msg.data)
        if position.account_id in ("buyer", "seller"):  # not the market makers' coins
            booked.append(position)

    await nc.subscribe("orders.executed.*", cb=on_execution)
    await nc.subscribe("positions.>", cb=on_position)
    for account in ("buyer", "seller"):
        await js.publish(
            subjects.ORDERS_ADMIN,
            orders.encode(orders.AccountOpened(ts=1, account_id=account, shorting_enabled=True)),
        )
        await js.publish(
            subjects.ORDERS_ADMIN,
            orders.encode(orders.CashDeposited(ts=1, account_id=account, amount=Decimal("10000"))),
        )
    for oid, account, side in (("s1", "seller", "sell"), ("b1", "buyer", "buy")):
        order = orders.OrderSubmitted(
            ts=2,
            order_id=oid,
            client_order_id=oid,
            account_id=account,
            symbol="AAPL",
            side=side,
            kind="limit",
            time_in_force="gtc",
            qty=Decimal("5"),  # type: ignore[arg-type]
            limit_price=Decimal("190.00"),
            reference_price=Decimal("190.00"),
        )
        await js.publish(subjects.ORDERS_NEW, orders.encode(order))
    await eventually(lambda: len(executions) == 2 and len(booked) == 2, timeout=20)
    assert {(e.order_id, e.price, e.qty) for e in executions} == {
        ("s1", Decimal("190.00"), Decimal("5")),
        ("b1", Decimal("190.00"), Decimal("5")),
    }
    assert {(p.account_id, p.qty) for p in booked} == {
        ("buyer", Decimal("5")),
        ("seller", Decimal("-5")),
    }
    await nc.close()
    platform.send_signal(signal.SIGTERM)
    assert platform.wait(timeout=30) == 0


def test_the_cli_default_api_port_is_the_gateways() -> None:
    from bourse.cli import up
    from bourse.gateway import server

    assert up.DEFAULT_PORT == server.DEFAULT_PORT


def test_up_refuses_a_bad_risk_config_before_starting_anything(
    env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "risk.json"
    config.write_text('{"defaults": {"daily_loss_limit": "-1"}}')
    result = bourse("up", "--risk-config", str(config), env=env)
    assert result.returncode == 2
    assert "daily_loss_limit" in result.stderr and "a positive amount" in result.stderr
    assert not (Path(env["BOURSE_HOME"]) / "runtime.json").exists()


async def test_the_platform_publishes_bars_and_the_nbbo_of_its_feed(
    platform: subprocess.Popen[str], env: dict[str, str]
) -> None:
    """The analytics service of `bourse up` turns the simulated feed into ANALYTICS."""
    from bourse.analytics import messages
    from bourse.analytics.bars import Bar
    from bourse.analytics.nbbo import Nbbo
    from bourse.bus.connection import connect

    url = json.loads((Path(env["BOURSE_HOME"]) / "runtime.json").read_text())["nats_url"]
    nc = await connect(url, name="test-analytics")
    try:
        bars = await nc.subscribe("analytics.bars.1Sec.*.AAPL")
        nbbo = await nc.subscribe("analytics.nbbo.AAPL")
        bar = messages.decode((await bars.next_msg(timeout=15)).data)
        assert isinstance(bar, Bar) and bar.symbol == "AAPL" and bar.timeframe == "1Sec"
        best = messages.decode((await nbbo.next_msg(timeout=15)).data)
        assert isinstance(best, Nbbo) and len(best.fresh_venues) >= 2
    finally:
        await nc.close()
