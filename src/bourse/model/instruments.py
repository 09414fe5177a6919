"""Instrument specifications and the default universe."""

from __future__ import annotations

import enum
from decimal import Decimal

import msgspec

from bourse.model.numbers import to_units


class AssetClass(enum.StrEnum):
    US_EQUITY = "us_equity"
    CRYPTO = "crypto"
    FX = "fx"


class Instrument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What can be traded and how finely.

    `tick_size` and `lot_size` are the price and quantity steps; `price_precision` and
    `size_precision` the decimal places used on the wire. Every price is a whole number of
    ticks, every quantity a whole number of lots.
    """

    symbol: str
    asset_class: AssetClass
    tick_size: Decimal
    lot_size: Decimal
    price_precision: int
    size_precision: int
    venues: tuple[str, ...]
    description: str = ""

    def price_ticks(self, price: Decimal) -> int:
        return to_units(price, self.price_precision) // to_units(
            self.tick_size, self.price_precision
        )

    def is_valid_price(self, price: Decimal) -> bool:
        return price > 0 and price % self.tick_size == 0

    def is_valid_size(self, size: Decimal) -> bool:
        return size > 0 and size % self.lot_size == 0


EQUITY_VENUES = ("nyse", "nasdaq")
CRYPTO_VENUES = ("coinbase", "kraken")


def _equity(symbol: str, description: str) -> Instrument:
    return Instrument(
        symbol=symbol,
        asset_class=AssetClass.US_EQUITY,
        tick_size=Decimal("0.01"),
        lot_size=Decimal("1"),
        price_precision=2,
        size_precision=0,
        venues=EQUITY_VENUES,
        description=description,
    )


def _crypto(symbol: str, tick: str, lot: str, description: str) -> Instrument:
    tick_size, lot_size = Decimal(tick), Decimal(lot)
    return Instrument(
        symbol=symbol,
        asset_class=AssetClass.CRYPTO,
        tick_size=tick_size,
        lot_size=lot_size,
        price_precision=max(0, -int(tick_size.as_tuple().exponent)),
        size_precision=max(0, -int(lot_size.as_tuple().exponent)),
        venues=CRYPTO_VENUES,
        description=description,
    )


DEFAULT_UNIVERSE: tuple[Instrument, ...] = (
    _equity("AAPL", "Apple Inc."),
    _equity("GOOGL", "Alphabet Inc. Class A"),
    _equity("AMZN", "Amazon.com Inc."),
    _equity("MSFT", "Microsoft Corporation"),
    _equity("TSLA", "Tesla Inc."),
    _crypto("BTC-USD", "0.01", "0.0001", "Bitcoin / US dollar"),
    _crypto("ETH-USD", "0.01", "0.001", "Ether / US dollar"),
)


def universe_by_symbol(
    instruments: tuple[Instrument, ...] = DEFAULT_UNIVERSE,
) -> dict[str, Instrument]:
    return {instrument.symbol: instrument for instrument in instruments}
