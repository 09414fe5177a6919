"""The account's risk alerts at the gateway: the `risk` stream of `/stream` and
`GET /v2/risk/alerts` (Bourse extensions).

    feed = await RiskFeed(nc).start()            # one core subscription on risk.alerts.>
    stop_listening = feed.listen(account_id, on_alert)   # each of the account's alerts, live
    feed.recent(account_id, limit=20)            # [RiskAlert], newest first
    await feed.stop()

The risk service publishes every `RiskAlert` on `risk.alerts.<severity>` (RISK). The gateway
holds one core NATS subscription on `risk.alerts.>` however many clients listen, and hands
each alert to the listeners of its own account only: an account never hears of another's.

`recent` is an in-memory ring, filled by that same subscription: the last `keep` alerts of
each account (at most `max_accounts` accounts, the least recently alerted forgotten first)
since this gateway started. It is not read back from the RISK stream, so alerts raised
before the gateway started, or while it was away, are not in it. An alert id seen again (the
risk service replaying after a restart publishes the same ids) is neither kept nor told twice.
"""

# No `from __future__ import annotations`: FastAPI resolves the route's annotations, and
# `authenticate` is local to `risk_router`.

import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bourse.gateway import alpaca
from bourse.gateway.auth import Principal
from bourse.model import subjects
from bourse.risk import messages
from bourse.risk.messages import RiskAlert

log = logging.getLogger(__name__)

RISK = "risk"  # the stream's name on /stream
RiskListener = Callable[[RiskAlert], None]
Authenticate = Callable[..., Awaitable[Principal]]
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def risk_json(alert: RiskAlert) -> dict[str, Any]:
    """A risk alert as the `risk` stream and `GET /v2/risk/alerts` send it."""
    return {
        "alert_id": alert.alert_id,
        "rule": str(alert.rule),
        "severity": alert.severity,
        "message": alert.message,
        "value": format(alert.value, "f"),
        "limit": format(alert.limit, "f"),
        "threshold": format(alert.threshold, "f"),
        "symbol": alert.symbol,
        "timestamp": alpaca.rfc3339(alert.ts),
    }


class RiskFeed:
    """Risk alerts by account, live and recent; see the module docstring."""

    def __init__(self, nc: NATS, *, keep: int = MAX_LIMIT, max_accounts: int = 10_000) -> None:
        self._nc = nc
        self._keep = keep
        self._max_accounts = max_accounts
        self._recent: OrderedDict[str, deque[RiskAlert]] = OrderedDict()
        self._listeners: dict[str, dict[int, RiskListener]] = {}
        self._next_listener = 0
        self._sub: Subscription | None = None
        self.received = 0
        self.malformed = 0

    @property
    def listening(self) -> int:
        """Listeners (WebSocket connections) waiting for risk alerts."""
        return sum(len(found) for found in self._listeners.values())

    async def start(self) -> "RiskFeed":
        if self._sub is not None:
            raise RuntimeError("the risk feed was already started")
        self._sub = await self._nc.subscribe(subjects.risk_alert(">"), cb=self._on_message)
        return self

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection may be closing already
                log.debug("risk feed: unsubscribe failed", exc_info=True)

    # ---- reading ----

    def recent(self, account_id: str, limit: int = DEFAULT_LIMIT) -> list[RiskAlert]:
        """The account's latest alerts since the gateway started, newest first."""
        held = self._recent.get(account_id)
        if not held or limit <= 0:
            return []
        return list(reversed(held))[:limit]

    def listen(self, account_id: str, listener: RiskListener) -> Callable[[], None]:
        """Call `listener` for each of the account's alerts from now on (in the event loop:
        keep it short); returns the function that stops it."""
        self._next_listener += 1
        token = self._next_listener
        self._listeners.setdefault(account_id, {})[token] = listener

        def unlisten() -> None:
            found = self._listeners.get(account_id)
            if found is not None:
                found.pop(token, None)
                if not found:
                    del self._listeners[account_id]

        return unlisten

    # ---- the subscription ----

    async def _on_message(self, msg: Msg) -> None:
        self.apply(msg.data)

    def apply(self, payload: bytes) -> RiskAlert | None:
        """Take one `risk.alerts.*` payload in; the alert if it is new, else None."""
        try:
            alert = messages.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            log.warning("risk feed: skipping a malformed risk alert: %s", error)
            self.malformed += 1
            return None
        held = self._recent.get(alert.account_id)
        if held is None:
            held = self._recent[alert.account_id] = deque(maxlen=self._keep)
            while len(self._recent) > self._max_accounts:
                self._recent.popitem(last=False)
        elif any(seen.alert_id == alert.alert_id for seen in held):
            return None  # a replay of one already told
        self._recent.move_to_end(alert.account_id)
        held.append(alert)
        self.received += 1
        for listener in list(self._listeners.get(alert.account_id, {}).values()):
            try:
                listener(alert)
            except Exception:
                log.exception("risk feed: a listener failed")
        return alert


def risk_router(feed: RiskFeed, authenticate: Authenticate) -> APIRouter:
    """`GET /v2/risk/alerts`: the account's recent risk alerts (from `feed`'s ring)."""
    router = APIRouter(tags=["risk alerts (Bourse extension)"])
    Who = Annotated[Principal, Depends(authenticate)]

    @router.get("/v2/risk/alerts", summary="The account's recent risk alerts (Bourse extension)")
    async def list_risk_alerts(
        who: Who, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    ) -> list[dict[str, Any]]:
        return [risk_json(alert) for alert in feed.recent(who.account_id, limit)]

    return router
