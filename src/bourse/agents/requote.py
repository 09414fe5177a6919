"""When and what a market maker sends: pure rules, with time passed in.

`requote()` turns the quoting core's ladder into the cancels and orders to send for one
symbol, adding what the exchange's rules demand of an account that cannot sell short (crypto:
accounts refuses a sell beyond the coins held). `RequoteSchedule` decides when each symbol
may be quoted again: at most once per interval, and after a refusal only after a back-off
that doubles, so an order the exchange keeps refusing is not sent again at tick rate.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

from bourse.agents.market_maker import MakerConfig, Plan, Quote, WorkingOrder, desired_quotes, plan
from bourse.model.instruments import AssetClass, Instrument

ZERO = Decimal(0)


def can_short(instrument: Instrument) -> bool:
    """Whether an account with shorting enabled may sell more than it holds (accounts' rule)."""
    return instrument.asset_class is not AssetClass.CRYPTO


def within_holdings(quotes: list[Quote], holdings: Decimal, lot: Decimal) -> list[Quote]:
    """The ladder with its asks cut down, best first, to what is held."""
    left = max(ZERO, holdings)
    kept: list[Quote] = []
    for quote in quotes:
        if quote.side != "sell":
            kept.append(quote)
            continue
        qty = min(quote.qty, (left / lot).to_integral_value(rounding=ROUND_FLOOR) * lot)
        if qty > 0:
            kept.append(Quote(quote.side, quote.price, qty))
            left -= qty
    return kept


def requote(
    instrument: Instrument,
    config: MakerConfig,
    reference: Decimal,
    position: Decimal,
    live: list[WorkingOrder],
    reserved_sells: Decimal,
    target: Decimal = ZERO,
) -> Plan:
    """Cancels and orders that bring one symbol's resting orders to the ladder wanted now.

    `live` are the orders that will rest unless cancelled; `reserved_sells` the quantity of
    every sell not yet finished, the ones being cancelled included (accounts holds their coins
    until the cancel is confirmed). Where the account cannot sell short, the asks are cut to
    the position, and a new ask goes out only once the coins it needs are free: until the
    maker holds something it quotes bids only. `target` is the inventory the ladder leans
    around (the coins the maker was given to start with): its skew and its `max_inventory`
    on either side count from there.
    """
    desired = desired_quotes(instrument, config, reference, position - target)
    if can_short(instrument):
        return plan(desired, live)
    todo = plan(within_holdings(desired, position, instrument.lot_size), live)
    free = max(ZERO, position) - reserved_sells
    place: list[Quote] = []
    for quote in todo.place:
        if quote.side == "sell":
            if quote.qty > free:
                continue  # sent once cancels free the coins (their confirmation re-quotes)
            free -= quote.qty
        place.append(quote)
    return Plan(cancel=todo.cancel, place=place)


def moved_enough(quoted_at: Decimal | None, reference: Decimal, threshold_bps: Decimal) -> bool:
    """Whether the reference moved far enough from the one the ladder was built on to build
    it again: a ladder re-priced on every tick would churn orders (six cancels and six new
    orders a tick, each a journal entry forever) for a price that barely changed."""
    if quoted_at is None:
        return True
    move = abs(reference - quoted_at)
    return move > 0 and move * 10_000 >= threshold_bps * quoted_at


class RequoteSchedule:
    """Which symbols to quote now; times are seconds on any monotonic clock."""

    def __init__(self, interval: float, backoff: float, max_backoff: float) -> None:
        self.interval = interval
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._dirty: set[str] = set()
        self._not_before: dict[str, float] = {}
        self._backoff: dict[str, float] = {}

    def mark(self, symbol: str) -> None:
        """Something changed for `symbol` (its reference, a fill, a confirmed cancel)."""
        self._dirty.add(symbol)

    def quoted(self, symbol: str, now: float) -> None:
        self._not_before[symbol] = max(self._not_before.get(symbol, now), now + self.interval)

    def refused(self, symbol: str, now: float) -> None:
        """An order was refused: try again after the back-off (doubling up to its maximum)."""
        previous = self._backoff.get(symbol)
        delay = self.backoff if previous is None else min(self.max_backoff, previous * 2)
        self._backoff[symbol] = delay
        self._not_before[symbol] = max(self._not_before.get(symbol, now), now + delay)
        self._dirty.add(symbol)

    def accepted(self, symbol: str) -> None:
        """An order was accepted: the back-off starts again from the beginning."""
        self._backoff.pop(symbol, None)

    def holding_back(self, symbol: str) -> float | None:
        """The current back-off of `symbol` after refusals, if any."""
        return self._backoff.get(symbol)

    def due(self, now: float) -> list[str]:
        """Symbols to quote now, in a stable order; they stop being due."""
        ready = sorted(s for s in self._dirty if self._not_before.get(s, now) <= now)
        self._dirty.difference_update(ready)
        return ready

    def wait_time(self, now: float) -> float | None:
        """Seconds until a symbol is due; None when nothing waits to be quoted."""
        if not self._dirty:
            return None
        return max(0.0, min(self._not_before.get(s, now) for s in self._dirty) - now)
