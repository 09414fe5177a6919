"""What a market maker sends and when: the crypto rule and the re-quote schedule, pure."""

from __future__ import annotations

from decimal import Decimal as D

from bourse.agents.market_maker import MakerConfig, Quote, WorkingOrder
from bourse.agents.requote import (
    RequoteSchedule,
    can_short,
    moved_enough,
    requote,
    within_holdings,
)
from bourse.model.instruments import universe_by_symbol

AAPL = universe_by_symbol()["AAPL"]
BTC = universe_by_symbol()["BTC-USD"]
COINS = MakerConfig(size=D("0.1"), levels=3, max_inventory=D(2), skew_bps_per_unit=D(0))


def sides(quotes: list[Quote]) -> tuple[list[D], list[D]]:
    return [q.qty for q in quotes if q.side == "buy"], [q.qty for q in quotes if q.side == "sell"]


def test_only_crypto_cannot_be_sold_short() -> None:
    assert can_short(AAPL) and not can_short(BTC)


def test_asks_are_cut_to_the_holdings_best_first_on_lot_boundaries() -> None:
    quotes = [
        Quote("buy", D("99"), D("0.1")),
        Quote("sell", D("101"), D("0.1")),
        Quote("sell", D("102"), D("0.1")),
        Quote("sell", D("103"), D("0.1")),
    ]
    cut = within_holdings(quotes, D("0.15005"), BTC.lot_size)
    assert [(q.side, q.price, q.qty) for q in cut] == [
        ("buy", D("99"), D("0.1")),
        ("sell", D("101"), D("0.1")),
        ("sell", D("102"), D("0.0500")),
    ]
    assert sides(within_holdings(quotes, D(-1), BTC.lot_size)) == ([D("0.1")], [])


def test_a_flat_crypto_maker_quotes_bids_only_and_an_equity_maker_both_sides() -> None:
    flat_btc = requote(BTC, COINS, D("65000.00"), D(0), [], D(0))
    assert flat_btc.cancel == [] and sides(flat_btc.place) == ([D("0.1")] * 3, [])
    flat_aapl = requote(AAPL, MakerConfig(levels=2), D("190.00"), D(0), [], D(0))
    assert sides(flat_aapl.place) == ([D(100)] * 2, [D(100)] * 2)


def test_a_crypto_maker_sells_what_it_holds_once_the_coins_are_free() -> None:
    first = requote(BTC, COINS, D("65000.00"), D("0.15"), [], D(0))
    assert sides(first.place)[1] == [D("0.1"), D("0.05")]
    # Resting as planned: nothing to change (no churn on a partial level).
    live = [WorkingOrder(f"o{n}", q.side, q.price, q.qty) for n, q in enumerate(first.place)]
    resting = requote(BTC, COINS, D("65000.00"), D("0.15"), live, D("0.15"))
    assert resting.cancel == [] and resting.place == []

    # The reference moves: every order is replaced, but the new asks wait until the cancels
    # of the old ones free the coins (accounts still holds them until confirmed).
    moved = requote(BTC, COINS, D("65100.00"), D("0.15"), live, D("0.15"))
    assert sorted(moved.cancel) == sorted(o.order_id for o in live)
    assert sides(moved.place) == ([D("0.1")] * 3, [])
    freed = requote(BTC, COINS, D("65100.00"), D("0.15"), [], D(0))
    assert sides(freed.place)[1] == [D("0.1"), D("0.05")]


def test_a_symbol_is_quoted_at_most_once_per_interval() -> None:
    schedule = RequoteSchedule(interval=0.2, backoff=1.0, max_backoff=8.0)
    assert schedule.wait_time(0.0) is None
    schedule.mark("AAPL")
    schedule.mark("MSFT")
    assert schedule.due(0.0) == ["AAPL", "MSFT"]
    assert schedule.due(0.0) == []
    schedule.quoted("AAPL", 0.0)
    schedule.mark("AAPL")
    assert schedule.due(0.1) == []
    assert schedule.wait_time(0.1) == 0.1
    assert schedule.due(0.2) == ["AAPL"]


def test_refusals_back_off_doubling_until_an_order_is_accepted() -> None:
    schedule = RequoteSchedule(interval=0.2, backoff=1.0, max_backoff=4.0)
    delays = []
    now = 0.0
    for _ in range(5):
        schedule.refused("AAPL", now)  # also marks the symbol: the order is to be sent again
        assert schedule.due(now) == []
        delays.append(schedule.wait_time(now))
        now += schedule.wait_time(now) or 0.0
        assert schedule.due(now) == ["AAPL"]
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]
    schedule.accepted("AAPL")
    assert schedule.holding_back("AAPL") is None
    schedule.refused("AAPL", now)
    assert schedule.wait_time(now) == 1.0


def test_the_ladder_follows_the_reference_once_it_moved_past_the_threshold() -> None:
    assert moved_enough(None, D("100.00"), D(2))
    assert not moved_enough(D("100.00"), D("100.01"), D(2))  # 1 bp
    assert moved_enough(D("100.00"), D("100.02"), D(2))
    assert moved_enough(D("100.00"), D("99.98"), D(2))
    assert moved_enough(D("100.00"), D("100.01"), D(0))
    assert not moved_enough(D("100.00"), D("100.00"), D(0))


def test_a_maker_given_coins_quotes_both_sides_and_leans_around_them() -> None:
    skewed = MakerConfig(size=D("0.1"), levels=3, max_inventory=D(2), skew_bps_per_unit=D(2))
    # Holding its starting 2 coins: no lean, a full ladder on each side.
    even = requote(BTC, skewed, D("65000.00"), D(2), [], D(0), target=D(2))
    bids = sorted(q.price for q in even.place if q.side == "buy")
    asks = sorted(q.price for q in even.place if q.side == "sell")
    assert sides(even.place) == ([D("0.1")] * 3, [D("0.1")] * 3)
    assert D("65000.00") - bids[-1] == asks[0] - D("65000.00")  # centred on the reference
    # The same 2 coins without a target: at its max inventory it would only sell, lower.
    leaning = requote(BTC, skewed, D("65000.00"), D(2), [], D(0))
    assert sides(leaning.place)[0] == []
    assert min(q.price for q in leaning.place) < asks[0]
    # Before the coins arrive: bids only, as any flat crypto maker.
    waiting = requote(BTC, skewed, D("65000.00"), D(0), [], D(0), target=D(2))
    assert sides(waiting.place)[1] == []
    # Sold down to 1.85 of its 2: it leans up (buys a little higher) within max_inventory.
    sold = requote(BTC, skewed, D("65000.00"), D("1.85"), [], D(0), target=D(2))
    assert max(q.price for q in sold.place if q.side == "buy") > bids[-1]
