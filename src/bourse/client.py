"""A small synchronous client for Bourse's HTTP API (the Alpaca Trading API v2 subset).

    with BourseClient.connect() as client:     # the running platform's demo account
        order = client.submit("AAPL", "buy", Decimal(10), limit_price=Decimal("189.50"))
        print(order.status, order.filled_qty, order.filled_avg_price)

Answers are decoded into typed Structs (decimals exact, times as datetimes). A refusal raises
`ApiError` with the HTTP status, Alpaca's code and the API's message; an API that cannot be
reached raises `ApiUnreachable`; an API that cannot be found (no --api, no $BOURSE_API_URL, no
running platform) raises `ApiNotFound`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from bourse.errors import BourseError, ConfigError
from bourse.runtime import read_live_runtime, runtime_path

API_URL_ENV = "BOURSE_API_URL"
KEY_ID_ENV = "APCA_API_KEY_ID"
SECRET_ENV = "APCA_API_SECRET_KEY"
KEY_ID_HEADER = "APCA-API-KEY-ID"
SECRET_HEADER = "APCA-API-SECRET-KEY"
# The gateway answers an order once the engine has spoken (bounded at about 12 s there).
DEFAULT_TIMEOUT = 30.0

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["day", "gtc", "ioc", "fok"]
StatusFilter = Literal["open", "closed", "all"]
AlertCondition = Literal["above", "below", "crosses"]
AlertStatusFilter = Literal["active", "triggered", "all"]

_T = TypeVar("_T")


# ---- errors ----


class ApiError(BourseError):
    """The API refused a request: `status` is the HTTP status, `code` Alpaca's error code,
    `reason` Bourse's stable reason (e.g. `insufficient_buying_power`) when it gives one."""

    def __init__(
        self, status: int, message: str, *, code: int | None = None, reason: str | None = None
    ) -> None:
        self.status = status
        self.message = message
        self.code = code
        self.reason = reason
        super().__init__(message)


class ApiUnreachable(BourseError):
    """Nothing answered at the API's URL (refused, timed out, or not HTTP)."""

    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        self.problem = problem
        super().__init__(
            f"cannot reach the Bourse API at {url} ({problem}): is the platform running? "
            f"Start it with `bourse up`, or pass --api URL or set ${API_URL_ENV}"
        )


class ApiNotFound(BourseError):
    """No API URL was given and no running platform was found."""

    def __init__(self, path: object) -> None:
        self.path = path
        super().__init__(
            f"no platform to connect to: start one with `bourse up` (or `make run`), pass "
            f"--api URL, or set ${API_URL_ENV} (no running platform in {path})"
        )


class NoApiKey(BourseError):
    """No key was given, and the running platform's cannot be used (it is not this API's)."""

    def __init__(self, url: str, *, admin: bool = False) -> None:
        self.url = url
        self.admin = admin
        if admin:
            how = "pass an admin key's --key-id and --secret"
        else:
            how = f"pass --key-id and --secret, or set ${KEY_ID_ENV} and ${SECRET_ENV}"
        super().__init__(
            f"no {'admin' if admin else 'API'} key for {url}: {how} (the running platform's "
            f"key is the default, for its own API only)"
        )


class UnexpectedAnswer(BourseError):
    """The API answered with something this client cannot read (a proxy, another server)."""


# ---- what the API answers ----


class FillActivity(msgspec.Struct, frozen=True, kw_only=True):
    """One fill, as GET /v2/account/activities lists it."""

    id: str
    transaction_time: datetime
    type: str  # fill | partial_fill
    order_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    cum_qty: Decimal
    leaves_qty: Decimal


class Order(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    client_order_id: str
    symbol: str
    asset_class: str = ""
    side: str
    type: str
    time_in_force: str
    qty: Decimal | None = None  # Alpaca's null for a notional order; Bourse always has one
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    status: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None


class Position(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    asset_class: str = ""
    side: str
    qty: Decimal  # negative for a short
    avg_entry_price: Decimal
    current_price: Decimal | None = None
    market_value: Decimal | None = None
    cost_basis: Decimal
    unrealized_pl: Decimal | None = None
    unrealized_plpc: Decimal | None = None


class Account(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    account_number: str = ""
    status: str
    currency: str = "USD"
    cash: Decimal
    buying_power: Decimal
    equity: Decimal
    last_equity: Decimal | None = None
    long_market_value: Decimal = Decimal(0)
    short_market_value: Decimal = Decimal(0)
    realized_pl: Decimal = Decimal(0)  # Bourse's addition to Alpaca's account
    trading_blocked: bool = False
    blocked_reason: str | None = None
    shorting_enabled: bool = False
    created_at: datetime | None = None


class AccountSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the administrators' account list."""

    id: str
    status: str
    cash: Decimal
    realized_pl: Decimal = Decimal(0)
    trading_blocked: bool = False
    blocked_reason: str | None = None
    shorting_enabled: bool = False
    created_at: datetime | None = None


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """A price alert (`/v2/alerts`, a Bourse extension): docs/alerts.md."""

    id: str
    symbol: str
    condition: str
    price: Decimal
    recurring: bool = False
    hysteresis: Decimal = Decimal(0)
    status: str  # active, or triggered (a one-shot alert that fired)
    fire_count: int = 0
    last_fired_at: datetime | None = None
    last_fired_price: Decimal | None = None
    created_at: datetime | None = None


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """A new account and its API key; the secret is shown once and never again."""

    account_id: str
    key_id: str
    secret: str


class ApiKeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An API key as administrators see it: never its secret."""

    key_id: str
    account_id: str
    role: str
    created_at: datetime
    revoked_at: datetime | None = None


class Deposit(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    amount: Decimal


class AssetDeposit(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    symbol: str
    qty: Decimal
    price: Decimal


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    asset_class: str = msgspec.field(name="class")
    tradable: bool = True


class CancelOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One order of a cancel-all: its final state, or why it could not be canceled."""

    id: str
    status: int  # the HTTP status the API gives this one order
    order: Order | None = None
    error: str | None = None


class _ErrorBody(msgspec.Struct, kw_only=True):
    message: str
    code: int | None = None
    reason: str | None = None


class _MultiStatus(msgspec.Struct, kw_only=True):
    id: str
    status: int
    body: msgspec.Raw


# ---- where the API is, and whose key ----


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    url: str
    key_id: str
    secret: str = field(repr=False)


def resolve_endpoint(
    api: str | None = None,
    key_id: str | None = None,
    secret: str | None = None,
    *,
    admin: bool = False,
) -> Endpoint:
    """The API URL and key to use.

    URL: `api`, else $BOURSE_API_URL, else the running platform's (`runtime.json`). Key: the
    one given, else $APCA_API_KEY_ID and $APCA_API_SECRET_KEY (not for `admin`: those are
    usually a trader's), else the running platform's demo key (or its admin key for `admin`),
    but only when talking to that platform: its secrets are never sent to another URL.
    """
    runtime = read_live_runtime()
    platform_url = runtime.http_url.rstrip("/") if runtime and runtime.http_url else None
    url = (api or os.environ.get(API_URL_ENV) or platform_url or "").rstrip("/")
    if not url:
        raise ApiNotFound(runtime_path().parent)
    if not url.startswith(("http://", "https://")):
        raise ConfigError("API URL", url, "an http:// or https:// URL, e.g. http://127.0.0.1:8000")
    if (key_id is None) != (secret is None):
        given = "--key-id" if secret is None else "--secret"
        raise ConfigError("API key", f"only {given}", "both --key-id and --secret, or neither")
    if key_id is None and not admin:
        key_id, secret = os.environ.get(KEY_ID_ENV) or None, os.environ.get(SECRET_ENV) or None
        if (key_id is None) != (secret is None):
            given = f"${KEY_ID_ENV}" if secret is None else f"${SECRET_ENV}"
            raise ConfigError(
                "API key", f"only {given}", f"both ${KEY_ID_ENV} and ${SECRET_ENV}, or neither"
            )
    if key_id is None and runtime is not None and url == platform_url:
        if admin:
            key_id, secret = runtime.admin_key_id, runtime.admin_secret_key
        else:
            key_id, secret = runtime.api_key_id, runtime.api_secret_key
    if not key_id or not secret:
        raise NoApiKey(url, admin=admin)
    return Endpoint(url=url, key_id=key_id, secret=secret)


# ---- the client ----


def order_type(limit_price: Decimal | None, stop_price: Decimal | None) -> OrderType:
    """The order type the prices given imply: market, limit, stop or stop_limit."""
    if limit_price is not None and stop_price is not None:
        return "stop_limit"
    if limit_price is not None:
        return "limit"
    if stop_price is not None:
        return "stop"
    return "market"


def order_body(
    symbol: str,
    side: Side,
    qty: Decimal,
    *,
    type: OrderType | None = None,
    time_in_force: TimeInForce = "day",
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
    client_order_id: str | None = None,
) -> dict[str, Any]:
    """POST /v2/orders's body (decimals as exact strings); the type follows from the prices
    unless given."""
    body: dict[str, Any] = {
        "symbol": symbol,
        "qty": _text(qty),
        "side": side,
        "type": type or order_type(limit_price, stop_price),
        "time_in_force": time_in_force,
    }
    if limit_price is not None:
        body["limit_price"] = _text(limit_price)
    if stop_price is not None:
        body["stop_price"] = _text(stop_price)
    if client_order_id is not None:
        body["client_order_id"] = client_order_id
    return body


def _segment(text: str) -> str:
    return quote(text, safe="")


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


class BourseClient:
    """One API key's view of Bourse over HTTP; a context manager (closes its connections)."""

    def __init__(
        self,
        url: str,
        key_id: str,
        secret: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.url,
            headers={KEY_ID_HEADER: key_id, SECRET_HEADER: secret},
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def connect(
        cls,
        api: str | None = None,
        key_id: str | None = None,
        secret: str | None = None,
        *,
        admin: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> BourseClient:
        """A client for the API and key `resolve_endpoint` finds."""
        endpoint = resolve_endpoint(api, key_id, secret, admin=admin)
        return cls(endpoint.url, endpoint.key_id, endpoint.secret, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BourseClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---- account, orders, positions ----

    def account(self) -> Account:
        return self._get("/v2/account", Account)

    def asset(self, symbol: str) -> Asset:
        return self._get(f"/v2/assets/{_segment(symbol)}", Asset)

    def submit(
        self,
        symbol: str,
        side: Side,
        qty: Decimal,
        *,
        type: OrderType | None = None,
        time_in_force: TimeInForce = "day",
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        """Submit an order; its type is implied by the prices unless given. The answer comes
        once the exchange has decided: `new`, `filled`, `partially_filled`, `canceled`..."""
        body = order_body(
            symbol,
            side,
            qty,
            type=type,
            time_in_force=time_in_force,
            limit_price=limit_price,
            stop_price=stop_price,
            client_order_id=client_order_id,
        )
        return self._decode(self._request("POST", "/v2/orders", json=body), Order)

    def fills(self, *, limit: int = 50) -> list[FillActivity]:
        """The account's latest fills, newest first (at most 100)."""
        params = {"page_size": str(limit)}
        return self._get("/v2/account/activities/FILL", list[FillActivity], params=params)

    def orders(
        self,
        status: StatusFilter = "open",
        *,
        limit: int | None = None,
        symbols: list[str] | None = None,
    ) -> list[Order]:
        params: dict[str, str] = {"status": status}
        if limit is not None:
            params["limit"] = str(limit)
        if symbols:
            params["symbols"] = ",".join(symbols)
        return self._get("/v2/orders", list[Order], params=params)

    def order(self, order_id: str) -> Order:
        return self._get(f"/v2/orders/{_segment(order_id)}", Order)

    def cancel(self, order_id: str) -> None:
        """Cancel an open order; returns once it is canceled (ApiError if it cannot be)."""
        self._request("DELETE", f"/v2/orders/{_segment(order_id)}")

    def cancel_all(self) -> list[CancelOutcome]:
        """Cancel every open order; one outcome per order (some may have filled meanwhile)."""
        answers = self._decode(self._request("DELETE", "/v2/orders"), list[_MultiStatus])
        outcomes = []
        for answer in answers:
            if 200 <= answer.status < 300:
                order = self._decode_bytes(answer.body, Order, "/v2/orders")
                outcomes.append(CancelOutcome(id=answer.id, status=answer.status, order=order))
            else:
                error = self._decode_bytes(answer.body, _ErrorBody, "/v2/orders")
                outcomes.append(
                    CancelOutcome(id=answer.id, status=answer.status, error=error.message)
                )
        return outcomes

    def positions(self) -> list[Position]:
        return self._get("/v2/positions", list[Position])

    def close_position(
        self, symbol: str, *, qty: Decimal | None = None, percentage: Decimal | None = None
    ) -> Order:
        """Close all of a position with a market order, or `qty` of it, or `percentage` %."""
        params = {}
        if qty is not None:
            params["qty"] = format(qty, "f")
        if percentage is not None:
            params["percentage"] = format(percentage, "f")
        response = self._request("DELETE", f"/v2/positions/{_segment(symbol)}", params=params)
        return self._decode(response, Order)

    # ---- price alerts (a Bourse extension) ----

    def create_alert(
        self,
        symbol: str,
        condition: AlertCondition,
        price: Decimal,
        *,
        recurring: bool = False,
        hysteresis: Decimal | None = None,
    ) -> Alert:
        """Alert the account when `symbol`'s price is above / below `price`, or crosses it."""
        body: dict[str, Any] = {
            "symbol": symbol,
            "condition": condition,
            "price": _text(price),
            "recurring": recurring,
        }
        if hysteresis is not None:
            body["hysteresis"] = _text(hysteresis)
        return self._decode(self._request("POST", "/v2/alerts", json=body), Alert)

    def alerts(self, status: AlertStatusFilter = "all") -> list[Alert]:
        return self._get("/v2/alerts", list[Alert], params={"status": status})

    def alert(self, alert_id: str) -> Alert:
        return self._get(f"/v2/alerts/{_segment(alert_id)}", Alert)

    def delete_alert(self, alert_id: str) -> None:
        self._request("DELETE", f"/v2/alerts/{_segment(alert_id)}")

    # ---- administration (an admin key) ----

    def create_account(self, cash: Decimal = Decimal(0), *, shorting: bool = False) -> Credentials:
        body = {"cash": format(cash, "f"), "shorting_enabled": shorting}
        return self._decode(self._request("POST", "/admin/accounts", json=body), Credentials)

    def accounts(self) -> list[AccountSummary]:
        return self._get("/admin/accounts", list[AccountSummary])

    def deposit(self, account_id: str, amount: Decimal) -> Deposit:
        body = {"amount": format(amount, "f")}
        response = self._request(
            "POST", f"/admin/accounts/{_segment(account_id)}/deposits", json=body
        )
        return self._decode(response, Deposit)

    def deposit_asset(
        self, account_id: str, symbol: str, qty: Decimal, price: Decimal
    ) -> AssetDeposit:
        """Transfer `qty` units of `symbol` into the account at cost basis `price` a unit."""
        body = {"symbol": symbol, "qty": format(qty, "f"), "price": format(price, "f")}
        response = self._request(
            "POST", f"/admin/accounts/{_segment(account_id)}/assets", json=body
        )
        return self._decode(response, AssetDeposit)

    def halt(self, account_id: str, reason: str) -> AccountSummary:
        """Refuse the account's new orders until `resume`; returns the account."""
        response = self._request(
            "POST", f"/admin/accounts/{_segment(account_id)}/halt", json={"reason": reason}
        )
        return self._decode(response, AccountSummary)

    def resume(self, account_id: str) -> AccountSummary:
        """Lift the account's halt (an admin's, or the risk kill switch's); returns it."""
        response = self._request("POST", f"/admin/accounts/{_segment(account_id)}/resume")
        return self._decode(response, AccountSummary)

    def keys(self, account_id: str) -> list[ApiKeyInfo]:
        """The account's API keys, oldest first, revoked ones included."""
        return self._get(f"/admin/accounts/{_segment(account_id)}/keys", list[ApiKeyInfo])

    def create_key(self, account_id: str) -> Credentials:
        """Another key for the account (to rotate keys: make one, switch, revoke the old)."""
        response = self._request("POST", f"/admin/accounts/{_segment(account_id)}/keys")
        return self._decode(response, Credentials)

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        """Revoke a key on every gateway at once; returns it with its `revoked_at`."""
        return self._decode(self._request("DELETE", f"/admin/keys/{_segment(key_id)}"), ApiKeyInfo)

    # ---- the wire ----

    def _get(self, path: str, kind: type[_T], params: dict[str, str] | None = None) -> _T:
        return self._decode(self._request("GET", path, params=params), kind)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.TimeoutException:
            raise ApiUnreachable(self.url, f"no answer within {self._timeout:g}s") from None
        except httpx.TransportError as error:
            raise ApiUnreachable(self.url, _problem(error)) from None
        if response.is_error:
            raise _api_error(response)
        return response

    def _decode(self, response: httpx.Response, kind: type[_T]) -> _T:
        return self._decode_bytes(response.content, kind, response.request.url.path)

    def _decode_bytes(self, content: bytes, kind: type[_T], path: str) -> _T:
        try:
            return msgspec.json.decode(content, type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise UnexpectedAnswer(
                f"{self.url}{path} answered something that is not Bourse's API: {error}"
            ) from None


def _problem(error: httpx.TransportError) -> str:
    """`[Errno 111] Connection refused` -> `connection refused`."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(error)).strip()
    return (text[:1].lower() + text[1:]) if text else type(error).__name__


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = msgspec.json.decode(response.content, type=_ErrorBody)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ApiError(
            response.status_code, f"HTTP {response.status_code} {response.reason_phrase}"
        )
    message = " ".join(body.message.split()) or f"HTTP {response.status_code}"  # one line
    return ApiError(response.status_code, message, code=body.code, reason=body.reason)
