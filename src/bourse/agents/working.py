"""What a market maker has in the market, kept from its own order events; a pure core.

The agent's shell tells `WorkingOrders` what it sends (`placed`, `cancelling`, `adopt`) and
hands it every ORDERS outcome in stream order (`apply`); the core keeps each order's state and
the remaining quantity, and the maker's position per symbol. `apply` returns what changed, so
the shell knows when to quote again and which refusals to report.

An order is *pending* from the moment the maker decides to send it until the engine accepts
it, then *working*, then *cancelling* once a cancel is sent; it is forgotten when it is
filled, cancelled or refused. Pending and working orders are what `plan()` may keep; every
order not yet forgotten still holds what accounts reserved for it (cash, or the coins of a
sell), which is why `reserved_sells` counts the cancelling ones too.

Positions come from two places. Executions are seen first; accounts' `PositionChanged`
reports, on `positions.<account>.<symbol>`, follow and are the authority. Each report carries
the match id of the fill it includes, so the position is the last report plus the fills seen
with a later match id: exact whichever arrives first, and a missed execution is corrected by
the next report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from bourse.agents.market_maker import Quote, WorkingOrder
from bourse.model import orders
from bourse.model.orders import RejectCode

ZERO = Decimal(0)

OrderState = Literal["pending", "working", "cancelling"]
OutcomeKind = Literal["accepted", "filled", "closed", "refused", "cancel_refused"]


@dataclass(slots=True)
class TrackedOrder:
    order_id: str
    symbol: str
    side: orders.Side
    price: Decimal
    qty: Decimal
    leaves: Decimal
    state: OrderState = "pending"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one event did to the maker's orders or position; `rejection` is set for
    `refused` (a new order) and `cancel_refused`."""

    kind: OutcomeKind
    symbol: str
    rejection: orders.OrderRejected | None = None


@dataclass(slots=True)
class _Position:
    reported: Decimal = ZERO  # accounts' last report
    reported_match: int = 0  # the match id that report includes
    # Fills seen in executions and not yet in a report: (match id, order id) -> signed qty.
    unreported: dict[tuple[int, str], Decimal] = field(default_factory=dict)

    @property
    def qty(self) -> Decimal:
        return self.reported + sum(self.unreported.values(), ZERO)


class WorkingOrders:
    """One account's orders and positions, from what it sent and what came back."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self._orders: dict[str, TrackedOrder] = {}
        self._adopted: dict[str, str] = {}  # an earlier run's orders being cancelled -> symbol
        self._positions: dict[str, _Position] = {}

    # ---- what the maker sends ----

    def placed(self, order_id: str, symbol: str, quote: Quote) -> None:
        """The maker is about to send this order (record it first: answers can be quick)."""
        side: orders.Side = "buy" if quote.side == "buy" else "sell"
        self._orders[order_id] = TrackedOrder(
            order_id, symbol, side, quote.price, quote.qty, quote.qty
        )

    def cancelling(self, order_id: str) -> None:
        order = self._orders.get(order_id)
        if order is not None:
            order.state = "cancelling"

    def adopt(self, order_id: str, symbol: str) -> None:
        """An order an earlier run may have left resting; the maker is cancelling it."""
        if order_id not in self._orders:
            self._adopted[order_id] = symbol

    def forget(self, order_id: str) -> None:
        """The maker decided not to send an order after all."""
        self._orders.pop(order_id, None)

    # ---- what comes back ----

    def apply(self, event: orders.OrdersEvent) -> Outcome | None:
        """Take one ORDERS event (any account's); None when it changes nothing here."""
        match event:
            case orders.OrderAccepted(account_id=account, order_id=oid) if (
                account == self.account_id
            ):
                order = self._orders.get(oid)
                if order is None:
                    return None
                if order.state == "pending":
                    order.state = "working"
                return Outcome("accepted", order.symbol)
            case orders.Execution(account_id=account) if account == self.account_id:
                return self._execution(event)
            case orders.OrderCancelled(account_id=account, order_id=oid) if (
                account == self.account_id
            ):
                return self._close(oid, "closed")
            case orders.OrderRejected(account_id=account) if account == self.account_id:
                return self._rejected(event)
        return None

    def position_reported(self, symbol: str, qty: Decimal, match_id: int) -> None:
        """Accounts' position after the fill with `match_id` (0: no fill yet)."""
        position = self._positions.setdefault(symbol, _Position())
        if match_id < position.reported_match:
            return  # an older report than one already taken
        position.reported, position.reported_match = qty, match_id
        position.unreported = {
            key: qty for key, qty in position.unreported.items() if key[0] > match_id
        }

    # ---- queries ----

    def position(self, symbol: str) -> Decimal:
        found = self._positions.get(symbol)
        return found.qty if found is not None else ZERO

    def live(self, symbol: str) -> list[WorkingOrder]:
        """Orders that will rest unless cancelled: what `plan()` may keep."""
        return [
            WorkingOrder(o.order_id, o.side, o.price, o.leaves)
            for o in self._orders.values()
            if o.symbol == symbol and o.state != "cancelling"
        ]

    def reserved_sells(self, symbol: str) -> Decimal:
        """Quantity of every sell not yet finished (accounts still holds it back)."""
        return sum(
            (o.leaves for o in self._orders.values() if o.symbol == symbol and o.side == "sell"),
            ZERO,
        )

    def uncancelled(self) -> list[str]:
        return [oid for oid, o in self._orders.items() if o.state != "cancelling"]

    def order_ids(self, symbol: str) -> list[str]:
        """Every order of `symbol` that may still rest, adopted ones included."""
        adopted = [oid for oid, s in self._adopted.items() if s == symbol]
        return [oid for oid, o in self._orders.items() if o.symbol == symbol] + adopted

    @property
    def adopted(self) -> int:
        return len(self._adopted)

    def __len__(self) -> int:
        """Orders not known to be finished, adopted ones included."""
        return len(self._orders) + len(self._adopted)

    def get(self, order_id: str) -> TrackedOrder | None:
        return self._orders.get(order_id)

    # ---- internals ----

    def _execution(self, fill: orders.Execution) -> Outcome:
        # Every fill of the account moves its position, an adopted order's as well.
        position = self._positions.setdefault(fill.symbol, _Position())
        if fill.match_id > position.reported_match:
            signed = fill.qty if fill.side == "buy" else -fill.qty
            position.unreported[(fill.match_id, fill.order_id)] = signed
        order = self._orders.get(fill.order_id)
        if order is not None:
            order.leaves = fill.leaves_qty
            if fill.leaves_qty <= 0:
                del self._orders[fill.order_id]
        elif fill.leaves_qty <= 0:
            self._adopted.pop(fill.order_id, None)
        return Outcome("filled", fill.symbol)

    def _close(
        self, order_id: str, kind: OutcomeKind, rejection: orders.OrderRejected | None = None
    ) -> Outcome | None:
        order = self._orders.pop(order_id, None)
        if order is not None:
            return Outcome(kind, order.symbol, rejection)
        symbol = self._adopted.pop(order_id, None)
        if symbol is not None:
            return Outcome(kind, symbol, rejection)
        return None

    def _rejected(self, rejection: orders.OrderRejected) -> Outcome | None:
        oid = rejection.order_id
        if rejection.request == "new":
            return self._close(oid, "refused", rejection)
        if rejection.request != "cancel":
            return None  # the maker never replaces
        if rejection.code is RejectCode.UNKNOWN_ORDER:
            # Nothing open under this id any more: it was filled or cancelled already (its
            # outcome came first), or it never reached the journal (an adopted id).
            return self._close(oid, "cancel_refused", rejection)
        order = self._orders.get(oid)
        if order is None:
            return None
        order.state = "working"  # still resting: the next plan cancels it again
        return Outcome("cancel_refused", order.symbol, rejection)
