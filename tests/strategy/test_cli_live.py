"""End to end: `bourse strategy run --live` against one real `bourse up` (simulated feed,
market makers), opening its own account with the platform's admin key."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.cli.helpers import BOURSE, bourse, isolated_env, wait_for


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    workdir = tmp_path_factory.mktemp("strategy-live")
    values = isolated_env(workdir / "home")
    # Output to a file, not a pipe nobody reads: a full pipe would stall the platform.
    with (workdir / "up.log").open("w") as log:
        process = subprocess.Popen([BOURSE, "up"], env=values, stdout=log, stderr=subprocess.STDOUT)
    runtime = Path(values["BOURSE_HOME"]) / "runtime.json"
    wait_for(lambda: runtime.exists() or process.poll() is not None, "runtime.json")
    assert process.poll() is None, (workdir / "up.log").read_text()
    yield values
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=30) == 0, (workdir / "up.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_live_run_opens_an_account_trades_and_the_account_shows_it(
    env: dict[str, str],
) -> None:
    run = bourse(
        "strategy", "run", "--live", "--symbol", "AAPL", "--venue", "nyse",
        "--fast", "2", "--slow", "4", "--new-account", "--cash", "20000",
        "--duration", "8", "--json",
        env=env, timeout=90,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    opened = re.search(r"opened account (\S+) with 20,000: key id (\S+), secret (\S+) ", run.stderr)
    assert opened is not None, run.stderr
    account_id, key_id, secret = opened.groups()
    summary = json.loads(run.stdout)
    assert summary["mode"] == "live" and summary["source"] == "md.nyse.AAPL"
    assert summary["ticks"] > 4 and summary["orders"] >= 1 and summary["trades"] >= 1
    assert summary["initial_equity"] == "20000"

    key = ["--key-id", key_id, "--secret", secret]
    account = json.loads(bourse("account", "--json", *key, env=env).stdout)
    assert account["id"] == account_id
    closed = json.loads(bourse("orders", "--status", "closed", "--json", *key, env=env).stdout)
    ours = {o["client_order_id"] for o in closed}
    assert {f["client_order_id"] for f in summary["fills"]} <= ours
    held = json.loads(bourse("positions", "--json", *key, env=env).stdout)
    position = sum((Decimal(p["qty"]) for p in held if p["symbol"] == "AAPL"), Decimal(0))
    assert position == Decimal(summary["position"])
