"""`bourse up --processes N`: the platform over several processes, one command.

End to end with the real CLI: the workers start before the banner, an order sent to the
gateway (in `bourse up`'s process) is matched by the engine in one worker against the market
makers of another, the workers stop in order and cleanly, a worker that dies takes the
platform down with its name, and a killed `bourse up` leaves no worker behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bourse.platform import (
    MAX_PROCESSES,
    PROCESS_GROUPS,
    SERVICES,
    Platform,
    PlatformConfig,
    StopFailed,
)
from bourse.workers import Worker, WorkerError, WorkerSpec, split
from tests.cli.helpers import Logged, bourse, children_of, command_line, isolated_env, wait_for

EXCHANGE = "accounts+engine+risk+session"
MARKET = "analytics+alerts+history+makers+feed"


class Up(Logged):
    """A `bourse up ...` process."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        super().__init__(["up", *args], env, log)

    def wait_started(self) -> None:
        self.wait_for_output("Ctrl-C stops it.", "bourse up to start", timeout=180)

    def workers(self) -> dict[str, int]:
        """The workers' pids by what they run, from the children of `bourse up`."""
        found = {}
        for pid in children_of(self.process.pid):
            words = command_line(pid).split()
            if "run" in words:
                services = words[words.index("run") + 1 : words.index("--nats")]
                found["+".join(services)] = pid
        return found


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    started: list[Up] = []

    def start(*args: str) -> Up:
        process = Up(list(args), isolated_env(tmp_path / "home"), tmp_path / "up.log")
        started.append(process)
        process.wait_started()
        return process

    yield start
    for process in started:
        process.close()


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # exited, not yet reaped


def test_three_processes_trade_together_and_stop_in_order(up: Callable[..., Up]) -> None:
    platform = up("--processes", "3", "--rate", "200")
    workers = platform.workers()
    assert set(workers) == {EXCHANGE, MARKET}
    servers = [p for p in children_of(platform.process.pid) if p not in workers.values()]
    assert len(servers) == 1, "one embedded nats-server besides the workers"
    # The banner names each worker with its operations endpoints, which serve its services.
    banner = {
        match[1]: (int(match[0]), match[2])
        for match in re.findall(r"worker +pid (\d+): ([a-z, ]+?) +\(ops: (\S+)\)", platform.output)
    }
    assert {name.replace(", ", "+") for name in banner} == {EXCHANGE, MARKET}
    pid, ops_url = banner["accounts, engine, risk, session"]
    assert pid == workers[EXCHANGE]
    # Ready once its folds have caught up (after the banner): polled, as a probe would.
    wait_for(lambda: httpx.get(f"{ops_url}/readyz", timeout=10).status_code == 200, "readyz")
    checks = httpx.get(f"{ops_url}/readyz", timeout=10).json()["checks"]
    assert {"accounts", "engine", "risk"} <= set(checks)
    # The gateway's /readyz answers for the workers too.
    api = json.loads((Path(platform.env["BOURSE_HOME"]) / "runtime.json").read_text())["http_url"]
    wait_for(lambda: httpx.get(f"{api}/readyz", timeout=10).status_code == 200, "the API ready")
    checks = httpx.get(f"{api}/readyz", timeout=10).json()["checks"]
    assert checks[f"worker {EXCHANGE}"] == checks[f"worker {MARKET}"] == "ok"

    # The gateway here, the engine in one worker, the market makers' quotes from the other.
    statuses: list[str] = []

    def filled() -> bool:  # once the market makers quote AAPL
        result = bourse("order", "buy", "AAPL", "5", "--json", env=platform.env)
        assert result.returncode == 0, result.stderr
        statuses.append(json.loads(result.stdout)["status"])
        return statuses[-1] == "filled"

    wait_for(filled, "a market order filled against the market makers")
    assert set(statuses[:-1]) <= {"canceled"}, statuses  # nothing to fill against yet
    positions = bourse("positions", "--json", env=platform.env)
    assert [(p["symbol"], p["qty"]) for p in json.loads(positions.stdout)] == [("AAPL", "5")]

    platform.process.send_signal(signal.SIGTERM)
    assert platform.process.wait(timeout=90) == 0, platform.output
    output = platform.output
    # Each worker stopped cleanly, the market's (feed, market makers) before the exchange's.
    assert f"[{MARKET}] Stopped cleanly." in output and f"[{EXCHANGE}] Stopped cleanly." in output
    assert output.index(f"stopped worker {MARKET}") < output.index(f"stopped worker {EXCHANGE}")
    assert output.rstrip().endswith("Bourse stopped cleanly.")
    # The workers' log lines (on the same stderr) say which worker wrote them.
    assert re.search(rf"INFO +\[{re.escape(EXCHANGE)}\] bourse\.bus\.fold: ", output)
    assert all(gone(pid) for pid in [*workers.values(), *servers])


def test_a_worker_that_dies_stops_the_platform_and_is_named(up: Callable[..., Up]) -> None:
    platform = up("--processes", "2", "--rate", "0", "--no-makers")
    workers = platform.workers()
    assert list(workers) == [EXCHANGE]  # 2 processes: the exchange in a worker, the rest here
    servers = [p for p in children_of(platform.process.pid) if p not in workers.values()]

    subprocess.run(["kill", "-KILL", str(workers[EXCHANGE])], check=True)

    assert platform.process.wait(timeout=90) == 2, platform.output
    errors = [line for line in platform.output.splitlines() if line.startswith("bourse: error:")]
    assert errors == [
        f"bourse: error: worker {EXCHANGE} (pid {workers[EXCHANGE]}) exited with -9"
    ], platform.output
    assert "Traceback" not in platform.output
    wait_for(lambda: all(gone(pid) for pid in servers), "the nats-server to stop")
    assert not (Path(platform.env["BOURSE_HOME"]) / "runtime.json").exists()


def test_a_sigterm_to_every_process_at_once_still_stops_cleanly(up: Callable[..., Up]) -> None:
    # What systemd's default KillMode=control-group does: the workers get the signal too.
    platform = up("--processes", "3", "--rate", "0", "--no-makers")
    workers = platform.workers()
    for pid in [platform.process.pid, *workers.values()]:
        os.kill(pid, signal.SIGTERM)
    assert platform.process.wait(timeout=90) == 0, platform.output
    assert platform.output.rstrip().endswith("Bourse stopped cleanly.")
    assert "bourse: error:" not in platform.output
    wait_for(lambda: all(gone(pid) for pid in workers.values()), "the workers to exit")


def test_a_killed_bourse_up_leaves_no_worker_behind(up: Callable[..., Up]) -> None:
    platform = up("--processes", "3", "--rate", "200")  # a feed and market makers at work
    children = children_of(platform.process.pid)
    assert len(children) == 3  # nats-server and two workers
    platform.process.kill()
    platform.process.wait()
    wait_for(lambda: all(gone(pid) for pid in children), "every child to exit", timeout=20)


class Stubborn(Worker):
    """A worker whose command is given: one that never prints a banner, or fails at once."""

    def __init__(self, code: str) -> None:
        super().__init__(WorkerSpec(("engine",)))
        self.code = code

    def command(self, nats_url: str) -> list[str]:
        return [sys.executable, "-c", self.code]


async def test_a_worker_that_prints_no_banner_in_time_is_stopped_and_named() -> None:
    worker = Stubborn("import time\nprint('starting', flush=True)\ntime.sleep(60)")
    with pytest.raises(WorkerError, match="worker engine printed no banner within 1s"):
        await worker.start("nats://127.0.0.1:1", timeout=1)
    assert worker.pid is not None and gone(worker.pid)


async def test_a_worker_that_fails_before_its_banner_is_named_with_its_exit_code() -> None:
    worker = Stubborn("raise SystemExit(3)")
    with pytest.raises(WorkerError, match="worker engine exited with 3 before it started") as e:
        await worker.start("nats://127.0.0.1:1")
    assert e.value.code == 3


def test_services_are_split_by_group_without_those_switched_off(tmp_path: Path) -> None:
    assert MAX_PROCESSES == 3
    assert frozenset().union(*PROCESS_GROUPS) == set(SERVICES) - {"gateway"}
    assert split(SERVICES, 1, PROCESS_GROUPS) == (frozenset(SERVICES), [])
    here, workers = split(SERVICES, 2, PROCESS_GROUPS)
    assert workers == [("accounts", "engine", "risk", "session")]
    assert here == {"analytics", "alerts", "history", "makers", "gateway", "feed"}
    here, workers = split(SERVICES, 3, PROCESS_GROUPS)
    assert here == {"gateway"}
    assert workers[1] == ("analytics", "alerts", "history", "makers", "feed")
    quiet = [name for name in SERVICES if name not in ("makers", "feed")]
    assert split(quiet, 3, PROCESS_GROUPS)[1][1] == ("analytics", "alerts", "history")
    # A group with nothing left to run is no worker.
    assert split(["gateway", "accounts"], 3, PROCESS_GROUPS) == (
        frozenset({"gateway"}),
        [("accounts",)],
    )
    assert WorkerSpec(("accounts", "engine")).name == "accounts+engine"


def test_workers_get_this_processes_settings_as_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.main import get_command

    from bourse.cli import app
    from bourse.cli.up import _with_workers

    risk = tmp_path / "risk.toml"
    config = _with_workers(
        PlatformConfig(
            home=tmp_path / "home",
            feed_rate=25.0,
            seed=7,
            replicas=1,
            api_port=8123,
            database_url="postgresql://u:secret@h/db",
            history_url="postgresql://u:secret@h/history",
            market_makers=False,
        ),
        3,
        risk_config=risk,
        log_format="json",
    )
    assert config.services == {"gateway", "makers"}  # the makers, switched off, stay off
    assert not config.runs("makers")
    exchange, market = config.workers
    assert market.services == ("analytics", "alerts", "history", "feed")
    # The worker's command line as `bourse run` itself parses it.
    command = Worker(exchange).command("nats://127.0.0.1:4321")
    assert command[:4] == [sys.executable, "-m", "bourse", "run"]
    assert "secret" not in " ".join(command)  # database URLs only in its environment
    for name in [name for name in os.environ if name.startswith("BOURSE_")]:
        monkeypatch.delenv(name)  # what `bourse run` would read besides its options
    run = get_command(app).commands["run"]  # type: ignore[attr-defined]
    params = run.make_context("run", command[4:]).params
    assert params["services"] == ["accounts", "engine", "risk", "session"]
    assert {name: params[name] for name in params if name != "services"} == {
        "nats": "nats://127.0.0.1:4321",
        "home": tmp_path / "home",
        "rate": 25.0,
        "seed": 7,
        "replicas": 1,
        "api_host": "127.0.0.1",
        "api_port": 0,
        "database_url": None,
        "history_url": None,
        "risk_config": risk,
        "log_format": "json",
        "lag_threshold": 10_000,
    }
    assert dict(exchange.env) == {
        "BOURSE_DATABASE_URL": "postgresql://u:secret@h/db",
        "BOURSE_HISTORY_URL": "postgresql://u:secret@h/history",
    }


async def test_a_failed_stop_step_is_noted_and_the_next_steps_still_run(tmp_path: Path) -> None:
    platform = Platform(PlatformConfig(home=tmp_path))
    ran = []

    async def stuck() -> None:
        raise WorkerError("worker engine stopped with exit code -9", -9)

    async def fine() -> None:
        ran.append("nats-server")

    await platform._step("worker engine", stuck)
    await platform._step("nats-server", fine)
    assert platform.failed_steps == ["worker engine"]
    assert ran == ["nats-server"]


def test_bourse_up_says_which_steps_failed_instead_of_stopped_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bourse.platform
    from bourse.cli.up import _serve

    class StopsBadly:
        """A platform whose stop had a step fail (a worker that had to be killed)."""

        def __init__(self, config: PlatformConfig) -> None:
            self.failed_steps: list[str] = []

        async def start(self) -> None:
            pass

        async def wait(self, stop: object) -> None:
            pass

        async def stop(self) -> None:
            self.failed_steps.append(f"worker {EXCHANGE}")

    monkeypatch.setattr(bourse.platform, "Platform", StopsBadly)
    with pytest.raises(StopFailed, match=rf"stopping worker {re.escape(EXCHANGE)} failed"):
        _serve(PlatformConfig(home=tmp_path), lambda _: "up", "Bourse stopped cleanly.")
    assert "stopped cleanly" not in capsys.readouterr().out
