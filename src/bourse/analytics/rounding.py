"""Exact decimal arithmetic for the analytics cores, and the one place where they round.

Sums and products of prices and sizes are exact (`EXACT`: enough precision that nothing is
ever rounded). Only ratios (VWAP, SMA, EMA steps, basis points) can fail to terminate, and
`divide` is the single rule for them:

- a quotient whose decimal expansion terminates is returned exactly, written with at least
  the instrument's price places (`20.00 / 2` is `10.00`, `(100.01 + 100.02) / 2` is
  `100.015`);
- any other quotient is rounded once, to the nearest multiple of 10**-(price places +
  `EXTRA_PLACES`) (`1 / 3` at 2 price places is `0.333333`, `2 / 3` is `0.666667`). Such a
  quotient is never exactly halfway (a halfway value terminates), so there are no ties to
  break: half-even, half-up and every other rule agree.

Rounding to a fixed quantum is monotonic, so a rounded average never leaves the range of the
values averaged.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from decimal import Decimal
from math import gcd

from bourse.model.instruments import DEFAULT_UNIVERSE, Instrument

EXTRA_PLACES = 4
UNKNOWN_PRICE_PLACES = 8  # symbols outside the configured instruments (a user's own data)

EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)

# Dividing in EXACT is slow (its precision is huge); halving needs few digits, so try a
# narrower context that refuses to round, and fall back to EXACT in the absurd case.
_NARROW = decimal.Context(
    prec=100,
    traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
_TWO = Decimal(2)


def halve(value: Decimal) -> Decimal:
    """`value / 2`, exactly (a mid-price from bid + ask)."""
    try:
        return _NARROW.divide(value, _TWO)
    except decimal.Inexact:
        return EXACT.divide(value, _TWO)


def _strip(value: int, factor: int) -> tuple[int, int]:
    count = 0
    while value % factor == 0:
        value //= factor
        count += 1
    return value, count


def divide(
    numerator: Decimal | int,
    denominator: Decimal | int,
    *,
    price_places: int,
    extra_places: int = EXTRA_PLACES,
) -> Decimal:
    """`numerator / denominator`, exact when it terminates, else rounded (see the module)."""
    num_n, num_d = Decimal(numerator).as_integer_ratio()
    den_n, den_d = Decimal(denominator).as_integer_ratio()
    if den_n == 0:
        raise ZeroDivisionError(f"{numerator} / {denominator}")
    top, bottom = num_n * den_d, num_d * den_n
    if bottom < 0:
        top, bottom = -top, -bottom
    # top / bottom terminates iff the reduced denominator has no prime factor but 2 and 5.
    common = gcd(top, bottom)
    reduced_top, reduced_bottom = top // common, bottom // common
    rest, twos = _strip(reduced_bottom, 2)
    rest, fives = _strip(rest, 5)
    if rest == 1:
        places = max(twos, fives, price_places)
        scaled = reduced_top * 10**places // reduced_bottom  # exact: 10**places is a multiple
        return Decimal(scaled).scaleb(-places, EXACT)
    places = price_places + extra_places
    quotient, remainder = divmod(top * 10**places, bottom)  # floor division, bottom > 0
    if 2 * remainder > bottom:  # never exactly halfway: a halfway quotient would terminate
        quotient += 1
    return Decimal(quotient).scaleb(-places, EXACT)


class PricePlaces:
    """Decimal places of each symbol's prices, from the instruments; a default for others."""

    def __init__(
        self,
        instruments: Iterable[Instrument] = DEFAULT_UNIVERSE,
        *,
        unknown: int = UNKNOWN_PRICE_PLACES,
    ) -> None:
        self._places = {i.symbol: i.price_precision for i in instruments}
        self._unknown = unknown

    def __call__(self, symbol: str) -> int:
        return self._places.get(symbol, self._unknown)
