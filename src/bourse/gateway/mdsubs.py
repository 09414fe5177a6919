"""What a market-data client asks for: its messages read and checked, its subscriptions. Pure.

    request = parse_request(decoded, feed)       # Auth | Change, or raises Refusal(code, detail)
    subs = Subscriptions(feed)
    added, removed = subs.apply(change, max_symbols)   # all or nothing; Refusal 405 over the limit

Symbols are upper-cased; a crypto pair may be written `BTC/USD` (Alpaca's form) or `BTC-USD`
(Bourse's). Subscriptions are keyed by Bourse's symbol and remember how the client wrote it,
so a client hears of `BTC/USD` if it asked for `BTC/USD` and of `BTC-USD` if it asked for that.
`*` is every symbol of the feed, always written Alpaca's way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bourse.gateway.mdwire import ALPACA_CHANNELS, Feed

STAR = "*"
_STOCK = re.compile(r"^[A-Z0-9][A-Z0-9._]{0,31}$(?!\n)")
_PAIR = re.compile(r"^([A-Z0-9]{1,15})[/-]([A-Z0-9]{1,15})$")


class Refusal(Exception):
    """A request answered with Alpaca error `code`; `detail` says why and what is accepted."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Auth:
    key: str
    secret: str


@dataclass(frozen=True, slots=True)
class Change:
    """A subscribe (`add`) or unsubscribe: channel -> symbols as written by the client."""

    add: bool
    channels: dict[str, list[str]]


Request = Auth | Change


def parse_request(message: Any, feed: Feed) -> Request:
    if not isinstance(message, dict) or not isinstance(message.get("action"), str):
        raise Refusal(400, 'send a JSON object with an "action": auth, subscribe or unsubscribe')
    action = message["action"]
    if action == "auth":
        key, secret = message.get("key"), message.get("secret")
        if not isinstance(key, str) or not isinstance(secret, str):
            raise Refusal(400, 'auth needs "key" and "secret", both strings')
        return Auth(key, secret)
    if action not in ("subscribe", "unsubscribe"):
        raise Refusal(400, f"unknown action {action!r}; accepted: auth, subscribe, unsubscribe")
    channels: dict[str, list[str]] = {}
    for name, value in message.items():
        if name == "action":
            continue
        if name not in feed.channels:
            if name in ALPACA_CHANNELS:
                raise Refusal(
                    410, f"{name} is not offered on {feed.path}; it offers {_listed(feed)}"
                )
            raise Refusal(400, f"unknown field {name!r}; channels: {_listed(feed)}")
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise Refusal(400, f'{name} must be a list of symbols, or ["*"]')
        channels[name] = [spell(symbol, feed) for symbol in value]
    return Change(add=action == "subscribe", channels=channels)


def _listed(feed: Feed) -> str:
    return ", ".join(feed.channels)


def spell(symbol: str, feed: Feed) -> str:
    """The client's symbol, upper-cased and checked; Refusal 400 if it cannot be one."""
    written = symbol.strip().upper()
    if written == STAR:
        return STAR
    if feed.crypto:
        if not _PAIR.match(written):
            raise Refusal(400, f"{symbol!r} is not a crypto pair; write BTC/USD (or BTC-USD)")
    elif not _STOCK.match(written):
        raise Refusal(400, f"{symbol!r} is not a stock symbol; write e.g. AAPL")
    return written


def canonical(written: str) -> str:
    """Bourse's symbol for a spelling: `BTC/USD` -> `BTC-USD`."""
    return written.replace("/", "-")


@dataclass
class Subscriptions:
    """One connection's subscriptions: channel -> Bourse symbol (or `*`) -> client spelling."""

    feed: Feed
    channels: dict[str, dict[str, str]] = field(default_factory=dict)

    def count(self) -> int:
        """Symbols subscribed, over every channel (`*` is not counted)."""
        return sum(len(s) - (STAR in s) for s in self.channels.values())

    def apply(
        self, change: Change, max_symbols: int
    ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
        """Apply `change`; (added (channel, symbol, spelling), removed (channel, symbol)). A
        change that would pass `max_symbols` changes nothing (Refusal 405)."""
        after = {channel: dict(symbols) for channel, symbols in self.channels.items()}
        for channel, written in change.channels.items():
            symbols = after.setdefault(channel, {})
            for spelling in written:
                key = canonical(spelling)
                if change.add:
                    symbols.pop(key, None)  # a new spelling goes last, as a new symbol would
                    symbols[key] = spelling
                else:
                    symbols.pop(key, None)
        total = sum(len(s) - (STAR in s) for s in after.values())
        if change.add and total > max_symbols:
            raise Refusal(
                405,
                f"this would subscribe {total} symbols; a connection may have {max_symbols} "
                "(or use *)",
            )
        added: list[tuple[str, str, str]] = []
        removed: list[tuple[str, str]] = []
        for channel in set(after) | set(self.channels):
            before, now = self.channels.get(channel, {}), after.get(channel, {})
            removed.extend((channel, s) for s in before if s not in now)
            added.extend(
                (channel, s, spelling) for s, spelling in now.items() if before.get(s) != spelling
            )
        self.channels = {channel: symbols for channel, symbols in after.items() if symbols}
        return added, removed

    def lists(self) -> dict[str, list[str]]:
        """Channel -> the symbols as the client wrote them, for the `subscription` message."""
        return {channel: list(symbols.values()) for channel, symbols in self.channels.items()}
