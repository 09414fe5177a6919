"""`bourse bench analytics --quick` runs end to end and reports its figures (no timing
thresholds here: the shape, and that nothing was lost)."""

from __future__ import annotations

from benchmarks import analytics, registry


def test_the_analytics_benchmark_is_registered() -> None:
    assert registry()["analytics"] is analytics.run


async def test_quick_run_reports_both_rates_and_loses_nothing() -> None:
    figures = await analytics.run(quick=True)
    assert figures["name"] == "analytics"
    assert figures["target"] == analytics.TARGET == 0.5
    assert figures["ticks"] == figures["ticks_stored"] == 20_000
    assert figures["ours_ticks_per_s"] > 0 and figures["peer_ticks_per_s"] > 0
    recomputed = figures["ours_ticks_per_s"] / figures["peer_ticks_per_s"]
    assert abs(figures["ratio"] - recomputed) <= 0.01 * recomputed
    assert figures["met"] == (figures["ratio"] >= analytics.TARGET)
    assert figures["cpu_ratio"] > 0
    # Every output the service published is in ANALYTICS.
    assert figures["outputs_stored"] == figures["outputs_published"] > 0
    assert len(figures["runs"]["ours"]) == len(figures["runs"]["peer"]) == 2
