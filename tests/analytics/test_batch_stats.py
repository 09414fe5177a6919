from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from bourse.analytics.batch_stats import BatchStats, SymbolStats, batch_stats
from bourse.model.marketdata import MarketData, Quote, Trade

D = Decimal


def trade(symbol: str, price: str, size: str, seq: int = 1, venue: str = "nyse") -> Trade:
    return Trade(symbol=symbol, venue=venue, price=D(price), size=D(size), ts=seq, seq=seq)


def quote(symbol: str, last: str, last_size: str, seq: int = 1) -> Quote:
    return Quote(
        symbol=symbol,
        venue="arca",
        bid=D(last) - D("0.01"),
        ask=D(last) + D("0.01"),
        bid_size=D(100),
        ask_size=D(100),
        last=D(last),
        last_size=D(last_size),
        volume=D(1000),
        ts=seq,
        seq=seq,
    )


def test_trades_give_hand_computed_vwap_high_and_low() -> None:
    stats = batch_stats(
        [
            trade("AAPL", "10.00", "100", 1),
            trade("AAPL", "11.00", "200", 2, venue="arca"),
            trade("AAPL", "13.00", "100", 3),
        ]
    )
    # (10*100 + 11*200 + 13*100) / 400 = 4500 / 400
    assert stats == {
        "AAPL": SymbolStats(
            symbol="AAPL",
            count=3,
            volume=D(400),
            notional=D("4500.0000"),
            vwap=D("11.25"),
            high=D("13.00"),
            low=D("10.00"),
        )
    }


def test_quotes_count_their_last_print_and_symbols_are_kept_apart() -> None:
    stats = batch_stats(
        [
            quote("MSFT", "400.10", "10", 1),
            trade("AAPL", "190.5", "3", 2),
            quote("MSFT", "399.90", "30", 3),
        ]
    )
    assert set(stats) == {"MSFT", "AAPL"}
    msft = stats["MSFT"]
    assert (msft.count, msft.volume, msft.high, msft.low) == (2, D(40), D("400.10"), D("399.90"))
    assert msft.vwap == (D("400.10") * 10 + D("399.90") * 30) / 40 == D("399.95")
    assert stats["AAPL"].vwap == D("190.5")


def test_a_ratio_that_does_not_terminate_is_rounded_and_stays_in_range() -> None:
    stats = batch_stats([trade("X", "1", "1"), trade("X", "2", "2")])["X"]
    assert stats.notional == D(5) and stats.volume == D(3)
    assert stats.vwap == D("1.666666666666666666666666667")


def test_no_volume_means_no_vwap() -> None:
    stats = batch_stats([trade("X", "5", "0"), trade("X", "7", "0")])["X"]
    assert (stats.count, stats.vwap, stats.high, stats.low) == (2, None, D(7), D(5))


def test_empty_batch_and_incremental_use() -> None:
    assert batch_stats([]) == {}
    accumulator = BatchStats()
    accumulator.add(trade("X", "5", "1"))
    first = accumulator.result()
    accumulator.add(trade("X", "7", "1"))
    assert first["X"].count == 1 and accumulator.result()["X"].vwap == D(6)


prices = st.decimals(min_value=D("0.0001"), max_value=D("1000000"), places=4)
sizes = st.decimals(min_value=D(0), max_value=D("100000"), places=3)


@st.composite
def market_data(draw: st.DrawFn) -> MarketData:
    symbol = draw(st.sampled_from(["AAPL", "MSFT", "BTC-USD"]))
    price, size = draw(prices), draw(sizes)
    if draw(st.booleans()):
        return Trade(symbol=symbol, venue="nyse", price=price, size=size, ts=0, seq=1)
    return Quote(
        symbol=symbol,
        venue="nyse",
        bid=price,
        ask=price,
        bid_size=D(1),
        ask_size=D(1),
        last=price,
        last_size=size,
        volume=size,
        ts=0,
        seq=1,
    )


def _print(message: MarketData) -> tuple[Decimal, Decimal]:
    if isinstance(message, Trade):
        return message.price, message.size
    return message.last, message.last_size


@given(st.lists(market_data(), max_size=60))
def test_vwap_lies_between_low_and_high_and_counts_add_up(messages: list[MarketData]) -> None:
    stats = batch_stats(messages)
    assert set(stats) == {m.symbol for m in messages}
    for symbol, result in stats.items():
        mine = [_print(m) for m in messages if m.symbol == symbol]
        assert result.count == len(mine)
        assert result.volume == sum(size for _, size in mine)
        assert result.notional == sum(price * size for price, size in mine)
        assert result.high == max(price for price, _ in mine)
        assert result.low == min(price for price, _ in mine)
        if result.volume:
            assert result.vwap is not None
            assert result.low <= result.vwap <= result.high
        else:
            assert result.vwap is None
