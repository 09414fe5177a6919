"""Exact numbers.

Prices and sizes are `decimal.Decimal` in memory and decimal strings on the wire (JSON
numbers would be read as binary floats by most clients). Cores that need speed work in
integer ticks and lots and convert at the edges with these helpers.
"""

from __future__ import annotations

from decimal import Decimal

_SCALE_CACHE: dict[int, Decimal] = {}


def from_units(units: int, precision: int) -> Decimal:
    """`units` counted in steps of 10**-precision, as an exact Decimal."""
    return Decimal(units).scaleb(-precision)


def to_units(value: Decimal, precision: int) -> int:
    """The exact number of 10**-precision steps in `value`; raises ValueError if inexact."""
    scaled = value.scaleb(precision)
    integral = scaled.to_integral_value()
    if scaled != integral:
        raise ValueError(f"{value} has more than {precision} decimal places")
    return int(integral)


def step(precision: int) -> Decimal:
    """The smallest step at `precision` decimal places (0.01 for 2)."""
    cached = _SCALE_CACHE.get(precision)
    if cached is None:
        cached = _SCALE_CACHE[precision] = Decimal(1).scaleb(-precision)
    return cached
