"""`/v2/alerts`: price alerts, a Bourse extension to the Alpaca Trading API (Alpaca has none).

    POST   /v2/alerts              {"symbol": "AAPL", "condition": "above", "price": "200",
                                    "recurring": false, "hysteresis": "0"}   -> the alert
    GET    /v2/alerts[?status=active|triggered|all]                        -> the account's
    GET    /v2/alerts/{alert_id}                                            -> one alert
    DELETE /v2/alerts/{alert_id}                                            -> 204

Same keys, errors and rate limit as the trading API; an account sees only its own alerts (an
id of another account's answers 404, like one that does not exist). A request is checked
here (a known symbol; a price and hysteresis that are finite, on the instrument's tick, the
price above zero and the hysteresis below it; no unknown field) and journaled on ALERTS
(`alerts.created|deleted.<account>.<id>`) before anything acts on it; the answer comes once
the gateway's view has it, so a GET right after shows it. The alerts service evaluates it;
firings reach the account on NATS (`alerts.fired.<account>.<id>`) and on the `/stream`
WebSocket (`alerts`). What the conditions mean: docs/alerts.md.
"""

# No `from __future__ import annotations` here: the routes are made inside `alerts_router`
# and FastAPI reads their annotations, which name the dependency passed in, at run time.

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import Error as JetStreamError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from starlette.responses import Response

from bourse.alerts.view import AlertRecord, AlertsView
from bourse.analytics import alerts
from bourse.analytics.alerts import AlertCreated, AlertDeleted, AlertFired, Condition
from bourse.gateway import alpaca, errors
from bourse.gateway.auth import Principal
from bourse.model import subjects
from bourse.model.instruments import Instrument

MAX_ALERTS_PER_ACCOUNT = 100  # active and triggered; deleting one makes room
MAX_PRICE = Decimal(10) ** 12
VIEW_TIMEOUT = 5.0  # seconds an answer waits for the gateway's view to have the request

Authenticate = Callable[..., Awaitable[Principal]]


class AlertRequest(BaseModel):
    """POST /v2/alerts. Unknown fields are refused, so a typo is an error, not a surprise."""

    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=32)
    condition: Condition
    price: Decimal
    recurring: StrictBool = False
    hysteresis: Decimal = Decimal(0)

    @field_validator("price", "hysteresis", mode="before")
    @classmethod
    def _exact(cls, value: Any, info: Any) -> Decimal | None:
        number = alpaca._decimal_field(value, info.field_name)
        if number is None:
            raise ValueError(f"{info.field_name} must be a decimal number or string")
        return number


def _text(value: Decimal) -> str:
    return format(value, "f")


def alert_json(record: AlertRecord) -> dict[str, Any]:
    """An alert as the API answers it."""
    created, last = record.created, record.last_fired
    return {
        "id": created.alert_id,
        "symbol": created.symbol,
        "condition": created.condition,
        "price": _text(created.price),
        "recurring": created.recurring,
        "hysteresis": _text(created.hysteresis),
        "status": record.status,
        "fire_count": record.fire_count,
        "last_fired_at": alpaca.rfc3339(last.ts) if last is not None else None,
        "last_fired_price": _text(last.market_price) if last is not None else None,
        "created_at": alpaca.rfc3339(created.ts),
    }


def fired_json(event: AlertFired, record: AlertRecord) -> dict[str, Any]:
    """A firing as the `alerts` WebSocket stream sends it."""
    return {
        "event": "fired",
        "alert_id": event.alert_id,
        "symbol": event.symbol,
        "condition": event.condition,
        "price": _text(event.price),
        "market_price": _text(event.market_price),
        "direction": event.direction,
        "fire_count": event.fire_count,
        "recurring": event.recurring,
        "status": record.status,
        "timestamp": alpaca.rfc3339(event.ts),
    }


def check_alert(body: AlertRequest, instrument: Instrument) -> None:
    """What a schema cannot say about an alert's numbers; a precise 422 otherwise."""
    tick = instrument.tick_size
    price, hysteresis = body.price, body.hysteresis
    if not 0 < price <= MAX_PRICE:
        raise errors.unprocessable(
            f"price must be > 0 and at most {MAX_PRICE:f}, got {price}", reason="invalid_price"
        )
    # quantize, not a modulo: 1E-9999999 % 0.01 underflows to 0 and would pass for a tick.
    if price != price.quantize(tick):
        raise errors.unprocessable(
            f"price must be a multiple of {instrument.symbol}'s tick size {tick}, got {price}",
            reason="invalid_price",
        )
    if not 0 <= hysteresis < price or hysteresis != hysteresis.quantize(tick):
        raise errors.unprocessable(
            f"hysteresis must be 0 or more, below the price {price}, and a multiple of the "
            f"tick size {tick}; got {hysteresis}",
            reason="invalid_hysteresis",
        )


def _alert_id(text: str) -> str:
    """Alert ids are UUIDs: anything else cannot be an alert, so 404 without a lookup."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise errors.not_found(f"alert {text} not found") from None


def alerts_router(
    view: AlertsView,
    nc: NATS,
    instrument: Callable[[str], Instrument],
    authenticate: Authenticate,
) -> APIRouter:
    """The routes over `view`; `instrument` finds a symbol's instrument (422 if none),
    `authenticate` is the trading API's key dependency."""
    router = APIRouter(tags=["alerts (Bourse extension)"])
    js = nc.jetstream(timeout=5.0)
    locks: dict[str, asyncio.Lock] = {}  # one create at a time per account: the limit holds
    Who = Annotated[Principal, Depends(authenticate)]

    async def journal(subject: str, message: alerts.AlertsMessage, msg_id: str) -> int:
        try:
            ack = await js.publish(subject, alerts.encode(message), headers={"Nats-Msg-Id": msg_id})
        except (NatsError, JetStreamError, TimeoutError) as error:
            raise errors.unavailable(
                f"the alerts journal is unavailable ({type(error).__name__}); nothing was "
                "changed, retry"
            ) from error
        return int(ack.seq)

    def own(who: Principal, alert_id: str) -> AlertRecord:
        found = view.get(who.account_id, _alert_id(alert_id))
        if found is None:
            raise errors.not_found(f"alert {alert_id} not found")
        return found

    @router.post("/v2/alerts", summary="Create a price alert (Bourse extension)")
    async def create_alert(who: Who, body: Annotated[AlertRequest, Body()]) -> dict[str, Any]:
        found = instrument(body.symbol)
        check_alert(body, found)
        created = AlertCreated(
            alert_id=str(uuid.uuid4()),
            account_id=who.account_id,
            symbol=found.symbol,
            condition=body.condition,
            price=body.price,
            recurring=body.recurring,
            hysteresis=body.hysteresis,
            ts=time.time_ns(),
        )
        async with locks.setdefault(who.account_id, asyncio.Lock()):
            if view.count(who.account_id) >= MAX_ALERTS_PER_ACCOUNT:
                raise errors.unprocessable(
                    f"an account may have at most {MAX_ALERTS_PER_ACCOUNT} alerts; delete some "
                    "(triggered ones too) to make room",
                    reason="too_many_alerts",
                )
            seq = await journal(
                subjects.alert_event("created", who.account_id, created.alert_id),
                created,
                f"alert-created:{created.alert_id}",
            )
            await view.wait_for(seq, VIEW_TIMEOUT)
        record = view.get(who.account_id, created.alert_id)
        return alert_json(record if record is not None else AlertRecord(created=created))

    @router.get("/v2/alerts", summary="List the account's price alerts (Bourse extension)")
    async def list_alerts(
        who: Who, status: Literal["active", "triggered", "all"] = "all"
    ) -> list[dict[str, Any]]:
        return [
            alert_json(record)
            for record in view.alerts(who.account_id)
            if status == "all" or record.status == status
        ]

    @router.get("/v2/alerts/{alert_id}", summary="One price alert (Bourse extension)")
    async def get_alert(who: Who, alert_id: str) -> dict[str, Any]:
        return alert_json(own(who, alert_id))

    @router.delete(
        "/v2/alerts/{alert_id}", status_code=204, summary="Delete a price alert (Bourse extension)"
    )
    async def delete_alert(who: Who, alert_id: str) -> Response:
        record = own(who, alert_id)
        deleted = AlertDeleted(
            alert_id=record.created.alert_id, account_id=who.account_id, ts=time.time_ns()
        )
        seq = await journal(
            subjects.alert_event("deleted", who.account_id, deleted.alert_id),
            deleted,
            f"alert-deleted:{deleted.alert_id}",
        )
        await view.wait_for(seq, VIEW_TIMEOUT)
        return Response(status_code=204)

    return router
