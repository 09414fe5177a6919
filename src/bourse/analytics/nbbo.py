"""The best bid and offer across venues (NBBO) per symbol, from quotes: a pure core.

    book = NbboBook(max_age_ns=2_000_000_000)
    changed = book.on_quote(quote, now_ns)   # Nbbo when the symbol's NBBO changed, else None
    changed = book.expire(now_ns)            # NBBOs changed because quotes aged out

**Best prices.** The best bid is the highest bid among the venues whose quote is fresh, with
every venue quoting it (sorted) and their sizes summed; the best ask likewise, lowest. A side
quoted with size 0 is not a quote on that side.

**Staleness.** A venue's quote is fresh while `now_ns - quote.ts <= max_age_ns` (the venue's
own timestamp, so the NBBO is a function of the quotes and the injected time, identical in a
replay). Stale quotes are left out; when no venue is fresh the NBBO says `status="stale"`
with no prices, never a silently old price. The shell calls `expire(now_ns)` on its clock so
a venue going quiet changes the NBBO without waiting for another quote. A quote older than the
venue's current one for the symbol (out of order) is ignored and counted in `out_of_order`.

**Market state.** `status` is `normal`, `locked` (best bid = best ask), `crossed` (best bid
> best ask: across venues, an arbitrage before fees; see `arbitrage`), `one_sided` (a side,
or both, has no fresh size) or `stale`.

**Proposed subject:** `analytics.nbbo.<symbol>` (`analytics.nbbo.*` is every symbol), in the
ANALYTICS stream; an `Nbbo` is published only when it changes (prices, sizes, venues or
status), not for every quote.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Literal, NamedTuple

import msgspec

from bourse.analytics.rounding import EXACT, halve
from bourse.errors import ConfigError
from bourse.model.marketdata import Quote

DEFAULT_MAX_AGE_NS = 5_000_000_000  # 5 s

NbboStatus = Literal["normal", "locked", "crossed", "one_sided", "stale"]

_ZERO = Decimal(0)


class Nbbo(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="nbbo"):
    """A symbol's best bid and offer across the fresh venues at `ts` (see the module)."""

    symbol: str
    ts: int  # the time it was computed for (ns since the epoch)
    status: NbboStatus
    bid: Decimal | None
    bid_size: Decimal  # summed over `bid_venues`; 0 without a bid
    bid_venues: list[str]
    ask: Decimal | None
    ask_size: Decimal
    ask_venues: list[str]
    mid: Decimal | None  # (bid + ask) / 2, exact; None unless both sides are quoted
    spread: Decimal | None  # ask - bid: 0 when locked, negative when crossed
    fresh_venues: list[str]
    stale_venues: list[str]


def is_fresh(quote: Quote, now_ns: int, max_age_ns: int) -> bool:
    return now_ns - quote.ts <= max_age_ns


class VenueQuotes:
    """The latest quote of each venue for each symbol; older quotes than that are ignored.

    `of(symbol)` iterates in venue order (kept sorted as venues appear, so readers need not
    sort on every quote)."""

    def __init__(self, *, exclude_venues: Iterable[str] = ()) -> None:
        self.excluded = frozenset(exclude_venues)
        self._quotes: dict[str, dict[str, Quote]] = {}
        self.out_of_order = 0

    def update(self, quote: Quote) -> bool:
        """Keep `quote` as its venue's latest; False if excluded or older than the latest."""
        if quote.venue in self.excluded:
            return False
        venues = self._quotes.get(quote.symbol)
        if venues is None:
            venues = self._quotes[quote.symbol] = {}
        current = venues.get(quote.venue)
        if current is None:
            venues[quote.venue] = quote
            if len(venues) > 1:
                self._quotes[quote.symbol] = dict(sorted(venues.items()))
            return True
        if quote.ts < current.ts:
            self.out_of_order += 1
            return False
        venues[quote.venue] = quote
        return True

    def of(self, symbol: str) -> dict[str, Quote]:
        """The latest quote per venue (fresh or not) for `symbol`, in venue order."""
        return self._quotes.get(symbol, {})

    @property
    def symbols(self) -> list[str]:
        return list(self._quotes)

    def all(self) -> list[Quote]:
        """Every latest quote, for a snapshot."""
        return [quote for venues in self._quotes.values() for quote in venues.values()]

    def load(self, quotes: Iterable[Quote], out_of_order: int) -> None:
        """Take back what `all` gave (and the counter), as after those quotes."""
        for quote in quotes:
            self._quotes.setdefault(quote.symbol, {})[quote.venue] = quote
        self._quotes = {symbol: dict(sorted(v.items())) for symbol, v in self._quotes.items()}
        self.out_of_order = out_of_order


class NbboBook:
    """NBBO per symbol over the venues' latest fresh quotes (see the module)."""

    def __init__(
        self,
        *,
        max_age_ns: int = DEFAULT_MAX_AGE_NS,
        exclude_venues: Iterable[str] = (),
    ) -> None:
        if max_age_ns < 0:
            raise ConfigError("max_age_ns", max_age_ns, "nanoseconds, 0 or more")
        self.max_age_ns = max_age_ns
        self._quotes = VenueQuotes(exclude_venues=exclude_venues)
        self._last: dict[str, _Top] = {}
        self._expiry: dict[str, int] = {}  # after this time a quote in the last NBBO is stale

    @property
    def out_of_order(self) -> int:
        return self._quotes.out_of_order

    def snapshot(self) -> bytes:
        """The venues' latest quotes and the last NBBO of each symbol, as JSON bytes."""
        return _json.encode(
            _NbboState(
                max_age_ns=self.max_age_ns,
                exclude_venues=sorted(self._quotes.excluded),
                quotes=self._quotes.all(),
                out_of_order=self._quotes.out_of_order,
                last=[(symbol, top) for symbol, top in self._last.items()],
                expiry=list(self._expiry.items()),
            )
        )

    @classmethod
    def restore(cls, snapshot: bytes) -> NbboBook:
        """A book that carries on from `snapshot`."""
        state = msgspec.json.decode(snapshot, type=_NbboState)
        book = cls(max_age_ns=state.max_age_ns, exclude_venues=state.exclude_venues)
        book._quotes.load(state.quotes, state.out_of_order)
        book._last = dict(state.last)
        book._expiry = dict(state.expiry)
        return book

    def on_quote(self, quote: Quote, now_ns: int | None = None) -> Nbbo | None:
        """Take a quote (`now_ns` defaults to its own time); the NBBO if it changed, else None."""
        if not self._quotes.update(quote):
            return None
        return self._refresh(quote.symbol, quote.ts if now_ns is None else now_ns)

    def take(self, quote: Quote) -> bool:
        """Keep a quote without computing the NBBO (a caller that publishes only the latest
        NBBO of a burst calls `refresh` once after it); False if it was ignored."""
        return self._quotes.update(quote)

    def refresh(self, symbol: str, now_ns: int) -> Nbbo | None:
        """The NBBO of `symbol` at `now_ns` if it changed since the last one given, else None."""
        return self._refresh(symbol, now_ns)

    def expire(self, now_ns: int) -> list[Nbbo]:
        """The NBBOs that changed by `now_ns` because quotes in them went stale."""
        changed = []
        for symbol, expiry in list(self._expiry.items()):
            if now_ns > expiry:
                nbbo = self._refresh(symbol, now_ns)
                if nbbo is not None:
                    changed.append(nbbo)
        return changed

    def nbbo(self, symbol: str, now_ns: int) -> Nbbo | None:
        """The NBBO at `now_ns`, or None if no venue ever quoted `symbol`."""
        venues = self._quotes.of(symbol)
        return compute_nbbo(symbol, venues, now_ns, self.max_age_ns) if venues else None

    def _refresh(self, symbol: str, now_ns: int) -> Nbbo | None:
        venues = self._quotes.of(symbol)
        top = _top(venues, now_ns, self.max_age_ns)
        if top.fresh_venues:
            self._expiry[symbol] = min(venues[v].ts for v in top.fresh_venues) + self.max_age_ns
        else:
            self._expiry.pop(symbol, None)
        if self._last.get(symbol) == top:
            return None
        self._last[symbol] = top
        return _nbbo(symbol, now_ns, top)


class _Top(NamedTuple):
    """What an NBBO says apart from its time: compared to publish only changes."""

    bid: Decimal | None
    bid_size: Decimal
    bid_venues: list[str]
    ask: Decimal | None
    ask_size: Decimal
    ask_venues: list[str]
    fresh_venues: list[str]
    stale_venues: list[str]


class _NbboState(msgspec.Struct, kw_only=True):
    max_age_ns: int
    exclude_venues: list[str]
    quotes: list[Quote]
    out_of_order: int
    last: list[tuple[str, _Top]]
    expiry: list[tuple[str, int]]


_json = msgspec.json.Encoder()


def compute_nbbo(symbol: str, venues: dict[str, Quote], now_ns: int, max_age_ns: int) -> Nbbo:
    """The NBBO of `symbol` at `now_ns` from each venue's latest quote."""
    return _nbbo(symbol, now_ns, _top(dict(sorted(venues.items())), now_ns, max_age_ns))


def _top(venues: dict[str, Quote], now_ns: int, max_age_ns: int) -> _Top:
    """The NBBO's content from `venues` in venue order."""
    fresh: list[Quote] = []
    stale: list[str] = []
    for venue in venues:
        quote = venues[venue]
        if is_fresh(quote, now_ns, max_age_ns):
            fresh.append(quote)
        else:
            stale.append(venue)
    bid, bid_size, bid_venues = _best(fresh, side="bid")
    ask, ask_size, ask_venues = _best(fresh, side="ask")
    fresh_venues = [q.venue for q in fresh]
    return _Top(bid, bid_size, bid_venues, ask, ask_size, ask_venues, fresh_venues, stale)


def _nbbo(symbol: str, now_ns: int, top: _Top) -> Nbbo:
    status: NbboStatus
    mid = spread = None
    if not top.fresh_venues:
        status = "stale"
    elif top.bid is None or top.ask is None:
        status = "one_sided"
    else:
        spread = EXACT.subtract(top.ask, top.bid)
        mid = halve(EXACT.add(top.bid, top.ask))
        status = "crossed" if spread < 0 else "locked" if spread == 0 else "normal"
    return Nbbo(
        symbol=symbol,
        ts=now_ns,
        status=status,
        bid=top.bid,
        bid_size=top.bid_size,
        bid_venues=top.bid_venues,
        ask=top.ask,
        ask_size=top.ask_size,
        ask_venues=top.ask_venues,
        mid=mid,
        spread=spread,
        fresh_venues=top.fresh_venues,
        stale_venues=top.stale_venues,
    )


def _best(
    quotes: list[Quote], *, side: Literal["bid", "ask"]
) -> tuple[Decimal | None, Decimal, list[str]]:
    best: Decimal | None = None
    size = _ZERO
    at_best: list[str] = []
    for quote in quotes:  # sorted by venue, so `at_best` is too
        price, quoted = (
            (quote.bid, quote.bid_size) if side == "bid" else (quote.ask, quote.ask_size)
        )
        if not quoted:
            continue
        better = best is None or (price > best if side == "bid" else price < best)
        if better:
            best, size, at_best = price, quoted, [quote.venue]
        elif price == best:
            size = EXACT.add(size, quoted)
            at_best.append(quote.venue)
    return best, size, at_best
