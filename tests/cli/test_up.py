"""End to end: the real `bourse` CLI in subprocesses, as a newcomer would run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BOURSE = str(Path(sys.executable).parent / "bourse")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def wait_for(condition, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def bourse(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BOURSE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("BOURSE_")}
    values["BOURSE_HOME"] = str(tmp_path / "home")
    return values


@pytest.fixture
def platform(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [BOURSE, "up", "--rate", "2000"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    runtime = Path(env["BOURSE_HOME"]) / "runtime.json"
    wait_for(lambda: runtime.exists() or process.poll() is not None, "runtime.json")
    assert process.poll() is None, process.stdout.read() if process.stdout else ""
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
    assert set(market_data["discriminator"]["mapping"]) == {"quote", "trade"}
    quote = market_data["$defs"]["Quote"]
    assert quote["properties"]["bid"] == {"type": "string", "format": "decimal"}
