"""`bourse history export` and `span`, the real command in a subprocess: over NATS from a
running history service, and straight from a store when no platform runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from bourse.bus.server import NatsServer
from bourse.history.service import HistoryConfig, HistoryService
from bourse.history.store import open_store
from tests.cli.helpers import bourse, isolated_env
from tests.history.marketdata import MARKET, START, record


@pytest.fixture
async def history(nc: NATS, js: JetStreamContext, tmp_path: Path) -> AsyncIterator[HistoryService]:
    store = open_store(None, home=tmp_path / "service")
    service = await HistoryService(nc, store, HistoryConfig(batch_timeout=0.05)).start()
    await record(js, service, MARKET)
    yield service
    await service.stop()
    store.close()


async def run(*args: str, home: Path, nats: str | None = None) -> tuple[int, str, str]:
    env = isolated_env(home)
    if nats is not None:
        env["BOURSE_NATS_URL"] = nats
    done = await asyncio.to_thread(bourse, "history", *args, env=env)
    return done.returncode, done.stdout, done.stderr


async def test_export_over_nats(
    nats_server: NatsServer, history: HistoryService, tmp_path: Path
) -> None:
    path = tmp_path / "aapl.parquet"
    code, out, err = await run(
        "export",
        str(path),
        "--symbols",
        "AAPL",
        "--start",
        START,
        home=tmp_path,
        nats=nats_server.url,
    )
    assert code == 0, err
    assert out.strip() == f"wrote 4 trades to {path}"
    table = pq.read_table(path).to_pylist()
    assert [row["price"] for row in table] == [
        Decimal("179"), Decimal("180"), Decimal("180.2"), Decimal("180.5")
    ]  # fmt: skip
    bars = tmp_path / "bars.parquet"
    code, out, err = await run(
        "export", str(bars), "--symbols", "AAPL,MSFT", "--kind", "bars", "--timeframe", "1Day",
        "--start", START, home=tmp_path, nats=nats_server.url,
    )  # fmt: skip
    assert code == 0, err
    rows = pq.read_table(bars).to_pylist()
    assert [(r["symbol"], r["trade_count"], r["source"]) for r in rows] == [
        ("AAPL", 1, "trades"), ("AAPL", 3, "trades"), ("MSFT", 0, "quotes")
    ]  # fmt: skip
    code, out, _ = await run("span", home=tmp_path, nats=nats_server.url)
    assert code == 0 and json.loads(out)["trades"]["rows"] == 5


async def test_export_from_the_store_without_a_platform(
    history: HistoryService, tmp_path: Path
) -> None:
    await history.stop()
    history.store.close()  # DuckDB: one process at a time
    home = tmp_path / "service"  # the data directory holding history.duckdb
    path = tmp_path / "quotes.parquet"
    code, out, err = await run(
        "export", str(path), "--symbols", "MSFT", "--kind", "quotes", home=home
    )
    assert code == 0, err
    assert out.strip() == f"wrote 1 quotes to {path}"
    assert pq.read_table(path).column("bid").to_pylist() == [Decimal("299")]


async def test_a_bad_option_says_what_is_accepted(tmp_path: Path) -> None:
    store = tmp_path / "x.duckdb"
    code, _, err = await run(
        "export", str(tmp_path / "x.parquet"), "--symbols", "AAPL", "--start", "soon",
        "--store", str(store), home=tmp_path,
    )  # fmt: skip
    assert code == 2 and "start must be RFC 3339" in err
    code, _, err = await run("span", home=tmp_path / "nowhere")
    assert code == 2 and "no platform to connect to" in err
