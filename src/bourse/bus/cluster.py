"""A local JetStream cluster: N nats-server nodes on loopback, for HA tests and demos.

Each node has its own store directory under the base directory and a unique server name;
they form one full mesh of routes. Client ports are picked by the servers (port 0, read
from their logs). Route ports cannot be: a JetStream node refuses to start without its
routes, so every node must know every route port up front. They are reserved together from
the kernel (bound at once, so distinct, then released just before the nodes start) and kept
for the cluster's life; a restarted node comes back on its old client and route ports.

`wait_ready()` returns once JetStream works across the cluster: every node reports healthy
(`/healthz`: it sees the meta leader and is current), `$JS.API.INFO` answers without error,
and every existing stream has a leader. Only then can a stream with a replica on every node
be placed, or an existing one be used. A fresh cluster is ready in well under a second; one
restarted from its stores waits for raft elections (about 10 s).

A single node is a plain JetStream server, without a cluster block: clustered JetStream
would wait for peers that never come.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from nats.aio.client import Client as NATS

from bourse.bus.server import ClusterConfig, NatsServer
from bourse.errors import BrokerError, ConfigError

log = logging.getLogger(__name__)

CLUSTER_NAME = "bourse"


class LocalCluster:
    """N JetStream nodes forming one cluster. Use as `async with LocalCluster(dir) as c:`."""

    def __init__(
        self,
        base_dir: Path,
        *,
        nodes: int = 3,
        name: str = CLUSTER_NAME,
        host: str = "127.0.0.1",
        ready_timeout: float = 60.0,
        log_to_files: bool = True,
    ) -> None:
        if nodes < 1:
            raise ConfigError("cluster nodes", nodes, "an integer >= 1 (3 or 5 typical)")
        self.base_dir = base_dir
        self.name = name
        self.host = host
        self.ready_timeout = ready_timeout
        self.route_ports: tuple[int, ...] = ()
        self.nodes = [
            NatsServer(
                store_dir=base_dir / f"n{i}",
                host=host,
                server_name=f"{name}-n{i}",
                log_path=base_dir / f"n{i}" / "nats-server.log" if log_to_files else None,
            )
            for i in range(nodes)
        ]

    @property
    def urls(self) -> list[str]:
        """Client URL of every node, in node order (also of nodes currently down)."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated, as `connect()` and `--nats` take it."""
        return ",".join(self.urls)

    async def start(self) -> LocalCluster:
        """Start every node; returns before JetStream is ready (see `wait_ready`)."""
        if len(self.nodes) > 1 and not self.route_ports:
            self.route_ports = free_ports(len(self.nodes), self.host)
            for node, port in zip(self.nodes, self.route_ports, strict=True):
                node.cluster = ClusterConfig(name=self.name, port=port, routes=self.route_ports)
        try:
            for node in self.nodes:
                await node.start()
        except BaseException:
            await self.stop()
            raise
        log.info("cluster %s: %d nodes on %s", self.name, len(self.nodes), self.url)
        return self

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until JetStream is usable on every running node and for every stream.

        That is: each node's `/healthz` is fine (it sees the meta leader and is current),
        `$JS.API.INFO` answers without error, and every existing stream answers its info
        (it has a leader).
        """
        timeout = self.ready_timeout if timeout is None else timeout
        running = [node for node in self.nodes if node.running]
        if not running:
            raise BrokerError(f"cluster {self.name}: no node is running")
        last_problem = "no node accepted a client connection"
        nc = NATS()
        try:
            async with asyncio.timeout(timeout):
                await nc.connect(
                    servers=[node.url for node in running],
                    name="bourse-cluster-probe",
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                )
                while (problem := await self._readiness_problem(nc, running)) is not None:
                    if problem != last_problem:
                        log.debug("cluster %s not ready: %s", self.name, problem)
                        last_problem = problem
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise BrokerError(
                f"cluster {self.name} not ready after {timeout}s: {last_problem}"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _readiness_problem(self, nc: NATS, running: list[NatsServer]) -> str | None:
        for node in running:
            problem = await asyncio.to_thread(_health_problem, node.monitor_url)
            if problem is not None:
                return f"{node.server_name}: {problem}"
        try:
            await _api(nc, "$JS.API.INFO")
            for stream in await _stream_names(nc):
                await _api(nc, f"$JS.API.STREAM.INFO.{stream}")
        except _NotReady as exc:
            return str(exc)
        return None

    async def meta_leader(self) -> str | None:
        """Server name of the JetStream meta leader, as a running node sees it (None: none)."""
        for node in self.nodes:
            if node.running:
                status = await asyncio.to_thread(_monitor_json, node.monitor_url, "jsz")
                meta = status.get("meta_cluster") if status else None
                if isinstance(meta, dict) and meta.get("leader"):
                    return str(meta["leader"])
        return None

    async def kill_node(self, index: int) -> None:
        """Kill node `index` abruptly (SIGKILL), as a crash or a pulled plug would."""
        await self.nodes[index].kill()

    async def restart_node(self, index: int) -> None:
        """Start node `index` again (after a kill or stop) on its old ports and store."""
        await self.nodes[index].restart()

    async def stop(self) -> None:
        """Stop every node (SIGTERM, in reverse order); safe to call more than once."""
        for node in reversed(self.nodes):
            try:
                await node.stop()
            except Exception:
                log.exception("stopping %s failed", node.server_name)

    async def __aenter__(self) -> LocalCluster:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def free_ports(count: int, host: str = "127.0.0.1") -> tuple[int, ...]:
    """`count` distinct ports that were free a moment ago (all bound at once, then released),
    below the kernel's ephemeral range where it is known. A port of that range, once released,
    may be handed to any socket bound to port 0 or connecting out (another node's client
    port, the source port of a route being dialled) before its own node binds it; a cluster
    then never forms (seen once in CI: no meta leader within 60 s)."""
    low, high = _below_ephemeral()
    picker = random.Random()
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(1000):
            if len(ports) == count:
                break
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind((host, picker.randrange(low, high) if high > low else 0))
            except OSError:
                continue  # taken (or drawn twice): draw again
            ports.append(sock.getsockname()[1])
        if len(ports) == count:
            return tuple(ports)
    raise BrokerError(f"no {count} free ports on {host} in 1,000 tries")


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 10_000


def _below_ephemeral() -> tuple[int, int]:
    """[low, high) ports below the ephemeral range (Linux), or (0, 0): let the kernel pick."""
    try:
        first = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0, 0
    return (_LOWEST_PORT, first) if first - _LOWEST_PORT >= 1000 else (0, 0)


def _monitor_json(monitor_url: str, endpoint: str) -> dict[str, object] | None:
    """A monitoring endpoint's JSON (None when unreachable). Blocking: use a thread."""
    try:
        with urllib.request.urlopen(f"{monitor_url}/{endpoint}", timeout=2.0) as response:
            answer = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


def _health_problem(monitor_url: str) -> str | None:
    """What `/healthz` says is wrong with a node (None when healthy). Blocking: use a thread."""
    try:
        with urllib.request.urlopen(f"{monitor_url}/healthz", timeout=2.0) as response:
            response.read()
            return None
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            body = str(json.loads(body).get("error", body))
        return f"healthz {exc.code}: {body.strip()}"
    except OSError as exc:
        return f"monitor unreachable: {exc}"


class _NotReady(Exception):
    pass


async def _api(nc: NATS, subject: str, request: dict[str, object] | None = None) -> dict[str, Any]:
    """A JetStream API answer; _NotReady when there is none, or it is an error."""
    payload = json.dumps(request).encode() if request is not None else b""
    try:
        reply = await nc.request(subject, payload, timeout=2.0)
        answer = json.loads(reply.data)
    except Exception as exc:  # nats raises several unrelated types; all mean "not yet"
        raise _NotReady(f"{subject}: {exc!r}") from exc
    if not isinstance(answer, dict):
        raise _NotReady(f"{subject}: unexpected answer {answer!r}")
    if "error" in answer:
        raise _NotReady(f"{subject}: {answer['error']}")
    return answer


async def _stream_names(nc: NATS) -> list[str]:
    names: list[str] = []
    while True:
        answer = await _api(nc, "$JS.API.STREAM.NAMES", {"offset": len(names)})
        page = [str(name) for name in answer.get("streams") or []]
        names.extend(page)
        if not page or len(names) >= int(answer.get("total", 0)):
            return names
