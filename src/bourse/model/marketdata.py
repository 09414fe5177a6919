"""Market-data messages as they travel on `md.<venue>.<symbol>`.

One tagged union for the stream: a message's `type` field says what it is. Prices and sizes
are decimal strings in JSON; timestamps are integer nanoseconds since the Unix epoch.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from bourse.model.subjects import Symbol, Venue


class Quote(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="quote"):
    """Top of book on one venue, with the venue's last trade and the day's volume."""

    symbol: Symbol
    venue: Venue
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    last: Decimal
    last_size: Decimal
    volume: Decimal
    ts: int  # nanoseconds since the Unix epoch, when the venue produced the quote
    seq: int  # per-venue sequence number, 1-based, no gaps

    def __post_init__(self) -> None:
        _check_prices(self.bid, self.ask, self.last)
        _check_sizes(self.bid_size, self.ask_size, self.last_size, self.volume)
        if self.seq < 1 or self.ts < 0:
            raise ValueError("seq must be >= 1 and ts >= 0")

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


class Trade(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="trade"):
    """One print on one venue."""

    symbol: Symbol
    venue: Venue
    price: Decimal
    size: Decimal
    side: Literal["buy", "sell", "unknown"] = "unknown"  # the aggressor's side
    ts: int
    seq: int

    def __post_init__(self) -> None:
        _check_prices(self.price)
        _check_sizes(self.size)
        if self.seq < 1 or self.ts < 0:
            raise ValueError("seq must be >= 1 and ts >= 0")


class Depth(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="depth"):
    """The best price levels of a venue's book, best first, as (price, size) pairs.

    Bourse's own venue publishes one after every change to a book; `seq` (per venue, no gaps)
    lets a client see that it missed one and ask for a fresh snapshot.
    """

    symbol: Symbol
    venue: Venue
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]
    ts: int
    seq: int


def _check_prices(*prices: Decimal) -> None:
    for price in prices:
        if not price.is_finite() or price <= 0:
            raise ValueError(f"prices must be finite and positive, got {price}")


def _check_sizes(*sizes: Decimal) -> None:
    for size in sizes:
        if not size.is_finite() or size < 0:
            raise ValueError(f"sizes must be finite and not negative, got {size}")


MarketData = Quote | Trade | Depth

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[MarketData] = msgspec.json.Decoder(MarketData)


def encode(message: MarketData) -> bytes:
    return _encoder.encode(message)


def decode(payload: bytes) -> MarketData:
    """Decode one market-data message; raises msgspec.ValidationError/DecodeError if bad."""
    return _decoder.decode(payload)
