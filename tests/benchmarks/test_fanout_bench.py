"""`bourse bench fanout --quick` serves every client every quote from both servers and
reports the ratio it computed (no timing thresholds here: the figures depend on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BOURSE = str(Path(sys.executable).parent / "bourse")


def test_fanout_benchmark_delivers_every_quote_and_reports_the_ratio() -> None:
    result = subprocess.run(
        [BOURSE, "bench", "fanout", "--json", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["name"] == "fanout" and figures["target"] == 0.7
    clients, quotes = figures["clients"], figures["quotes_per_round"]
    assert clients == 100 and quotes > 0
    for server in ("bourse", "peer"):
        rounds = figures["rounds"][server]
        assert rounds
        for round_ in rounds:
            assert round_["clients_done"] == clients  # every client got the last quote
            assert round_["expected"] == clients * quotes
            assert 0 < round_["frames"] <= round_["expected"]
            assert round_["frames_per_s"] > 0
    assert all(r["frames"] == r["expected"] for r in figures["rounds"]["peer"])  # no conflation
    paced = figures["paced"]
    for server in ("bourse", "peer"):
        assert paced[server]["clients_done"] == clients
        assert paced[server]["frames"] == paced[server]["expected"] == clients * paced["quotes"]
        assert paced[server]["cpu_us_per_frame"] > 0
    ratio = figures["bourse_frames_per_s"] / figures["peer_frames_per_s"]
    assert abs(figures["ratio"] - ratio) <= 0.001 * ratio + 1e-3
    assert figures["met"] == (figures["ratio"] >= 0.7)
    assert figures["bourse_stream"]["slow_clients"] == 0
