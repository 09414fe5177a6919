"""End to end: the platform split over processes with `bourse run`, on one real nats-server.

One process runs the exchange's folds (accounts and engine), another the gateway (read
model, REST API, the demo and admin keys): an order sent to the gateway is validated,
matched and booked by the other process, and the gateway shows the result.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bourse.bus.server import NatsServer
from tests.cli.helpers import Logged, bourse, isolated_env, wait_for


class Service(Logged):
    """A `bourse run ...` process."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        super().__init__(["run", *args], env, log)

    def wait_started(self) -> None:
        self.wait_for_output("Bourse runs", f"{self.log.name} to start")

    def stop(self) -> int:
        try:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(timeout=60)
        finally:
            self.close()


@pytest.fixture
def split(tmp_path: Path, nats_server: NatsServer) -> Iterator[tuple[dict[str, str], Service]]:
    """`bourse run accounts engine` and `bourse run gateway`, in homes of their own; yields
    the gateway's environment (for the trading commands) and the folds' process."""
    folds = Service(
        ["accounts", "engine", "--nats", nats_server.url],
        isolated_env(tmp_path / "folds"),
        tmp_path / "folds.log",
    )
    gateway_env = isolated_env(tmp_path / "gateway")
    gateway = Service(["gateway", "--nats", nats_server.url], gateway_env, tmp_path / "gateway.log")
    try:
        folds.wait_started()
        gateway.wait_started()
        yield gateway_env, folds
    finally:
        assert gateway.stop() == 0, gateway.log.read_text()
        if folds.process.poll() is None:
            assert folds.stop() == 0, folds.log.read_text()


def ok_json(*args: str, env: dict[str, str], key: dict[str, str] | None = None) -> Any:
    auth = [] if key is None else ["--key-id", key["key_id"], "--secret", key["secret"]]
    result = bourse(*args, *auth, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_an_order_through_one_process_is_matched_and_booked_by_another(
    split: tuple[dict[str, str], Service],
) -> None:
    env, folds = split
    runtime = json.loads((Path(env["BOURSE_HOME"]) / "runtime.json").read_text())
    assert runtime["http_url"].startswith("http://127.0.0.1:")
    assert not (Path(folds.log.parent) / "folds" / "runtime.json").exists()

    seller = ok_json("accounts", "create", "--cash", "100000", "--shorting", env=env)
    buyer = ok_json("accounts", "create", "--cash", "100000", env=env)
    resting = ok_json(
        "order", "sell", "MSFT", "3", "--limit", "420.00", "--json", env=env, key=seller
    )
    assert resting["status"] == "new"  # the engine, in the other process, accepted it
    ok_json("order", "buy", "MSFT", "3", "--limit", "420.00", "--json", env=env, key=buyer)

    def booked() -> bool:
        held = ok_json("positions", "--json", env=env, key=buyer)
        return [(p["symbol"], p["qty"]) for p in held] == [("MSFT", "3")]

    wait_for(booked, "the buyer's position")
    assert ok_json("account", "--json", env=env, key=buyer)["cash"] == "98740.00"
    short = ok_json("positions", "--json", env=env, key=seller)
    assert [(p["symbol"], p["qty"], p["side"]) for p in short] == [("MSFT", "-3", "short")]

    # The folds' process, without a gateway, serves its own operations endpoints.
    ops_url = next(
        line.split()[1] for line in folds.log.read_text().splitlines() if "  ops  " in line
    )
    with httpx.Client(base_url=ops_url, timeout=10) as ops:
        assert ops.get("/healthz").json() == {"status": "ok", "nats": True}
        ready = ops.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert {"nats", "streams", "accounts", "engine"} <= set(ready.json()["checks"])
        metrics = ops.get("/metrics").text
        applied = [
            line for line in metrics.splitlines() if line.startswith("bourse_fold_inputs_total{")
        ]
        assert any('service="engine"' in line for line in applied), applied

    # Each single writer runs once: a second engine on this NATS is refused, before it starts.
    url = runtime["nats_url"]
    twice = bourse("run", "engine", "--nats", url, env=isolated_env(folds.log.parent / "again"))
    assert twice.returncode == 2
    errors = [line for line in twice.stderr.splitlines() if line.startswith("bourse: error:")]
    assert len(errors) == 1, twice.stderr
    assert f"engine already runs on this NATS (pid {folds.process.pid} on " in errors[0]

    # The folds' process stops as `bourse up` does: cleanly, exit 0, its leases released.
    assert folds.stop() == 0, folds.log.read_text()
    assert "Stopped cleanly." in folds.log.read_text()
    engine = Service(
        ["engine", "--nats", url],
        isolated_env(folds.log.parent / "again"),
        folds.log.parent / "again.log",
    )
    engine.wait_started()
    assert engine.stop() == 0, engine.log.read_text()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "accounts", "sorcery", "--nats", "nats://127.0.0.1:1"], "sorcery"),
        (["run", "all", "gateway", "--nats", "nats://127.0.0.1:1"], "'all' names every service"),
        (["run", "engine"], "bourse up"),
        (["run", "engine", "--nats", "nats://127.0.0.1:1"], "cannot connect to NATS"),
    ],
)
def test_bad_arguments_get_one_line_that_says_what_is_wrong(
    args: list[str], says: str, tmp_path: Path
) -> None:
    result = bourse(*args, env=isolated_env(tmp_path / "home"))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("bourse: error:")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_service_switched_off_is_not_run_so_its_lease_stays_free(tmp_path: Path) -> None:
    # What a process runs is what it takes leases for: `bourse up --rate 0` must not hold
    # the feed's lease against a `bourse run feed` elsewhere.
    from bourse.errors import ConfigError
    from bourse.platform import SERVICES, PlatformConfig

    everything = PlatformConfig(home=tmp_path)
    assert all(everything.runs(name) for name in SERVICES)
    quiet = PlatformConfig(
        home=tmp_path, feed_rate=0, market_makers=False, analytics=None, alerts=False
    )
    assert [name for name in SERVICES if not quiet.runs(name)] == [
        "analytics",
        "alerts",
        "makers",
        "feed",
    ]
    only_engine = PlatformConfig(home=tmp_path, services=frozenset({"engine"}))
    assert [name for name in SERVICES if only_engine.runs(name)] == ["engine"]
    with pytest.raises(ConfigError, match="sorcery"):
        PlatformConfig(home=tmp_path, services=frozenset({"engine", "sorcery"}))
    with pytest.raises(ConfigError):
        PlatformConfig(home=tmp_path, services=frozenset())
