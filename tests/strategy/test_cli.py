"""`bourse strategy run`: back-tests from a file (typer's CliRunner) and from the stream of a
real nats-server (the installed `bourse` command), their output, and the errors."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext
from typer.testing import CliRunner

from bourse.bus.server import NatsServer
from bourse.cli import app
from bourse.cli.strategy import PROGRESS_THRESHOLD, wants_progress
from bourse.errors import BourseError, ConfigError
from bourse.model import marketdata, subjects
from tests.cli.helpers import bourse, isolated_env
from tests.strategy.factories import csv_text, wave

QUOTES = wave(300)
OPTIONS = ["--symbol", "AAPL", "--venue", "nyse", "--fast", "4", "--slow", "12"]
UNSTABLE = ("elapsed_s", "pipeline")  # wall time and queue metrics: the machine's, not the data's


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "quotes.csv"
    path.write_text(csv_text(QUOTES))
    return path


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["strategy", "run", *args], env={"COLUMNS": "200"})


def _json(*args: str) -> dict[str, Any]:
    result = _invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def _stable(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in UNSTABLE}


def test_a_file_backtest_prints_the_same_json_twice(data: Path) -> None:
    first = _json("--file", str(data), *OPTIONS, "--seed", "5")
    second = _json("--file", str(data), *OPTIONS, "--seed", "5")
    assert _stable(first) == _stable(second)
    assert first["ticks"] == 300 and first["seed"] == 5 and first["round_trips"] >= 2
    assert first["trades"] == len(first["fills"]) >= 4
    for key in ("gross_pnl", "net_pnl", "return", "max_drawdown", "win_rate", "exposure"):
        assert key in first
    assert set(first["pipeline"]["stages"]) == {"enrich", "signal", "sizing", "execution"}
    other = _json("--file", str(data), *OPTIONS, "--seed", "6")
    assert other["fills"] != first["fills"]


def test_the_table_shows_the_summary_and_the_fills(data: Path) -> None:
    result = _invoke("--file", str(data), *OPTIONS, "--fills")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Back-test: AAPL on nyse ({data}, seed 0)" in out
    for row in ("ticks", "round trips", "win rate", "gross P&L", "net P&L", "max drawdown"):
        assert row in out
    assert "Fills" in out and "fast SMA" in out


def test_a_time_range_of_a_file(data: Path) -> None:
    summary = _json(
        "--file",
        str(data),
        *OPTIONS,
        "--from",
        "2026-01-01T00:01:40Z",
        "--to",
        "2026-01-01T00:03:19Z",
    )
    assert summary["ticks"] == 100


@pytest.mark.parametrize(
    ("args", "kind", "says"),
    [
        (["--fast", "20", "--slow", "10"], ConfigError, "fast < slow"),
        (["--fast", "10", "--slow", "10"], ConfigError, "fast < slow"),
        (["--symbol", "IBM"], ConfigError, "invalid --symbol: 'IBM'; accepted: one of AAPL"),
        (["--venue", "NYSE!"], ConfigError, "invalid venue"),
        (["--from", "2030-01-01"], BourseError, "no market data for AAPL on venue nyse"),
        (["--from", "yesterday"], ConfigError, "an ISO-8601 time"),
        (["--venue", "nasdaq"], BourseError, "it has AAPL@nyse"),
        (["--kelly-cap", "1.5"], ConfigError, "a fraction of equity in (0, 1]"),
        (["--slippage-bps", "50"], ConfigError, "at most --limit-bps"),
        (["--live"], ConfigError, "--live alone"),
        (["--duration", "5"], ConfigError, "only with --live"),
    ],
)
def test_bad_options_are_refused_with_what_is_accepted(
    data: Path, args: list[str], kind: type[Exception], says: str
) -> None:
    result = _invoke("--file", str(data), *OPTIONS, *args)
    assert isinstance(result.exception, kind), result.output
    assert says in str(result.exception)


def test_progress_shows_on_a_terminal_or_for_a_long_backtest() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wants_progress(10, Terminal()) and not wants_progress(10, io.StringIO())
    assert wants_progress(PROGRESS_THRESHOLD, io.StringIO())
    assert not wants_progress(None, Terminal()) and not wants_progress(0, Terminal())


def test_a_mode_is_required_and_a_seed_is_for_backtests() -> None:
    none = _invoke(*OPTIONS)
    assert isinstance(none.exception, ConfigError)
    assert "one of --live, --from T [--to T]" in str(none.exception)
    seeded = _invoke(*OPTIONS, "--live", "--seed", "3")
    assert isinstance(seeded.exception, ConfigError) and "only with a back-test" in str(
        seeded.exception
    )
    to_only = _invoke(*OPTIONS, "--to", "2026-01-01")
    assert isinstance(to_only.exception, ConfigError) and "starts with --from" in str(
        to_only.exception
    )


async def test_a_stream_backtest_from_the_command_is_reproducible(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    sequences = []
    for q in QUOTES:
        ack = await js.publish(subjects.market_data(q.venue, q.symbol), marketdata.encode(q))
        sequences.append(ack.seq)
    env = isolated_env(tmp_path / "home")
    args = [
        "strategy",
        "run",
        *OPTIONS,
        "--nats",
        nats_server.url,
        "--from",
        f"seq:{sequences[0]}",
        "--to",
        f"seq:{sequences[-1]}",
        "--seed",
        "5",
        "--json",
    ]
    runs = [await asyncio.to_thread(bourse, *args, env=env) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = (json.loads(run.stdout) for run in runs)
    assert _stable(first) == _stable(second)
    assert first["ticks"] == 300 and first["trades"] >= 4
    # The same quotes from a file give the same trades.
    path = tmp_path / "quotes.csv"
    path.write_text(csv_text(QUOTES))
    from_file = await asyncio.to_thread(
        bourse, "strategy", "run", *OPTIONS, "--file", str(path), "--seed", "5", "--json", env=env
    )
    assert json.loads(from_file.stdout)["fills"] == first["fills"]

    # An empty range is one line on stderr and exit 2.
    empty = await asyncio.to_thread(
        bourse,
        "strategy",
        "run",
        *OPTIONS,
        "--nats",
        nats_server.url,
        "--from",
        "2001-01-01T00:00:00Z",
        "--to",
        "2001-01-02T00:00:00Z",
        env=env,
    )
    assert empty.returncode == 2
    assert empty.stderr.strip().splitlines() == [
        "bourse: error: no market data for AAPL on venue nyse in MARKET_DATA from "
        "time:2001-01-01T00:00:00.000Z until time:2001-01-02T00:00:00.000Z: choose another "
        "range, --symbol or --venue"
    ]


def test_live_without_a_platform_is_one_error_line(tmp_path: Path) -> None:
    lonely = isolated_env(tmp_path / "nothing-here")
    result = bourse("strategy", "run", "--live", "--symbol", "AAPL", "--venue", "nyse", env=lonely)
    assert result.returncode == 2
    assert result.stderr.startswith("bourse: error: no platform to connect to")
