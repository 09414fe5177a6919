from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bourse.analytics.messages import decode, encode
from bourse.analytics.nbbo import Nbbo, NbboBook, compute_nbbo
from bourse.errors import ConfigError
from bourse.model.marketdata import Quote
from tests.analytics.factories import S, quote

D = Decimal


def test_best_bid_and_offer_with_their_venues_and_summed_sizes() -> None:
    book = NbboBook(max_age_ns=5 * S)
    book.on_quote(quote("100.00", "100.05", 1 * S, venue="nyse", bid_size=200, ask_size=300))
    book.on_quote(quote("100.01", "100.05", 1 * S, venue="nasdaq", bid_size=50, ask_size=70))
    nbbo = book.on_quote(quote("99.99", "100.06", 2 * S, venue="arca"))
    assert nbbo == Nbbo(
        symbol="AAPL",
        ts=2 * S,
        status="normal",
        bid=D("100.01"),
        bid_size=D(50),
        bid_venues=["nasdaq"],
        ask=D("100.05"),
        ask_size=D(370),
        ask_venues=["nasdaq", "nyse"],
        mid=D("100.03"),
        spread=D("0.04"),
        fresh_venues=["arca", "nasdaq", "nyse"],
        stale_venues=[],
    )
    assert decode(encode(nbbo)) == nbbo
    assert b'"bid":"100.01"' in encode(nbbo)


def test_an_nbbo_is_emitted_only_when_it_changes() -> None:
    book = NbboBook()
    assert book.on_quote(quote("10.00", "10.02", 1 * S)) is not None
    assert book.on_quote(quote("10.00", "10.02", 2 * S)) is None  # same prices, newer time
    changed = book.on_quote(quote("10.01", "10.02", 3 * S))
    assert changed is not None and changed.bid == D("10.01")


def test_locked_crossed_and_one_sided_markets_are_reported() -> None:
    book = NbboBook()
    book.on_quote(quote("10.00", "10.02", 1 * S, venue="nyse"))
    locked = book.on_quote(quote("10.02", "10.03", 1 * S, venue="nasdaq"))
    assert locked is not None and (locked.status, locked.spread) == ("locked", D(0))
    crossed = book.on_quote(quote("10.04", "10.05", 1 * S, venue="nasdaq"))
    assert crossed is not None and (crossed.status, crossed.spread) == ("crossed", D("-0.02"))
    assert (crossed.bid_venues, crossed.ask_venues) == (["nasdaq"], ["nyse"])
    one_sided = NbboBook().on_quote(quote("10.00", "10.02", 1 * S, ask_size=0))
    assert one_sided is not None
    assert (one_sided.status, one_sided.ask, one_sided.ask_size, one_sided.mid) == (
        "one_sided",
        None,
        D(0),
        None,
    )


def test_stale_venues_are_excluded_and_an_all_stale_nbbo_says_so() -> None:
    book = NbboBook(max_age_ns=5 * S)
    book.on_quote(quote("10.00", "10.04", 0, venue="nyse"))
    book.on_quote(quote("10.01", "10.03", 3 * S, venue="nasdaq"))
    assert book.expire(5 * S) == []  # nyse is exactly 5 s old: still fresh
    (changed,) = book.expire(5 * S + 1)
    assert (changed.bid, changed.fresh_venues, changed.stale_venues) == (
        D("10.01"),
        ["nasdaq"],
        ["nyse"],
    )
    assert book.expire(6 * S) == []
    (stale,) = book.expire(8 * S + 1)
    assert (stale.status, stale.bid, stale.ask, stale.stale_venues) == (
        "stale",
        None,
        None,
        ["nasdaq", "nyse"],
    )
    assert book.expire(60 * S) == []  # said once
    back = book.on_quote(quote("10.00", "10.02", 60 * S, venue="nyse"))
    assert back is not None and back.status == "normal"


def test_out_of_order_quotes_are_ignored_and_excluded_venues_never_count() -> None:
    book = NbboBook(exclude_venues=["bourse"])
    book.on_quote(quote("10.00", "10.02", 2 * S))
    assert book.on_quote(quote("11.00", "11.02", 1 * S)) is None
    assert book.out_of_order == 1
    assert book.on_quote(quote("10.01", "10.02", 3 * S, venue="bourse")) is None
    nbbo = book.nbbo("AAPL", 3 * S)
    assert nbbo is not None and (nbbo.bid, nbbo.fresh_venues) == (D("10.00"), ["nyse"])
    assert book.nbbo("MSFT", 3 * S) is None
    with pytest.raises(ConfigError):
        NbboBook(max_age_ns=-1)


VENUES = ("nyse", "nasdaq", "arca", "iex")

venue_quotes = st.builds(
    lambda venue, bid, spread, bid_size, ask_size, age: quote(
        D(bid).scaleb(-2),
        D(bid + spread).scaleb(-2),
        100 * S - age * S,
        venue=venue,
        bid_size=bid_size,
        ask_size=ask_size,
    ),
    st.sampled_from(VENUES),
    st.integers(min_value=10, max_value=2_000),
    st.integers(min_value=-5, max_value=20),  # a venue's own book may be locked or crossed
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=10),
)


@given(st.lists(venue_quotes, max_size=12))
def test_the_best_bid_is_the_highest_over_fresh_venues(quotes: list[Quote]) -> None:
    latest: dict[str, Quote] = {}
    for q in quotes:
        if q.venue not in latest or q.ts >= latest[q.venue].ts:
            latest[q.venue] = q
    now, max_age = 100 * S, 5 * S
    nbbo = compute_nbbo("AAPL", latest, now, max_age)
    fresh = [q for q in latest.values() if now - q.ts <= max_age]
    bids = [q.bid for q in fresh if q.bid_size > 0]
    asks = [q.ask for q in fresh if q.ask_size > 0]
    assert nbbo.bid == (max(bids) if bids else None)
    assert nbbo.ask == (min(asks) if asks else None)
    assert nbbo.bid_size == sum(
        (q.bid_size for q in fresh if q.bid_size and q.bid == nbbo.bid), D(0)
    )
    assert nbbo.bid_venues == sorted(q.venue for q in fresh if q.bid_size and q.bid == nbbo.bid)
    assert sorted(nbbo.fresh_venues + nbbo.stale_venues) == sorted(latest)
    if not fresh:
        assert nbbo.status == "stale"
    elif nbbo.bid is None or nbbo.ask is None:
        assert nbbo.status == "one_sided"
    else:
        expected = {-1: "crossed", 0: "locked", 1: "normal"}
        assert nbbo.status == expected[(nbbo.ask > nbbo.bid) - (nbbo.ask < nbbo.bid)]

    book = NbboBook(max_age_ns=max_age)
    for q in quotes:
        book.on_quote(q, now)
    assert book.nbbo("AAPL", now) == (nbbo if quotes else None)
