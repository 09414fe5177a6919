"""Enrichment: which messages become ticks, and their SMAs and changes, by hand."""

from __future__ import annotations

from decimal import Decimal

from bourse.model import marketdata
from bourse.strategy.config import StrategyConfig
from bourse.strategy.enrich import Enricher, TickReader
from tests.strategy.factories import T0, quote, tick


def _trade(price: str, *, venue: str = "nyse", symbol: str = "AAPL") -> marketdata.Trade:
    return marketdata.Trade(
        symbol=symbol, venue=venue, price=Decimal(price), size=Decimal(5), ts=T0, seq=1
    )


def _depth() -> marketdata.Depth:
    return marketdata.Depth(symbol="AAPL", venue="nyse", bids=[], asks=[], ts=T0, seq=1)


def test_a_quote_is_read_as_its_exact_mid_with_its_bid_and_ask() -> None:
    reader = TickReader("AAPL", "nyse")
    got = reader.read(quote(Decimal("100.01"), 0, half="0.005"))
    assert got is not None
    assert (got.seq, got.price, got.bid, got.ask) == (
        1,
        Decimal("100.010"),
        Decimal("100.005"),
        Decimal("100.015"),
    )
    odd = reader.read(
        marketdata.Quote(
            symbol="AAPL",
            venue="nyse",
            bid=Decimal("100.00"),
            ask=Decimal("100.01"),
            bid_size=Decimal(1),
            ask_size=Decimal(1),
            last=Decimal("100"),
            last_size=Decimal(0),
            volume=Decimal(0),
            ts=T0,
            seq=2,
        )
    )
    assert odd is not None and odd.price == Decimal("100.005") and odd.seq == 2


def test_other_symbols_venues_and_depth_give_no_tick() -> None:
    reader = TickReader("AAPL", "nyse")
    assert reader.read(quote(Decimal(100), 0, venue="nasdaq")) is None
    assert reader.read(quote(Decimal(100), 0, symbol="MSFT")) is None
    assert reader.read(_depth()) is None
    assert reader.count == 0


def test_auto_reads_trades_only_until_the_venue_quotes() -> None:
    reader = TickReader("AAPL", "nyse", "auto")
    first = reader.read(_trade("99.50"))
    assert first is not None and first.price == Decimal("99.50") and first.ask is None
    assert reader.read(quote(Decimal(100), 1)) is not None
    assert reader.read(_trade("99.60")) is None  # the venue quotes now: mids only
    assert reader.count == 2


def test_mid_ignores_trades_and_trade_ignores_quotes() -> None:
    mids, prints = TickReader("AAPL", "nyse", "mid"), TickReader("AAPL", "nyse", "trade")
    assert mids.read(_trade("99.50")) is None
    assert prints.read(quote(Decimal(100), 0)) is None
    trade_tick = prints.read(_trade("99.50"))
    assert trade_tick is not None and trade_tick.buy_price == trade_tick.sell_price == Decimal(
        "99.50"
    )


def test_smas_and_changes_by_hand() -> None:
    enricher = Enricher(StrategyConfig(fast=2, slow=3), price_places=2)
    prices = ["10.00", "11.00", "13.00", "12.00"]
    got = [enricher.on_tick(tick(p, seq=i + 1)) for i, p in enumerate(prices)]
    assert [e.fast for e in got] == [None, Decimal("10.50"), Decimal("12.00"), Decimal("12.50")]
    # (10 + 11 + 13) / 3 = 11.333..., rounded once at 2 + 4 places; then (11 + 13 + 12) / 3.
    assert [e.slow for e in got] == [None, None, Decimal("11.333333"), Decimal("12.00")]
    assert [e.change for e in got] == [None, Decimal("1.00"), Decimal("2.00"), Decimal("-1.00")]
    # 1/10 = 1000 bps; 2/11 = 1818.1818... -> 1818.18; -1/13 = -769.2307... -> -769.23
    assert [e.change_bps for e in got] == [
        None,
        Decimal("1000.00"),
        Decimal("1818.18"),
        Decimal("-769.23"),
    ]
