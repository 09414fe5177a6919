"""`bourse cluster up`: a local JetStream cluster (R3 streams) for HA tests and demos."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from nats.errors import Error as NatsError

from bourse.bus.cluster import LocalCluster
from bourse.bus.connection import connected
from bourse.bus.streams import provision_streams
from bourse.cli.common import run_until_signalled, unless_stopped
from bourse.errors import BrokerError, ConfigError
from bourse.runtime import (
    Runtime,
    home,
    refuse_if_running,
    remove_runtime,
    runtime_path,
    write_runtime,
)

# JetStream keeps at most five replicas of a stream.
MAX_REPLICAS = 5


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="cluster",
        help="A local multi-node NATS JetStream cluster.",
        no_args_is_help=True,
    )
    group.command("up")(up)
    app.add_typer(group)


def check_cluster_size(nodes: int, replicas: int | None) -> int:
    """The stream replica count for `nodes` nodes: `replicas`, else 3 (fewer on a small cluster)."""
    if nodes < 1:
        raise ConfigError("--nodes", nodes, "an integer >= 1 (3 or 5 typical)")
    if replicas is None:
        return min(3, nodes)
    most = min(nodes, MAX_REPLICAS)
    if not 1 <= replicas <= most:
        raise ConfigError("--replicas", replicas, f"1 to {most} on a {nodes}-node cluster")
    return replicas


def up(
    nodes: Annotated[int, typer.Option(help="Number of nats-server nodes (3 or 5 typical).")] = 3,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Where the nodes keep their data (default $BOURSE_HOME/cluster)."
        ),
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(help="Replicas of each platform stream (default 3, at most --nodes)."),
    ] = None,
) -> None:
    """Start a local JetStream cluster, provision the platform's streams on it, and serve.

    Other commands find it through the runtime file. Runs until Ctrl-C or SIGTERM, then
    stops every node cleanly and exits 0.
    """
    stream_replicas = check_cluster_size(nodes, replicas)
    platform_home = home()
    base = (directory or platform_home / "cluster").absolute()
    refuse_if_running(platform_home, "cluster")

    async def main(stop: asyncio.Event) -> None:
        async with LocalCluster(base, nodes=nodes) as cluster:
            typer.echo(f"Started {nodes} nodes; waiting for JetStream on every node ...")
            if not await unless_stopped(stop, prepare(cluster, stream_replicas)):
                return  # stopped while starting: the nodes stop as the block ends
            write_runtime(
                Runtime(
                    nats_url=cluster.url,
                    pid=os.getpid(),
                    started_at=datetime.now(UTC).isoformat(),
                    monitor_url=cluster.nodes[0].monitor_url,
                    cluster=nodes > 1,
                ),
                platform_home,
                "cluster",
            )
            try:
                typer.echo(describe(cluster, stream_replicas, platform_home))
                await stop.wait()
            finally:
                remove_runtime(platform_home, pid=os.getpid(), kind="cluster")
        typer.echo("Bourse cluster stopped cleanly.")

    run_until_signalled(main)


async def prepare(cluster: LocalCluster, replicas: int) -> None:
    """Wait for the cluster, then provision the platform's streams with `replicas`."""
    await cluster.wait_ready()
    async with connected(cluster.url, name="bourse-cluster") as nc:
        try:
            await provision_streams(nc.jetstream(), replicas=replicas)
        except NatsError as exc:
            raise BrokerError(f"provisioning the streams failed: {exc!r}") from exc


def describe(cluster: LocalCluster, replicas: int, platform_home: Path) -> str:
    lines = [f"Bourse cluster is up: {len(cluster.nodes)} nodes, streams R{replicas}."]
    lines += [
        f"  {node.server_name:<12} {node.url}   monitor {node.monitor_url}"
        for node in cluster.nodes
    ]
    lines += [
        f"  NATS     {cluster.url}",
        f"  data     {cluster.base_dir}",
        f"  runtime  {runtime_path(platform_home, 'cluster')}",
        "  try      bourse streams --watch",
        "Ctrl-C stops it.",
    ]
    return "\n".join(lines)
