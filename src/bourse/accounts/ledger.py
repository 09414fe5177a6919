"""The ledger: one account's cash, reservations and positions, as a pure core.

Money is exact: `Decimal` throughout, never rounded inside the ledger (a notional is price x
quantity exactly), so cash plus positions valued at trade prices is conserved across
accounts to the last digit. The ledger knows nothing of NATS or time; the accounts service
folds the ORDERS journal into it.

A cash account: buying power is cash minus what open buy orders have reserved; a sell
reserves the shares it would deliver, so one position cannot be sold twice. Shorting is an
account setting (off by default); a short sale reserves cash as margin.

Every pre-trade check asks for the reserved totals, so the ledger keeps them as running sums
updated by each command (reserve, release, fill, hold), not summed over the open orders on
each question. Reservations and holds are therefore changed only through those commands.
"""

from __future__ import annotations

from collections import Counter
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


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int), f"not a finite amount: {value}"
    return exponent


class RunningSum:
    """The sum of a changing collection of Decimal terms, equal to `sum(terms, ZERO)` over the
    terms present: in value and in exponent (`100.00`, not `100`, only while a term has two
    places). The text of a total shows in rejection messages and balances, so it must not
    depend on terms that came and went, nor on the order they came in."""

    __slots__ = ("_exponents", "_value")

    def __init__(self) -> None:
        self._value = ZERO
        self._exponents: Counter[int] = Counter()  # how many terms have each exponent

    def __len__(self) -> int:
        return self._exponents.total()

    def add(self, term: Decimal) -> None:
        self._value += term
        self._exponents[_exponent(term)] += 1

    def remove(self, term: Decimal) -> None:
        """Take away a term added before (the same value, so the same exponent)."""
        self._value -= term
        exponent = _exponent(term)
        left = self._exponents[exponent] - 1
        if left:
            self._exponents[exponent] = left
        else:
            del self._exponents[exponent]

    @property
    def value(self) -> Decimal:
        # An exact sum has the smallest exponent of its terms (and ZERO's, 0); what was added
        # and taken away since may have left a smaller one, which the value's digits allow
        # dropping exactly.
        exponent = min(0, min(self._exponents, default=0))
        value = self._value
        if _exponent(value) != exponent:
            value = value.quantize(Decimal((0, (1,), exponent)))
        return value


# Not slotted: the running sums are attributes outside the dataclass fields, so they are not
# part of what msgspec encodes (snapshots hold exactly the fields).
@dataclass
class Ledger:
    account_id: str
    cash: Decimal = ZERO
    shorting_enabled: bool = False
    realized_pnl: Decimal = ZERO
    positions: dict[str, Position] = field(default_factory=dict)
    # Read freely; change only through the commands below, which keep the running sums.
    reservations: dict[str, Reservation] = field(default_factory=dict)
    # Extra cash held for a replace in flight (the larger of old and new until it resolves).
    holds: dict[str, Decimal] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Also run when msgspec decodes a snapshot: the sums are rebuilt from what it holds.
        self._reserved_cash = RunningSum()  # reservations' cash, and holds
        self._reserved_shares: dict[str, RunningSum] = {}  # per symbol, sells' shares
        for reservation in self.reservations.values():
            self._count(reservation)
        for amount in self.holds.values():
            self._reserved_cash.add(amount)

    # ---- queries ----

    @property
    def reserved_cash(self) -> Decimal:
        return self._reserved_cash.value

    @property
    def buying_power(self) -> Decimal:
        return self.cash - self.reserved_cash

    def position(self, symbol: str) -> Position:
        found = self.positions.get(symbol)
        return found if found is not None else Position(symbol)

    def reserved_shares(self, symbol: str) -> Decimal:
        shares = self._reserved_shares.get(symbol)
        return shares.value if shares is not None else ZERO

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

    def deposit_asset(self, symbol: str, qty: Decimal, price: Decimal) -> Decimal:
        """Units transferred in at cost basis `price`: the position nets as a buy at that
        price would (covering a short realizes its P&L), cash does not move; returns the
        realized P&L."""
        if not (qty.is_finite() and qty > 0 and price.is_finite() and price > 0):
            raise ValueError(f"an asset deposit needs qty and price > 0, got {qty} at {price}")
        return self._net(symbol, qty, price)

    def reserve(self, order_id: str, symbol: str, side: int, qty: Decimal, price: Decimal) -> None:
        short_qty = ZERO
        if side < 0:
            short_qty = max(ZERO, qty - self.sellable(symbol))
        previous = self.reservations.get(order_id)
        if previous is not None:
            self._uncount(previous)
        reservation = Reservation(order_id, symbol, side, price, qty, short_qty)
        self.reservations[order_id] = reservation
        self._count(reservation)

    def release(self, order_id: str) -> Reservation | None:
        """Drop what a finished (cancelled, rejected, filled) order still holds."""
        reservation = self.reservations.pop(order_id, None)
        if reservation is not None:
            self._uncount(reservation)
        return reservation

    def rename_reservation(
        self, order_id: str, new_order_id: str, qty: Decimal, price: Decimal
    ) -> None:
        """A replaced order keeps its reservation under its new id, resized."""
        old = self.reservations[order_id]
        self.release(order_id)
        self.reserve(new_order_id, old.symbol, old.side, qty, price)

    def hold(self, order_id: str, amount: Decimal) -> None:
        """Hold `amount` more cash for the replace of `order_id` in flight."""
        previous = self.holds.get(order_id)
        if previous is not None:
            self._reserved_cash.remove(previous)
        self.holds[order_id] = amount
        self._reserved_cash.add(amount)

    def release_hold(self, order_id: str) -> None:
        """The replace of `order_id` is resolved: its extra cash is free again."""
        amount = self.holds.pop(order_id, None)
        if amount is not None:
            self._reserved_cash.remove(amount)

    def apply_fill(
        self, order_id: str, symbol: str, side: int, qty: Decimal, price: Decimal
    ) -> Decimal:
        """Book a fill: cash moves by price x qty, the position nets; returns realized P&L."""
        reservation = self.reservations.get(order_id)
        if reservation is not None:
            self._uncount(reservation)
            if side < 0:
                covered = min(qty, reservation.remaining - reservation.short_qty)
                reservation.short_qty -= max(ZERO, qty - covered)
                reservation.short_qty = max(ZERO, reservation.short_qty)
            reservation.remaining -= qty
            if reservation.remaining <= 0:
                del self.reservations[order_id]
            else:
                self._count(reservation)
        self.cash -= side * qty * price
        return self._net(symbol, side * qty, price)

    def _count(self, reservation: Reservation) -> None:
        self._reserved_cash.add(reservation.cash)
        if reservation.side < 0:  # a buy reserves no shares (it would add ZERO)
            shares = self._reserved_shares.get(reservation.symbol)
            if shares is None:
                shares = self._reserved_shares[reservation.symbol] = RunningSum()
            shares.add(reservation.shares)

    def _uncount(self, reservation: Reservation) -> None:
        self._reserved_cash.remove(reservation.cash)
        if reservation.side < 0:
            shares = self._reserved_shares[reservation.symbol]
            shares.remove(reservation.shares)
            if not shares:
                del self._reserved_shares[reservation.symbol]

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
