"""Back-tests: the same pipeline over recorded market data, with executions simulated.

Data comes from the MARKET_DATA stream over a range of positions (`StreamSource`, read with
the replay of `bus/replay.py`, in stream order) or from a historical file the feed can replay
(`FileSource`: CSV, Parquet or `sample:stocks`, in time order). Only the chosen symbol on the
chosen venue becomes ticks; the stream is filtered to the symbol by the server and to the
venue here.

`SimulatedBroker` fills in-process, deterministically. There is no book to match against in a
replay (the recorded quotes are the other side), so the fill model is the quote itself:

- a buy fills whole at the tick's ask (its price for a trade tick), a sell at its bid, moved
  against the order by a slippage drawn from `random.Random(seed)`: uniform in
  [0, `slippage_bps`] in steps of 0.01 bps, one draw per order, rounded to the tick grid
  against the order, never past the order's limit;
- fees are `fee_bps` of the notional, rounded up to the cent;
- cash and the position are kept by the accounts service's own `Ledger`; a buy costing more
  than the cash left (fees included) or a sell of more than is held is refused, as the
  exchange would refuse it.

Same data, configuration and seed: the same ticks in the same order, the same draws, the
same orders: identical trades and P&L (the pipeline's settlement barrier, execution.py,
keeps the tasks' interleaving out of it).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import msgspec
from nats.aio.client import Client as NATS

from bourse.accounts.ledger import Ledger
from bourse.bus.pull import Delivery
from bourse.bus.replay import Replay, ReplaySpec
from bourse.errors import BourseError
from bourse.feed.history_files import SAMPLE_STOCKS, read_file, sample_stocks
from bourse.model import marketdata
from bourse.model.instruments import Instrument
from bourse.strategy.config import StrategyConfig
from bourse.strategy.enrich import TickReader
from bourse.strategy.execution import Refusal
from bourse.strategy.performance import Summary
from bourse.strategy.prices import BPS, fee, to_tick
from bourse.strategy.sizing import TradeBook
from bourse.strategy.stages import StrategyRun
from bourse.strategy.types import Fill, OrderRequest, Portfolio, Tick

OnProgress = Callable[[int, int | None], None]
Put = Callable[[Tick], Awaitable[None]]

_ZERO = Decimal(0)


class NoMarketData(BourseError):
    """The data chosen holds no tick of the symbol on the venue."""

    def __init__(self, symbol: str, venue: str, source: str, seen: Sequence[str] = ()) -> None:
        self.symbol = symbol
        self.venue = venue
        self.source = source
        hint = f"; it has {', '.join(seen)}" if seen else ""
        super().__init__(
            f"no market data for {symbol} on venue {venue} in {source}{hint}: choose another "
            f"range, --symbol or --venue"
        )


class SimulatedBroker:
    """Fills at the quote with seeded slippage and fees; cash and position in a Ledger."""

    def __init__(
        self, instrument: Instrument, config: StrategyConfig, *, cash: Decimal, seed: int
    ) -> None:
        self._instrument = instrument
        self._config = config
        self._rng = random.Random(seed)
        self.ledger = Ledger("backtest")
        if cash > 0:
            self.ledger.deposit(cash)
        self.fees = _ZERO
        self._fills = 0
        # Slippage is drawn in hundredths of a basis point.
        self._slippage_steps = int(config.slippage_bps * 100)

    @property
    def cash(self) -> Decimal:
        return self.ledger.cash - self.fees

    @property
    def position(self) -> Decimal:
        return self.ledger.position(self._instrument.symbol).qty

    async def portfolio(self, book: TradeBook) -> Portfolio:
        return Portfolio(
            cash=self.cash, buying_power=self.cash, position=self.position, stats=book.stats
        )

    async def execute(self, order: OrderRequest) -> Fill | Refusal:
        return self.fill(order)

    def fill(self, order: OrderRequest) -> Fill | Refusal:
        slippage = Decimal(self._rng.randint(0, self._slippage_steps)) / 100 / BPS
        tick, instrument = order.tick, self._instrument
        if order.side == "buy":
            price = min(
                to_tick(tick.buy_price * (1 + slippage), instrument, up=True), order.limit_price
            )
        else:
            price = max(
                to_tick(tick.sell_price * (1 - slippage), instrument, up=False), order.limit_price
            )
        notional = price * order.qty
        charge = fee(notional, self._config.fee_bps)
        if order.side == "buy" and notional + charge > self.cash:
            return Refusal(
                reason="insufficient_buying_power",
                message=f"needs {notional + charge}; cash is {self.cash}",
            )
        if order.side == "sell" and order.qty > self.position:
            return Refusal(
                reason="insufficient_position",
                message=f"sells {order.qty}; holds {self.position}",
            )
        self._fills += 1
        order_id = f"sim-{self._fills}"
        self.ledger.apply_fill(
            order_id, instrument.symbol, 1 if order.side == "buy" else -1, order.qty, price
        )
        self.fees += charge
        return Fill(
            client_order_id=order.client_order_id,
            order_id=order_id,
            ts=tick.ts,
            side=order.side,
            qty=order.qty,
            price=price,
            fee=charge,
        )

    async def close(self) -> None:
        """Nothing stays open: every simulated order is filled or refused at once."""


# ---- sources ----


class BacktestSource(Protocol):
    @property
    def description(self) -> str:
        """What the data is, as the summary names it."""
        ...

    async def feed(self, reader: TickReader, put: Put, on_progress: OnProgress | None) -> None:
        """Read the data in order; hand each tick the reader makes of it to `put`."""
        ...


@dataclass(frozen=True, kw_only=True)
class FileSource:
    """A historical file's messages (all read and checked first), optionally a time range."""

    messages: Sequence[marketdata.MarketData]
    description: str
    start_ns: int | None = None
    end_ns: int | None = None

    @classmethod
    def load(
        cls, path: str, *, venue: str, start_ns: int | None = None, end_ns: int | None = None
    ) -> FileSource:
        """`path` is a CSV/Parquet file in the feed's format, or `sample:stocks`."""
        if path == SAMPLE_STOCKS:
            messages = sample_stocks(venue=venue)
        else:
            messages = read_file(Path(path), venue=venue)
        return cls(messages=messages, description=path, start_ns=start_ns, end_ns=end_ns)

    def in_range(self, message: marketdata.MarketData) -> bool:
        return (self.start_ns is None or message.ts >= self.start_ns) and (
            self.end_ns is None or message.ts <= self.end_ns
        )

    def check(self, symbol: str, venue: str) -> None:
        """Raise NoMarketData unless the range holds the symbol on the venue."""
        seen: set[str] = set()
        for message in self.messages:
            if self.in_range(message):
                if message.symbol == symbol and message.venue == venue:
                    return
                seen.add(f"{message.symbol}@{message.venue}")
        raise NoMarketData(symbol, venue, self.description, sorted(seen)[:10])

    async def feed(self, reader: TickReader, put: Put, on_progress: OnProgress | None) -> None:
        total = len(self.messages)
        for done, message in enumerate(self.messages, start=1):
            if self.in_range(message):
                tick = reader.read(message)
                if tick is not None:
                    await put(tick)
            if on_progress is not None and (done % 1000 == 0 or done == total):
                on_progress(done, total)


class StreamSource:
    """MARKET_DATA over a replay spec (its symbols filter the server side), in stream order."""

    def __init__(self, nc: NATS, spec: ReplaySpec) -> None:
        if spec.live:
            raise ValueError("a back-test replays a finished range, not a live tail")
        self._nc = nc
        self.spec = spec
        self.description = f"MARKET_DATA from {spec.start}" + (
            f" until {spec.until}" if spec.until is not None else " to the end"
        )

    async def feed(self, reader: TickReader, put: Put, on_progress: OnProgress | None) -> None:
        async def on_message(delivery: Delivery) -> None:
            try:
                message = marketdata.decode(delivery.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return  # not market data this strategy can read
            tick = reader.read(message)
            if tick is not None:
                await put(tick)

        await Replay(self._nc, self.spec).run(on_message, on_progress)


# ---- the run ----


async def run_backtest(
    config: StrategyConfig,
    instrument: Instrument,
    source: BacktestSource,
    *,
    venue: str,
    cash: Decimal = Decimal(100_000),
    seed: int = 0,
    on_progress: OnProgress | None = None,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Summary:
    """Run the strategy over `source` with simulated executions; its summary.

    Setting `stop` ends the intake early; what was read is still traded and summarized.
    Raises NoMarketData when the source held no tick of the symbol on the venue.
    """
    config.check()
    broker = SimulatedBroker(instrument, config, cash=cash, seed=seed)
    book = TradeBook()
    run = StrategyRun(
        config,
        instrument,
        broker,
        await broker.portfolio(book),
        run_id=f"bt{seed}",
        book=book,
    )
    reader = TickReader(instrument.symbol, venue, config.price_source)
    started = clock()

    async def feed(put: Callable[[Tick], Awaitable[None]]) -> None:
        await source.feed(reader, put, on_progress)

    await run.pipeline.run(feed, stop=stop)
    if reader.count == 0:
        raise NoMarketData(instrument.symbol, venue, source.description)
    return run.summary(
        mode="backtest",
        venue=venue,
        source=source.description,
        seed=seed,
        elapsed_s=clock() - started,
    )
