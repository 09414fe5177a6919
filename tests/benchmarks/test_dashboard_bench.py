"""`bourse bench dashboard --quick` measures the page idle and under load in a real chromium and
reports the ratio it computed (no timing thresholds here: the figures depend on the machine)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import registry

BOURSE = str(Path(sys.executable).parent / "bourse")


def test_the_dashboard_benchmark_is_registered() -> None:
    from benchmarks import dashboard

    assert registry()["dashboard"] is dashboard.run


@pytest.mark.skipif(
    shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
    reason="chromium is not installed: apt-get install chromium (make test does it as root)",
)
def test_dashboard_benchmark_reports_frames_idle_and_loaded() -> None:
    result = subprocess.run(
        [BOURSE, "bench", "dashboard", "--json", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["name"] == "dashboard" and figures["target"] == 0.8
    idle, loaded = figures["idle"], figures["loaded"]
    assert idle["fps"] > 0 and loaded["fps"] > 0
    assert loaded["messages"] > 0  # the page really applied market data while measured
    # (the per-window figures are printed rounded to 0.01)
    assert figures["ratio"] == pytest.approx(loaded["fps"] / idle["fps"], rel=1e-3, abs=2e-3)
    assert figures["met"] == (
        figures["ratio"] >= 0.8
        and figures["updates_per_s"]["published"] >= 0.9 * figures["updates_per_s"]["target"]
    )
