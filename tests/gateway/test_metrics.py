"""`/metrics`, `/readyz` and lag warnings on a gateway over a real nats-server; the lag core
and the JSON log lines on their own."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from bourse.bus.connection import connect as nats_connect
from bourse.bus.monitor import ConsumerSample
from bourse.bus.server import NatsServer
from bourse.bus.streams import PLATFORM_STREAMS
from bourse.cli.logs import JsonFormatter, log_format
from bourse.errors import ConfigError
from bourse.gateway.metrics import LagEvent, LagWatch, MonitorConfig
from bourse.gateway.ops import Ops
from bourse.risk.service import risk_service
from tests.conftest import eventually
from tests.gateway.conftest import ExchangeStack

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a text exposition, by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def labelled(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (found, labels) in samples if found == name]


async def scrape(exchange: ExchangeStack) -> Samples:
    answer = await exchange.client().get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return parse(answer.text)


# ---- /metrics ----


async def test_metrics_show_every_stream_and_consumer_as_jetstream_does(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "190.00")  # two quotes on MARKET_DATA
    await exchange.trader()  # an account opened on ORDERS
    samples = await scrape(exchange)
    for spec in PLATFORM_STREAMS:
        info = await exchange.js.stream_info(spec.name)
        assert value(samples, "bourse_stream_messages", stream=spec.name) == info.state.messages
        assert value(samples, "bourse_stream_bytes", stream=spec.name) == info.state.bytes
        assert value(samples, "bourse_stream_appended_total", stream=spec.name) == (
            info.state.last_seq
        )
        assert value(samples, "bourse_stream_lag_threshold", stream=spec.name) == 10_000
    assert value(samples, "bourse_jetstream_up") == 1
    # The gateway's read model and alerts view read with consumers of their own.
    consumers = labelled(samples, "bourse_consumer_pending_messages")
    for stream in ("ORDERS", "POSITIONS", "ALERTS"):
        assert any(c["stream"] == stream for c in consumers), consumers
    for consumer in consumers:
        info = await exchange.js.consumer_info(consumer["stream"], consumer["consumer"])
        assert value(samples, "bourse_consumer_ack_pending_messages", **consumer) == (
            info.num_ack_pending
        )
    # A second scrape has rates (over the time since the first).
    again = await scrape(exchange)
    rate = value(again, "bourse_stream_messages_per_second", stream="ORDERS")
    assert rate >= 0


async def test_metrics_count_requests_by_route_and_status_with_latencies(
    exchange: ExchangeStack,
) -> None:
    alice = await exchange.trader()
    assert (await alice.http.get("/v2/account")).status_code == 200
    assert (await alice.http.get("/v2/orders/not-an-order")).status_code == 404
    assert (await alice.http.get("/no/such/route")).status_code == 404
    samples = await scrape(exchange)
    count = "bourse_http_requests_total"
    assert value(samples, count, method="GET", route="/v2/account", status="200") == 1
    assert value(samples, count, method="GET", route="/v2/orders/{order_id}", status="404") == 1
    assert value(samples, count, method="GET", route="unmatched", status="404") == 1
    latency = "bourse_http_request_duration_seconds"
    assert value(samples, f"{latency}_count", method="GET", route="/v2/account") == 1
    assert value(samples, f"{latency}_bucket", method="GET", route="/v2/account", le="+Inf") == 1
    assert value(samples, f"{latency}_sum", method="GET", route="/v2/account") > 0


async def test_metrics_show_fold_services_websocket_clients_and_publishers(
    exchange: ExchangeStack,
) -> None:
    alice = await exchange.trader()
    await alice.http.post("/v2/alerts", json={"symbol": "AAPL", "condition": "above", "price": "1"})
    exchange.gateway.ops.watch_fold(exchange.accounts)
    await exchange.accounts.wait_caught_up()
    async with connect(exchange.url.replace("http", "ws") + "/stream") as ws:
        await ws.send(
            msgspec.json.encode({"action": "auth", "key": alice.key_id, "secret": alice.secret})
        )
        await ws.recv()
        await ws.send(
            msgspec.json.encode(
                {"action": "listen", "data": {"streams": ["trade_updates", "alerts"]}}
            )
        )
        await ws.recv()
        samples = await scrape(exchange)
    fold = {"service": "accounts", "stream": "ORDERS"}
    assert value(samples, "bourse_fold_applied_sequence", **fold) == exchange.accounts.last_seq
    assert value(samples, "bourse_fold_lag_messages", **fold) == 0
    assert value(samples, "bourse_fold_inputs_total", **fold) == exchange.accounts.stats.applied
    assert value(samples, "bourse_fold_running", **fold) == 1
    assert value(samples, "bourse_publisher_in_flight", publisher="accounts") == 0
    published = exchange.accounts.publisher_stats.published
    assert value(samples, "bourse_publisher_published_total", publisher="accounts") == published
    view = {"service": "alerts_view", "stream": "ALERTS"}
    assert value(samples, "bourse_fold_applied_sequence", **view) == 1
    assert value(samples, "bourse_fold_lag_messages", **view) == 0
    assert value(samples, "bourse_websocket_connections", endpoint="/stream") == 1
    for stream in ("trade_updates", "alerts"):
        assert value(samples, "bourse_websocket_listeners", endpoint="/stream", stream=stream) == 1
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)


async def test_each_gateway_has_its_own_registry(nc: NATS, js: JetStreamContext) -> None:
    first, second = Ops(nc), Ops(nc)
    first.http.observe("GET", "/v2/clock", 200, 0.001)
    assert first.registry is not second.registry and first.registry is not REGISTRY
    assert "bourse_http_requests_total" in (await first.metrics()).decode()
    assert "/v2/clock" not in (await second.metrics()).decode()
    assert REGISTRY.get_sample_value("bourse_stream_messages", {"stream": "ORDERS"}) is None


# ---- /readyz ----


async def test_readyz_names_what_is_not_ready_until_it_is(exchange: ExchangeStack) -> None:
    client = exchange.client()
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {"nats": "ok", "streams": "ok", "readmodel": "ok", "alerts_view": "ok"},
    }
    await exchange.trader()  # something on ORDERS for a new service to catch up with
    risk = risk_service(exchange.nc, name="risk-late")
    exchange.gateway.ops.watch_fold(risk)
    waiting = await client.get("/readyz")
    assert waiting.status_code == 503
    body = waiting.json()
    assert body["status"] == "not ready" and list(body["not_ready"]) == ["risk-late"]
    assert body["not_ready"]["risk-late"].startswith("catching up")
    assert body["checks"]["nats"] == "ok"
    await risk.start()
    try:

        async def is_ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(is_ready, message="risk-late never became ready")
        await risk.stop()
        stopped = (await client.get("/readyz")).json()
        assert stopped["not_ready"] == {"risk-late": "stopped"}
    finally:
        await risk.stop()


async def test_readiness_without_nats_says_so(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    own = await nats_connect(nats_server.url, name="readiness")
    ops = Ops(own)
    assert (await ops.readiness()) == {"nats": "ok", "streams": "ok"}
    await own.close()
    answers = await ops.readiness()
    assert answers["nats"] == "disconnected" and answers["streams"] != "ok"


# ---- lag warnings ----


def _consumer(lag: int, name: str = "slow", stream: str = "MARKET_DATA") -> ConsumerSample:
    return ConsumerSample(
        stream=stream,
        name=name,
        num_pending=lag,
        num_ack_pending=0,
        num_redelivered=0,
        delivered=0,
        delivered_stream_seq=0,
        ack_floor_stream_seq=0,
    )


def _kinds(events: Iterable[LagEvent]) -> list[tuple[str, str, int]]:
    return [(e.kind, e.consumer, e.lag) for e in events]


def test_a_lag_warns_once_per_crossing_and_re_arms_at_half_the_threshold() -> None:
    watch = LagWatch(MonitorConfig(lag_threshold=100, stream_lag_thresholds={"ORDERS": 0}))
    assert watch.check([_consumer(100)]) == []  # at the threshold is not above it
    assert _kinds(watch.check([_consumer(101)])) == [("lagging", "slow", 101)]
    assert watch.check([_consumer(5000)]) == []  # still lagging: said once
    assert watch.check([_consumer(51)]) == []  # above half: not re-armed yet
    assert _kinds(watch.check([_consumer(50)])) == [("recovered", "slow", 50)]
    assert _kinds(watch.check([_consumer(200)])) == [("lagging", "slow", 200)]
    assert watch.warnings == {("MARKET_DATA", "slow"): 2}
    assert watch.check([_consumer(10**6, stream="ORDERS")]) == []  # 0: never warns there
    assert watch.check([_consumer(10**6, name="replay_x1")]) == []  # replays are not watched
    assert watch.lagging == set() and watch.warnings == {}  # "slow" is gone: forgotten


def test_monitor_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="lag threshold of AUDIT"):
        MonitorConfig(stream_lag_thresholds={"AUDIT": -1})
    with pytest.raises(ConfigError, match="monitor interval"):
        MonitorConfig(interval=0)


async def test_a_stopped_consumer_warns_once_as_its_lag_builds(
    nc: NATS, js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    await js.add_consumer(
        "MARKET_DATA", ConsumerConfig(durable_name="stalled", ack_policy=AckPolicy.EXPLICIT)
    )
    ops = Ops(nc, MonitorConfig(lag_threshold=20))
    caplog.set_level(logging.INFO, logger="bourse.gateway.metrics")

    async def traffic(n: int) -> None:
        for _ in range(n):
            await js.publish("md.nyse.AAPL", b"{}")

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", "") == "consumer_lagging"]

    await traffic(15)
    await ops.sampler.sample()
    assert warnings() == []
    await traffic(10)
    await ops.sampler.sample()
    await traffic(50)
    await ops.sampler.sample()
    (warned,) = warnings()
    fields: dict[str, Any] = warned.__dict__
    assert warned.levelno == logging.WARNING
    assert (fields["stream"], fields["consumer"], fields["threshold"]) == (
        "MARKET_DATA",
        "stalled",
        20,
    )
    assert fields["lag"] == 25
    samples = parse((await ops.metrics()).decode())
    labels = {"stream": "MARKET_DATA", "consumer": "stalled"}
    assert value(samples, "bourse_consumer_lagging", **labels) == 1
    assert value(samples, "bourse_consumer_lag_warnings_total", **labels) == 1
    assert value(samples, "bourse_consumer_pending_messages", **labels) == 75


async def test_the_sampler_runs_in_the_background(nc: NATS, js: JetStreamContext) -> None:
    ops = Ops(nc, MonitorConfig(interval=0.05))
    ops.start()
    try:
        await eventually(lambda: ops.sampler.report is not None)
    finally:
        await ops.stop()


# ---- JSON logs ----


def test_json_log_lines_carry_service_level_message_and_extra_fields() -> None:
    formatter = JsonFormatter("bourse-up")
    record = logging.getLogger("bourse.test").makeRecord(
        "bourse.test",
        logging.WARNING,
        __file__,
        1,
        "consumer %s is %d behind",
        ("slow", 12),
        None,
        extra={"stream": "MARKET_DATA", "lag": 12},
    )
    line = json.loads(formatter.format(record))
    assert line == {
        "ts": line["ts"],
        "level": "warning",
        "service": "bourse-up",
        "logger": "bourse.test",
        "message": "consumer slow is 12 behind",
        "stream": "MARKET_DATA",
        "lag": 12,
    }
    assert line["ts"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    assert "ValueError: boom" in json.loads(formatter.format(failed))["exception"]


def test_a_process_running_some_services_names_them_in_every_log_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bourse.cli import logs

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        for format in ("text", "json"):
            logs.configure(format, service="bourse-run", services="accounts+engine")
            logging.getLogger("bourse.test").warning("lagging")
        logs.configure("text")
        logging.getLogger("bourse.test").warning("plain")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    text, json_line, plain = capsys.readouterr().err.splitlines()
    assert text.endswith("WARNING [accounts+engine] bourse.test: lagging")
    assert json.loads(json_line)["services"] == "accounts+engine"
    assert json.loads(json_line)["service"] == "bourse-run"
    assert plain.endswith("WARNING bourse.test: plain")


def test_the_log_format_is_text_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOURSE_LOG_FORMAT", raising=False)
    assert log_format() == "text"
    monkeypatch.setenv("BOURSE_LOG_FORMAT", "JSON")
    assert log_format() == "json"
    assert log_format("text") == "text"
    with pytest.raises(ConfigError, match="accepted: text, json"):
        log_format("xml")
