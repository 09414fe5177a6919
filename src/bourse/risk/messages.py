"""The risk engine's own messages: `Mark` (an input) and `RiskAlert` (published on RISK).

`RiskAlert` goes out on `risk.alerts.<severity>` (`model.subjects.risk_alert`) as JSON:

    {"type": "risk_alert", "ts": 1718000000000000000, "alert_id": "risk-alert:alice:3",
     "account_id": "alice", "rule": "daily_loss", "severity": "critical",
     "value": "1050.00", "limit": "1000", "threshold": "1000", "symbol": "",
     "message": "daily loss 1050.00 reached the limit 1000: trading halted"}

Money and fractions are decimal strings, times integer nanoseconds since the epoch, as on
every Bourse stream.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from bourse.risk.rules import RuleName

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")


class Mark(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="mark"):
    """A symbol's mark price (the reference price) at `ts`: positions are valued at it."""

    ts: int
    symbol: str
    price: Decimal


class RiskAlert(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="risk_alert"):
    """A rule crossed a level: `warning` or `critical` going up, `info` when it is back under.

    - `alert_id`: `risk-alert:<account>:<n>`, the account's n-th alert; a function of the
      inputs, so a replay raises the same ids (and publishes them as `Nats-Msg-Id`).
    - `value`, `limit`: the rule's value and limit (amounts, fractions or an order count).
    - `threshold`: the level crossed (`warning_at` × limit for a warning, the limit for a
      critical alert, the level re-armed for info).
    - `symbol`: the largest position, for concentration; empty otherwise.
    """

    ts: int
    alert_id: str
    account_id: str
    rule: RuleName
    severity: Severity
    value: Decimal
    limit: Decimal
    threshold: Decimal
    message: str
    symbol: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RiskAlert)


def encode(alert: RiskAlert) -> bytes:
    return _encoder.encode(alert)


def decode(payload: bytes) -> RiskAlert:
    return _decoder.decode(payload)
