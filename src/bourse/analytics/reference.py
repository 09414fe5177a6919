"""Reference prices: what a symbol is worth now, from the external venues' quotes.

The reference of a symbol is the median of the fresh mid-prices across the venues quoting it
(`md.<venue>.<symbol>` quotes, our own `bourse` venue excluded so the exchange does not
follow itself), rounded to the instrument's tick. A venue's mid is fresh for `max_age_ns`
after its quote; with no fresh venue the last reference stands (a replay paused, a quiet
market) and `age_ns()` says how old it is.

The gateway stamps each order with it (the accounts' collar and market-order reservations
are a pure function of the journal that way), market makers quote around it, and accounts
mark positions to it.

    prices = ReferencePrices(DEFAULT_UNIVERSE)
    follower = await follow_reference(nc, prices)   # subscribes to md.*.*
    prices.get("AAPL")                               # Decimal | None
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bourse.model import marketdata, subjects
from bourse.model.instruments import DEFAULT_UNIVERSE, Instrument

OWN_VENUE = "bourse"
DEFAULT_MAX_AGE_NS = 10_000_000_000  # 10 s


class ReferencePrices:
    """Latest mid per (symbol, venue) and the median across venues; a pure, in-memory core."""

    def __init__(
        self,
        instruments: Iterable[Instrument] = DEFAULT_UNIVERSE,
        *,
        max_age_ns: int = DEFAULT_MAX_AGE_NS,
        exclude_venues: Iterable[str] = (OWN_VENUE,),
    ) -> None:
        self._ticks = {i.symbol: i.tick_size for i in instruments}
        self._max_age_ns = max_age_ns
        self._exclude = frozenset(exclude_venues)
        self._mids: dict[str, dict[str, tuple[Decimal, int]]] = {s: {} for s in self._ticks}
        self._reference: dict[str, tuple[Decimal, int]] = {}
        self.updates = 0

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._ticks)

    def on_quote(self, quote: marketdata.Quote, now_ns: int | None = None) -> Decimal | None:
        """Take a quote; return the symbol's reference after it (None if none yet)."""
        if quote.venue in self._exclude or quote.symbol not in self._ticks:
            return None
        if quote.bid <= 0 or quote.ask <= 0 or quote.ask < quote.bid:
            return self.get(quote.symbol)
        now = time.time_ns() if now_ns is None else now_ns
        venues = self._mids[quote.symbol]
        venues[quote.venue] = ((quote.bid + quote.ask) / 2, now)
        fresh = [mid for mid, seen in venues.values() if now - seen <= self._max_age_ns]
        tick = self._ticks[quote.symbol]
        median = statistics.median(fresh)
        reference = (median / tick).to_integral_value(ROUND_HALF_EVEN) * tick
        self._reference[quote.symbol] = (reference, now)
        self.updates += 1
        return reference

    def follows(self, venue: str) -> bool:
        """Whether quotes from `venue` count (ours do not)."""
        return venue not in self._exclude

    def get(self, symbol: str) -> Decimal | None:
        found = self._reference.get(symbol)
        return found[0] if found is not None else None

    def age_ns(self, symbol: str, now_ns: int | None = None) -> int | None:
        found = self._reference.get(symbol)
        if found is None:
            return None
        return (time.time_ns() if now_ns is None else now_ns) - found[1]

    def all(self) -> dict[str, Decimal]:
        return {symbol: price for symbol, (price, _) in self._reference.items()}


async def follow_reference(nc: NATS, prices: ReferencePrices) -> Subscription:
    """Keep `prices` up to date from live quotes (core NATS, no stream consumer: only the
    latest price matters, and a slow reader should drop rather than queue)."""

    async def on_message(msg: Msg) -> None:
        try:
            venue, _ = subjects.parse_market_data(msg.subject)
            if not prices.follows(venue):
                return  # our own venue's trades, quotes and depth: not decoded for nothing
            message = marketdata.decode(msg.data)
        except (msgspec.DecodeError, ValueError):
            return  # the feed's consumers dead-letter malformed data; here it is just skipped
        if isinstance(message, marketdata.Quote):
            prices.on_quote(message)

    return await nc.subscribe(
        subjects.market_data_filter(),
        cb=on_message,
        pending_msgs_limit=10_000,
    )
