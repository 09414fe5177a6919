"""`bourse replay` as a user runs it: the real command in a subprocess, a real server."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from decimal import Decimal
from pathlib import Path

from nats.js import JetStreamContext

from bourse.bus.pull import Delivery
from bourse.bus.replay import ReplaySummary
from bourse.bus.server import NatsServer
from bourse.cli.replay import PROGRESS_THRESHOLD, message_line, summary_lines, wants_progress
from bourse.model import marketdata, subjects

BOURSE = str(Path(sys.executable).parent / "bourse")
ROUTE = [("nyse", "AAPL"), ("nasdaq", "MSFT"), ("nyse", "IBM")]


async def _publish(js: JetStreamContext, count: int, first: int = 0) -> None:
    for n in range(first, first + count):
        venue, symbol = ROUTE[n % len(ROUTE)]
        trade = marketdata.Trade(
            symbol=symbol,
            venue=venue,
            price=Decimal("187.25") + n,
            size=Decimal(100),
            side="sell",
            ts=1_700_000_000_000_000_000 + n * 1_000_000,
            seq=n + 1,
        )
        await js.publish(subjects.market_data(venue, symbol), marketdata.encode(trade))


async def _run(tmp_path: Path, *arguments: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        BOURSE,
        "replay",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "BOURSE_HOME": str(tmp_path / "home")},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_replays_everything_then_prints_a_summary(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await _publish(js, 30)
    code, out, err = await _run(tmp_path, "--nats", nats_server.url, "--from", "first")

    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 30
    assert lines[0].split()[0] == "1" and "AAPL" in lines[0] and "trade" in lines[0]
    assert "187.25" in lines[0] and "sell" in lines[0]
    assert lines[-1].split()[0] == "30" and "IBM" in lines[-1]
    assert "replayed 30 messages" in err and "stopped: end of stream" in err
    assert "sequences  1 .. 30" in err
    for symbol in ("AAPL", "IBM", "MSFT"):
        assert any(line.split() == [symbol, "10"] for line in err.splitlines())


async def test_symbols_until_and_quiet(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await _publish(js, 30)
    code, out, err = await _run(
        tmp_path,
        "--nats",
        nats_server.url,
        "--from",
        "seq:4",
        "--until",
        "seq:21",
        "--symbols",
        "aapl,MSFT",
        "--quiet",
    )
    assert code == 0, err
    assert out == ""
    # seq 4..21: AAPL at 4, 7, ..., 19 and MSFT at 5, 8, ..., 20.
    assert "replayed 12 messages" in err and "stopped: until" in err
    assert "sequences  4 .. 20" in err


async def test_limit_and_from_last(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await _publish(js, 10)
    code, out, err = await _run(
        tmp_path, "--nats", nats_server.url, "--from", "seq:3", "--limit", "4"
    )
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ["3", "4", "5", "6"]
    assert "stopped: limit" in err

    code, out, err = await _run(tmp_path, "--nats", nats_server.url, "--from", "last")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ["10"]


async def test_follow_goes_on_live_until_interrupted(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await _publish(js, 3)
    process = await asyncio.create_subprocess_exec(
        BOURSE,
        "replay",
        "--nats",
        nats_server.url,
        "--follow",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "BOURSE_HOME": str(tmp_path / "home")},
    )
    assert process.stdout is not None and process.stderr is not None
    seen = [await asyncio.wait_for(process.stdout.readline(), 30) for _ in range(3)]
    await _publish(js, 2, first=3)
    seen += [await asyncio.wait_for(process.stdout.readline(), 30) for _ in range(2)]
    process.send_signal(signal.SIGINT)
    await asyncio.wait_for(process.wait(), 30)
    err = (await process.stderr.read()).decode()

    assert process.returncode == 0, err
    assert [line.split()[0] for line in seen] == [b"1", b"2", b"3", b"4", b"5"]
    assert "replayed 5 messages" in err and "stopped: stopped" in err


async def test_bad_arguments_exit_2_with_one_line_saying_what_is_accepted(
    tmp_path: Path,
) -> None:
    code, out, err = await _run(tmp_path, "--nats", "nats://127.0.0.1:1", "--from", "yesterday")
    assert code == 2
    assert out == ""
    assert err.strip().splitlines() == [
        "bourse: error: invalid --from: 'yesterday'; accepted: first, last, new, seq:N (N >= 1) "
        "or time:<ISO-8601> (e.g. time:2026-05-01T13:30:00Z; UTC unless an offset is given)"
    ]

    code, _, err = await _run(tmp_path, "--nats", "nats://127.0.0.1:1", "--until", "seq:abc")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "invalid --until: 'seq:abc'" in err

    code, _, err = await _run(tmp_path, "--nats", "nats://127.0.0.1:1", "--symbols", "A B")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "invalid symbol: 'A B'" in err


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_a_progress_bar_only_where_it_helps() -> None:
    terminal, pipe = _Stream(tty=True), _Stream(tty=False)
    assert wants_progress(50, quiet=True, stdout=terminal, stderr=terminal)
    assert wants_progress(50, quiet=False, stdout=pipe, stderr=terminal)
    assert not wants_progress(50, quiet=False, stdout=terminal, stderr=terminal)  # lines scroll
    assert not wants_progress(50, quiet=True, stdout=pipe, stderr=pipe)  # a short replay, a log
    assert wants_progress(PROGRESS_THRESHOLD, quiet=True, stdout=pipe, stderr=pipe)
    assert not wants_progress(None, quiet=True, stdout=terminal, stderr=terminal)  # live


def test_lines_and_summary_text() -> None:
    delivery = Delivery(
        subject="md.nyse.AAPL",
        data=b"not json",
        headers={},
        reply="",
        stream_seq=7,
        consumer_seq=1,
        delivered=1,
        pending=0,
        time_ns=0,
    )
    assert message_line(delivery) == ("        7  md.nyse.AAPL (8 bytes, not a quote or trade)")
    summary = ReplaySummary(
        messages=3,
        per_symbol={"AAPL": 2, "BTC-USD": 1},
        first_seq=5,
        last_seq=9,
        first_time_ns=1_000_000_000,
        last_time_ns=1_500_000_000,
        duration_s=0.5,
        stopped_by="until",
    )
    assert summary_lines(summary) == [
        "replayed 3 messages in 0.50 s (6 msg/s); stopped: until",
        "  sequences  5 .. 9",
        "  stored     1970-01-01T00:00:01.000Z .. 1970-01-01T00:00:01.500Z (0.500 s)",
        "  AAPL     2",
        "  BTC-USD  1",
    ]
