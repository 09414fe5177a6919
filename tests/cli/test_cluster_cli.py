"""End to end: `bourse cluster up` in a subprocess, as a user would run it."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bourse.bus import streams as platform_streams
from tests.cli.helpers import BOURSE, bourse, children_of, command_line, isolated_env, wait_for

PLATFORM_STREAMS = {spec.name for spec in platform_streams.PLATFORM_STREAMS}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path / "home")


@pytest.fixture
def cluster_up(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    output = tmp_path / "cluster-up.out"
    with output.open("w") as sink:
        process = subprocess.Popen(
            [BOURSE, "cluster", "up", "--nodes", "3"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    runtime = Path(env["BOURSE_HOME"]) / "cluster.json"
    wait_for(lambda: runtime.exists() or process.poll() is not None, "cluster.json")
    assert process.poll() is None, output.read_text()
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_cluster_up_serves_r3_streams_and_stops_cleanly(
    cluster_up: subprocess.Popen[str], env: dict[str, str], tmp_path: Path
) -> None:
    home = Path(env["BOURSE_HOME"])
    runtime = json.loads((home / "cluster.json").read_text())
    assert runtime["cluster"] is True
    assert runtime["pid"] == cluster_up.pid
    urls = runtime["nats_url"].split(",")
    assert len(urls) == 3 == len(set(urls))
    assert all(url.startswith("nats://127.0.0.1:") for url in urls)
    servers = children_of(cluster_up.pid)
    assert len(servers) == 3
    assert all("nats-server" in command_line(pid) for pid in servers)
    assert {p.name for p in (home / "cluster").iterdir()} >= {"n0", "n1", "n2"}

    table = bourse("streams", "--interval", "0.2", env=env)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines() if line.strip()}
    for stream in PLATFORM_STREAMS:
        assert rows[stream][1] == "R3", table.stdout

    report = json.loads(bourse("streams", "--json", "--interval", "0.2", env=env).stdout)
    streams = {row["stream"]["name"]: row["stream"] for row in report["streams"]}
    assert set(streams) == PLATFORM_STREAMS
    for stream in streams.values():
        assert stream["replicas"] == 3 == stream["current_replicas"]
        assert stream["leader"] in {"bourse-n0", "bourse-n1", "bourse-n2"}

    second = bourse("cluster", "up", env=env)
    assert second.returncode == 2
    assert "already serves" in second.stderr

    # The whole platform runs against the cluster: `bourse up` in the same home joins it.
    # Output to a file, not a pipe nobody reads (a full pipe would stall the platform).
    with (tmp_path / "up.out").open("w") as out:
        platform = subprocess.Popen(
            [BOURSE, "up", "--rate", "500"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: (home / "runtime.json").exists() or platform.poll() is not None, "up")
        assert platform.poll() is None, (tmp_path / "up.out").read_text()
        joined = json.loads((home / "runtime.json").read_text())
        assert joined["nats_url"] == runtime["nats_url"] and joined["cluster"] is True
        assert children_of(platform.pid) == [], "no embedded server when joining a cluster"
        ticker = bourse("ticker", "--count", "50", env=env)
        assert ticker.returncode == 0 and len(ticker.stdout.splitlines()) == 50
        platform.send_signal(signal.SIGTERM)
        assert platform.wait(timeout=30) == 0
    finally:
        if platform.poll() is None:
            platform.kill()
    assert not (home / "runtime.json").exists()

    cluster_up.send_signal(signal.SIGTERM)
    assert cluster_up.wait(timeout=30) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in servers), "a node outlived it"
    assert not (home / "cluster.json").exists()
    assert "stopped cleanly" in (tmp_path / "cluster-up.out").read_text()


@pytest.mark.parametrize("nodes", ["0", "-2"])
def test_a_cluster_needs_at_least_one_node(nodes: str, env: dict[str, str]) -> None:
    result = bourse("cluster", "up", "--nodes", nodes, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bourse: error: invalid --nodes")
    assert ">= 1" in lines[0]
    assert not (Path(env["BOURSE_HOME"]) / "cluster.json").exists()


def test_more_replicas_than_nodes_is_refused(env: dict[str, str]) -> None:
    result = bourse("cluster", "up", "--nodes", "3", "--replicas", "5", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "bourse: error: invalid --replicas: 5; accepted: 1 to 3 on a 3-node cluster"
    )
