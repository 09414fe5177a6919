"""What the history store keeps, and how it is shown.

A stored quote or trade is the market-data message exactly as it was on `md.<venue>.<symbol>`
plus `stream_seq`, its MARKET_DATA stream sequence: the row's identity, which makes ingestion
idempotent. Rows keep the message's field names and `type` tag, so an answer's rows decode
with `bourse.model.marketdata.decode` (which ignores `stream_seq`): a back-test can replay
history with the decoder the live consumers use.

Prices and sizes are stored as DECIMAL(18, 8): up to 10 integer digits and 8 decimal places,
exactly. A message whose numbers do not fit is refused (`unstorable`), never rounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import msgspec

from bourse.analytics.rounding import UNKNOWN_PRICE_PLACES
from bourse.model.instruments import DEFAULT_UNIVERSE, Instrument
from bourse.model.marketdata import MarketData, Quote, Trade
from bourse.model.numbers import step

PLACES = 8  # decimal places of every stored price and size
INTEGER_DIGITS = 10
_LIMIT = Decimal(10) ** (INTEGER_DIGITS + PLACES)
_BIGINT = 2**63 - 1


class QuoteRow(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="quote"):
    """A stored quote: the fields of `marketdata.Quote`, and its stream sequence."""

    symbol: str
    venue: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    last: Decimal
    last_size: Decimal
    volume: Decimal
    ts: int
    seq: int
    stream_seq: int


class TradeRow(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="trade"):
    """A stored trade: the fields of `marketdata.Trade`, and its stream sequence."""

    symbol: str
    venue: str
    price: Decimal
    size: Decimal
    side: Literal["buy", "sell", "unknown"]
    ts: int
    seq: int
    stream_seq: int


Row = QuoteRow | TradeRow
RowKind = Literal["quotes", "trades"]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One message as the consumer hands it to the store: where it is in MARKET_DATA, what it
    says, and the bytes as published (the store parses those in bulk)."""

    stream_seq: int
    message: MarketData
    payload: bytes


def _fits(value: Decimal) -> bool:
    scaled = value.scaleb(PLACES)
    return abs(scaled) < _LIMIT and scaled == scaled.to_integral_value()


def unstorable(message: MarketData) -> str | None:
    """Why `message` cannot be stored exactly (a number outside DECIMAL(18, 8), a time or
    sequence beyond BIGINT), or None."""
    if message.ts > _BIGINT or message.seq > _BIGINT:
        return f"ts and seq must be at most {_BIGINT} (BIGINT), got {message.ts}, {message.seq}"
    numbers: tuple[Decimal, ...]
    match message:
        case Quote():
            numbers = (
                message.bid,
                message.ask,
                message.bid_size,
                message.ask_size,
                message.last,
                message.last_size,
                message.volume,
            )
        case Trade():
            numbers = (message.price, message.size)
        case _:
            return None
    for number in numbers:
        if not _fits(number):
            return (
                f"{number} does not fit the history store's numbers: at most "
                f"{INTEGER_DIGITS} integer digits and {PLACES} decimal places"
            )
    return None


class Places:
    """How many decimal places a symbol's prices and sizes are shown with.

    The store keeps 8 places; an answer shows a number with its trailing zeros removed but at
    least the instrument's places (`189.90`, not `189.90000000` nor `189.9`), so it reads as
    the feed published it. Symbols outside the instruments get what their digits need.
    """

    def __init__(self, instruments: tuple[Instrument, ...] = DEFAULT_UNIVERSE) -> None:
        self._places = {i.symbol: (i.price_precision, i.size_precision) for i in instruments}

    def price_places(self, symbol: str) -> int:
        """For VWAP rounding: the instrument's price places, else analytics' default."""
        known = self._places.get(symbol)
        return known[0] if known is not None else UNKNOWN_PRICE_PLACES

    def price(self, symbol: str, value: Decimal) -> Decimal:
        known = self._places.get(symbol)
        return trim(value, known[0] if known is not None else 0)

    def size(self, symbol: str, value: Decimal) -> Decimal:
        known = self._places.get(symbol)
        return trim(value, known[1] if known is not None else 0)


def trim(value: Decimal, places: int) -> Decimal:
    """`value` without trailing zeros, but with at least `places` decimal places."""
    stripped = value.normalize()
    exponent = stripped.as_tuple().exponent
    assert isinstance(exponent, int)  # finite: the store holds no NaN or infinity
    if exponent > -places:
        return stripped.quantize(step(places))
    return stripped
