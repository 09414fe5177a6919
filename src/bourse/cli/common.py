"""Pieces every command shares: option types, the NATS URL, running until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from bourse.errors import ConfigError
from bourse.model.subjects import normalize_symbol
from bourse.runtime import resolve_nats_url

T = TypeVar("T")

NatsOption = Annotated[
    str | None,
    typer.Option(
        "--nats",
        help="NATS URL(s), comma-separated. Default: $BOURSE_NATS_URL, else the running platform.",
        show_default=False,
    ),
]
SymbolsOption = Annotated[
    str | None,
    typer.Option("--symbols", help="Comma-separated symbols, e.g. AAPL,BTC-USD (default: all)."),
]


def nats_url(explicit: str | None, home: Path | None = None) -> str:
    return resolve_nats_url(explicit, home)


def parse_symbols(text: str | None) -> list[str] | None:
    if text is None:
        return None
    symbols = [normalize_symbol(s) for s in text.split(",") if s.strip()]
    if not symbols:
        raise ConfigError("--symbols", text, "a comma-separated list such as AAPL,BTC-USD")
    return symbols


EVENT_LOOP_ENV = "BOURSE_EVENT_LOOP"  # "asyncio": the standard library's loop, not uvloop


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion in a new event loop: uvloop's where it is installed (Linux
    and macOS; `BOURSE_EVENT_LOOP=asyncio` opts out), else asyncio's. The services spend
    most of their event loop's time in network I/O and callbacks, which uvloop runs in C."""
    if os.environ.get(EVENT_LOOP_ENV, "").strip().lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def run_until_signalled(
    main: Callable[[asyncio.Event], Coroutine[Any, Any, T]],
) -> T:
    """Run `main(stop)` where `stop` is set on SIGINT or SIGTERM; return its result.

    The first signal asks for a graceful stop (intake ends, in-flight work is finished and
    acknowledged); a second Ctrl-C (SIGINT) interrupts at once. A second SIGTERM does not:
    supervisors repeat it (systemd signals every process of a service, and `bourse up
    --processes` its workers too) and escalate with SIGKILL, so it must not cut short the
    stop the first one started.
    """

    async def runner() -> T:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.current_task()

        def on_signal(sig: signal.Signals) -> None:
            if stop.is_set() and sig == signal.SIGINT and task is not None:
                task.cancel()
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await main(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return run_loop(runner())


async def unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> bool:
    """Run `work` unless `stop` is set first (then cancel it); True if it completed."""
    task = asyncio.create_task(work)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        task.result()  # its error, if any
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


# A long run gets a progress bar even when stderr is not a terminal (a CI log).
PROGRESS_THRESHOLD = 100_000


@contextlib.contextmanager
def progress_bar(
    label: str, stderr: TextIO, wanted: Callable[[int | None], bool]
) -> Iterator[Callable[[int, int | None], None]]:
    """An `on_progress(done, total)` callback drawing a transient bar on `stderr`, started
    on the first call for which `wanted(total)` holds (never, if it does not); the bar goes
    when the block ends."""
    progress: Progress | None = None
    task_id = None

    def on_progress(done: int, total: int | None) -> None:
        nonlocal progress, task_id
        if progress is None:
            if not wanted(total):
                return
            progress = Progress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeRemainingColumn(),
                console=Console(file=stderr),
                redirect_stdout=False,
                redirect_stderr=False,
                transient=True,
            )
            progress.start()
            task_id = progress.add_task(label, total=total)
        if task_id is not None:
            progress.update(task_id, completed=done, total=max(done, total or 0))

    try:
        yield on_progress
    finally:
        if progress is not None:
            progress.stop()
