"""`bourse bench NAME [--json]`: run one ratio benchmark from benchmarks/."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from bourse.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    name: Annotated[
        str,
        typer.Argument(
            help="Benchmark name: feed, engine, orders, analytics, history, fanout, dashboard."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
    quick: Annotated[bool, typer.Option(help="A short run (smoke test, noisier).")] = False,
) -> None:
    """Measure against a peer in the same run; report ratio, target and met."""
    try:
        from benchmarks import registry
    except ImportError as exc:  # an install without the repository's benchmarks/
        raise ConfigError("bench", name, "a checkout of the repository (benchmarks/)") from exc
    benchmarks = registry()
    if name not in benchmarks:
        raise ConfigError("benchmark", name, ", ".join(sorted(benchmarks)))
    result = asyncio.run(benchmarks[name](quick))
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(json.dumps(result, indent=2))
    verdict = "met" if result["met"] else "NOT met"
    typer.echo(f"{name}: ratio {result['ratio']:.2f} vs target {result['target']} -> {verdict}")
