"""The benchmark runs end to end and reports honest figures (no timing thresholds here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BOURSE = str(Path(sys.executable).parent / "bourse")


def test_feed_benchmark_prints_one_json_object_and_loses_nothing() -> None:
    result = subprocess.run(
        [BOURSE, "bench", "feed", "--json", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["name"] == "feed"
    assert figures["target"] == 3.0
    assert figures["lost"] == 0
    assert figures["ticks_consumed"] == figures["ticks_published"] == figures["ticks_stored"]
    recomputed = figures["ours_ticks_per_s"] / figures["peer_ticks_per_s"]
    assert abs(figures["ratio"] - recomputed) <= 0.01 * recomputed
    assert figures["met"] == (figures["ratio"] >= 3.0)
    assert figures["publish_ack_latency_ms"]["p99"] >= figures["publish_ack_latency_ms"]["p50"]


def test_unknown_benchmark_names_the_known_ones() -> None:
    result = subprocess.run(
        [BOURSE, "bench", "nope"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "feed" in result.stderr


def test_engine_benchmark_compares_like_with_like() -> None:
    result = subprocess.run(
        [BOURSE, "bench", "engine", "--json", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["same_events"] is True
    assert figures["warmup_resting_orders"] == 1000
    assert 600 <= figures["warmup_price_levels"] <= 900
    assert figures["met"] == (figures["ratio"] >= 5.0)
    assert figures["latency_us"]["p99"] >= figures["latency_us"]["p50"] > 0
    nautilus = figures["nautilus"]  # informational peer, present only where it installs
    if nautilus is None:
        assert figures["nautilus_not_measured"]
    else:
        assert nautilus["same_events_and_book"] is True
        assert nautilus["target"] is None
        recomputed = figures["ours_orders_per_s"] / nautilus["orders_per_s"]
        assert abs(nautilus["ratio"] - recomputed) <= 0.01 * recomputed


def test_ratios_are_reported_on_the_safe_side_of_their_targets() -> None:
    # `met` is decided on the printed figure: a ratio of 0.4996 must not print as 0.5 and
    # read "NOT met" (seen in CI), nor print as 0.5 and count as met.
    from benchmarks import at_least, at_most

    assert at_least(0.4996) == 0.499 and at_least(0.4996) < 0.5
    assert at_least(0.5) == 0.5 and at_least(0.29) == 0.29 and at_least(0.07049, 4) == 0.0704
    assert at_most(8.301) == 8.31 and at_most(8.3) == 8.3 and at_most(30.0) == 30.0
    assert at_most(30.0001) > 30.0
