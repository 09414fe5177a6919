"""`bourse up`: the whole platform in one process; `bourse run`: some of its services."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bourse.cli.common import NatsOption, run_until_signalled
from bourse.errors import ConfigError
from bourse.runtime import home as default_home

if TYPE_CHECKING:
    from bourse.platform import Platform, PlatformConfig

DEFAULT_PORT = 8000  # the gateway's (bourse.gateway.server.DEFAULT_PORT; not imported here,
# so that every other command starts without loading FastAPI and SQLAlchemy)


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("run")(run)


# The options of `bourse up` and `bourse run`.
Home = Annotated[
    Path | None, typer.Option(help="Data directory (default $BOURSE_HOME or ./.bourse).")
]
Rate = Annotated[
    float, typer.Option(help="Simulated market-data messages per second (0 = no feed).")
]
Seed = Annotated[int, typer.Option(help="Simulator seed.")]
Replicas = Annotated[
    int | None, typer.Option(help="Stream replicas (default 1, or 3 on a cluster).")
]
ApiHost = Annotated[
    str,
    typer.Option(
        help="Address the HTTP API listens on (with `run` and no gateway: the operations "
        "endpoints).",
        envvar="BOURSE_API_HOST",
    ),
]
ApiPort = Annotated[
    int,
    typer.Option(
        help="HTTP API port, 0 = a free one (with `run` and no gateway: the operations endpoints).",
        envvar="BOURSE_API_PORT",
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        help="Read-model database, e.g. postgresql://user@host/db (default: SQLite in the "
        "data directory).",
        envvar="BOURSE_DATABASE_URL",
    ),
]
HistoryUrl = Annotated[
    str | None,
    typer.Option(
        help="History store, e.g. postgresql://user@host/db (default: the read model's "
        "PostgreSQL if --database-url is one, else DuckDB in the data directory).",
        envvar="BOURSE_HISTORY_URL",
    ),
]
RiskConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--risk-config",
        help="Risk rules per account, a JSON or TOML file (docs/risk.md). Default: a daily "
        "loss limit of 10,000 for every account but the market makers'.",
        show_default=False,
    ),
]
LogFormat = Annotated[
    str,
    typer.Option(
        "--log-format",
        help="Log lines as text, or json (one object per line, with the service, level, "
        "message and extra fields).",
        envvar="BOURSE_LOG_FORMAT",
    ),
]
LagThreshold = Annotated[
    int,
    typer.Option(
        help="Warn when a consumer is this many messages behind its stream (0 = never).",
        envvar="BOURSE_LAG_THRESHOLD",
    ),
]


def up(
    nats: NatsOption = None,
    port: Annotated[int, typer.Option(help="Embedded NATS client port (0 = a free one).")] = 0,
    home: Home = None,
    rate: Rate = 500.0,
    seed: Seed = 0,
    replicas: Replicas = None,
    api_host: ApiHost = "127.0.0.1",
    api_port: ApiPort = DEFAULT_PORT,
    makers: Annotated[
        bool, typer.Option(help="Run market makers quoting on the bourse venue.")
    ] = True,
    database_url: DatabaseUrl = None,
    history_url: HistoryUrl = None,
    risk_config: RiskConfigFile = None,
    log_format: LogFormat = "text",
    lag_threshold: LagThreshold = 10_000,
    processes: Annotated[
        int,
        typer.Option(
            help="Processes to spread the services over (1-3): 2 runs the exchange (accounts, "
            "engine, risk, session) in a worker process, 3 also the market services "
            "(analytics, alerts, history, makers, feed). One per free core.",
            envvar="BOURSE_PROCESSES",
        ),
    ] = 1,
) -> None:
    """Start the platform: embedded NATS (unless --nats), streams, feed and services.

    Runs until Ctrl-C or SIGTERM, then stops everything cleanly and exits 0.
    """
    from bourse.cli import logs
    from bourse.platform import MAX_PROCESSES

    logs.configure(log_format, service="bourse-up")
    if not 0 <= port <= 65535:
        raise ConfigError("--port", port, "0 (a free port) or 1-65535")
    if not 1 <= processes <= MAX_PROCESSES:
        raise ConfigError("--processes", processes, f"1 to {MAX_PROCESSES}")
    config = _config(
        home=home,
        nats_url=nats,
        nats_port=port,
        replicas=replicas,
        feed_rate=rate,
        seed=seed,
        api_host=api_host,
        api_port=api_port,
        database_url=database_url,
        history_url=history_url,
        market_makers=makers,
        risk_config=risk_config,
        lag_threshold=lag_threshold,
    )
    if processes > 1:
        config = _with_workers(
            config,
            processes,
            risk_config=risk_config,
            log_format=log_format,
        )

    def banner(platform: Platform) -> str:
        assert platform.gateway is not None and platform.credentials is not None
        keys = platform.credentials
        ws = "ws" + platform.gateway.url.removeprefix("http")
        workers = "".join(
            f"  worker     pid {w.pid}: {', '.join(w.spec.services)}   (ops: {w.ops_url})\n"
            for w in platform.workers
        )
        return (
            f"Bourse is up.\n  dashboard  {platform.gateway.url}/\n"
            f"  API        {platform.gateway.url}   (docs: {platform.gateway.url}/docs)\n"
            f"  streams    {ws}/stream (orders, trades)   {ws}/v2/sip   {ws}/v1beta3/crypto/us\n"
            f"  NATS       {platform.nats_url}\n"
            f"  demo       APCA-API-KEY-ID={keys.key_id}\n"
            f"             APCA-API-SECRET-KEY={keys.secret}\n"
            f"  runtime    {config.home / 'runtime.json'}\n"
            f"{workers}"
            "  try        bourse order buy AAPL 10   |   bourse watch   |   "
            "bourse ticker 'md.*.AAPL'   |   bourse streams"
        )

    _serve(config, banner, "Bourse stopped cleanly.")


def run(
    services: Annotated[
        list[str],
        typer.Argument(
            help="Services to run here: accounts, engine, risk, analytics, alerts, history, "
            "session, makers, gateway, feed (or all).",
            show_default=False,
        ),
    ],
    nats: NatsOption = None,
    home: Home = None,
    rate: Rate = 500.0,
    seed: Seed = 0,
    replicas: Replicas = None,
    api_host: ApiHost = "127.0.0.1",
    api_port: ApiPort = DEFAULT_PORT,
    database_url: DatabaseUrl = None,
    history_url: HistoryUrl = None,
    risk_config: RiskConfigFile = None,
    log_format: LogFormat = "text",
    lag_threshold: LagThreshold = 10_000,
) -> None:
    """Run some of the platform's services in this process, on a running NATS.

    For scale-out: each process runs the services named, the others run elsewhere on the same
    NATS (--nats, $BOURSE_NATS_URL, or the running platform's). Every service but the gateway
    runs once on a NATS: a second one is refused. A process without the gateway serves
    /healthz, /readyz and /metrics at --api-host/--api-port. Runs until Ctrl-C or SIGTERM.
    """
    from bourse.cli import logs
    from bourse.cli.common import nats_url
    from bourse.platform import SERVICES

    if "all" in services and len(services) > 1:
        raise ConfigError("SERVICES", " ".join(services), "'all' names every service: alone")
    wanted = set(SERVICES) if services == ["all"] else set(services)  # checked by the config
    tag = "+".join(name for name in SERVICES if name in wanted) if services != ["all"] else None
    logs.configure(log_format, service="bourse-run", services=tag)
    config = _config(
        home=home,
        nats_url=None,
        nats_port=0,
        replicas=replicas,
        feed_rate=rate,
        seed=seed,
        api_host=api_host,
        api_port=api_port,
        database_url=database_url,
        history_url=history_url,
        market_makers=True,
        risk_config=risk_config,
        lag_threshold=lag_threshold,
        services=frozenset(wanted),
    )
    # The options are checked first; then NATS: --nats, $BOURSE_NATS_URL, else the running
    # platform's runtime file in --home (or $BOURSE_HOME).
    config = dataclasses.replace(config, nats_url=nats_url(nats, config.home))
    named = ", ".join(name for name in SERVICES if name in wanted)

    def banner(platform: Platform) -> str:
        lines = [f"Bourse runs {named} on NATS {platform.nats_url}."]
        if platform.gateway is not None:
            lines.append(f"  API        {platform.gateway.url}   (docs: /docs)")
            lines.append(f"  runtime    {config.home / 'runtime.json'}")
        if platform.ops_server is not None:
            lines.append(f"  ops        {platform.ops_server.url}   (/healthz /readyz /metrics)")
        return "\n".join(lines)

    _serve(config, banner, "Stopped cleanly.")


def _serve(config: PlatformConfig, banner: Callable[[Platform], str], farewell: str) -> None:
    """Start the platform, print `banner`, run until a signal, stop it, print `farewell`."""
    from bourse.platform import Platform, StopFailed

    async def main(stop: asyncio.Event) -> None:
        platform = Platform(config)
        try:
            await platform.start()
            typer.echo(f"{banner(platform)}\nCtrl-C stops it.")
            await platform.wait(stop)
        finally:
            await platform.stop()
        if platform.failed_steps:
            failed = ", ".join(platform.failed_steps)
            raise StopFailed(f"stopped, but stopping {failed} failed (see the log above)")
        typer.echo(farewell)

    run_until_signalled(main)


def _with_workers(
    config: PlatformConfig, processes: int, *, risk_config: Path | None, log_format: str
) -> PlatformConfig:
    """`config` with its services spread over `processes` (platform.PROCESS_GROUPS): each
    worker runs `bourse run` with this process's settings as options."""
    from bourse.platform import PROCESS_GROUPS, SERVICES
    from bourse.workers import WorkerSpec, split

    options = [
        *("--home", str(config.home)),
        *("--rate", repr(config.feed_rate)),
        *("--seed", str(config.seed)),
        *("--api-host", config.api_host),
        *("--api-port", "0"),  # each worker's operations endpoints, on a free port
        *("--log-format", log_format),
        *("--lag-threshold", str(config.monitor.lag_threshold)),
    ]
    if config.replicas is not None:
        options += ["--replicas", str(config.replicas)]
    if risk_config is not None:
        options += ["--risk-config", str(risk_config.absolute())]
    # URLs may hold passwords: in the environment (its user's alone), not on a command line.
    env = {}
    if config.database_url is not None:
        env["BOURSE_DATABASE_URL"] = config.database_url
    if config.history_url is not None:
        env["BOURSE_HISTORY_URL"] = config.history_url
    running = [name for name in SERVICES if config.runs(name)]
    here, workers = split(running, processes, PROCESS_GROUPS)
    return dataclasses.replace(
        config,
        services=here | {name for name in SERVICES if not config.runs(name)},
        workers=tuple(
            WorkerSpec(services, tuple(options), tuple(sorted(env.items()))) for services in workers
        ),
    )


def _config(
    *,
    home: Path | None,
    nats_url: str | None,
    nats_port: int,
    replicas: int | None,
    feed_rate: float,
    seed: int,
    api_host: str,
    api_port: int,
    database_url: str | None,
    history_url: str | None,
    market_makers: bool,
    risk_config: Path | None,
    lag_threshold: int,
    services: frozenset[str] | None = None,
) -> PlatformConfig:
    """The platform's configuration from the options, each checked."""
    from bourse.gateway.metrics import MonitorConfig
    from bourse.platform import SERVICES, PlatformConfig
    from bourse.risk.rules import read_config

    if not feed_rate >= 0 or feed_rate == float("inf"):
        raise ConfigError("--rate", feed_rate, "messages per second, a finite number >= 0")
    if not 0 <= api_port <= 65535:
        raise ConfigError("--api-port", api_port, "0 (a free port) or 1-65535")
    if replicas is not None and replicas not in (1, 3, 5):
        raise ConfigError("--replicas", replicas, "1, 3 or 5")
    if lag_threshold < 0:
        raise ConfigError("--lag-threshold", lag_threshold, "messages, 0 (never warn) or more")
    return PlatformConfig(
        home=(home or default_home()).absolute(),
        nats_url=nats_url,
        nats_port=nats_port,
        replicas=replicas,
        feed_rate=feed_rate,
        seed=seed,
        api_host=api_host,
        api_port=api_port,
        database_url=database_url,
        history_url=history_url,
        market_makers=market_makers,
        risk=None if risk_config is None else read_config(risk_config),
        monitor=MonitorConfig(lag_threshold=lag_threshold),
        services=frozenset(SERVICES) if services is None else services,
    )
