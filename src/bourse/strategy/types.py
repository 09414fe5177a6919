"""What flows between the pipeline's stages, and what the execution side reports back.

    Tick --enrich--> Enriched --signal--> Signal | Mark --sizing--> Target | Mark --execution

A `Mark` is a tick that changed nothing: it still reaches execution, which marks the
position to it (equity, drawdown, exposure). Every item carries the tick it came from, so a
decision is always priced at the data that caused it.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Literal

import msgspec

Side = Literal["buy", "sell"]


class Direction(enum.IntEnum):
    FLAT = 0
    LONG = 1


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    """One price of one symbol on one venue; `seq` numbers this run's ticks from 1."""

    seq: int
    ts: int  # nanoseconds since the epoch, as the venue stamped it
    symbol: str
    venue: str
    price: Decimal  # what the strategy reads (mid or trade price)
    bid: Decimal | None = None  # the quote's, when the tick is a quote
    ask: Decimal | None = None

    @property
    def buy_price(self) -> Decimal:
        """The price a buyer would pay now: the ask, else the price."""
        return self.ask if self.ask is not None else self.price

    @property
    def sell_price(self) -> Decimal:
        return self.bid if self.bid is not None else self.price


class Enriched(msgspec.Struct, frozen=True, kw_only=True):
    """A tick with its indicators; None until enough ticks have been seen."""

    tick: Tick
    fast: Decimal | None
    slow: Decimal | None
    change: Decimal | None  # price minus the previous tick's
    change_bps: Decimal | None


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    """The strategy's view changed: be `direction` from this tick on."""

    tick: Tick
    direction: Direction
    reason: str


class Mark(msgspec.Struct, frozen=True, kw_only=True):
    tick: Tick


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """The position to hold after this tick (whole lots), and how it was sized."""

    tick: Tick
    qty: Decimal
    fraction: Decimal  # the capped Kelly fraction of equity behind it (0 for an exit)
    reason: str


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An IOC limit order that moves the position towards a target."""

    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    limit_price: Decimal
    tick: Tick


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """What an order did: filled `qty` (maybe 0) at `price` on average, paying `fee`."""

    client_order_id: str
    order_id: str
    ts: int
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal = Decimal(0)


class ClosedTrade(msgspec.Struct, frozen=True, kw_only=True):
    """A round trip, flat to flat: what it cost, what it brought, net of fees."""

    entry_ts: int
    exit_ts: int
    qty: Decimal  # the most held during the trade
    cost: Decimal  # cash paid for the entries, fees included
    proceeds: Decimal  # cash received for the exits, fees deducted
    pnl: Decimal  # proceeds - cost
    return_: Decimal = msgspec.field(name="return")  # pnl / cost

    @property
    def won(self) -> bool:
        return self.pnl > 0


class TradeStats(msgspec.Struct, frozen=True, kw_only=True):
    """The closed trades' record that the Kelly estimate reads."""

    wins: int = 0
    losses: int = 0
    win_return_sum: Decimal = Decimal(0)  # sum of the winners' returns
    loss_return_sum: Decimal = Decimal(0)  # sum of the losers' returns, as positive numbers


class Portfolio(msgspec.Struct, frozen=True, kw_only=True):
    """The account as sizing sees it, after every earlier target has been executed."""

    cash: Decimal
    buying_power: Decimal
    position: Decimal
    stats: TradeStats = TradeStats()

    def equity(self, price: Decimal) -> Decimal:
        return self.cash + self.position * price
