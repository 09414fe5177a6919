"""Prices and quantities on the instrument's grid: limits, whole lots, fees in cents."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from bourse.model.instruments import Instrument
from bourse.strategy.types import Side, Tick

BPS = Decimal(10_000)
CENT = Decimal("0.01")
_ZERO = Decimal(0)


def to_tick(price: Decimal, instrument: Instrument, *, up: bool) -> Decimal:
    """`price` on the tick grid, rounded up (a buy's limit) or down (a sell's)."""
    tick = instrument.tick_size
    steps = (price / tick).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return max(steps * tick, tick)


def whole_lots(qty: Decimal, instrument: Instrument) -> Decimal:
    """The largest whole number of lots not above `qty` (0 for anything below one lot)."""
    if qty <= 0:
        return _ZERO
    lot = instrument.lot_size
    return (qty / lot).to_integral_value(rounding=ROUND_FLOOR) * lot


def limit_price(side: Side, tick: Tick, limit_bps: Decimal, instrument: Instrument) -> Decimal:
    """An IOC limit `limit_bps` through the quote: the worst price the order accepts."""
    if side == "buy":
        return to_tick(tick.buy_price * (1 + limit_bps / BPS), instrument, up=True)
    return to_tick(tick.sell_price * (1 - limit_bps / BPS), instrument, up=False)


def fee(notional: Decimal, fee_bps: Decimal) -> Decimal:
    """Fees on a fill: `fee_bps` of its notional, rounded up to the cent."""
    if fee_bps == 0 or notional == 0:
        return _ZERO
    return (notional * fee_bps / BPS / CENT).to_integral_value(rounding=ROUND_CEILING) * CENT
