"""A market maker's quoting rule, as a pure core.

Given the reference price of a symbol (the feed's mid, simulated or replayed) and the
maker's inventory, it says which orders should rest on the book: `levels` bids and asks
around the reference, `spread_bps` apart at the touch and `level_step_bps` further per level,
`size` each, shifted against inventory (a long maker lowers its prices to sell more and buy
less) and never beyond `max_inventory`. `plan()` compares that with the orders working now
and returns the fewest cancels and new orders that get there, so a maker re-quoting on every
tick does not churn orders whose price has not moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import msgspec

from bourse.model.instruments import Instrument


class MakerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    spread_bps: Decimal = Decimal(10)  # distance between best bid and best ask
    level_step_bps: Decimal = Decimal(5)
    levels: int = 3
    size: Decimal = Decimal(100)  # per level, in the instrument's units
    max_inventory: Decimal = Decimal(5000)  # beyond this the maker stops adding on that side
    skew_bps_per_unit: Decimal = Decimal("0.002")  # price shift per unit of inventory

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise ValueError("levels must be at least 1")
        for name in ("spread_bps", "size", "max_inventory"):
            value = getattr(self, name)
            if not value.is_finite() or value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True, slots=True)
class Quote:
    side: str  # "buy" or "sell"
    price: Decimal
    qty: Decimal


@dataclass(frozen=True, slots=True)
class WorkingOrder:
    order_id: str
    side: str
    price: Decimal
    leaves: Decimal


@dataclass(frozen=True, slots=True)
class Plan:
    cancel: list[str]
    place: list[Quote]


def desired_quotes(
    instrument: Instrument, config: MakerConfig, reference: Decimal, inventory: Decimal
) -> list[Quote]:
    """The ladder the maker wants resting now, best levels first on each side."""
    if not reference.is_finite() or reference <= 0:
        return []
    bps = Decimal("0.0001")
    skew = -inventory * config.skew_bps_per_unit * bps  # long -> quote lower
    center = reference * (1 + skew)
    half = config.spread_bps / 2 * bps
    size = _to_lot(config.size, instrument.lot_size)
    quotes: list[Quote] = []
    for level in range(config.levels):
        offset = half + level * config.level_step_bps * bps
        if inventory + size * (level + 1) <= config.max_inventory:
            bid = _to_tick(center * (1 - offset), instrument.tick_size, ROUND_FLOOR)
            if bid > 0:
                quotes.append(Quote("buy", bid, size))
        if inventory - size * (level + 1) >= -config.max_inventory:
            ask = _to_tick(center * (1 + offset), instrument.tick_size, ROUND_CEILING)
            quotes.append(Quote("sell", ask, size))
    return _uncrossed(quotes)


def plan(desired: list[Quote], working: list[WorkingOrder]) -> Plan:
    """Cancels and placements that turn `working` into `desired`.

    An order stays if a desired quote has its side and price and it still has at least half
    the desired size left (topping up would lose its place in the queue for little gain).
    """
    remaining = list(desired)
    keep: set[str] = set()
    for order in working:
        for quote in remaining:
            if (
                quote.side == order.side
                and quote.price == order.price
                and order.leaves * 2 >= quote.qty
            ):
                keep.add(order.order_id)
                remaining.remove(quote)
                break
    cancel = [order.order_id for order in working if order.order_id not in keep]
    return Plan(cancel=cancel, place=remaining)


def _uncrossed(quotes: list[Quote]) -> list[Quote]:
    # A coarse tick can round the two touches onto one price; keep the book uncrossed.
    bids = [q for q in quotes if q.side == "buy"]
    asks = [q for q in quotes if q.side == "sell"]
    if bids and asks:
        best_ask = min(q.price for q in asks)
        bids = [q for q in bids if q.price < best_ask]
    return bids + asks


def _to_tick(value: Decimal, tick: Decimal, rounding: str) -> Decimal:
    return (value / tick).to_integral_value(rounding=rounding) * tick


def _to_lot(value: Decimal, lot: Decimal) -> Decimal:
    return max(lot, (value / lot).to_integral_value(rounding=ROUND_FLOOR) * lot)
