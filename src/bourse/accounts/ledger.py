"""The ledger: one account's cash, reservations and positions, as a pure core.

Money is exact: `Decimal` throughout, never rounded inside the ledger (a notional is price x
quantity exactly), so cash plus positions valued at trade prices is conserved across
accounts to the last digit. The ledger knows nothing of NATS or time; the accounts service
folds the ORDERS journal into it.

A cash account: buying power is cash minus what open buy orders have reserved; a sell
reserves the shares it would deliver, so one position cannot be sold twice. Shorting is an
account setting (off by default); a short sale reserves cash as margin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(slots=True)
class Position:
    """An open position. The average entry price is exact where the division terminates and
    carries 28 significant digits otherwise (cash and quantities are always exact)."""

    symbol: str
    qty: Decimal = ZERO  # signed: negative is short
    avg_entry_price: Decimal = ZERO

    @property
    def cost_basis(self) -> Decimal:
        return self.qty * self.avg_entry_price

    def market_value(self, price: Decimal) -> Decimal:
        return self.qty * price

    def unrealized_pnl(self, price: Decimal) -> Decimal:
        return self.qty * (price - self.avg_entry_price)


@dataclass(slots=True)
class Reservation:
    """What an open order holds back: cash for buys (and short sells), shares for sells."""

    order_id: str
    symbol: str
    side: int  # +1 buy, -1 sell
    price: Decimal  # the price the cash was reserved at (limit, or protection for market)
    remaining: Decimal  # quantity still open
    short_qty: Decimal = ZERO  # part of a sell that opens a short (margin reserved)

    @property
    def cash(self) -> Decimal:
        if self.side > 0:
            return self.price * self.remaining
        return self.price * min(self.short_qty, self.remaining)

    @property
    def shares(self) -> Decimal:
        return max(ZERO, self.remaining - self.short_qty) if self.side < 0 else ZERO


@dataclass(slots=True)
class Ledger:
    account_id: str
    cash: Decimal = ZERO
    shorting_enabled: bool = False
    realized_pnl: Decimal = ZERO
    positions: dict[str, Position] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    # Extra cash held for a replace in flight (the larger of old and new until it resolves).
    holds: dict[str, Decimal] = field(default_factory=dict)

    # ---- queries ----

    @property
    def reserved_cash(self) -> Decimal:
        reserved = sum((r.cash for r in self.reservations.values()), ZERO)
        return reserved + sum(self.holds.values(), ZERO)

    @property
    def buying_power(self) -> Decimal:
        return self.cash - self.reserved_cash

    def position(self, symbol: str) -> Position:
        found = self.positions.get(symbol)
        return found if found is not None else Position(symbol)

    def reserved_shares(self, symbol: str) -> Decimal:
        return sum((r.shares for r in self.reservations.values() if r.symbol == symbol), ZERO)

    def sellable(self, symbol: str) -> Decimal:
        """Shares of a long position not already promised to open sell orders."""
        return max(ZERO, self.position(symbol).qty) - self.reserved_shares(symbol)

    def equity(self, marks: dict[str, Decimal]) -> Decimal:
        """Cash plus positions marked at `marks` (average entry where a mark is missing)."""
        return self.cash + sum(
            (p.market_value(marks.get(s, p.avg_entry_price)) for s, p in self.positions.items()),
            ZERO,
        )

    # ---- commands (the caller has validated; these only keep the books) ----

    def deposit(self, amount: Decimal) -> None:
        if not amount.is_finite() or amount <= 0:
            raise ValueError(f"deposit must be a positive amount, got {amount}")
        self.cash += amount

    def reserve(self, order_id: str, symbol: str, side: int, qty: Decimal, price: Decimal) -> None:
        short_qty = ZERO
        if side < 0:
            short_qty = max(ZERO, qty - self.sellable(symbol))
        self.reservations[order_id] = Reservation(order_id, symbol, side, price, qty, short_qty)

    def release(self, order_id: str) -> Reservation | None:
        """Drop what a finished (cancelled, rejected, filled) order still holds."""
        return self.reservations.pop(order_id, None)

    def rename_reservation(
        self, order_id: str, new_order_id: str, qty: Decimal, price: Decimal
    ) -> None:
        """A replaced order keeps its reservation under its new id, resized."""
        old = self.reservations.pop(order_id)
        self.reserve(new_order_id, old.symbol, old.side, qty, price)

    def apply_fill(
        self, order_id: str, symbol: str, side: int, qty: Decimal, price: Decimal
    ) -> Decimal:
        """Book a fill: cash moves by price x qty, the position nets; returns realized P&L."""
        reservation = self.reservations.get(order_id)
        if reservation is not None:
            if side < 0:
                covered = min(qty, reservation.remaining - reservation.short_qty)
                reservation.short_qty -= max(ZERO, qty - covered)
                reservation.short_qty = max(ZERO, reservation.short_qty)
            reservation.remaining -= qty
            if reservation.remaining <= 0:
                del self.reservations[order_id]
        self.cash -= side * qty * price
        return self._net(symbol, side * qty, price)

    def _net(self, symbol: str, signed_qty: Decimal, price: Decimal) -> Decimal:
        position = self.positions.get(symbol)
        if position is None:
            position = self.positions[symbol] = Position(symbol)
        realized = ZERO
        old = position.qty
        new = old + signed_qty
        if old == 0 or (old > 0) == (signed_qty > 0):
            # Opening or adding: the average entry price moves to the weighted average.
            position.avg_entry_price = (old * position.avg_entry_price + signed_qty * price) / new
        else:
            closed = min(abs(old), abs(signed_qty))
            direction = 1 if old > 0 else -1
            realized = closed * (price - position.avg_entry_price) * direction
            self.realized_pnl += realized
            if new != 0 and (new > 0) != (old > 0):
                position.avg_entry_price = price  # flipped: the rest opens at this price
        position.qty = new
        if new == 0:
            del self.positions[symbol]
        return realized
