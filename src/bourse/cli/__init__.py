"""The `bourse` command line: one module per command group, wired here."""

from __future__ import annotations

import logging
import sys

import typer

from bourse.cli import (
    bench,
    cluster,
    feed,
    replay,
    schema,
    strategy,
    streams,
    ticker,
    trading,
    up,
)
from bourse.errors import BourseError

app = typer.Typer(
    name="bourse",
    help="Bourse: a real-time market-data and trading platform on NATS JetStream.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (up, feed, ticker, replay, streams, schema, cluster, bench, trading, strategy):
    module.register(app)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    try:
        app()
    except BourseError as exc:
        # One line that says what was wrong and what is accepted; no traceback for users.
        print(f"bourse: error: {exc}", file=sys.stderr)
        sys.exit(2)
