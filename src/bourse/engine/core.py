"""The matching engine's service core: validated requests in, events and market data out.

Pure and deterministic: it folds `orders.validated.>` messages (in stream order) into one
OrderBook per symbol and returns what to publish, each output stamped with the input's
timestamp, so replaying the journal gives byte-identical outputs. Decimal prices and
quantities become integer ticks and lots here, and back again on the way out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal

from bourse.engine.book import OrderBook
from bourse.engine.types import (
    Accepted,
    Cancelled,
    EngineEvent,
    Fill,
    NewOrder,
    OrderType,
    Rejected,
    RejectReason,
    Replaced,
    SelfTradePrevention,
    Side,
    TimeInForce,
    Triggered,
)
from bourse.model import marketdata, orders, subjects
from bourse.model.instruments import Instrument
from bourse.model.numbers import from_units, to_units

VENUE = "bourse"
DEPTH_LEVELS = 10

EngineInput = (
    orders.OrderValidated | orders.CancelValidated | orders.ReplaceValidated | orders.SessionClosed
)
Output = tuple[str, orders.OrdersEvent | marketdata.MarketData]

_REJECT_CODES = {
    RejectReason.UNKNOWN_ORDER: orders.RejectCode.UNKNOWN_ORDER,
    RejectReason.DUPLICATE_ORDER_ID: orders.RejectCode.UNKNOWN_ORDER,
    RejectReason.INVALID_QUANTITY: orders.RejectCode.INVALID_QUANTITY,
    RejectReason.INVALID_PRICE: orders.RejectCode.INVALID_PRICE,
    RejectReason.INVALID_REPLACE: orders.RejectCode.NOT_REPLACEABLE,
}


@dataclass(frozen=True, slots=True)
class _Scale:
    instrument: Instrument
    tick_units: int
    lot_units: int

    def ticks(self, price: Decimal) -> int:
        return to_units(price, self.instrument.price_precision) // self.tick_units

    def lots(self, qty: Decimal) -> int:
        return to_units(qty, self.instrument.size_precision) // self.lot_units

    def price(self, ticks: int) -> Decimal:
        return from_units(ticks * self.tick_units, self.instrument.price_precision)

    def qty(self, lots: int) -> Decimal:
        return from_units(lots * self.lot_units, self.instrument.size_precision)


class MatchingEngine:
    def __init__(
        self,
        instruments: tuple[Instrument, ...],
        *,
        self_trade: SelfTradePrevention = SelfTradePrevention.CANCEL_RESTING,
    ) -> None:
        self._scales = {
            i.symbol: _Scale(
                i,
                to_units(i.tick_size, i.price_precision),
                to_units(i.lot_size, i.size_precision),
            )
            for i in instruments
        }
        self._books = {symbol: OrderBook(symbol, self_trade=self_trade) for symbol in self._scales}
        self._md_seq = 0
        # Per symbol: last trade (price, size in lots) and the day's volume, for quotes.
        self._last: dict[str, tuple[int, int]] = {}
        self._volume: dict[str, int] = {}

    def book(self, symbol: str) -> OrderBook:
        return self._books[symbol]

    def state_digest(self) -> str:
        digest = hashlib.sha256(
            f"{self._md_seq}|{sorted(self._last.items())}|{sorted(self._volume.items())}".encode()
        )
        for symbol in sorted(self._books):
            digest.update(self._books[symbol].state_digest().encode())
        return digest.hexdigest()

    def apply(self, request: EngineInput) -> list[Output]:
        match request:
            case orders.OrderValidated(order=order):
                return self._new(request, order)
            case orders.CancelValidated():
                return self._cancel(request)
            case orders.ReplaceValidated():
                return self._replace(request)
            case orders.SessionClosed():
                return self.expire_day_orders(request.ts)

    def expire_day_orders(self, ts: int) -> list[Output]:
        """The session closed: cancel every DAY order (journaled as a validated request)."""
        out: list[Output] = []
        for symbol, book in self._books.items():
            events = book.expire(TimeInForce.DAY)
            if events:
                out.extend(self._translate(symbol, events, ts))
        return out

    def _new(self, request: orders.OrderValidated, order: orders.OrderSubmitted) -> list[Output]:
        scale = self._scales.get(order.symbol)
        if scale is None:
            return [_rejected(request.ts, order.order_id, order.account_id, order.symbol)]
        kind = OrderType(order.kind)
        price = (
            order.limit_price
            if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT)
            else (request.protection_price)
        )
        new = NewOrder(
            order_id=order.order_id,
            account=order.account_id,
            side=Side.BUY if order.side == "buy" else Side.SELL,
            type=kind,
            tif=TimeInForce(order.time_in_force),
            qty=scale.lots(order.qty),
            price=scale.ticks(price) if price is not None else 0,
            stop=scale.ticks(order.stop_price) if order.stop_price is not None else 0,
        )
        events = self._books[order.symbol].submit(new)
        return self._translate(order.symbol, events, request.ts, order.account_id)

    def _cancel(self, request: orders.CancelValidated) -> list[Output]:
        book = self._books.get(request.symbol)
        if book is None:
            return [_rejected(request.ts, request.order_id, request.account_id, request.symbol)]
        events = book.cancel(request.order_id, account=request.account_id)
        return self._translate(request.symbol, events, request.ts, request.account_id, "cancel")

    def _replace(self, request: orders.ReplaceValidated) -> list[Output]:
        scale = self._scales.get(request.symbol)
        if scale is None:
            return [
                _rejected(
                    request.ts, request.request.order_id, request.request.account_id, request.symbol
                )
            ]
        ask = request.request
        events = self._books[request.symbol].replace(
            ask.order_id,
            ask.new_order_id,
            qty=scale.lots(request.qty),
            price=scale.ticks(request.limit_price) if request.limit_price is not None else None,
            stop=scale.ticks(request.stop_price) if request.stop_price is not None else None,
            account=ask.account_id,
        )
        return self._translate(request.symbol, events, request.ts, ask.account_id, "replace")

    def _translate(
        self,
        symbol: str,
        events: list[EngineEvent],
        ts: int,
        account: str = "",
        request: str = "new",
    ) -> list[Output]:
        """Engine events as ORDERS messages; `account` owns the request that caused them."""
        scale = self._scales[symbol]
        out: list[Output] = []
        book_changed = False
        for event in events:
            match event:
                case Accepted(order_id=oid):
                    out.append(
                        (
                            subjects.order_outcome("accepted", oid),
                            orders.OrderAccepted(
                                ts=ts, order_id=oid, account_id=account, symbol=symbol
                            ),
                        )
                    )
                    book_changed = True
                case Fill():
                    out.extend(self._fill(symbol, scale, event, ts))
                    book_changed = True
                case Cancelled(order_id=oid, account=owner, remaining=left, reason=why):
                    out.append(
                        (
                            subjects.order_outcome("cancelled", oid),
                            orders.OrderCancelled(
                                ts=ts,
                                order_id=oid,
                                account_id=owner,
                                symbol=symbol,
                                leaves_qty=scale.qty(left),
                                reason=str(why),
                            ),
                        )
                    )
                    book_changed = True
                case Replaced():
                    out.append(
                        (
                            subjects.order_outcome("replaced", event.order_id),
                            orders.OrderReplaced(
                                ts=ts,
                                order_id=event.order_id,
                                new_order_id=event.new_order_id,
                                account_id=account,
                                symbol=symbol,
                                qty=scale.qty(event.qty),
                                limit_price=scale.price(event.price) if event.price else None,
                                stop_price=scale.price(event.stop) if event.stop else None,
                                leaves_qty=scale.qty(event.remaining),
                                kept_priority=event.kept_priority,
                            ),
                        )
                    )
                    book_changed = True
                case Rejected(order_id=oid, reason=reason, detail=detail):
                    out.append(
                        (
                            subjects.order_outcome("rejected", oid),
                            orders.OrderRejected(
                                ts=ts,
                                order_id=oid,
                                account_id=account,
                                request=request,  # type: ignore[arg-type]
                                code=_REJECT_CODES[reason],
                                message=detail,
                                symbol=symbol,
                                source="engine",
                            ),
                        )
                    )
                case Triggered():
                    pass  # visible through the fills that follow
        if book_changed:
            out.extend(self._market_data(symbol, scale, ts))
        return out

    def _fill(self, symbol: str, scale: _Scale, fill: Fill, ts: int) -> list[Output]:
        price, qty = scale.price(fill.price), scale.qty(fill.qty)
        taker_side = "buy" if fill.taker_side is Side.BUY else "sell"
        maker_side = "sell" if taker_side == "buy" else "buy"
        out: list[Output] = []
        for oid, account, side, leaves, liquidity in (
            (fill.maker_order_id, fill.maker_account, maker_side, fill.maker_remaining, "maker"),
            (fill.taker_order_id, fill.taker_account, taker_side, fill.taker_remaining, "taker"),
        ):
            out.append(
                (
                    subjects.order_outcome("executed", oid),
                    orders.Execution(
                        ts=ts,
                        order_id=oid,
                        account_id=account,
                        symbol=symbol,
                        side=side,  # type: ignore[arg-type]
                        price=price,
                        qty=qty,
                        leaves_qty=scale.qty(leaves),
                        liquidity=liquidity,  # type: ignore[arg-type]
                        match_id=fill.match_id,
                    ),
                )
            )
        self._last[symbol] = (fill.price, fill.qty)
        self._volume[symbol] = self._volume.get(symbol, 0) + fill.qty
        self._md_seq += 1
        out.append(
            (
                subjects.market_data(VENUE, symbol),
                marketdata.Trade(
                    symbol=symbol,
                    venue=VENUE,
                    price=price,
                    size=qty,
                    side=taker_side,  # type: ignore[arg-type]
                    ts=ts,
                    seq=self._md_seq,
                ),
            )
        )
        return out

    def depth_now(self, symbol: str, ts: int) -> marketdata.Depth | None:
        """The book's top levels as they are now, for a client that joins (None: no such
        symbol). Its `seq` is the venue's latest: every depth published after it is newer,
        and every one before it (or still in flight) is included in it."""
        scale = self._scales.get(symbol)
        if scale is None:
            return None
        return self._depth(symbol, scale, ts, self._md_seq)

    def quote_now(self, symbol: str, ts: int) -> marketdata.Quote | None:
        """The top of the book as it is now, with the venue's latest `seq` (as `depth_now`);
        None for no such symbol or a one-sided book."""
        scale = self._scales.get(symbol)
        if scale is None:
            return None
        return self._quote(symbol, scale, ts, self._md_seq)

    def _depth(self, symbol: str, scale: _Scale, ts: int, seq: int) -> marketdata.Depth:
        book = self._books[symbol]
        return marketdata.Depth(
            symbol=symbol,
            venue=VENUE,
            bids=[(scale.price(p), scale.qty(q)) for p, q in book.depth(Side.BUY, DEPTH_LEVELS)],
            asks=[(scale.price(p), scale.qty(q)) for p, q in book.depth(Side.SELL, DEPTH_LEVELS)],
            ts=ts,
            seq=seq,
        )

    def _market_data(self, symbol: str, scale: _Scale, ts: int) -> list[Output]:
        self._md_seq += 1
        out: list[Output] = [
            (subjects.market_data(VENUE, symbol), self._depth(symbol, scale, ts, self._md_seq))
        ]
        quote = self._quote(symbol, scale, ts, self._md_seq + 1)
        if quote is not None:
            self._md_seq += 1
            out.append((subjects.market_data(VENUE, symbol), quote))
        return out

    def _quote(self, symbol: str, scale: _Scale, ts: int, seq: int) -> marketdata.Quote | None:
        book = self._books[symbol]
        bid, ask = book.best(Side.BUY), book.best(Side.SELL)
        if bid is None or ask is None:
            return None
        last_price, last_size = self._last.get(symbol, ((bid[0] + ask[0]) // 2, 0))
        return marketdata.Quote(
            symbol=symbol,
            venue=VENUE,
            bid=scale.price(bid[0]),
            ask=scale.price(ask[0]),
            bid_size=scale.qty(bid[1]),
            ask_size=scale.qty(ask[1]),
            last=scale.price(last_price),
            last_size=scale.qty(last_size),
            volume=scale.qty(self._volume.get(symbol, 0)),
            ts=ts,
            seq=seq,
        )


def _rejected(ts: int, order_id: str, account_id: str, symbol: str) -> Output:
    return (
        subjects.order_outcome("rejected", order_id),
        orders.OrderRejected(
            ts=ts,
            order_id=order_id,
            account_id=account_id,
            request="new",
            code=orders.RejectCode.UNKNOWN_SYMBOL,
            message=f"{symbol} is not traded on the bourse venue",
            symbol=symbol,
            source="engine",
        ),
    )
