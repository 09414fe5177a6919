from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from bourse.feed.simulator import Simulator
from bourse.model import marketdata
from bourse.model.instruments import DEFAULT_UNIVERSE, universe_by_symbol
from bourse.model.marketdata import Quote, Trade

MS = 1_000_000


def run(seed: int, rounds: int) -> list[marketdata.MarketData]:
    simulator = Simulator(seed=seed, start_ns=0)
    out: list[marketdata.MarketData] = []
    for i in range(1, rounds + 1):
        out.extend(simulator.tick(i * MS))
    return out


def test_same_seed_same_messages_other_seed_other_prices() -> None:
    assert run(7, 200) == run(7, 200)
    assert run(7, 200) != run(8, 200)


def test_default_universe_quotes_seven_symbols_on_four_venues() -> None:
    messages = run(1, 5)
    assert {m.symbol for m in messages} == {i.symbol for i in DEFAULT_UNIVERSE}
    assert len({m.symbol for m in messages}) >= 7
    assert {m.venue for m in messages} == {"nyse", "nasdaq", "coinbase", "kraken"}


def test_sequence_numbers_are_gapless_per_venue() -> None:
    seqs: dict[str, list[int]] = defaultdict(list)
    for message in run(3, 300):
        seqs[message.venue].append(message.seq)
    for venue, numbers in seqs.items():
        assert numbers == list(range(1, len(numbers) + 1)), venue


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_quotes_are_valid_on_tick_and_lot(seed: int) -> None:
    instruments = universe_by_symbol()
    for message in run(seed, 50):
        instrument = instruments[message.symbol]
        if isinstance(message, Quote):
            assert message.bid < message.ask
            for price in (message.bid, message.ask, message.last):
                assert instrument.is_valid_price(price)
            for size in (message.bid_size, message.ask_size):
                assert instrument.is_valid_size(size)
        else:
            assert isinstance(message, Trade)
            assert instrument.is_valid_price(message.price)
            assert instrument.is_valid_size(message.size)
        assert marketdata.decode(marketdata.encode(message)) == message


def test_venues_disagree_slightly_and_now_and_then_cross() -> None:
    """Best bid/offer and arbitrage need venues that differ; they must stay close, too, and
    cross only now and then, as liquid markets do (a crossed best bid/offer most of the
    time would make both meaningless)."""
    latest: dict[tuple[str, str], Quote] = {}
    crossed = compared = 0
    for message in run(11, 2000):
        if not isinstance(message, Quote):
            continue
        latest[(message.symbol, message.venue)] = message
        quotes = [q for (s, _), q in latest.items() if s == message.symbol]
        if len(quotes) == 2:
            best_bid = max(q.bid for q in quotes)
            best_ask = min(q.ask for q in quotes)
            crossed += best_bid > best_ask
            compared += 1
            assert abs(quotes[0].mid - quotes[1].mid) / quotes[0].mid < Decimal("0.005")
    assert 0 < crossed < compared * 0.05, (crossed, compared)


def test_prices_move_like_gbm_over_a_simulated_year() -> None:
    # Annual volatility 25-70 %: over a year of daily steps the price must move, and stay > 0.
    simulator = Simulator(seed=5, start_ns=0)
    day = 86_400 * 10**9
    start = simulator.reference_price("AAPL")
    for i in range(1, 366):
        simulator.tick(i * day)
    end = simulator.reference_price("AAPL")
    assert end > 0
    assert abs(end / start - 1) > 0.01
