"""The HTTP gateway: the Alpaca Trading API v2 subset a trading bot needs, over Bourse.

Every route but the clock, assets and health needs an API key (`APCA-API-KEY-ID` and
`APCA-API-SECRET-KEY` headers) and sees only its own account: another account's order id
answers 404, exactly like an id that does not exist. Admin routes (`/admin/...`) need a key
with the admin role.

Reads come from the read model; requests go onto the ORDERS journal through the `OrderDesk`;
the account's cash and buying power come from the accounts service itself, which owns them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Annotated, Any, Literal, Protocol, TypeVar

from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from sqlalchemy import Connection
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bourse.accounts.query import LedgerSummary, UnknownAccount, decode_summary
from bourse.accounts.readmodel import api_keys, queries
from bourse.accounts.readmodel.database import Database
from bourse.accounts.readmodel.queries import InvalidQuery
from bourse.accounts.readmodel.rows import Account, ApiKey, Order, Position, Role
from bourse.alerts.view import AlertsView
from bourse.gateway import alpaca, errors
from bourse.gateway.alerts import alerts_router
from bourse.gateway.auth import Authenticator, Principal, RateLimiter
from bourse.gateway.desk import NewOrder, OrderDesk, Replacement
from bourse.gateway.marketdata import marketdata_router
from bourse.gateway.riskfeed import RiskFeed, risk_router
from bourse.model import orders, subjects
from bourse.model.instruments import AssetClass, Instrument

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_BODY = 64 * 1024  # bytes; an order is a few hundred
MAX_CASH = Decimal(10) ** 12  # dollars in one deposit
CENT = Decimal("0.01")
MAX_REASON = 200  # characters of an admin's reason for halting an account


@dataclass
class GatewayContext:
    nc: NATS
    db: Database
    desk: OrderDesk
    auth: Authenticator
    limiter: RateLimiter
    started_at: float = 0.0
    alerts: AlertsView | None = None  # the accounts' price alerts (/v2/alerts)
    risk: RiskFeed | None = None  # the accounts' risk alerts (/v2/risk/alerts, /stream)


# ---- request bodies of the admin routes ----


class CreateAccountRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cash: Decimal = Decimal(0)
    shorting_enabled: bool = False
    role: Literal["trader", "admin"] = "trader"

    @field_validator("cash", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Decimal | None:
        return alpaca._decimal_field(value, "cash")


class DepositRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Decimal

    @field_validator("amount", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Decimal | None:
        return alpaca._decimal_field(value, "amount")


class AssetDepositRequest(BaseModel):
    """Units transferred into an account (coins from a wallet, shares from another broker),
    with their cost basis per unit."""

    model_config = ConfigDict(extra="forbid")
    symbol: str
    qty: Decimal
    price: Decimal

    @field_validator("qty", "price", mode="before")
    @classmethod
    def _exact(cls, value: Any, info: ValidationInfo) -> Decimal | None:
        return alpaca._decimal_field(value, info.field_name or "value")


class HaltRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str

    @field_validator("reason")
    @classmethod
    def _said(cls, value: str) -> str:
        reason = " ".join(value.split())
        if not 1 <= len(reason) <= MAX_REASON:
            raise ValueError(f"reason must say why, in 1 to {MAX_REASON} characters")
        return reason


# ---- the edges: body size, errors ----


_JSON_BY_DEFAULT = (b"", b"application/x-www-form-urlencoded")


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413 before any handler reads them; read a body
    sent without a content type, or as a form (curl's `-d` default), as JSON, as Alpaca does.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type in _JSON_BY_DEFAULT and scope.get("method") in ("POST", "PATCH"):
            scope = dict(scope)
            scope["headers"] = [
                (k, v) for k, v in scope.get("headers", []) if k != b"content-type"
            ] + [(b"content-type", b"application/json")]
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(self.limit)(scope, receive, send)


class _BodyTooLarge(StarletteHTTPException):
    # An HTTPException, so FastAPI's body parsing passes it on to the handler (another
    # exception there becomes "400 There was an error parsing the body").
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")
        self.limit = limit


def _too_large(limit: int) -> JSONResponse:
    return errors.ApiError(
        413, f"request body is larger than {limit} bytes", reason="too_large"
    ).response()


def _validation_message(error: RequestValidationError | ValidationError) -> tuple[int, str]:
    parts = []
    status = 422
    for item in error.errors():
        if item.get("type") == "json_invalid":
            status = 400
            return status, f"malformed JSON: {item.get('ctx', {}).get('error', item['msg'])}"
        location = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query"))
        message = str(item.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        if item.get("type") == "extra_forbidden":
            message = "unknown field"
        if item.get("type") == "model_attributes_type" or (
            item.get("type") in ("dict_type", "model_type", "missing") and not location
        ):
            status = 400
            message = "the body must be a JSON object"
        parts.append(f"{location}: {message}" if location else message)
    return status, "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.ApiError)
    async def _api_error(_: Request, error: errors.ApiError) -> Response:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> Response:
        status, message = _validation_message(error)
        return errors.ApiError(status, message, reason="invalid_request").response()

    @app.exception_handler(_BodyTooLarge)
    async def _body_too_large(_: Request, error: _BodyTooLarge) -> Response:
        return _too_large(error.limit)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> Response:
        message = error.detail if isinstance(error.detail, str) else "request failed"
        if error.status_code == 404 and message == "Not Found":
            message = "endpoint not found"
        reason = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(
            error.status_code
        )
        return errors.ApiError(error.status_code, message, reason=reason).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        return errors.ApiError(500, "internal error", reason="internal").response()


# ---- helpers ----


@dataclass
class ActivityQuery:
    """The query parameters of GET /v2/account/activities, as Alpaca has them."""

    date: str | None = None
    after: str | None = None
    until: str | None = None
    direction: Literal["asc", "desc"] = "desc"
    page_size: Annotated[int, Query(ge=1, le=100)] = 100
    page_token: str | None = None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_NS = 2**63 - 1


def _ns(text: str | None, name: str) -> int | None:
    if text is None or text == "":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text + "T00:00:00+00:00")
        except ValueError:
            raise errors.unprocessable(
                f"{name} must be an RFC 3339 time or a date, got {text!r}"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment < EPOCH:
        raise errors.unprocessable(f"{name} must not be before 1970-01-01, got {text!r}")
    # Past the year 2262 nanoseconds leave 64 bits: such a bound is as good as the last one.
    return min(int(moment.timestamp() * 1_000_000) * 1_000, MAX_NS)


def _check_cash(name: str, amount: Decimal, *, minimum: Decimal) -> None:
    # quantize, not a modulo: 1E-9999999 % 0.01 underflows to 0 and would pass for a cent.
    if not minimum <= amount <= MAX_CASH or amount != amount.quantize(CENT):
        raise errors.unprocessable(
            f"{name} must be a whole number of cents from {minimum} to {MAX_CASH:f}, got {amount}"
        )


def _json_decimal(value: Decimal) -> str:
    return format(value, "f")


def invalid_request(error: ValidationError) -> errors.ApiError:
    """A request body that does not validate, as the REST endpoints answer it."""
    status, message = _validation_message(error)
    return errors.ApiError(status, message, reason="invalid_request")


def new_order(body: alpaca.OrderRequest) -> NewOrder:
    """What POST /v2/orders (and the stream's submit_order) asks of the desk."""
    if body.notional is not None:
        raise errors.unprocessable("notional orders are not supported; give qty")
    if body.qty is None:
        raise errors.unprocessable("qty is required")
    if body.extended_hours:
        raise errors.unprocessable("extended_hours is not supported: Bourse is always open")
    return NewOrder(
        symbol=body.symbol,
        side=body.side,
        kind=body.type,
        time_in_force=body.time_in_force,
        qty=body.qty,
        limit_price=body.limit_price,
        stop_price=body.stop_price,
        client_order_id=body.client_order_id,
    )


def replacement(body: alpaca.ReplaceOrderRequest) -> Replacement:
    """What PATCH /v2/orders/{id} (and the stream's replace_order) asks of the desk."""
    return Replacement(
        qty=body.qty,
        limit_price=body.limit_price,
        stop_price=body.stop_price,
        time_in_force=body.time_in_force,
        client_order_id=body.client_order_id,
    )


def order_id_of(text: str) -> str:
    """Order ids are UUIDs: anything else cannot be an order, so 404 without a lookup."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise errors.not_found(f"order {text} not found") from None


class Holding(Protocol):
    """A position as the account figures need it: the ledger's or the read model's."""

    @property
    def symbol(self) -> str: ...
    @property
    def qty(self) -> Decimal: ...
    @property
    def avg_entry_price(self) -> Decimal: ...


def account_json(
    account: Account | None,
    ledger: LedgerSummary | None,
    positions: Sequence[Holding],
    marks: dict[str, Decimal],
    account_id: str,
) -> dict[str, Any]:
    cash = ledger.cash if ledger is not None else (account.cash if account else Decimal(0))
    buying_power = ledger.buying_power if ledger is not None else cash
    long_value = Decimal(0)
    short_value = Decimal(0)
    for position in positions:
        value = position.qty * marks.get(position.symbol, position.avg_entry_price)
        if value >= 0:
            long_value += value
        else:
            short_value += value
    equity = cash + long_value + short_value
    blocked = (
        ledger.trading_blocked if ledger is not None else bool(account and account.trading_blocked)
    )
    created = account.created_at if account is not None else None
    return {
        "id": account_id,
        "account_number": "BRS" + account_id.replace("-", "")[:10].upper(),
        "status": "ACTIVE",
        "crypto_status": "ACTIVE",
        "currency": "USD",
        "buying_power": _json_decimal(buying_power),
        "regt_buying_power": _json_decimal(buying_power),
        "daytrading_buying_power": _json_decimal(buying_power),
        "non_marginable_buying_power": _json_decimal(buying_power),
        "options_buying_power": "0",
        "cash": _json_decimal(cash),
        "accrued_fees": "0",
        "pending_transfer_in": "0",
        "pending_transfer_out": "0",
        "portfolio_value": _json_decimal(equity),
        "equity": _json_decimal(equity),
        "last_equity": _json_decimal(equity),
        "long_market_value": _json_decimal(long_value),
        "short_market_value": _json_decimal(short_value),
        "initial_margin": "0",
        "maintenance_margin": "0",
        "last_maintenance_margin": "0",
        "sma": "0",
        "daytrade_count": 0,
        "pattern_day_trader": False,
        "trading_blocked": blocked,
        "blocked_reason": (ledger.blocked_reason if ledger is not None else None),
        "transfers_blocked": False,
        "account_blocked": False,
        "trade_suspended_by_user": False,
        "shorting_enabled": ledger.shorting_enabled if ledger is not None else False,
        "multiplier": "1",
        "reserved_cash": _json_decimal(ledger.reserved_cash) if ledger is not None else "0",
        "realized_pl": _json_decimal(ledger.realized_pnl) if ledger is not None else "0",
        "created_at": alpaca.rfc3339(created),
        "options_approved_level": 0,
        "options_trading_level": 0,
    }


def admin_account_json(account: Account) -> dict[str, Any]:
    """An account as the admin routes show it (the read model's row)."""
    return {
        "id": account.id,
        "status": account.status,
        "cash": _json_decimal(account.cash),
        "realized_pl": _json_decimal(account.realized_pnl),
        "trading_blocked": account.trading_blocked,
        "blocked_reason": account.blocked_reason,
        "shorting_enabled": account.shorting_enabled,
        "created_at": alpaca.rfc3339(account.created_at),
    }


def api_key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "account_id": key.account_id,
        "role": key.role,
        "created_at": alpaca.rfc3339(key.created_at),
        "revoked_at": None if key.revoked_at is None else alpaca.rfc3339(key.revoked_at),
    }


def clock_json(now: datetime | None = None) -> dict[str, Any]:
    """Bourse's venue trades around the clock; a trading day ends at midnight UTC, when day
    orders expire, and the next begins at once."""
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "is_open": True,
        "next_open": midnight.isoformat().replace("+00:00", "Z"),
        "next_close": midnight.isoformat().replace("+00:00", "Z"),
    }


# ---- who is calling ----


def rate_limited(wait: float) -> errors.ApiError:
    """429 with Retry-After: the key's requests came faster than its limit."""
    headers = {"Retry-After": RateLimiter.retry_after(wait)}
    return errors.ApiError(429, "rate limit exceeded", reason="rate_limited", headers=headers)


async def principal(
    request: Request,
    key_id: Annotated[str | None, Header(alias="APCA-API-KEY-ID")] = None,
    secret: Annotated[str | None, Header(alias="APCA-API-SECRET-KEY")] = None,
) -> Principal:
    ctx: GatewayContext = request.app.state.ctx
    if not key_id or not secret:
        raise errors.unauthorized("missing APCA-API-KEY-ID and APCA-API-SECRET-KEY headers")
    wait = ctx.limiter.check(key_id)
    if wait is not None:
        raise rate_limited(wait)
    found = await ctx.auth.authenticate(key_id, secret)
    if found is None:
        raise errors.unauthorized("unknown API key or wrong secret")
    return found


async def admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.is_admin:
        raise errors.forbidden("this endpoint needs an admin key", reason="not_admin")
    return who


Who = Annotated[Principal, Depends(principal)]
Admin = Annotated[Principal, Depends(admin)]


# ---- the application ----


def create_app(ctx: GatewayContext) -> FastAPI:
    app = FastAPI(
        title="Bourse Trading API",
        version="2",
        description=(
            "The Alpaca Trading API v2 subset, served by Bourse's own venue. Authenticate with "
            "the `APCA-API-KEY-ID` and `APCA-API-SECRET-KEY` headers."
        ),
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    desk = ctx.desk

    async def ledger_of(account_id: str) -> LedgerSummary | None:
        try:
            reply = await ctx.nc.request(subjects.account_ledger(account_id), b"", timeout=2.0)
            return decode_summary(reply.data)
        except UnknownAccount:
            return None
        except (NatsError, TimeoutError) as error:
            log.warning("the accounts service did not answer for %s: %s", account_id, error)
            return None

    # ---- health ----

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "nats": ctx.nc.is_connected}

    # ---- account ----

    @app.get("/v2/account", summary="The account: cash, buying power, equity")
    async def get_account(who: Who) -> dict[str, Any]:
        account, ledger = await asyncio.gather(
            desk.read(queries.get_account, who.account_id), ledger_of(who.account_id)
        )
        if account is None and ledger is None:
            raise errors.not_found(f"account {who.account_id} not found")
        # Cash and positions from one source, so equity never counts a fill half-way.
        held: Sequence[Holding] = (
            ledger.positions
            if ledger is not None
            else await desk.read(queries.list_positions, who.account_id)
        )
        return account_json(account, ledger, held, desk.prices.all(), who.account_id)

    # ---- orders ----

    @app.post("/v2/orders", summary="Submit an order")
    async def submit_order(who: Who, body: Annotated[alpaca.OrderRequest, Body()]) -> Any:
        return alpaca.order_json(await desk.submit(who.account_id, new_order(body)))

    @app.get("/v2/orders", summary="List orders")
    async def list_orders(
        who: Who,
        status: Literal["open", "closed", "all"] = "open",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        after: str | None = None,
        until: str | None = None,
        direction: Literal["asc", "desc"] = "desc",
        symbols: str | None = None,
        side: Literal["buy", "sell"] | None = None,
        nested: bool = False,
    ) -> list[dict[str, Any]]:
        wanted = None
        if symbols:
            wanted = [desk.instrument(s).symbol for s in symbols.split(",") if s.strip()]
        try:
            found = await desk.read(
                queries.list_orders,
                who.account_id,
                status=status,
                limit=limit,
                after=_ns(after, "after"),
                until=_ns(until, "until"),
                direction=direction,
                symbols=wanted,
                side=side,
            )
        except InvalidQuery as error:
            raise errors.unprocessable(str(error)) from None
        return [alpaca.order_json(o) for o in found]

    async def activities(
        who: Principal, types: list[str], query: ActivityQuery
    ) -> list[dict[str, Any]]:
        unknown = [t for t in types if t not in alpaca.ACTIVITY_TYPES]
        if unknown:
            raise errors.unprocessable(
                f"activity type {unknown[0]!r} is not one of Alpaca's (FILL, TRANS, DIV, ...)"
            )
        lower, upper = _ns(query.after, "after"), _ns(query.until, "until")
        if query.date:
            day = _ns(query.date[:10], "date")
            assert day is not None
            lower = day - 1 if lower is None else max(lower, day - 1)
            end = min(day + 86_400 * 10**9, MAX_NS)
            upper = end if upper is None else min(upper, end)
        beyond = None
        if query.page_token:
            beyond = alpaca.page_sequence(query.page_token)
            if beyond is None:
                raise errors.unprocessable(
                    f"page_token must be the id of an activity, got {query.page_token!r}"
                )
        if "FILL" not in types:
            return []  # the only kind of activity Bourse has
        try:
            found = await desk.read(
                queries.list_fills,
                who.account_id,
                after=lower,
                until=upper,
                direction=query.direction,
                page_size=query.page_size,
                beyond_seq=beyond,
            )
        except InvalidQuery as error:
            raise errors.unprocessable(str(error)) from None
        return [alpaca.fill_activity_json(fill, cum) for fill, cum in found]

    @app.get("/v2/account/activities", summary="Account activities: fills, newest first")
    async def list_activities(
        who: Who, query: Annotated[ActivityQuery, Depends()], activity_types: str | None = None
    ) -> list[dict[str, Any]]:
        types = [t.strip() for t in (activity_types or "FILL").split(",") if t.strip()]
        return await activities(who, types, query)

    @app.get("/v2/account/activities/{activity_type}", summary="Account activities of one type")
    async def list_activities_of(
        who: Who, activity_type: str, query: Annotated[ActivityQuery, Depends()]
    ) -> list[dict[str, Any]]:
        return await activities(who, [activity_type], query)

    @app.delete("/v2/orders", status_code=207, summary="Cancel all open orders")
    async def cancel_all(who: Who) -> Any:
        open_orders: list[Order] = await desk.read(
            queries.list_orders, who.account_id, status="open", limit=500
        )

        async def one(order: Order) -> dict[str, Any]:
            try:
                done = await desk.cancel(who.account_id, order.id)
            except errors.ApiError as error:
                return {"id": order.id, "status": error.status, "body": error.body()}
            return {"id": order.id, "status": 200, "body": alpaca.order_json(done)}

        results = await asyncio.gather(*(one(o) for o in open_orders))
        return JSONResponse(list(results), status_code=207)

    @app.get("/v2/orders:by_client_order_id", summary="Get an order by client_order_id")
    async def by_client_order_id(who: Who, client_order_id: str) -> dict[str, Any]:
        found = await desk.read(queries.get_order_by_client_id, who.account_id, client_order_id)
        if found is None:
            raise errors.not_found(f"order with client_order_id {client_order_id!r} not found")
        return alpaca.order_json(found)

    @app.get("/v2/orders/{order_id}", summary="Get an order")
    async def get_order(who: Who, order_id: str, nested: bool = False) -> dict[str, Any]:
        return alpaca.order_json(await desk.order(who.account_id, order_id_of(order_id)))

    @app.patch("/v2/orders/{order_id}", summary="Replace an order")
    async def replace_order(
        who: Who, order_id: str, body: Annotated[alpaca.ReplaceOrderRequest, Body()]
    ) -> dict[str, Any]:
        order = await desk.replace(who.account_id, order_id_of(order_id), replacement(body))
        return alpaca.order_json(order)

    @app.delete("/v2/orders/{order_id}", status_code=204, summary="Cancel an order")
    async def cancel_order(who: Who, order_id: str) -> Response:
        await desk.cancel(who.account_id, order_id_of(order_id))
        return Response(status_code=204)

    # ---- positions ----

    def _instrument_for(symbol_or_id: str) -> Instrument:
        for instrument in desk.instruments.values():
            if alpaca.asset_id(instrument.symbol) == symbol_or_id:
                return instrument
        return desk.instrument(symbol_or_id)

    @app.get("/v2/positions", summary="Open positions")
    async def list_positions(who: Who) -> list[dict[str, Any]]:
        found = await desk.read(queries.list_positions, who.account_id)
        marks = desk.prices.all()
        return [
            alpaca.position_json(p, desk.instruments[p.symbol], marks.get(p.symbol))
            for p in found
            if p.symbol in desk.instruments
        ]

    @app.get("/v2/positions/{symbol_or_asset_id:path}", summary="One open position")
    async def get_position(who: Who, symbol_or_asset_id: str) -> dict[str, Any]:
        instrument = _instrument_for(symbol_or_asset_id)
        found = await desk.read(queries.get_position, who.account_id, instrument.symbol)
        if found is None:
            raise errors.not_found(f"position does not exist: {instrument.symbol}")
        return alpaca.position_json(found, instrument, desk.prices.get(instrument.symbol))

    async def close(
        account_id: str, instrument: Instrument, qty: Decimal | None, percentage: Decimal | None
    ) -> Order:
        # The parameters are checked before the position, so a bad one is 422 either way.
        if qty is not None and percentage is not None:
            raise errors.unprocessable("give qty or percentage, not both")
        if qty is not None and qty <= 0:
            raise errors.unprocessable(f"qty must be > 0, got {qty}")
        if percentage is not None and not 0 < percentage <= 100:
            raise errors.unprocessable(f"percentage must be in (0, 100], got {percentage}")
        found = await desk.read(queries.get_position, account_id, instrument.symbol)
        if found is None or found.qty == 0:
            raise errors.not_found(f"position does not exist: {instrument.symbol}")
        held = abs(found.qty)
        amount = held
        if qty is not None:
            if qty > held:
                raise errors.unprocessable(f"qty must be at most {held}, got {qty}")
            amount = qty
        elif percentage is not None:
            amount = (held * percentage / 100 / instrument.lot_size).to_integral_value(
                ROUND_DOWN
            ) * instrument.lot_size
            if amount == 0:
                raise errors.unprocessable(
                    f"{percentage}% of {held} is less than one lot ({instrument.lot_size})"
                )
        return await desk.submit(
            account_id,
            NewOrder(
                symbol=instrument.symbol,
                side="sell" if found.qty > 0 else "buy",
                kind="market",
                time_in_force="gtc" if instrument.asset_class is AssetClass.CRYPTO else "day",
                qty=amount,
            ),
        )

    def _decimal_query(value: str | None, name: str) -> Decimal | None:
        if value is None:
            return None
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise errors.unprocessable(f"{name} must be a decimal number, got {value!r}") from None
        if not number.is_finite():
            raise errors.unprocessable(f"{name} must be finite, got {value}")
        return number

    @app.delete("/v2/positions/{symbol_or_asset_id:path}", summary="Close a position")
    async def close_position(
        who: Who,
        symbol_or_asset_id: str,
        qty: str | None = None,
        percentage: str | None = None,
    ) -> dict[str, Any]:
        instrument = _instrument_for(symbol_or_asset_id)
        order = await close(
            who.account_id,
            instrument,
            _decimal_query(qty, "qty"),
            _decimal_query(percentage, "percentage"),
        )
        return alpaca.order_json(order)

    @app.delete("/v2/positions", status_code=207, summary="Close all positions")
    async def close_all(who: Who, cancel_orders: bool = False) -> Any:
        if cancel_orders:
            await cancel_all(who)
        found: list[Position] = await desk.read(queries.list_positions, who.account_id)

        async def one(position: Position) -> dict[str, Any]:
            instrument = desk.instruments.get(position.symbol)
            try:
                if instrument is None:
                    raise errors.unprocessable(f"{position.symbol} is no longer traded")
                order = await close(who.account_id, instrument, None, None)
            except errors.ApiError as error:
                return {"symbol": position.symbol, "status": error.status, "body": error.body()}
            return {"symbol": position.symbol, "status": 200, "body": alpaca.order_json(order)}

        results = await asyncio.gather(*(one(p) for p in found))
        return JSONResponse(list(results), status_code=207)

    # ---- assets, clock ----

    @app.get("/v2/assets", summary="Tradable assets")
    async def list_assets(
        status: str | None = None, asset_class: str | None = None, exchange: str | None = None
    ) -> list[dict[str, Any]]:
        found = []
        for instrument in desk.instruments.values():
            if status not in (None, "", "active"):
                continue
            if asset_class not in (None, "") and instrument.asset_class.value != asset_class:
                continue
            if exchange not in (None, "") and alpaca.exchange(instrument) != exchange:
                continue
            found.append(alpaca.asset_json(instrument))
        return found

    @app.get("/v2/assets/{symbol_or_asset_id:path}", summary="One asset")
    async def get_asset(symbol_or_asset_id: str) -> dict[str, Any]:
        try:
            return alpaca.asset_json(_instrument_for(symbol_or_asset_id))
        except errors.ApiError:
            raise errors.not_found(f"asset not found for {symbol_or_asset_id}") from None

    @app.get("/v2/clock", summary="The market clock")
    async def clock() -> dict[str, Any]:
        return clock_json()

    # ---- administration ----

    @app.post("/admin/accounts", status_code=201, summary="Open an account and make its key")
    async def create_account(_: Admin, body: Annotated[CreateAccountRequest, Body()]) -> Any:
        _check_cash("cash", body.cash, minimum=Decimal(0))
        credentials = await open_account(
            ctx, cash=body.cash, shorting_enabled=body.shorting_enabled, role=body.role
        )
        return JSONResponse(credentials, status_code=201)

    @app.get("/admin/accounts", summary="List accounts")
    async def list_accounts(_: Admin) -> list[dict[str, Any]]:
        found: list[Account] = await desk.read(queries.list_accounts)
        return [admin_account_json(a) for a in found]

    async def known_account(account_id: str) -> Account:
        found: Account | None = await desk.read(queries.get_account, account_id)
        if found is None:
            raise errors.not_found(f"account {account_id} not found")
        return found

    @app.post("/admin/accounts/{account_id}/deposits", summary="Add cash to an account")
    async def deposit(_: Admin, account_id: str, body: Annotated[DepositRequest, Body()]) -> Any:
        _check_cash("amount", body.amount, minimum=CENT)
        await known_account(account_id)
        await desk.publish_admin(
            orders.CashDeposited(ts=time.time_ns(), account_id=account_id, amount=body.amount),
            f"deposit:{uuid.uuid4()}",
        )
        return {"account_id": account_id, "amount": _json_decimal(body.amount)}

    @app.post(
        "/admin/accounts/{account_id}/assets",
        summary="Transfer units of an asset into an account, at a cost basis",
    )
    async def deposit_asset(
        _: Admin, account_id: str, body: Annotated[AssetDepositRequest, Body()]
    ) -> Any:
        instrument = desk.instrument(body.symbol)
        desk.check_qty(instrument, body.qty)
        desk.check_price(instrument, "price", body.price)
        await known_account(account_id)
        event = orders.AssetDeposited(
            ts=time.time_ns(),
            account_id=account_id,
            symbol=instrument.symbol,
            qty=body.qty,
            price=body.price,
        )
        await desk.publish_admin(event, f"asset-deposit:{uuid.uuid4()}")
        return {
            "account_id": account_id,
            "symbol": instrument.symbol,
            "qty": _json_decimal(body.qty),
            "price": _json_decimal(body.price),
        }

    async def journal_for(account_id: str, event: orders.OrdersEvent, msg_id: str) -> Any:
        """Journal an administration event for a known account; the account once the read
        model has it (as it was, if the read model is slow)."""
        await known_account(account_id)
        await desk.publish_admin_and_wait(account_id, [(event, msg_id)])
        return admin_account_json(await known_account(account_id))

    @app.post("/admin/accounts/{account_id}/halt", summary="Halt an account's trading")
    async def halt(_: Admin, account_id: str, body: Annotated[HaltRequest, Body()]) -> Any:
        event = orders.TradingHalted(
            ts=time.time_ns(), account_id=account_id, reason=f"admin: {body.reason}"
        )
        return await journal_for(account_id, event, f"halt:{uuid.uuid4()}")

    @app.post(
        "/admin/accounts/{account_id}/resume",
        summary="Resume an account's trading (resets the risk kill switch)",
    )
    async def resume(_: Admin, account_id: str) -> Any:
        event = orders.TradingResumed(ts=time.time_ns(), account_id=account_id)
        return await journal_for(account_id, event, f"resume:{uuid.uuid4()}")

    # ---- API keys ----

    def write_keys(change: Callable[[Connection], _T]) -> Awaitable[_T]:
        def run() -> _T:
            with ctx.db.write() as conn:
                return change(conn)

        return asyncio.to_thread(run)

    async def key_owner(account_id: str) -> tuple[Role, list[ApiKey]]:
        """The role of an account's keys, and the keys: a trading account's are traders', an
        operator's (an admin key's owner, not an account) admins'."""
        account, found = await asyncio.gather(
            desk.read(queries.get_account, account_id),
            desk.read(api_keys.list_api_keys, account_id),
        )
        if account is not None:
            return "trader", found
        if found and all(k.role == "admin" for k in found):
            return "admin", found
        raise errors.not_found(f"account {account_id} not found")

    @app.get("/admin/accounts/{account_id}/keys", summary="An account's API keys (no secrets)")
    async def list_keys(_: Admin, account_id: str) -> list[dict[str, Any]]:
        found = (await key_owner(account_id))[1]
        return [api_key_json(k) for k in found]

    @app.post(
        "/admin/accounts/{account_id}/keys",
        status_code=201,
        summary="Make another API key for an account (to rotate its keys)",
    )
    async def create_key(_: Admin, account_id: str) -> Any:
        role = (await key_owner(account_id))[0]
        key_id, secret = await write_keys(
            lambda conn: api_keys.create_api_key(conn, account_id, role)
        )
        return JSONResponse(
            {"account_id": account_id, "key_id": key_id, "secret": secret}, status_code=201
        )

    @app.delete("/admin/keys/{api_key_id}", summary="Revoke an API key, on every gateway at once")
    async def revoke_key(who: Admin, api_key_id: str) -> Any:
        if api_key_id == who.key_id:
            raise errors.ApiError(
                409, "a key cannot revoke itself: use another admin key", reason="own_key"
            )
        found: ApiKey | None = await desk.read(api_keys.get_api_key, api_key_id)
        if found is None:
            raise errors.not_found(f"API key {api_key_id} not found")
        if found.revoked_at is None:  # revoking again changes nothing (and says when it was)
            await write_keys(lambda conn: api_keys.revoke_api_key(conn, api_key_id))
            found = await desk.read(api_keys.get_api_key, api_key_id)
            assert found is not None
        ctx.auth.revoked(api_key_id)  # refused here at once; its connections closed
        try:
            await ctx.nc.publish(subjects.API_KEY_REVOKED, api_key_id.encode())
        except NatsError as error:  # this gateway has forgotten it; others within their TTL
            log.warning(
                "could not tell the other gateways that %s is revoked: %s", api_key_id, error
            )
        return api_key_json(found)

    # ---- historical market data (Alpaca Market Data API), from the history service ----

    app.include_router(marketdata_router(ctx.nc, principal))

    # ---- price alerts (a Bourse extension) ----

    if ctx.alerts is not None:
        app.include_router(alerts_router(ctx.alerts, ctx.nc, desk.instrument, principal))

    # ---- risk alerts (a Bourse extension) ----

    if ctx.risk is not None:
        app.include_router(risk_router(ctx.risk, principal))

    return app


async def open_account(
    ctx: GatewayContext,
    *,
    cash: Decimal,
    shorting_enabled: bool = False,
    role: Literal["trader", "admin"] = "trader",
) -> dict[str, str]:
    """Open an account on the journal, fund it, make its API key; return the credentials.

    An admin key belongs to an operator id, not to a trading account. Returns once the read
    model has the account, so the key works for every route at once."""
    account_id = str(uuid.uuid4())
    now = time.time_ns()
    if role == "trader":
        events: list[tuple[orders.OrdersEvent, str]] = [
            (
                orders.AccountOpened(
                    ts=now, account_id=account_id, shorting_enabled=shorting_enabled
                ),
                f"open:{account_id}",
            )
        ]
        if cash > 0:
            events.append(
                (
                    orders.CashDeposited(ts=now, account_id=account_id, amount=cash),
                    f"deposit:{account_id}:initial",
                )
            )
        await ctx.desk.publish_admin_and_wait(account_id, events)

    def make_key() -> tuple[str, str]:
        with ctx.db.write() as conn:
            return api_keys.create_api_key(conn, account_id, role)

    key_id, secret = await asyncio.to_thread(make_key)
    return {"account_id": account_id, "key_id": key_id, "secret": secret}


def asgi_app(ctx: GatewayContext) -> ASGIApp:
    return BodyLimit(create_app(ctx))
