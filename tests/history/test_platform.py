"""End to end, as `make run` runs it: `bourse up` records the simulator's market data, the
market-data API answers from it (alpaca-py), and `bourse history export` reads it over NATS
while the platform runs; Ctrl-C stops everything cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow.parquet as pq
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest, StockLatestQuoteRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from tests.cli.helpers import BOURSE, bourse, isolated_env, wait_for


def test_up_records_history_and_serves_it(tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "home")
    log = tmp_path / "up.log"  # a file, not a pipe nobody reads (a full one stalls `up`)
    with log.open("w") as out:
        process = subprocess.Popen(
            [BOURSE, "up", "--rate", "1000"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        runtime_path = Path(env["BOURSE_HOME"]) / "runtime.json"
        wait_for(lambda: runtime_path.exists() or process.poll() is not None, "runtime.json")
        assert process.poll() is None, log.read_text()
        runtime = json.loads(runtime_path.read_text())
        url, key, secret = runtime["http_url"], runtime["api_key_id"], runtime["api_secret_key"]
        headers = {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret}

        def recorded_trades() -> bool:
            answer = httpx.get(f"{url}/v2/stocks/trades/latest?symbols=AAPL", headers=headers)
            return answer.status_code == 200 and "AAPL" in answer.json()["trades"]

        wait_for(recorded_trades, "AAPL trades in the history", timeout=60)

        data = StockHistoricalDataClient(key, secret, url_override=url)
        since = datetime.now(UTC) - timedelta(minutes=5)
        bars = data.get_stock_bars(
            StockBarsRequest(
                symbol_or_symbols=["AAPL", "MSFT"],
                timeframe=TimeFrame(1, TimeFrameUnit.Minute),
                start=since,
            )
        )
        assert bars["AAPL"] and all(b.low <= b.close <= b.high for b in bars["AAPL"])
        latest = data.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols="MSFT"))
        assert latest["MSFT"].bid_price <= latest["MSFT"].ask_price

        path = tmp_path / "aapl.parquet"
        exported = bourse(
            "history", "export", str(path), "--symbols", "AAPL", "--kind", "quotes", env=env
        )
        assert exported.returncode == 0, exported.stderr
        assert pq.read_table(path).num_rows > 0

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (Path(env["BOURSE_HOME"]) / "history.duckdb").exists()
