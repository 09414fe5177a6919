"""Subject names: the public contract. Build subjects here, never with string literals.

Market data is published on `md.<venue>.<symbol>`; so `md.>` is everything, `md.nyse.>` one
venue and `md.*.AAPL` one symbol on every venue.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec

from bourse.errors import ConfigError

MARKET_DATA_ROOT = "md"
ORDERS_ROOT = "orders"
POSITIONS_ROOT = "positions"
RISK_ROOT = "risk"
DEAD_LETTER_ROOT = "deadletter"
ACCOUNTS_ROOT = "accounts"  # request/reply queries of the accounts service (not a stream)
ANALYTICS_ROOT = "analytics"

# Order and account ids become subject tokens (`orders.validated.<order_id>`,
# `positions.<account_id>.<symbol>`): no dots, wildcards, spaces or control characters, so
# that no message can make a service publish on a subject NATS refuses. A message whose id is
# not one fails to decode: every service skips it, on every replay alike.
ID_PATTERN: Final = r"^[A-Za-z0-9_:-]{1,64}$(?!\n)"
Id = Annotated[
    str,
    msgspec.Meta(
        pattern=ID_PATTERN,
        description="1-64 letters, digits, '_', '-' or ':' (a subject token)",
    ),
]

_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,31}$(?!\n)")
_VENUE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$(?!\n)")
# Market data's symbol and venue become subject tokens downstream (`analytics.bars.<tf>.
# <venue>.<symbol>`, `positions.<account>.<symbol>`): a message naming others fails to decode.
Symbol = Annotated[
    str,
    msgspec.Meta(
        pattern=_SYMBOL.pattern, description="upper-case letters, digits, '-' and '_' (1-32)"
    ),
]
Venue = Annotated[
    str,
    msgspec.Meta(
        pattern=_VENUE.pattern, description="lower-case letters, digits, '-' and '_' (1-32)"
    ),
]


def normalize_symbol(symbol: str) -> str:
    """Upper-case, and accept `BTC/USD` for `BTC-USD`; raise ConfigError when not a symbol."""
    normalized = symbol.strip().upper().replace("/", "-")
    if not _SYMBOL.match(normalized):
        raise ConfigError(
            "symbol", symbol, "letters, digits, '-' and '_' (up to 32), e.g. AAPL or BTC-USD"
        )
    return normalized


def check_venue(venue: str) -> str:
    if not _VENUE.match(venue):
        raise ConfigError(
            "venue", venue, "lower-case letters, digits, '-' and '_' (up to 32), e.g. nyse"
        )
    return venue


def market_data(venue: str, symbol: str) -> str:
    return f"{MARKET_DATA_ROOT}.{venue}.{symbol}"


def market_data_filter(venue: str = "*", symbol: str = "*") -> str:
    """A filter over market data; `*` matches any venue or symbol."""
    return f"{MARKET_DATA_ROOT}.{venue}.{symbol}"


ALL_MARKET_DATA = f"{MARKET_DATA_ROOT}.>"


def parse_market_data(subject: str) -> tuple[str, str]:
    """(venue, symbol) of an `md.<venue>.<symbol>` subject; ValueError otherwise."""
    root, venue, symbol = subject.split(".", 2)
    if root != MARKET_DATA_ROOT or "." in symbol:
        raise ValueError(f"not a market-data subject: {subject}")
    return venue, symbol


# Analytics derived from market data (the ANALYTICS stream; see docs/analytics.md). The
# timeframe comes first because a consumer almost always wants one: `analytics.bars.1Min.*.AAPL`.
ALL_ANALYTICS = f"{ANALYTICS_ROOT}.>"


def analytics_bars(timeframe: str, venue: str, symbol: str) -> str:
    """`analytics.bars.<timeframe>.<venue>.<symbol>`, e.g. `analytics.bars.1Min.nyse.AAPL`."""
    return f"{ANALYTICS_ROOT}.bars.{timeframe}.{venue}.{symbol}"


def analytics_indicators(timeframe: str, venue: str, symbol: str) -> str:
    return f"{ANALYTICS_ROOT}.indicators.{timeframe}.{venue}.{symbol}"


def analytics_vwap(venue: str, symbol: str) -> str:
    return f"{ANALYTICS_ROOT}.vwap.{venue}.{symbol}"


def analytics_nbbo(symbol: str) -> str:
    return f"{ANALYTICS_ROOT}.nbbo.{symbol}"


def analytics_arbitrage(symbol: str) -> str:
    return f"{ANALYTICS_ROOT}.arb.{symbol}"


ORDERS_NEW = f"{ORDERS_ROOT}.new"
ORDERS_CANCEL = f"{ORDERS_ROOT}.cancel"
ORDERS_REPLACE = f"{ORDERS_ROOT}.replace"
ORDERS_ADMIN = f"{ORDERS_ROOT}.admin"
# Core NATS, no stream: an admin revoked this API key (the payload is its id); every gateway
# forgets it at once and closes its WebSocket connections.
API_KEY_REVOKED = "gateway.keys.revoked"
ORDERS_SESSION = f"{ORDERS_ROOT}.session"
ALL_VALIDATED = f"{ORDERS_ROOT}.validated.>"
ALL_ORDERS = f"{ORDERS_ROOT}.>"


def order_outcome(kind: str, order_id: str) -> str:
    """`orders.<kind>.<order_id>`: kind validated, rejected (accounts' decisions on a request
    about that order), accepted, executed, cancelled or replaced (the engine's outcomes)."""
    return f"{ORDERS_ROOT}.{kind}.{order_id}"


def positions(account_id: str, symbol: str) -> str:
    return f"{POSITIONS_ROOT}.{account_id}.{symbol}"


def engine_depth(symbol: str) -> str:
    """Request/reply: the engine answers with the bourse venue's book for `symbol` as it is
    now (a `Depth`), so a client that joins need not wait for the book's next change."""
    return f"engine.depth.{symbol}"


def engine_quote(symbol: str) -> str:
    """Request/reply: the bourse venue's top of book for `symbol` as it is now (a `Quote`),
    as `engine_depth` answers with its book."""
    return f"engine.quote.{symbol}"


def account_ledger(account_id: str) -> str:
    """Request/reply: the accounts service answers with the account's ledger as it is now."""
    return f"{ACCOUNTS_ROOT}.ledger.{account_id}"


def risk_alert(severity: str) -> str:
    return f"{RISK_ROOT}.alerts.{severity}"


# Price alerts (the ALERTS stream; docs/alerts.md): `alerts.<kind>.<account>.<alert id>`, kind
# `created` or `deleted` (an account's requests, journaled by the gateway) or `fired` (the
# alerts service). The alert id last gives each alert its own subjects, which the stream
# compacts to the latest message of each.
ALERTS_ROOT = "alerts"
ALL_ALERTS = f"{ALERTS_ROOT}.>"


def alert_event(kind: str, account_id: str, alert_id: str) -> str:
    return f"{ALERTS_ROOT}.{kind}.{account_id}.{alert_id}"


def alert_filter(kind: str = "*", account_id: str = "*") -> str:
    """E.g. `alerts.fired.<account>.*`: every firing of one account's alerts."""
    return f"{ALERTS_ROOT}.{kind}.{account_id}.*"


def dead_letter(subject: str) -> str:
    """Where a poison message from `subject` is parked (the DEAD_LETTERS stream keeps them)."""
    return f"{DEAD_LETTER_ROOT}.{subject}"


ALL_DEAD_LETTERS = f"{DEAD_LETTER_ROOT}.>"

# Push consumers deliver on a fixed, private subject so every instance of a queue group can
# create (or find) the same durable consumer without conflicting.
DELIVER_ROOT = "_bourse.deliver"


def deliver_subject(stream: str, durable: str) -> str:
    """The delivery subject of push consumer `durable`: `_bourse.deliver.<stream>.<durable>`."""
    return f"{DELIVER_ROOT}.{stream}.{durable}"


def check_filter(pattern: str) -> str:
    """Validate a subject filter such as `md.>` or `md.*.AAPL`; raise ConfigError if malformed."""
    tokens = pattern.split(".")
    ok = bool(pattern) and all(tokens) and " " not in pattern
    ok = ok and all(t == ">" or ">" not in t for t in tokens) and ">" not in tokens[:-1]
    ok = ok and all(t == "*" or "*" not in t for t in tokens)
    if not ok:
        raise ConfigError(
            "subject filter",
            pattern,
            "dot-separated tokens; '*' matches one token and '>' the rest, e.g. md.> or md.*.AAPL",
        )
    return pattern
