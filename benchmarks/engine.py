"""`bourse bench engine`: in-process matching throughput against the naive reference book.

The mix follows exchange-core's benchmark shape: a book of about 1,000 resting orders over
about 750 price levels, then a seeded stream of commands, mostly limit placements and
cancels, with some IOC and market orders. Every book gets identical commands in the same run;
the reference (every order in one list, re-sorted on each command) is the peer with the
target. nautilus_trader's order book, when installed, is measured too, for information.
"""

from __future__ import annotations

import gc
import importlib
import importlib.metadata
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from benchmarks import Result, at_least
from bourse.engine.book import OrderBook
from bourse.engine.reference import ReferenceBook
from bourse.engine.types import (
    Accepted,
    Cancelled,
    CancelReason,
    EngineEvent,
    Fill,
    NewOrder,
    OrderType,
    Rejected,
    RejectReason,
    Side,
    TimeInForce,
)

TARGET = 5.0
MID = 100_000  # ticks
LEVELS = 1_500  # price range; 1,000 random orders occupy about 750 of these levels
REPEATS = 3  # the fast books run this many times, interleaved; the median rate counts

Command = tuple[str, NewOrder | str]
Call = Callable[[], list[EngineEvent]]


def _resting_order(rng: random.Random, oid: str) -> NewOrder:
    side = Side.BUY if rng.random() < 0.5 else Side.SELL
    offset = rng.randint(1, LEVELS // 2)
    price = MID - offset if side is Side.BUY else MID + offset
    return NewOrder(
        order_id=oid,
        account=f"acct{rng.randrange(50)}",
        side=side,
        type=OrderType.LIMIT,
        tif=TimeInForce.GTC,
        qty=rng.randint(1, 100),
        price=price,
    )


def make_session(seed: int, resting: int, commands: int) -> tuple[list[NewOrder], list[Command]]:
    """A warm-up book and a command stream: ~45% place, ~40% cancel, 10% IOC, 5% market."""
    rng = random.Random(seed)
    warmup = [_resting_order(rng, f"w{i}") for i in range(resting)]
    live = [o.order_id for o in warmup]
    stream: list[Command] = []
    for i in range(commands):
        oid = f"c{i}"
        roll = rng.random()
        if roll < 0.45:
            stream.append(("submit", _resting_order(rng, oid)))
            live.append(oid)
        elif roll < 0.85 and live:
            victim = live.pop(rng.randrange(len(live)))
            stream.append(("cancel", victim))
        else:
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            market = roll >= 0.95
            stream.append(
                (
                    "submit",
                    NewOrder(
                        order_id=oid,
                        account=f"acct{rng.randrange(50)}",
                        side=side,
                        type=OrderType.MARKET if market else OrderType.LIMIT,
                        tif=TimeInForce.DAY if market else TimeInForce.IOC,
                        qty=rng.randint(1, 200),
                        price=0 if market else MID + (5 if side is Side.BUY else -5),
                    ),
                )
            )
    return warmup, stream


def _copy(order: NewOrder) -> NewOrder:
    return NewOrder(
        order_id=order.order_id,
        account=order.account,
        side=order.side,
        type=order.type,
        tif=order.tif,
        qty=order.qty,
        price=order.price,
        stop=order.stop,
    )


def _bourse_calls(
    book: OrderBook | ReferenceBook, warmup: list[NewOrder], stream: list[Command]
) -> list[Call]:
    """Warm `book` up, then bind each command to it (fresh copies: the books mutate them)."""
    for order in warmup:
        book.submit(_copy(order))
    return [
        partial(book.submit, _copy(arg)) if isinstance(arg, NewOrder) else partial(book.cancel, arg)
        for _, arg in stream
    ]


def _time(calls: list[Call], timed: bool) -> tuple[float, list[int], list[EngineEvent]]:
    """Commands per second, per-command latencies (ns, when `timed`) and every event."""
    latencies: list[int] = []
    events: list[EngineEvent] = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        started = clock()
        for call in calls:
            before = clock() if timed else 0
            events += call()
            if timed:
                latencies.append(clock() - before)
        elapsed = (clock() - started) / 1e9
    finally:
        gc.enable()
    return len(calls) / elapsed, latencies, events


# ---- nautilus_trader's order book as a peer (informational, no target) ----


class _NautilusOrder(NamedTuple):
    """A placement prepared before the clock starts, as the book under test takes it."""

    order_id: str
    nautilus_id: int
    account: str
    side: Side
    limit: int  # ticks; 0 for a market order (no limit)
    qty: int
    rests: bool  # a DAY/GTC limit order's remainder rests; anything else's is cancelled
    remainder_reason: CancelReason
    book_order: Any  # nautilus BookOrder for the full quantity at the limit (None: market)


class NautilusBook:
    """Our matching rules driven over nautilus_trader's L3 (market-by-order) book.

    nautilus's OrderBook holds a book; it does not match. Each of our operations maps to it
    so: a placement reads the opposite side's best level (`asks(1)` / `bids(1)`, which
    return it with its orders in FIFO order) and, while the level's price is acceptable,
    fills its orders in turn (`delete` for one filled in full, `update` with the reduced
    size for the last one filled in part), then `add`s the remainder of a DAY/GTC limit
    order; a cancel is `delete`. Self-trade prevention cancels the resting order (our
    default). nautilus's BookOrder has an integer id and no account, so a side table maps
    its ids to ours and to accounts, and holds the last BookOrder sent for each, which a
    delete takes (a market-by-order feed carries the same). It emits our event types, so
    its events can be compared with OrderBook's one for one.

    The book is `nautilus_pyo3.OrderBook`, the Rust book itself. The Cython
    `nautilus_trader.model.book.OrderBook` wraps the same Rust book but can only list a
    whole side (`asks()` copies every level, ~230 µs at this depth), which would measure
    that copy rather than the book.
    """

    def __init__(self, nautilus: Any) -> None:
        self._nt = nautilus
        self._book = nautilus.OrderBook(
            nautilus.InstrumentId.from_str("BENCH.SIM"), nautilus.BookType.L3_MBO
        )
        self._buy = nautilus.OrderSide.BUY
        self._sell = nautilus.OrderSide.SELL
        self._price_scale: int = nautilus.Price(1, 0).raw
        self._size_scale: int = nautilus.Quantity(1, 0).raw
        self._ids: dict[str, int] = {}
        # nautilus id -> (the BookOrder last sent for it, our order id, account)
        self._live: dict[int, tuple[Any, str, str]] = {}
        self.match_count = 0
        self.last_price = 0

    def _nautilus_id(self, order_id: str) -> int:
        return self._ids.setdefault(order_id, len(self._ids) + 1)

    def prepare(self, order: NewOrder) -> _NautilusOrder:
        if order.type not in (OrderType.LIMIT, OrderType.MARKET) or order.tif is TimeInForce.FOK:
            raise ValueError(
                f"the nautilus driver takes limit and market orders, not {order.type} "
                f"{order.tif}: the benchmark's mix has no other kinds"
            )
        nautilus_id = self._nautilus_id(order.order_id)
        market = order.type is OrderType.MARKET
        return _NautilusOrder(
            order.order_id,
            nautilus_id,
            order.account,
            order.side,
            order.price,
            order.qty,
            rests=not market and order.tif in (TimeInForce.DAY, TimeInForce.GTC),
            remainder_reason=CancelReason.NO_LIQUIDITY if market else CancelReason.IOC_REMAINDER,
            book_order=None
            if market
            else self._book_order(order.side, order.price, order.qty, nautilus_id),
        )

    def prepare_cancel(self, order_id: str) -> tuple[int, str]:
        return self._nautilus_id(order_id), order_id

    def _book_order(self, side: Side, price: int, qty: int, nautilus_id: int) -> Any:
        nt = self._nt
        return nt.BookOrder(
            self._buy if side is Side.BUY else self._sell,
            nt.Price(price, 0),
            nt.Quantity(qty, 0),
            nautilus_id,
        )

    def submit(self, order: _NautilusOrder) -> list[EngineEvent]:
        events: list[EngineEvent] = [Accepted(order.order_id)]
        book, live = self._book, self._live
        buying = order.side is Side.BUY
        best_opposite = book.asks if buying else book.bids
        limit, remaining = order.limit, order.qty
        while remaining > 0:
            top = best_opposite(1)
            if not top:
                break
            level = top[0]
            price = level.price.raw // self._price_scale
            if limit and (price > limit if buying else price < limit):
                break
            for resting in level.get_orders():
                nautilus_id = resting.order_id
                _, resting_id, account = live[nautilus_id]
                size = resting.size.raw // self._size_scale
                if account == order.account:
                    book.delete(resting, 0, 0, 0)
                    del live[nautilus_id]
                    events.append(Cancelled(resting_id, account, size, CancelReason.SELF_TRADE))
                    continue
                qty = min(remaining, size)
                remaining -= qty
                left = size - qty
                self.match_count += 1
                self.last_price = price
                events.append(
                    Fill(
                        resting_id,
                        order.order_id,
                        account,
                        order.account,
                        order.side,
                        price,
                        qty,
                        left,
                        remaining,
                        self.match_count,
                    )
                )
                if left == 0:
                    book.delete(resting, 0, 0, 0)
                    del live[nautilus_id]
                else:
                    reduced = self._nt.BookOrder(
                        resting.side, level.price, self._nt.Quantity(left, 0), nautilus_id
                    )
                    book.update(reduced, 0, 0, 0)
                    live[nautilus_id] = (reduced, resting_id, account)
                if remaining == 0:
                    break
        if remaining == 0:
            return events
        if order.rests:
            resting_order = (
                order.book_order
                if remaining == order.qty
                else self._book_order(order.side, limit, remaining, order.nautilus_id)
            )
            book.add(resting_order, 0, 0, 0)
            live[order.nautilus_id] = (resting_order, order.order_id, order.account)
        else:
            events.append(
                Cancelled(order.order_id, order.account, remaining, order.remainder_reason)
            )
        return events

    def cancel(self, target: tuple[int, str]) -> list[EngineEvent]:
        nautilus_id, order_id = target
        entry = self._live.pop(nautilus_id, None)
        if entry is None:
            return [Rejected(order_id, RejectReason.UNKNOWN_ORDER, "no such working order")]
        book_order, _, account = entry
        self._book.delete(book_order, 0, 0, 0)
        remaining = book_order.size.raw // self._size_scale
        return [Cancelled(order_id, account, remaining, CancelReason.REQUESTED)]

    def depth(self, side: Side) -> list[tuple[int, int]]:
        """Every level on `side`, best first, as (price, quantity) in ticks and lots."""
        levels = self._book.bids(None) if side is Side.BUY else self._book.asks(None)
        return [
            (level.price.raw // self._price_scale, level.size_raw() // self._size_scale)
            for level in levels
        ]

    def __len__(self) -> int:
        return len(self._live)


def _load_nautilus() -> tuple[Any, str]:
    """nautilus_trader's pyo3 module and the package's version, or None and why not."""
    try:
        module = importlib.import_module("nautilus_trader.core.nautilus_pyo3")
    except ImportError as exc:
        return None, f"nautilus_trader is not importable ({exc}); `make bench` installs it"
    return module, importlib.metadata.version("nautilus_trader")


def _nautilus_calls(
    nautilus: Any, warmup: list[NewOrder], stream: list[Command]
) -> tuple[NautilusBook, list[Call]]:
    book = NautilusBook(nautilus)
    for order in warmup:
        book.submit(book.prepare(order))
    calls: list[Call] = [
        partial(book.submit, book.prepare(arg))
        if isinstance(arg, NewOrder)
        else partial(book.cancel, book.prepare_cancel(arg))
        for _, arg in stream
    ]
    return book, calls


def _same_book(ours: OrderBook, theirs: NautilusBook) -> bool:
    """Same resting orders, same quantity at every price, same fills and last price."""
    return (
        len(ours) == len(theirs)
        and all(ours.depth(side, 1_000_000) == theirs.depth(side) for side in Side)
        and (ours.match_count, ours.last_price) == (theirs.match_count, theirs.last_price)
    )


# ---- memory and the run ----


def _bytes_per_resting_order(count: int) -> float:
    rng = random.Random(1)
    orders = [_resting_order(rng, f"m{i}") for i in range(count)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    book = OrderBook("BENCH")
    for order in orders:
        book.submit(order)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    resting = len(book)
    del book
    return grown / max(resting, 1)


def _percentile(values: list[int], p: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))])


async def run(quick: bool) -> Result:
    commands = 3_000 if quick else 20_000
    repeats = 1 if quick else REPEATS
    warmup, stream = make_session(seed=42, resting=1_000, commands=commands)
    nautilus, about_nautilus = _load_nautilus()
    # Ours and nautilus's alternate so that a change in the machine's load hits both.
    ours_rates: list[float] = []
    nautilus_rates: list[float] = []
    same_as_nautilus = True
    for _ in range(repeats):
        ours = OrderBook("BENCH")
        rate, _, ours_events = _time(_bourse_calls(ours, warmup, stream), timed=False)
        ours_rates.append(rate)
        if nautilus is not None:
            theirs, calls = _nautilus_calls(nautilus, warmup, stream)
            rate, _, nautilus_events = _time(calls, timed=False)
            nautilus_rates.append(rate)
            same_as_nautilus &= nautilus_events == ours_events and _same_book(ours, theirs)
    # Same commands, same events: check the peer does the same work before comparing speed.
    reference_calls = _bourse_calls(ReferenceBook("BENCH"), warmup, stream)
    reference_rate, _, reference_events = _time(reference_calls, timed=False)
    _, latencies, _ = _time(_bourse_calls(OrderBook("BENCH"), warmup, stream), timed=True)
    probe = OrderBook("BENCH")
    for order in warmup:
        probe.submit(_copy(order))
    levels = len(probe.depth(Side.BUY, 10_000)) + len(probe.depth(Side.SELL, 10_000))
    ours_rate = statistics.median(ours_rates)
    ratio = at_least(ours_rate / reference_rate)
    same_events = reference_events == ours_events
    result: Result = {
        "name": "engine",
        "ratio": ratio,
        "target": TARGET,
        "met": ratio >= TARGET and same_events,
        "ours_orders_per_s": round(ours_rate),
        "peer_orders_per_s": round(reference_rate),
        "peer": "naive reference book: one list of orders, re-sorted on every command",
        "same_events": same_events,
        "commands": len(stream),
        "warmup_resting_orders": len(probe),
        "warmup_price_levels": levels,
        "latency_us": {
            "p50": round(_percentile(latencies, 50) / 1e3, 2),
            "p99": round(_percentile(latencies, 99) / 1e3, 2),
        },
        "bytes_per_resting_order": round(_bytes_per_resting_order(10_000)),
    }
    if nautilus is None:
        result["nautilus"] = None
        result["nautilus_not_measured"] = about_nautilus
    else:
        result["nautilus"] = _nautilus_figures(
            ours_rate, nautilus_rates, same_as_nautilus, about_nautilus
        )
    return result


def _nautilus_figures(
    ours_rate: float, rates: list[float], same: bool, version: str
) -> dict[str, Any]:
    rate = statistics.median(rates)
    return {
        "book": f"nautilus_trader {version} nautilus_pyo3.OrderBook (L3_MBO) under our "
        "matching rules (NautilusBook)",
        "orders_per_s": round(rate),
        "ratio": round(ours_rate / rate, 3),  # ours / nautilus's
        "target": None,  # informational: `met` does not depend on it
        "same_events_and_book": same,
        "runs": len(rates),
    }
