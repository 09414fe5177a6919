"""Bars by SQL over the stored trades and quotes, as `bourse.analytics.bars` defines them.

A bar of timeframe `tf` covers `[start, start + width)`, `start` a multiple of the width since
the epoch. From the trades in it: open and close are the earliest and latest prints by `ts`
(ties in arrival order, which is MARKET_DATA order: `stream_seq`), high and low the extremes,
volume the sum of sizes, trade count the number of prints, VWAP = sum(price x size) / volume
(rounded by `analytics.rounding.divide`). A bar with no trade but with quotes is made of the
quotes' mid-prices (`source="quotes"`, volume 0, no VWAP); no message, no bar. `BarBuilder`
fed the same messages in the same order gives the same bars (tests/history/test_bars.py).

Per venue when a venue is given; otherwise **consolidated**: every venue's trades make the
bar, and only when no venue printed does it fall back to every venue's quote mids. This is
`BarBuilder` fed every venue's messages as one pseudo-venue, `consolidated`, which is the
venue the consolidated bars carry (the name the live market-data stream expects of the
analytics service's all-venue bars; `*` would be a wildcard in a subject).

SQL computes the exact sums (notional in DECIMAL(38, 16)) and doubled mids (bid + ask); the
one division of each is done here, with the analytics cores' rounding, so no database's
decimal division rules are involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from bourse.analytics.bars import Bar, BarSource
from bourse.analytics.rounding import divide, halve
from bourse.analytics.timeframes import Timeframe
from bourse.history import schema
from bourse.history.rows import Places

if TYPE_CHECKING:
    from bourse.history.store import RangeQuery

CONSOLIDATED = "consolidated"  # the venue of bars made from every venue


class Ordered(Protocol):
    def __call__(self, expression: str, *, last: bool) -> str:
        """The aggregate of `expression` at the earliest (or latest) (ts, stream_seq)."""
        ...


def _ceil(value: int, width: int) -> int:
    return -(-value // width) * width


class BarSql:
    """Builds the bars statement in one dialect (its ordered first/last aggregate)."""

    def __init__(self, ordered: Ordered) -> None:
        self._ordered = ordered

    def _aggregate(
        self, table: str, price: str, query: RangeQuery, tf: Timeframe
    ) -> tuple[str, list[Any]]:
        from bourse.history.store import filters

        width = tf.width_ns
        # Whole bars whose start is in [start, end]: the scan covers exactly those buckets.
        lower = None if query.start is None else _ceil(query.start, width)
        upper = None if query.end is None else tf.start_of(query.end) + width
        where, params = filters(query, lower=lower, upper=upper, upper_exclusive=True)
        if query.after is not None:
            where.append("symbol >= ?")
            params.append(query.after.symbol)
        first, last = self._ordered(price, last=False), self._ordered(price, last=True)
        sums = ""
        if table == schema.TRADES:
            sums = (
                f", sum(size) AS volume, count(*) AS trades, "
                f"sum(CAST(price AS {schema.WIDE}) * CAST(size AS {schema.WIDE})) AS notional"
            )
        sql = (
            f"SELECT symbol, ts - mod(ts, {width}) AS start, {first} AS o, max({price}) AS h, "
            f"min({price}) AS l, {last} AS c{sums} FROM {table} WHERE {' AND '.join(where)} "
            f"GROUP BY symbol, ts - mod(ts, {width})"
        )
        return sql, params

    def select(self, query: RangeQuery, tf: Timeframe) -> tuple[str, list[Any]]:
        """The statement (with `?` placeholders) and its parameters. Rows: symbol, start,
        open, high, low, close, volume, trade count, notional (None for quote bars)."""
        trades, trade_params = self._aggregate(schema.TRADES, "price", query, tf)
        quotes, quote_params = self._aggregate(schema.QUOTES, "bid + ask", query, tf)
        direction = "DESC" if query.descending else "ASC"
        keyset, keyset_params = "", []
        if query.after is not None:
            after = "<" if query.descending else ">"
            keyset = f" AND (symbol > ? OR (symbol = ? AND start {after} ?))"
            keyset_params = [query.after.symbol, query.after.symbol, query.after.ts]
        sql = (
            f"WITH t AS ({trades}), q AS ({quotes}) "
            f"SELECT * FROM ("
            f"SELECT symbol, start, o, h, l, c, volume, trades, notional FROM t "
            f"UNION ALL "
            f"SELECT symbol, start, o, h, l, c, NULL, 0, NULL FROM q WHERE NOT EXISTS "
            f"(SELECT 1 FROM t WHERE t.symbol = q.symbol AND t.start = q.start)"
            f") bars WHERE TRUE{keyset} ORDER BY symbol, start {direction}"
        )
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        return sql, trade_params + quote_params + keyset_params


def bars_from_rows(
    rows: Sequence[tuple[Any, ...]], query: RangeQuery, tf: Timeframe, places: Places
) -> list[Bar]:
    venue = query.venue if query.venue is not None else CONSOLIDATED
    name, width = str(tf), tf.width_ns
    bars = []
    price = places.price
    source: BarSource
    for symbol, start, first, high, low, last, volume, count, notional in rows:
        if volume is None:  # a bar of quotes: its prices are doubled mids
            ohlc = (halve(first), halve(high), halve(low), halve(last))
            volume, vwap, source = Decimal(0), None, "quotes"
        else:
            ohlc = (first, high, low, last)
            vwap = (
                price(symbol, divide(notional, volume, price_places=places.price_places(symbol)))
                if volume
                else None
            )
            source = "trades"
        bars.append(
            Bar(
                symbol=symbol,
                venue=venue,
                timeframe=name,
                start_ts=start,
                end_ts=start + width,
                open=price(symbol, ohlc[0]),
                high=price(symbol, ohlc[1]),
                low=price(symbol, ohlc[2]),
                close=price(symbol, ohlc[3]),
                volume=places.size(symbol, volume),
                trade_count=count,
                vwap=vwap,
                source=source,
            )
        )
    return bars
