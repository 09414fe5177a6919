"""Errors at the HTTP edge, in Alpaca's shape: `{"code": <int>, "message": <str>}`.

Alpaca's codes are the HTTP status followed by four digits; clients (alpaca-py among them)
show the message and switch on the status. Bourse adds a stable `reason` (the journal's
reject code where there is one) so a program need not parse the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = dict(headers or {})

    @property
    def code(self) -> int:
        return self.status * 100_000 + 10_000  # 422 -> 42210000, as Alpaca numbers them

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.reason is not None:
            body["reason"] = self.reason
        return body

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, reason: str = "invalid_request") -> ApiError:
    return ApiError(400, message, reason=reason)


def unauthorized(message: str = "request is not authorized") -> ApiError:
    return ApiError(401, message, reason="unauthorized")


def forbidden(message: str, reason: str | None = None) -> ApiError:
    return ApiError(403, message, reason=reason)


def not_found(message: str) -> ApiError:
    return ApiError(404, message, reason="not_found")


def unprocessable(message: str, reason: str = "invalid_request") -> ApiError:
    return ApiError(422, message, reason=reason)


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, reason="unavailable", headers={"Retry-After": "1"})
