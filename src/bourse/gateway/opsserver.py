"""The operations endpoints of a process that runs no gateway (`bourse run accounts engine`).

    server = await OpsServer(nc, host="127.0.0.1", port=9101).start()
    server.ops.watch_fold(engine)         # as on the gateway: metrics, ready once caught up
    server.url                            # /healthz, /readyz, /metrics
    await server.stop()

The same `Ops` as the gateway's (ops.py), served alone: `/healthz` (the process answers, and
whether NATS is connected), `/readyz` and `/metrics` for the services of this process, and the
streams and consumers of the whole NATS (lag warnings included).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from nats.aio.client import Client as NATS

from bourse.gateway.metrics import MonitorConfig
from bourse.gateway.ops import Ops, register_ops
from bourse.gateway.server import HttpServer, serve_http


class OpsServer:
    def __init__(
        self, nc: NATS, *, host: str, port: int, monitor: MonitorConfig | None = None
    ) -> None:
        self._nc = nc
        self._host = host
        self._port = port
        self.ops = Ops(nc, monitor)
        self.url = ""
        self._http: HttpServer | None = None

    async def start(self) -> OpsServer:
        app = FastAPI(title="Bourse operations", docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/healthz")
        async def healthz() -> dict[str, Any]:
            return {"status": "ok", "nats": self._nc.is_connected}

        register_ops(app, self.ops)
        self.ops.start()
        self._http = await serve_http(app, self._host, self._port, name="ops")
        self.url = self._http.url
        return self

    async def join(self) -> None:
        if self._http is not None:
            await self._http.join()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.stop()
        await self.ops.stop()
