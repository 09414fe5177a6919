"""The matching engine's state as bytes, and back: what the engine service snapshots.

A snapshot holds, per book, the working orders in the order the book iterates them (bids and
asks level by level in time priority, then stops by trigger), the last trade price and the
match count, plus the engine's market-data sequence, last trades and volumes. Restoring
re-inserts the orders in that order, so every level and queue comes back exactly as it was:
the restored engine has the same `state_digest()` and answers every later request with the
same outputs, byte for byte.

This module belongs to the engine package and reads and writes the core's internals, so that
the cores themselves stay free of persistence code. Prices and quantities stay in ticks and
lots; each book records its tick and lot units so a snapshot is never read against an
instrument whose scale has changed.
"""

from __future__ import annotations

import msgspec

from bourse.engine.book import OrderBook, RestingOrder
from bourse.engine.core import MatchingEngine
from bourse.engine.types import OrderType, SelfTradePrevention, Side, TimeInForce
from bourse.errors import BourseError
from bourse.model.instruments import Instrument

FORMAT = 1


class EngineSnapshotError(BourseError):
    """A snapshot cannot be restored into this engine (another format or instrument scale)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"cannot restore the matching engine snapshot: {problem}")


class _Order(msgspec.Struct, frozen=True, array_like=True):
    order_id: str
    account: str
    side: int
    type: str
    tif: str
    price: int
    stop: int
    qty: int
    remaining: int


class _Book(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    tick_units: int
    lot_units: int
    last_price: int
    match_count: int
    resting: list[_Order]  # bids then asks, best level first, each level in time priority
    stops: list[_Order]  # buy stops then sell stops, in trigger order


class _Engine(msgspec.Struct, frozen=True, kw_only=True):
    format: int
    md_seq: int
    last: dict[str, tuple[int, int]]
    volume: dict[str, int]
    books: list[_Book]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Engine)


def _order(order: RestingOrder) -> _Order:
    return _Order(
        order.order_id,
        order.account,
        int(order.side),
        str(order.type),
        str(order.tif),
        order.price,
        order.stop,
        order.qty,
        order.remaining,
    )


def _resting(order: _Order) -> RestingOrder:
    return RestingOrder(
        order.order_id,
        order.account,
        Side(order.side),
        OrderType(order.type),
        TimeInForce(order.tif),
        order.price,
        order.stop,
        order.qty,
        order.remaining,
    )


def _book(engine: MatchingEngine, symbol: str, book: OrderBook) -> _Book:
    scale = engine._scales[symbol]
    resting: list[_Order] = []
    stops: list[_Order] = []
    for order in book.orders():
        (stops if order.order_id in book._stops else resting).append(_order(order))
    return _Book(
        symbol=symbol,
        tick_units=scale.tick_units,
        lot_units=scale.lot_units,
        last_price=book.last_price,
        match_count=book.match_count,
        resting=resting,
        stops=stops,
    )


def dump(engine: MatchingEngine) -> bytes:
    """The engine's whole state (msgpack)."""
    return _encoder.encode(
        _Engine(
            format=FORMAT,
            md_seq=engine._md_seq,
            last=dict(engine._last),
            volume=dict(engine._volume),
            books=[_book(engine, symbol, book) for symbol, book in engine._books.items()],
        )
    )


def load(
    data: bytes,
    instruments: tuple[Instrument, ...],
    *,
    self_trade: SelfTradePrevention = SelfTradePrevention.CANCEL_RESTING,
) -> MatchingEngine:
    """A new engine for `instruments` holding the state `dump` saved.

    Raise EngineSnapshotError when the snapshot has another format, or a book for a symbol
    that is not traded any more or whose tick or lot size changed.
    """
    try:
        state = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise EngineSnapshotError(f"unreadable ({exc})") from exc
    if state.format != FORMAT:
        raise EngineSnapshotError(f"format {state.format}; this version reads {FORMAT}")
    engine = MatchingEngine(instruments, self_trade=self_trade)
    for saved in state.books:
        scale = engine._scales.get(saved.symbol)
        if scale is None:
            raise EngineSnapshotError(f"{saved.symbol} has orders but is no longer traded")
        if (scale.tick_units, scale.lot_units) != (saved.tick_units, saved.lot_units):
            raise EngineSnapshotError(f"the tick or lot size of {saved.symbol} changed")
        book = engine.book(saved.symbol)
        for order in saved.resting:
            book._rest(_resting(order))
        for order in saved.stops:
            book._park_stop(_resting(order))
        book.last_price = saved.last_price
        book.match_count = saved.match_count
    engine._md_seq = state.md_seq
    engine._last = dict(state.last)
    engine._volume = dict(state.volume)
    return engine
