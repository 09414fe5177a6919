"""The alert book (a pure core): hand-computed crossings, once per crossing, re-arming, the
price it watches, snapshots, and properties over random price paths."""

from __future__ import annotations

import itertools
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bourse.analytics.alerts import (
    AlertBook,
    AlertCreated,
    AlertDeleted,
    AlertFired,
    AlertSnapshotError,
    Condition,
    decode,
    encode,
    fired_msg_id,
)
from bourse.analytics.reference import ReferencePrices
from bourse.model.marketdata import Quote

D = Decimal
S = 1_000_000_000
ALICE, BOB = "alice", "bob"
_seq = itertools.count(1)


def at(price: str | Decimal, ts: int = S, *, venue: str = "nyse", symbol: str = "AAPL") -> Quote:
    """A quote whose mid is `price` (bid = ask)."""
    value = D(price)
    return Quote(
        symbol=symbol,
        venue=venue,
        bid=value,
        ask=value,
        bid_size=D(100),
        ask_size=D(100),
        last=value,
        last_size=D(1),
        volume=D(0),
        ts=ts,
        seq=next(_seq),
    )


def alert(
    condition: Condition,
    price: str,
    *,
    alert_id: str = "a1",
    account: str = ALICE,
    recurring: bool = False,
    hysteresis: str = "0",
    symbol: str = "AAPL",
) -> AlertCreated:
    return AlertCreated(
        alert_id=alert_id,
        account_id=account,
        symbol=symbol,
        condition=condition,
        price=D(price),
        recurring=recurring,
        hysteresis=D(hysteresis),
        ts=0,
    )


def walk(book: AlertBook, *prices: str) -> list[tuple[str, str, int]]:
    """Feed one price per second; (price, direction, fire count) of each firing."""
    fired = []
    for n, price in enumerate(prices, start=1):
        for event in book.apply(at(price, n * S)):
            assert event.market_price == D(price)
            fired.append((price, event.direction, event.fire_count))
    return fired


# ---- conditions, by hand ----


def test_above_fires_once_strictly_above_the_level_then_is_done() -> None:
    book = AlertBook()
    book.apply(alert("above", "190.00"))
    events = book.apply(at("189.50")) + book.apply(at("190.00"))  # at the level is not above
    assert events == []
    (fired,) = book.apply(at("190.01", 7 * S))
    assert fired == AlertFired(
        alert_id="a1",
        account_id=ALICE,
        symbol="AAPL",
        condition="above",
        price=D("190.00"),
        market_price=D("190.01"),
        direction="up",
        fire_count=1,
        recurring=False,
        ts=7 * S,
    )
    assert walk(book, "191", "189", "191") == []  # a one-shot alert is gone
    assert book.alert_ids() == []


def test_a_recurring_above_alert_re_arms_only_at_the_level_minus_hysteresis() -> None:
    book = AlertBook()
    book.apply(alert("above", "190.00", recurring=True, hysteresis="0.50"))
    fired = walk(book, "190.01", "190.20", "189.60", "190.10", "189.50", "189.40", "190.01")
    # 189.60 and 190.10 are inside the band: no re-arm, so no second firing until 189.50.
    assert fired == [("190.01", "up", 1), ("190.01", "up", 2)]
    assert book.fire_count("a1") == 2


def test_below_mirrors_above() -> None:
    book = AlertBook()
    book.apply(alert("below", "100.00", recurring=True, hysteresis="1.00"))
    fired = walk(book, "100.00", "99.99", "99.00", "100.50", "99.00", "101.00", "99.98")
    assert fired == [("99.99", "down", 1), ("99.98", "down", 2)]


def test_crosses_fires_each_way_from_the_side_it_started_on() -> None:
    book = AlertBook()
    book.apply(at("189.00"))  # the price when the alert is made: below
    book.apply(alert("crosses", "190.00", recurring=True))
    fired = walk(book, "189.50", "190.00", "190.01", "190.50", "190.00", "189.99", "189.00")
    # Touching 190.00 is on neither side: the crossings are 189.50 -> 190.01 and back.
    assert fired == [("190.01", "up", 1), ("189.99", "down", 2)]


def test_a_one_shot_crosses_alert_fires_on_the_first_crossing_only() -> None:
    book = AlertBook()
    book.apply(at("191.00"))
    book.apply(alert("crosses", "190.00"))
    assert walk(book, "190.50", "189.00", "191.00", "189.00") == [("189.00", "down", 1)]


def test_crosses_with_hysteresis_needs_the_price_beyond_the_band() -> None:
    book = AlertBook()
    book.apply(at("99.00"))
    book.apply(alert("crosses", "100.00", recurring=True, hysteresis="1.00"))
    fired = walk(book, "100.50", "101.00", "101.01", "99.50", "100.90", "98.99")
    assert fired == [("101.01", "up", 1), ("98.99", "down", 2)]


def test_crosses_made_before_any_price_takes_its_first_price_as_where_it_starts() -> None:
    book = AlertBook()
    book.apply(alert("crosses", "50.00", recurring=True))
    assert walk(book, "50.00", "51.00", "52.00", "49.00") == [("49.00", "down", 1)]


def test_a_level_already_passed_fires_at_the_next_price() -> None:
    book = AlertBook()
    book.apply(at("200.00"))
    book.apply(alert("above", "190.00"))
    assert walk(book, "200.00") == [("200.00", "up", 1)]


def test_the_same_price_again_fires_nothing_more() -> None:
    book = AlertBook()
    book.apply(alert("above", "10.00", recurring=True))
    assert walk(book, "10.01", "10.01", "10.01") == [("10.01", "up", 1)]


def test_alerts_fire_in_creation_order_with_their_own_accounts() -> None:
    book = AlertBook()
    book.apply(alert("above", "10.00", alert_id="b", account=BOB))
    book.apply(alert("above", "9.00", alert_id="a", account=ALICE))
    book.apply(alert("below", "9.00", alert_id="c", account=ALICE))
    book.apply(alert("above", "10.00", alert_id="m", account=ALICE, symbol="MSFT"))
    events = book.apply(at("10.50"))
    assert [(e.alert_id, e.account_id) for e in events] == [("b", BOB), ("a", ALICE)]


def test_only_the_owner_deletes_an_alert_and_a_duplicate_create_changes_nothing() -> None:
    book = AlertBook()
    assert book.create(alert("above", "10.00", alert_id="x", account=ALICE))
    assert not book.create(alert("below", "1.00", alert_id="x", account=BOB))
    assert not book.delete(AlertDeleted(alert_id="x", account_id=BOB, ts=0))
    assert book.alert_ids(ALICE) == ["x"] and book.alert_ids(BOB) == []
    assert book.delete(AlertDeleted(alert_id="x", account_id=ALICE, ts=0))
    assert book.apply(at("11.00")) == [] and len(book) == 0


def test_a_symbol_without_an_instrument_is_not_held() -> None:
    book = AlertBook()
    assert not book.create(alert("above", "1.00", symbol="NOPE"))
    assert book.apply(at("2.00", symbol="NOPE")) == []


# ---- the price watched ----


def test_the_price_is_the_median_mid_of_fresh_external_venues_rounded_to_the_tick() -> None:
    book = AlertBook()
    book.apply(at("100.00", 1 * S, venue="nyse"))
    book.apply(at("100.03", 2 * S, venue="nasdaq"))
    assert book.price("AAPL") == D("100.02")  # median 100.015, half to even
    book.apply(at("300.00", 3 * S, venue="bourse"))  # our own venue: left out
    assert book.price("AAPL") == D("100.02")
    book.apply(at("101.00", 12 * S, venue="nasdaq"))  # nyse's quote is 11 s old: stale
    assert book.price("AAPL") == D("101.00")


def test_trades_and_our_own_venue_fire_nothing() -> None:
    book = AlertBook()
    book.apply(alert("above", "10.00"))
    assert book.apply(at("99.00", venue="bourse")) == []
    assert book.price("AAPL") is None


quotes = st.lists(
    st.tuples(
        st.sampled_from(["nyse", "nasdaq", "iex", "bourse"]),
        st.integers(min_value=9_000, max_value=11_000),  # price in cents
        st.integers(min_value=0, max_value=300),  # half spread in tenths of a cent
        st.integers(min_value=0, max_value=15),  # seconds since the previous quote
    ),
    min_size=1,
    max_size=40,
)


@given(quotes)
def test_the_price_is_the_reference_price_the_platform_marks_at(
    steps: list[tuple[str, int, int, int]],
) -> None:
    book, reference = AlertBook(), ReferencePrices()
    now = 0
    for venue, cents, half, gap in steps:
        now += gap * S
        mid, spread = D(cents) / 100, D(half) / 1000
        q = Quote(
            symbol="AAPL",
            venue=venue,
            bid=mid - spread,
            ask=mid + spread,
            bid_size=D(1),
            ask_size=D(1),
            last=mid,
            last_size=D(1),
            volume=D(0),
            ts=now,
            seq=next(_seq),
        )
        book.apply(q)
        reference.on_quote(q, now_ns=now)
        assert book.price("AAPL") == reference.get("AAPL")


# ---- once per crossing, as properties ----

paths = st.lists(st.integers(min_value=95, max_value=105), min_size=1, max_size=60)


@given(paths)
def test_a_recurring_above_alert_fires_once_per_run_above_the_level(path: list[int]) -> None:
    book = AlertBook()
    book.apply(alert("above", "100", recurring=True))
    fired = walk(book, *map(str, path))
    runs = sum(1 for i, p in enumerate(path) if p > 100 and (i == 0 or path[i - 1] <= 100))
    assert len(fired) == runs
    assert [count for _, _, count in fired] == list(range(1, runs + 1))


@given(paths)
def test_a_recurring_crosses_alert_fires_once_per_change_of_side(path: list[int]) -> None:
    book = AlertBook()
    book.apply(alert("crosses", "100", recurring=True))
    fired = walk(book, *map(str, path))
    sides = [p > 100 for p in path if p != 100]
    changes = [now for before, now in itertools.pairwise(sides) if before != now]
    assert [direction for _, direction, _ in fired] == ["up" if up else "down" for up in changes]


@given(paths, st.integers(min_value=0, max_value=3))
def test_hysteresis_only_ever_removes_firings(path: list[int], band: int) -> None:
    plain, banded = AlertBook(), AlertBook()
    plain.apply(alert("above", "100", recurring=True))
    banded.apply(alert("above", "100", recurring=True, hysteresis=str(band)))
    assert len(walk(banded, *map(str, path))) <= len(walk(plain, *map(str, path)))


# ---- snapshots ----

commands = st.lists(
    st.tuples(
        st.sampled_from(["above", "below", "crosses", "delete", "price", "price", "price"]),
        st.integers(min_value=95, max_value=105),
        st.booleans(),
        st.integers(min_value=0, max_value=2),
    ),
    max_size=60,
)


def _inputs(steps: list[tuple[str, int, bool, int]]) -> list[AlertCreated | AlertDeleted | Quote]:
    made: list[AlertCreated | AlertDeleted | Quote] = []
    for n, (kind, value, recurring, band) in enumerate(steps):
        if kind == "price":
            made.append(at(str(value), n * S, venue=("nyse", "nasdaq")[n % 2]))
        elif kind == "delete":
            made.append(AlertDeleted(alert_id=f"a{value % 5}", account_id=ALICE, ts=n))
        else:
            made.append(
                alert(
                    kind,  # type: ignore[arg-type]
                    str(value),
                    alert_id=f"a{n % 7}",
                    recurring=recurring,
                    hysteresis=str(band),
                )
            )
    return made


@given(commands, st.integers(min_value=0, max_value=60))
def test_a_restored_snapshot_fires_what_the_book_would_have(
    steps: list[tuple[str, int, bool, int]], cut: int
) -> None:
    inputs = _inputs(steps)
    whole = AlertBook()
    expected = [event for item in inputs for event in whole.apply(item)]
    first = AlertBook()
    before = [event for item in inputs[:cut] for event in first.apply(item)]
    restored = AlertBook.restore(first.snapshot())
    assert restored.state_digest() == first.state_digest()
    after = [event for item in inputs[cut:] for event in restored.apply(item)]
    assert before + after == expected
    assert restored.state_digest() == whole.state_digest()


def test_an_unreadable_snapshot_is_refused() -> None:
    with pytest.raises(AlertSnapshotError, match="unreadable"):
        AlertBook.restore(b"\x01\x02")


# ---- the wire ----


def test_messages_round_trip_and_refuse_bad_numbers() -> None:
    made = alert("crosses", "190.50", recurring=True, hysteresis="0.10")
    assert decode(encode(made)) == made
    assert b'"price":"190.50"' in encode(made)
    bad = encode(made).replace(b'"190.50"', b'"NaN"')
    with pytest.raises(msgspec.ValidationError, match="finite and positive"):
        decode(bad)
    with pytest.raises(msgspec.ValidationError):
        decode(encode(made).replace(b'"crosses"', b'"sideways"'))
    assert fired_msg_id("a1", 3) == "alert-fired:a1:3"
