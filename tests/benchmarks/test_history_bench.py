"""`bourse bench history --quick`: one JSON object, both parts measured, the same bars from
SQL and from the Python loop (no timing thresholds: the figures are the benchmark's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import history

BOURSE = str(Path(sys.executable).parent / "bourse")


def test_history_benchmark_reports_both_parts() -> None:
    result = subprocess.run(
        [BOURSE, "bench", "history", "--json", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert (figures["name"], figures["target"]) == ("history", history.TARGET)
    ingest, query = figures["ingest"], figures["bars_query"]
    assert ingest["rows_stored"] == ingest["messages"]  # the simulator sends quotes and trades
    recomputed = ingest["ours_rows_per_s"] / ingest["peer_rows_per_s"]
    assert abs(figures["ratio"] - recomputed) <= 0.01 * recomputed + 0.001
    assert figures["ratio"] == ingest["ratio"]
    assert query["same_bars"] is True
    assert query["trades"] + query["quotes"] == query["ticks"]
    assert query["quote_bars"] > 0  # the fallback is exercised
    assert figures["met"] == (figures["ratio"] >= history.TARGET)


def test_the_python_loop_and_sql_agree_on_a_small_day() -> None:
    found = history.bars_query(5_000)
    assert found["same_bars"] is True
    assert found["bars"] > 0
