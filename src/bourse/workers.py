"""`bourse up --processes N`: some of the platform's services in child processes.

One Python process runs on one core at a time (the GIL), and the platform's services share
nothing but NATS: spread over processes they use as many cores. `bourse up` stays the one
command: it starts the broker and the streams, then each worker, a `bourse run SERVICE...`
child on the same NATS and data directory, and runs the rest itself (the gateway always:
it owns `runtime.json` and the banner). A worker is ready when it prints its banner; its
other output is passed on, and its logs go to the same stderr.

Stopping is ordered by the parent, never by the terminal: workers start in a session of
their own (Ctrl-C reaches `bourse up` alone). On stop, each gets SIGTERM, in the reverse
order of their start (the feed and the market makers before the exchange they trade on),
and is waited for; a worker that exits on its own is a failure of the whole platform, which
then stops (exit 2) naming it. If `bourse up` is killed, its workers are killed too (Linux:
the broker dies with it, so no clean stop could finish; the folds recover as from any crash).

Settings that may hold secrets (database URLs) reach a worker in its environment, which
only its user can read, never on its command line, which anyone can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from bourse.bus.server import death_signal
from bourse.errors import BourseError

log = logging.getLogger(__name__)

READY_LINE = "Ctrl-C stops it."  # the last line of `bourse run`'s banner
OPS_PREFIX = "ops"  # the banner's line with a worker's operations endpoints
START_TIMEOUT = 120.0  # seconds for a worker to print its banner
STOP_TIMEOUT = 60.0  # seconds for a worker to stop cleanly before it is killed


class WorkerError(BourseError):
    """A worker process failed to start, exited while the platform ran, or stopped with an
    error; `code` is its exit code (None: it did not exit)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class WorkerSpec:
    """One worker: the services it runs, the `bourse run` options it takes besides `--nats`
    (the parent's settings), and environment variables for the settings that may hold
    secrets."""

    services: tuple[str, ...]
    options: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return "+".join(self.services)


class Worker:
    """One `bourse run` child process: `await start(url)`, `await join()`, `await stop()`."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.ops_url: str | None = None  # its /healthz, /readyz and /metrics, once started
        self._process: asyncio.subprocess.Process | None = None
        self._relay: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self, nats_url: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bourse",
            "run",
            *self.spec.services,
            "--nats",
            nats_url,
            *self.spec.options,
        ]

    async def start(self, nats_url: str, timeout: float = START_TIMEOUT) -> Worker:
        """Start the process and wait for its banner; WorkerError if it exits first."""
        self._process = await asyncio.create_subprocess_exec(
            *self.command(nats_url),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # its logs: ours
            env={**os.environ, **dict(self.spec.env)},
            start_new_session=True,  # Ctrl-C reaches `bourse up`, which stops it in order
            preexec_fn=death_signal(signal.SIGKILL),
        )
        try:
            async with asyncio.timeout(timeout):
                await self._read_banner()
        except TimeoutError:
            with contextlib.suppress(WorkerError):  # killed, as it had to be
                await self.stop()
            raise WorkerError(
                f"worker {self.spec.name} printed no banner within {timeout:.0f}s"
            ) from None
        self._relay = asyncio.create_task(self._pass_on(), name=f"worker-{self.spec.name}")
        log.info("worker %s started (pid %s)", self.spec.name, self.pid)
        return self

    async def _read_banner(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while True:
            line = await self._process.stdout.readline()
            if not line:
                code = await self._process.wait()
                raise WorkerError(
                    f"worker {self.spec.name} exited with {code} before it started "
                    "(its error is above)",
                    code,
                )
            text = line.decode(errors="replace").rstrip()
            words = text.split()
            if len(words) >= 2 and words[0] == OPS_PREFIX:
                self.ops_url = words[1]
            if text == READY_LINE:
                return

    async def _pass_on(self) -> None:
        """The worker's later output (its farewell), on our stdout."""
        assert self._process is not None and self._process.stdout is not None
        async for line in self._process.stdout:
            text = line.decode(errors="replace").rstrip()
            print(f"[{self.spec.name}] {text}", flush=True)

    async def join(self) -> None:
        """Wait for the process to end; WorkerError unless `stop()` ended it cleanly."""
        assert self._process is not None
        code = await self._process.wait()
        if self._relay is not None:
            await self._relay
        if not self._stopping:
            raise WorkerError(f"worker {self.spec.name} (pid {self.pid}) exited with {code}", code)
        if code != 0:
            raise WorkerError(f"worker {self.spec.name} stopped with exit code {code}", code)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (a clean stop), then SIGKILL if it is not done within `timeout`;
        WorkerError if it did not exit 0."""
        self._stopping = True
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            log.warning("worker %s did not stop within %.0fs; killing it", self.spec.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            code = await process.wait()
        if code != 0:
            raise WorkerError(f"worker {self.spec.name} stopped with exit code {code}", code)


def split(
    services: Sequence[str], processes: int, groups: Sequence[frozenset[str]]
) -> tuple[frozenset[str], list[tuple[str, ...]]]:
    """`services` (in start order) over `processes`: what this process keeps, and each
    worker's services. The first `processes - 1` of `groups` go to workers (each without
    the services not in `services`; an empty one is no worker); the rest stay here."""
    workers = []
    for group in groups[: processes - 1]:
        named = tuple(s for s in services if s in group)
        if named:
            workers.append(named)
    moved = {s for named in workers for s in named}
    return frozenset(s for s in services if s not in moved), workers
