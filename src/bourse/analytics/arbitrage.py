"""Cross-venue arbitrage: a bid on one venue above an ask on another, net of fees. A pure core.

    detector = ArbitrageDetector(ArbitrageConfig(fees_bps={"nyse": Decimal("0.3")}))
    events = detector.on_quote(quote, now_ns)   # ArbitrageOpened / ArbitrageClosed
    events += detector.expire(now_ns)           # closed because a quote went stale

**The opportunity.** For a symbol and an ordered pair of venues (buy on `buy_venue` at its
ask, sell on `sell_venue` at its bid), the edge per unit net of each venue's fee (basis
points of the notional, `fees_bps`, else `default_fee_bps`) is

    edge = bid * (1 - sell_fee / 10_000) - ask * (1 + buy_fee / 10_000)

computed exactly. An opportunity opens when both quotes are fresh (`max_age_ns`, as in
`nbbo`), both sides have size, and the edge is positive and above `min_edge_bps` of the ask;
the executable size is the smaller of the two sizes.

**One event per crossing.** `ArbitrageOpened` is raised once when the pair crosses; while it
stays crossed nothing more is raised, however often the prices tick (the peak edge is kept).
When the net edge is no longer positive, a side loses its size, or a quote goes stale, one
`ArbitrageClosed` says why and how long it lasted; the pair is then re-armed and the next
crossing is a new opportunity. (Opening above `min_edge_bps` but closing only at zero is a
hysteresis band: a crossing that flickers around the threshold is one opportunity.)

Events of one call come out in a fixed order (closures, then openings, each by venue pair),
so a replay of the same quotes at the same times gives the same events.

**Proposed subject:** `analytics.arb.<symbol>` for both events (a tagged union on `type`),
in the ANALYTICS stream; `id` (`<symbol>.<buy venue>.<sell venue>.<opened ts>`, with `.2`,
`.3`... if the pair reopens at the same instant) ties an opening to its closing and, with the
event type, makes a deterministic message id.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from bourse.analytics.nbbo import DEFAULT_MAX_AGE_NS, VenueQuotes
from bourse.analytics.rounding import EXACT, divide
from bourse.errors import ConfigError
from bourse.model.marketdata import Quote

_BPS = Decimal(10_000)
_ZERO = Decimal(0)

CloseReason = Literal["gone", "stale"]


class ArbitrageConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fees per venue in basis points of notional (taker fees), the opening threshold, and
    how old a quote may be before it no longer counts."""

    fees_bps: dict[str, Decimal] = msgspec.field(default_factory=dict)
    default_fee_bps: Decimal = _ZERO
    min_edge_bps: Decimal = _ZERO
    max_age_ns: int = DEFAULT_MAX_AGE_NS
    exclude_venues: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for venue, fee in {**self.fees_bps, "(default)": self.default_fee_bps}.items():
            if not fee.is_finite() or fee < 0:
                raise ConfigError(f"fee of {venue}", fee, "basis points, 0 or more")
        if not self.min_edge_bps.is_finite() or self.min_edge_bps < 0:
            raise ConfigError("min_edge_bps", self.min_edge_bps, "basis points, 0 or more")
        if self.max_age_ns < 0:
            raise ConfigError("max_age_ns", self.max_age_ns, "nanoseconds, 0 or more")

    def fee_bps(self, venue: str) -> Decimal:
        return self.fees_bps.get(venue, self.default_fee_bps)


class ArbitrageOpened(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="arbitrage_opened"
):
    """A pair of venues crossed: buy `size` at `buy_price` on one, sell at `sell_price` on the
    other, earning `edge` per unit after fees (`edge_bps` of the buy price)."""

    id: str
    symbol: str
    ts: int  # when it opened (ns)
    buy_venue: str
    buy_price: Decimal  # the buy venue's ask
    buy_size: Decimal
    sell_venue: str
    sell_price: Decimal  # the sell venue's bid
    sell_size: Decimal
    size: Decimal  # executable: min(buy_size, sell_size)
    edge: Decimal  # per unit, net of both venues' fees
    edge_bps: Decimal
    profit: Decimal  # edge * size


class ArbitrageClosed(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="arbitrage_closed"
):
    """The crossing `id` ended at `ts`: `reason` "gone" (prices or sizes moved) or "stale"."""

    id: str
    symbol: str
    ts: int
    buy_venue: str
    sell_venue: str
    opened_ts: int
    duration_ns: int
    reason: CloseReason
    peak_edge: Decimal  # the best net edge per unit seen while it was open


ArbitrageEvent = ArbitrageOpened | ArbitrageClosed


class _Open(msgspec.Struct, kw_only=True):
    opened: ArbitrageOpened
    peak_scaled_edge: Decimal  # edge * 10_000: see `_scaled_edge`


def _may_cross(venues: dict[str, Quote], oldest_fresh_ts: int) -> bool:
    """Whether some fresh venue bids above another fresh venue's ask (before fees, which
    only narrow the edge): if not, no pair can open."""
    best_bid = lowest_ask = None
    for quote in venues.values():
        if quote.ts < oldest_fresh_ts:
            continue
        if best_bid is None or quote.bid > best_bid:
            best_bid = quote.bid
        if lowest_ask is None or quote.ask < lowest_ask:
            lowest_ask = quote.ask
    return best_bid is not None and lowest_ask is not None and best_bid > lowest_ask


class _DetectorState(msgspec.Struct, kw_only=True):
    quotes: list[Quote]
    out_of_order: int
    open: list[_Open]
    last_opening: list[tuple[str, str, str, int, int]]


_json = msgspec.json.Encoder()


class ArbitrageDetector:
    """Raises one `ArbitrageOpened` per crossing and one `ArbitrageClosed` when it ends."""

    def __init__(self, config: ArbitrageConfig | None = None) -> None:
        self.config = config or ArbitrageConfig()
        self._quotes = VenueQuotes(exclude_venues=self.config.exclude_venues)
        self._fee_factors: dict[str, tuple[Decimal, Decimal]] = {}
        self._open: dict[str, dict[tuple[str, str], _Open]] = {}
        # (symbol, buy, sell) -> (time of the last opening, openings at that time): a pair
        # closed as stale and reopened by a quote at the same instant still gets a new id.
        self._last_opening: dict[tuple[str, str, str], tuple[int, int]] = {}

    @property
    def out_of_order(self) -> int:
        return self._quotes.out_of_order

    def snapshot(self) -> bytes:
        """Latest quotes, open opportunities and opening ids, as JSON bytes for `restore`."""
        return _json.encode(
            _DetectorState(
                quotes=self._quotes.all(),
                out_of_order=self._quotes.out_of_order,
                open=[state for pairs in self._open.values() for _, state in sorted(pairs.items())],
                last_opening=[(*key, ts, n) for key, (ts, n) in self._last_opening.items()],
            )
        )

    @classmethod
    def restore(cls, snapshot: bytes, config: ArbitrageConfig | None = None) -> ArbitrageDetector:
        """A detector with `config` that carries on from `snapshot`."""
        state = msgspec.json.decode(snapshot, type=_DetectorState)
        detector = cls(config)
        detector._quotes.load(state.quotes, state.out_of_order)
        for entry in state.open:
            opened = entry.opened
            pairs = detector._open.setdefault(opened.symbol, {})
            pairs[(opened.buy_venue, opened.sell_venue)] = entry
        detector._last_opening = {
            (symbol, buy, sell): (ts, n) for symbol, buy, sell, ts, n in state.last_opening
        }
        return detector

    def on_quote(self, quote: Quote, now_ns: int | None = None) -> list[ArbitrageEvent]:
        """Take a quote (`now_ns` defaults to its own time); the events it caused."""
        if not self._quotes.update(quote):
            return []
        return self._evaluate(quote.symbol, quote.ts if now_ns is None else now_ns, quote.venue)

    def expire(self, now_ns: int) -> list[ArbitrageEvent]:
        """Close the opportunities whose quotes are stale at `now_ns`."""
        events: list[ArbitrageEvent] = []
        for symbol in [s for s, pairs in self._open.items() if pairs]:
            events.extend(self._evaluate(symbol, now_ns, None))
        return events

    def open_opportunities(self, symbol: str) -> list[ArbitrageOpened]:
        """The crossings of `symbol` open now, by venue pair."""
        pairs = self._open.get(symbol, {})
        return [pairs[pair].opened for pair in sorted(pairs)]

    def _evaluate(self, symbol: str, now_ns: int, changed: str | None) -> list[ArbitrageEvent]:
        """Close and open `symbol`'s pairs at `now_ns`. With `changed`, only that venue's quote
        is new since the last evaluation: a pair without it has the same edge as then (it
        can only have gone stale), so only pairs with it are priced. (The hot path of the
        service: it allocates nothing when nothing is crossed.)"""
        venues = self._quotes.of(symbol)  # in venue order
        oldest = now_ns - self.config.max_age_ns  # fresh: ts >= oldest (see nbbo.is_fresh)
        open_pairs = self._open.get(symbol)
        if not open_pairs:
            if not _may_cross(venues, oldest):
                return []
            if open_pairs is None:
                open_pairs = self._open[symbol] = {}
        events: list[ArbitrageEvent] = []
        if open_pairs:
            self._close(symbol, now_ns, venues, oldest, changed, open_pairs, events)
        if changed is None:
            fresh = [q for q in venues.values() if q.ts >= oldest]
            candidates = [(buy, sell) for buy in fresh for sell in fresh]
        else:
            new = venues.get(changed)
            if new is None or new.ts < oldest:
                return events
            candidates = []
            for other in venues.values():
                if other is not new and other.ts >= oldest:
                    candidates.append((new, other))
                    candidates.append((other, new))
        openings: list[ArbitrageOpened] = []
        min_edge_bps = self.config.min_edge_bps
        for buy, sell in candidates:
            if sell.bid <= buy.ask or buy.venue == sell.venue:
                continue  # not even crossed before fees (fees are never negative)
            pair = (buy.venue, sell.venue)
            if pair in open_pairs:
                continue
            scaled = self._scaled_edge(buy, sell)
            if scaled is None or scaled <= EXACT.multiply(buy.ask, min_edge_bps):
                continue
            opening = self._opening(symbol, buy, sell, scaled, now_ns)
            open_pairs[pair] = _Open(opened=opening, peak_scaled_edge=scaled)
            openings.append(opening)
        if len(openings) > 1:
            openings.sort(key=lambda o: (o.buy_venue, o.sell_venue))
        events.extend(openings)
        return events

    def _close(
        self,
        symbol: str,
        now_ns: int,
        venues: dict[str, Quote],
        oldest: int,
        changed: str | None,
        open_pairs: dict[tuple[str, str], _Open],
        events: list[ArbitrageEvent],
    ) -> None:
        """Close the open pairs of `symbol` that are no longer crossed or have gone stale."""
        for pair in sorted(open_pairs) if len(open_pairs) > 1 else list(open_pairs):
            buy_venue, sell_venue = pair
            buy, sell = venues.get(buy_venue), venues.get(sell_venue)
            if buy is not None and buy.ts < oldest:
                buy = None
            if sell is not None and sell.ts < oldest:
                sell = None
            state = open_pairs[pair]
            if buy is not None and sell is not None:
                if changed is not None and changed != buy_venue and changed != sell_venue:
                    continue  # same quotes, same positive edge as when last priced
                scaled = self._scaled_edge(buy, sell)
                if scaled is not None and scaled > 0:
                    if scaled > state.peak_scaled_edge:
                        state.peak_scaled_edge = scaled
                    continue
            del open_pairs[pair]
            opened = state.opened
            events.append(
                ArbitrageClosed(
                    id=opened.id,
                    symbol=symbol,
                    ts=now_ns,
                    buy_venue=buy_venue,
                    sell_venue=sell_venue,
                    opened_ts=opened.ts,
                    duration_ns=now_ns - opened.ts,
                    reason="stale" if buy is None or sell is None else "gone",
                    peak_edge=state.peak_scaled_edge.scaleb(-4, EXACT),
                )
            )

    def _scaled_edge(self, buy: Quote, sell: Quote) -> Decimal | None:
        """10_000 times the net edge per unit of buying at `buy`'s ask and selling at `sell`'s
        bid (so no division on every quote); None when a side has no size."""
        if not buy.ask_size or not sell.bid_size:
            return None
        factors = self._fee_factors
        sell_factor = factors.get(sell.venue) or self._fee_factor(sell.venue)
        buy_factor = factors.get(buy.venue) or self._fee_factor(buy.venue)
        proceeds = EXACT.multiply(sell.bid, sell_factor[0])
        return EXACT.subtract(proceeds, EXACT.multiply(buy.ask, buy_factor[1]))

    def _fee_factor(self, venue: str) -> tuple[Decimal, Decimal]:
        """(10_000 - fee, 10_000 + fee) in basis points: what a sale keeps, what a buy costs."""
        fee = self.config.fee_bps(venue)
        factor = self._fee_factors[venue] = (EXACT.subtract(_BPS, fee), EXACT.add(_BPS, fee))
        return factor

    def _opening(
        self, symbol: str, buy: Quote, sell: Quote, scaled_edge: Decimal, now_ns: int
    ) -> ArbitrageOpened:
        edge = scaled_edge.scaleb(-4, EXACT)
        size = min(buy.ask_size, sell.bid_size)
        return ArbitrageOpened(
            id=self._new_id(symbol, buy.venue, sell.venue, now_ns),
            symbol=symbol,
            ts=now_ns,
            buy_venue=buy.venue,
            buy_price=buy.ask,
            buy_size=buy.ask_size,
            sell_venue=sell.venue,
            sell_price=sell.bid,
            sell_size=sell.bid_size,
            size=size,
            edge=edge,
            edge_bps=divide(scaled_edge, buy.ask, price_places=0, extra_places=4),
            profit=EXACT.multiply(edge, size),
        )

    def _new_id(self, symbol: str, buy_venue: str, sell_venue: str, now_ns: int) -> str:
        key = (symbol, buy_venue, sell_venue)
        last_ts, count = self._last_opening.get(key, (None, 0))
        count = count + 1 if last_ts == now_ns else 1
        self._last_opening[key] = (now_ns, count)
        base = f"{symbol}.{buy_venue}.{sell_venue}.{now_ns}"
        return base if count == 1 else f"{base}.{count}"
