"""The `bourse` command line: one module per command group, wired here."""

from __future__ import annotations

import sys

import typer

from bourse.cli import (
    bench,
    cluster,
    feed,
    history,
    logs,
    replay,
    schema,
    strategy,
    streams,
    ticker,
    trading,
    up,
    watch,
)
from bourse.errors import BourseError

app = typer.Typer(
    name="bourse",
    help="Bourse: a real-time market-data and trading platform on NATS JetStream.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (
    up,
    feed,
    ticker,
    replay,
    streams,
    schema,
    cluster,
    bench,
    trading,
    watch,
    strategy,
    history,
):
    module.register(app)


def main() -> None:
    try:
        # Text lines, or JSON lines with BOURSE_LOG_FORMAT=json (cli/logs.py); `bourse up
        # --log-format` sets it again for the platform.
        command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
        logs.configure(service=f"bourse-{command}" if command else "bourse")
        app()
    except BourseError as exc:
        # One line that says what was wrong and what is accepted; no traceback for users.
        print(f"bourse: error: {exc}", file=sys.stderr)
        sys.exit(2)
