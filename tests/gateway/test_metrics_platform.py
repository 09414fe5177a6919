"""One real `bourse up --log-format json`, watched as an operator watches it (`/metrics`,
`/readyz`, its JSON log lines, a lag warning) and used as a trader uses its price alerts
(`bourse alerts create|list|delete`, firing on the quotes published to it)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from bourse.bus.connection import connect
from bourse.model import marketdata, subjects
from tests.cli.helpers import BOURSE, bourse, isolated_env, wait_for
from tests.gateway.test_metrics import Samples, labelled, parse, value

LAG_THRESHOLD = 5


@dataclass(frozen=True)
class Running:
    env: dict[str, str]
    runtime: dict[str, Any]
    stderr: Path

    @property
    def url(self) -> str:
        return str(self.runtime["http_url"])

    @property
    def nats_url(self) -> str:
        return str(self.runtime["nats_url"])

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp("ops")
    env = isolated_env(workdir / "home")
    out, err = workdir / "up.out", workdir / "up.err"
    # Files, not pipes nobody reads: a full pipe would stall the platform.
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [BOURSE, "up", "--rate", "0", "--log-format", "json"],
            env={**env, "BOURSE_LAG_THRESHOLD": str(LAG_THRESHOLD)},
            stdout=stdout,
            stderr=stderr,
        )
    runtime = workdir / "home" / "runtime.json"
    wait_for(lambda: runtime.exists() or process.poll() is not None, "runtime.json")
    assert process.poll() is None, err.read_text()
    yield Running(env, json.loads(runtime.read_text()), err)
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=30) == 0, err.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def scrape(platform: Running) -> Samples:
    answer = httpx.get(f"{platform.url}/metrics", timeout=10)
    assert answer.status_code == 200
    return parse(answer.text)


async def test_metrics_cover_every_service_with_jetstreams_figures(platform: Running) -> None:
    async with httpx.AsyncClient(base_url=platform.url, timeout=10) as http:
        assert (await http.get("/v2/clock")).status_code == 200
        samples = parse((await http.get("/metrics")).text)
    nc = await connect(platform.nats_url, name="test")
    try:
        js = nc.jetstream()
        # Quiet streams (no feed: --rate 0) show exactly what JetStream says.
        for stream in ("ORDERS", "POSITIONS", "RISK", "ALERTS", "DEAD_LETTERS"):
            info = await js.stream_info(stream)
            assert value(samples, "bourse_stream_messages", stream=stream) == info.state.messages
            assert value(samples, "bourse_stream_appended_total", stream=stream) == (
                info.state.last_seq
            )
            assert value(samples, "bourse_stream_lag_threshold", stream=stream) == LAG_THRESHOLD
    finally:
        await nc.close()
    assert {"MARKET_DATA", "ANALYTICS"} <= {
        labels["stream"] for labels in labelled(samples, "bourse_stream_bytes")
    }
    folds = {(f["service"], f["stream"]) for f in labelled(samples, "bourse_fold_applied_sequence")}
    assert {
        ("accounts", "ORDERS"),
        ("engine", "ORDERS"),
        ("risk", "ORDERS"),
        ("alerts", "MARKET_DATA"),
        ("alerts", "ALERTS"),
        ("readmodel", "ORDERS"),
        ("readmodel", "POSITIONS"),
        ("alerts_view", "ALERTS"),
    } <= folds
    for service in ("accounts", "engine", "risk", "alerts"):
        assert value(samples, "bourse_publisher_in_flight", publisher=service) >= 0
    # The demo account was opened on ORDERS: accounts applied it.
    assert value(samples, "bourse_fold_applied_sequence", service="accounts", stream="ORDERS") > 0
    assert (
        value(samples, "bourse_http_requests_total", method="GET", route="/v2/clock", status="200")
        >= 1
    )
    assert labelled(samples, "bourse_consumer_pending_messages")  # every service's consumer


def test_readyz_is_200_once_every_service_has_caught_up(platform: Running) -> None:
    answer: dict[str, Any] = {}

    def ready() -> bool:
        nonlocal answer
        response = httpx.get(f"{platform.url}/readyz", timeout=10)
        answer = response.json()
        return response.status_code == 200

    wait_for(ready, f"/readyz (last {answer})", timeout=30)
    assert set(answer["checks"]) >= {
        "nats",
        "streams",
        "accounts",
        "engine",
        "risk",
        "alerts",
        "readmodel",
        "alerts_view",
        "analytics",
        "history",
    }
    assert set(answer["checks"].values()) == {"ok"}
    assert httpx.get(f"{platform.url}/healthz").json()["status"] == "ok"


async def test_a_stalled_consumer_is_logged_once_as_a_json_warning(platform: Running) -> None:
    nc = await connect(platform.nats_url, name="test")
    try:
        js = nc.jetstream()
        await js.add_consumer(
            "RISK", ConsumerConfig(durable_name="stalled_test", ack_policy=AckPolicy.EXPLICIT)
        )
        for n in range(LAG_THRESHOLD + 3):
            await js.publish("risk.metrics.test", json.dumps({"n": n}).encode())
    finally:
        await nc.close()
    scrape(platform)  # a scrape samples JetStream, and so checks the lag, at once
    scrape(platform)

    def warnings() -> list[dict[str, Any]]:
        return [
            line
            for line in platform.log_lines()
            if line.get("event") == "consumer_lagging" and line.get("consumer") == "stalled_test"
        ]

    wait_for(lambda: bool(warnings()), "the lag warning")
    (warning,) = warnings()
    assert warning["level"] == "warning" and warning["service"] == "bourse-up"
    assert (warning["stream"], warning["lag"], warning["threshold"]) == (
        "RISK",
        LAG_THRESHOLD + 3,
        LAG_THRESHOLD,
    )
    assert "stalled_test on RISK is 8 messages behind" in warning["message"]


def test_every_log_line_is_json(platform: Running) -> None:
    lines = platform.log_lines()
    assert lines, "the platform logged nothing"
    for line in lines:
        assert {"ts", "level", "service", "logger", "message"} <= set(line)
        assert line["service"] == "bourse-up"
    assert any(line["message"].startswith("gateway listening on") for line in lines)


# ---- price alerts from the command line ----


def ok(platform: Running, *args: str) -> str:
    result = bourse(*args, env=platform.env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def alerts_json(platform: Running) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(ok(platform, "alerts", "list", "--json"))
    return found


async def _quote(platform: Running, price: str) -> None:
    nc = await connect(platform.nats_url, name="test")
    try:
        value = Decimal(price)
        for seq, venue in enumerate(("nyse", "nasdaq"), start=1):
            quote = marketdata.Quote(
                symbol="AAPL",
                venue=venue,
                bid=value,
                ask=value,
                bid_size=Decimal(10),
                ask_size=Decimal(10),
                last=value,
                last_size=Decimal(1),
                volume=Decimal(0),
                ts=time.time_ns(),
                seq=seq,
            )
            await nc.jetstream().publish(
                subjects.market_data(venue, "AAPL"), marketdata.encode(quote)
            )
    finally:
        await nc.close()


async def test_alerts_are_created_fire_and_are_deleted_from_the_command_line(
    platform: Running,
) -> None:
    made = json.loads(ok(platform, "alerts", "create", "aapl", "above", "100", "--json"))
    assert (made["symbol"], made["condition"], made["price"], made["status"]) == (
        "AAPL",
        "above",
        "100",
        "active",
    )
    line = ok(platform, "alerts", "create", "AAPL", "crosses", "300", "--recurring")
    assert line.startswith("active: AAPL crosses 300 (recurring); alert ")
    await _quote(platform, "150.00")

    def fired() -> bool:
        return any(a["status"] == "triggered" for a in alerts_json(platform))

    wait_for(fired, "the alert to fire")
    (found,) = [a for a in alerts_json(platform) if a["id"] == made["id"]]
    assert (found["fire_count"], found["last_fired_price"]) == (1, "150.00")
    table = ok(platform, "alerts", "list", "--status", "triggered")
    assert made["id"][:8] in table and "triggered" in table
    assert ok(platform, "alerts", "delete", made["id"][:8]).strip() == (
        f"alert {made['id']}: deleted"
    )
    assert [a["id"] for a in alerts_json(platform)] != [] and all(
        a["id"] != made["id"] for a in alerts_json(platform)
    )


def test_bad_alerts_are_one_error_line(platform: Running) -> None:
    refused = bourse("alerts", "create", "NOPE", "above", "1", env=platform.env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("bourse: error: asset 'NOPE' not found")
    wrong = bourse("alerts", "create", "AAPL", "sideways", "1", env=platform.env)
    assert wrong.returncode == 2
    assert "accepted: above, below, crosses" in wrong.stderr
