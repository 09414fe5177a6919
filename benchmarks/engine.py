"""`bourse bench engine`: in-process matching throughput against the naive reference book.

The mix follows exchange-core's benchmark shape: a book of about 1,000 resting orders over
about 750 price levels, then a seeded stream of commands, mostly limit placements and
cancels, with some IOC and market orders. Both books get identical commands in the same run;
the reference (every order in one list, re-sorted on each command) is the peer.
"""

from __future__ import annotations

import gc
import random
import time
import tracemalloc
from collections.abc import Callable
from typing import Protocol

from benchmarks import Result
from bourse.engine.book import OrderBook
from bourse.engine.reference import ReferenceBook
from bourse.engine.types import EngineEvent, NewOrder, OrderType, Side, TimeInForce

TARGET = 5.0
MID = 100_000  # ticks
LEVELS = 1_500  # price range; 1,000 random orders occupy about 750 of these levels


class Book(Protocol):
    def submit(self, order: NewOrder) -> list[EngineEvent]: ...
    def cancel(self, order_id: str, account: str | None = None) -> list[EngineEvent]: ...


Command = tuple[str, NewOrder | str]


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


def _run(
    make_book: Callable[[], Book], warmup: list[NewOrder], stream: list[Command], timed: bool
) -> tuple[float, list[int], int]:
    book = make_book()
    for order in warmup:
        book.submit(_copy(order))
    commands = [(kind, _copy(arg) if isinstance(arg, NewOrder) else arg) for kind, arg in stream]
    latencies: list[int] = []
    events = 0
    clock = time.perf_counter_ns
    gc.disable()
    try:
        started = clock()
        for kind, arg in commands:
            before = clock() if timed else 0
            if kind == "submit":
                assert isinstance(arg, NewOrder)
                events += len(book.submit(arg))
            else:
                assert isinstance(arg, str)
                events += len(book.cancel(arg))
            if timed:
                latencies.append(clock() - before)
        elapsed = (clock() - started) / 1e9
    finally:
        gc.enable()
    return len(commands) / elapsed, latencies, events


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
    warmup, stream = make_session(seed=42, resting=1_000, commands=commands)
    # Same commands, same events: check the peer does the same work before comparing speed.
    ours_rate, _, ours_events = _run(lambda: OrderBook("BENCH"), warmup, stream, timed=False)
    reference_rate, _, reference_events = _run(
        lambda: ReferenceBook("BENCH"), warmup, stream, timed=False
    )
    _, latencies, _ = _run(lambda: OrderBook("BENCH"), warmup, stream, timed=True)
    probe = OrderBook("BENCH")
    for order in warmup:
        probe.submit(_copy(order))
    levels = len(probe.depth(Side.BUY, 10_000)) + len(probe.depth(Side.SELL, 10_000))
    ratio = ours_rate / reference_rate
    return {
        "name": "engine",
        "ratio": round(ratio, 3),
        "target": TARGET,
        "met": ratio >= TARGET and ours_events == reference_events,
        "ours_orders_per_s": round(ours_rate),
        "peer_orders_per_s": round(reference_rate),
        "peer": "naive reference book: one list of orders, re-sorted on every command",
        "same_events": ours_events == reference_events,
        "commands": len(stream),
        "warmup_resting_orders": len(probe),
        "warmup_price_levels": levels,
        "latency_us": {
            "p50": round(_percentile(latencies, 50) / 1e3, 2),
            "p99": round(_percentile(latencies, 99) / 1e3, 2),
        },
        "bytes_per_resting_order": round(_bytes_per_resting_order(10_000)),
        "nautilus_trader": "not measured: not installed in this environment",
    }
