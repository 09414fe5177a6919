"""`bourse up`: the whole platform in one process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from bourse.cli.common import NatsOption, run_until_signalled
from bourse.errors import ConfigError
from bourse.runtime import home as default_home

DEFAULT_PORT = 8000  # the gateway's (bourse.gateway.server.DEFAULT_PORT; not imported here,
# so that every other command starts without loading FastAPI and SQLAlchemy)


def register(app: typer.Typer) -> None:
    app.command("up")(up)


def up(
    nats: NatsOption = None,
    port: Annotated[int, typer.Option(help="Embedded NATS client port (0 = a free one).")] = 0,
    home: Annotated[
        Path | None, typer.Option(help="Data directory (default $BOURSE_HOME or ./.bourse).")
    ] = None,
    rate: Annotated[
        float, typer.Option(help="Simulated market-data messages per second (0 = no feed).")
    ] = 500.0,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 0,
    replicas: Annotated[
        int | None, typer.Option(help="Stream replicas (default 1, or 3 on a cluster).")
    ] = None,
    api_host: Annotated[
        str, typer.Option(help="Address the HTTP API listens on.", envvar="BOURSE_API_HOST")
    ] = "127.0.0.1",
    api_port: Annotated[
        int,
        typer.Option(help="HTTP API port (0 = a free one).", envvar="BOURSE_API_PORT"),
    ] = DEFAULT_PORT,
    makers: Annotated[
        bool, typer.Option(help="Run market makers quoting on the bourse venue.")
    ] = True,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Read-model database, e.g. postgresql://user@host/db (default: SQLite in the "
            "data directory).",
            envvar="BOURSE_DATABASE_URL",
        ),
    ] = None,
    history_url: Annotated[
        str | None,
        typer.Option(
            help="History store, e.g. postgresql://user@host/db (default: the read model's "
            "PostgreSQL if --database-url is one, else DuckDB in the data directory).",
            envvar="BOURSE_HISTORY_URL",
        ),
    ] = None,
    risk_config: Annotated[
        Path | None,
        typer.Option(
            "--risk-config",
            help="Risk rules per account, a JSON or TOML file (docs/risk.md). Default: a daily "
            "loss limit of 10,000 for every account but the market makers'.",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            help="Log lines as text, or json (one object per line, with the service, level, "
            "message and extra fields).",
            envvar="BOURSE_LOG_FORMAT",
        ),
    ] = "text",
    lag_threshold: Annotated[
        int,
        typer.Option(
            help="Warn when a consumer is this many messages behind its stream (0 = never).",
            envvar="BOURSE_LAG_THRESHOLD",
        ),
    ] = 10_000,
) -> None:
    """Start the platform: embedded NATS (unless --nats), streams, feed and services.

    Runs until Ctrl-C or SIGTERM, then stops everything cleanly and exits 0.
    """
    from bourse.cli import logs
    from bourse.gateway.metrics import MonitorConfig
    from bourse.platform import Platform, PlatformConfig
    from bourse.risk.rules import read_config

    logs.configure(log_format, service="bourse-up")
    if not 0 <= port <= 65535:
        raise ConfigError("--port", port, "0 (a free port) or 1-65535")
    if not rate >= 0 or rate == float("inf"):
        raise ConfigError("--rate", rate, "messages per second, a finite number >= 0")
    if not 0 <= api_port <= 65535:
        raise ConfigError("--api-port", api_port, "0 (a free port) or 1-65535")
    if replicas is not None and replicas not in (1, 3, 5):
        raise ConfigError("--replicas", replicas, "1, 3 or 5")
    if lag_threshold < 0:
        raise ConfigError("--lag-threshold", lag_threshold, "messages, 0 (never warn) or more")
    config = PlatformConfig(
        home=(home or default_home()).absolute(),
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
        risk=None if risk_config is None else read_config(risk_config),
        monitor=MonitorConfig(lag_threshold=lag_threshold),
    )

    async def main(stop: asyncio.Event) -> None:
        platform = Platform(config)
        try:
            await platform.start()
            assert platform.gateway is not None and platform.credentials is not None
            keys = platform.credentials
            ws = "ws" + platform.gateway.url.removeprefix("http")
            typer.echo(
                f"Bourse is up.\n  dashboard  {platform.gateway.url}/\n"
                f"  API        {platform.gateway.url}   (docs: {platform.gateway.url}/docs)\n"
                f"  streams    {ws}/stream (trades)   {ws}/v2/sip   {ws}/v1beta3/crypto/us\n"
                f"  NATS       {platform.nats_url}\n"
                f"  demo       APCA-API-KEY-ID={keys.key_id}\n"
                f"             APCA-API-SECRET-KEY={keys.secret}\n"
                f"  runtime    {config.home / 'runtime.json'}\n"
                "  try        bourse order buy AAPL 10   |   bourse ticker 'md.*.AAPL'   |   "
                "bourse streams\n"
                "Ctrl-C stops it."
            )
            await platform.wait(stop)
        finally:
            await platform.stop()
        typer.echo("Bourse stopped cleanly.")

    run_until_signalled(main)
