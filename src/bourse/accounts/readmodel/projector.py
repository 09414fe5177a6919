"""The projector core: ORDERS and POSITIONS messages in, read-model row changes out.

Pure: it reads the rows it needs through a `View` and returns the changes as values; the
shell (`projection.py`) supplies the view over its open transaction and writes the changes.
Given the same rows and message it always returns the same changes.

Order lifecycle, in Alpaca's statuses:

    OrderSubmitted   -> pending_new
    OrderValidated   -> accepted (and the order takes its client_order_id)
    OrderAccepted    -> new
    CancelValidated  -> pending_cancel     (a rejected cancel puts the working status back)
    ReplaceValidated -> pending_replace    (likewise)
    Execution        -> partially_filled, or filled when nothing is left
    OrderCancelled   -> canceled, or expired for reason "expired"
    OrderReplaced    -> replaced; the new order (`replaces` the old) starts working
    OrderRejected    -> rejected (for request "new")

A replacement's quantity is the whole order's, as the engine keeps it: the new order carries
over its predecessor's filled quantity and notional, so filled_qty + leaves = qty throughout.
It keeps the predecessor's time in force, as the engine does (OrderReplaced carries none).

Cash is folded from the ORDERS stream (deposits and fills, exactly as the accounts ledger
does), not copied from PositionChanged: the two streams are consumed independently, and an
absolute cash figure from POSITIONS applied before a deposit it already includes would count
the deposit twice. Positions and realized P&L, which only POSITIONS carries, come from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from decimal import Context, Decimal
from typing import Protocol, TypeVar

import msgspec

from bourse.accounts.readmodel.rows import (
    Account,
    Fill,
    Order,
    OrderStatus,
    PendingReplace,
    Position,
)
from bourse.model import orders, positions

ReadModelEvent = orders.OrdersEvent | positions.PositionChanged

ZERO = Decimal(0)
# Average prices carry 28 significant digits where the division does not terminate, like the
# ledger's average entry price; fixed here so the thread's decimal context cannot change them.
_AVERAGE = Context(prec=28)
DEFAULT_ASSET_CLASS = "us_equity"


class PositionClosed(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    symbol: str


class ReplacesSettled(msgspec.Struct, frozen=True, kw_only=True):
    """The order is finished: forget every replace still pending against it."""

    order_id: str


Change = Account | Order | Fill | Position | PendingReplace | PositionClosed | ReplacesSettled


class View(Protocol):
    """The rows the projector reads, as they stand after every change returned so far."""

    def account(self, account_id: str) -> Account | None: ...

    def order(self, order_id: str) -> Order | None: ...

    def pending_replace(self, new_order_id: str) -> PendingReplace | None: ...

    def client_order_id_holder(self, account_id: str, client_order_id: str) -> str | None:
        """The id of the order holding this client_order_id in the account, if any."""
        ...


class Projector:
    def __init__(self, asset_classes: Mapping[str, str]) -> None:
        self._asset_classes = dict(asset_classes)

    def changes(self, event: ReadModelEvent, seq: int, view: View) -> list[Change]:
        """What applying `event` (at stream sequence `seq`) changes, in order."""
        match event:
            case orders.OrderSubmitted():
                return self._submitted(event, view)
            case orders.OrderValidated(order=order):
                return self._validated(event.ts, order, view)
            case orders.OrderAccepted(order_id=order_id):
                return _moved(view.order(order_id), event.ts, {"pending_new", "accepted"}, "new")
            case orders.CancelValidated(order_id=order_id):
                return _moved(view.order(order_id), event.ts, _WORKING, "pending_cancel")
            case orders.ReplaceValidated(request=request):
                return _replace_validated(event, request, view)
            case orders.OrderRejected():
                return _rejected(event, view)
            case orders.Execution():
                return _execution(event, seq, view)
            case orders.OrderCancelled():
                return _cancelled(event, view)
            case orders.OrderReplaced():
                return _replaced(event, view)
            case orders.AccountOpened():
                return _opened(event, view)
            case orders.CashDeposited(account_id=account_id, amount=amount):
                account = view.account(account_id)
                # As the ledger: only into an opened account, only positive amounts.
                if account is None or account.status != "ACTIVE":
                    return []
                if not amount.is_finite() or amount <= 0:
                    return []
                return [_replace(account, cash=account.cash + amount, updated_at=event.ts)]
            case orders.TradingHalted(account_id=account_id, reason=reason):
                account = _account_or_placeholder(view, account_id, event.ts)
                return [
                    _replace(
                        account, trading_blocked=True, blocked_reason=reason, updated_at=event.ts
                    )
                ]
            case orders.TradingResumed(account_id=account_id):
                account = _account_or_placeholder(view, account_id, event.ts)
                return [
                    _replace(
                        account, trading_blocked=False, blocked_reason=None, updated_at=event.ts
                    )
                ]
            case positions.PositionChanged():
                return _position(event, view)
            case orders.CancelRequested() | orders.ReplaceRequested():
                return []  # requests change nothing until accounts decides on them
            case orders.AssetDeposited():
                return []  # cash does not move; the position comes on POSITIONS
            case orders.SessionClosed():
                return []  # the engine's expiries (OrderCancelled) say what it changed

    def _submitted(self, event: orders.OrderSubmitted, view: View) -> list[Change]:
        if view.order(event.order_id) is not None:
            return []  # an order id is used once; a second submission is not a new order
        return [self._new_order(event)]

    def _validated(self, ts: int, submitted: orders.OrderSubmitted, view: View) -> list[Change]:
        order = view.order(submitted.order_id)
        if order is None:
            # The submission is older than the stream's retention: the validation repeats it.
            order = self._new_order(submitted)
        if order.status == "pending_new":
            order = _replace(order, status="accepted", updated_at=ts)
        return [_claim_client_order_id(order, view)]

    def _new_order(self, event: orders.OrderSubmitted) -> Order:
        return new_order_row(event, self._asset_classes.get(event.symbol, DEFAULT_ASSET_CLASS))


def new_order_row(event: orders.OrderSubmitted, asset_class: str) -> Order:
    """The row of an order just submitted (`pending_new`)."""
    return Order(
        id=event.order_id,
        client_order_id=event.client_order_id,
        account_id=event.account_id,
        symbol=event.symbol,
        asset_class=asset_class,
        side=event.side,
        type=event.kind,
        time_in_force=event.time_in_force,
        qty=event.qty,
        filled_qty=ZERO,
        filled_notional=ZERO,
        filled_avg_price=None,
        limit_price=event.limit_price,
        stop_price=event.stop_price,
        status="pending_new",
        created_at=event.ts,
        updated_at=event.ts,
        submitted_at=event.ts,
    )


_Struct = TypeVar("_Struct", Account, Order)
_WORKING: frozenset[str] = frozenset({"pending_new", "accepted", "new", "partially_filled"})


def _replace(row: _Struct, **changes: object) -> _Struct:
    return msgspec.structs.replace(row, **changes)


def _working_status(order: Order) -> OrderStatus:
    return "partially_filled" if order.filled_qty > 0 else "new"


def _moved(
    order: Order | None, ts: int, from_statuses: AbstractSet[str], to: OrderStatus
) -> list[Change]:
    if order is None or order.status not in from_statuses:
        return []
    return [_replace(order, status=to, updated_at=ts)]


def _claim_client_order_id(order: Order, view: View) -> Order:
    if order.holds_client_order_id:
        return order
    holder = view.client_order_id_holder(order.account_id, order.client_order_id)
    if holder is not None and holder != order.id:
        return order  # a duplicate the accounts service is about to reject, or a race
    return _replace(order, holds_client_order_id=True)


def _finished(order: Order) -> list[Change]:
    """The order and, when it just reached a final status, the end of its pending replaces."""
    if order.is_open:
        return [order]
    return [order, ReplacesSettled(order_id=order.id)]


def _replace_validated(
    event: orders.ReplaceValidated, request: orders.ReplaceRequested, view: View
) -> list[Change]:
    pending = PendingReplace(
        new_order_id=request.new_order_id,
        order_id=request.order_id,
        new_client_order_id=request.new_client_order_id,
        ts=event.ts,
    )
    return [pending, *_moved(view.order(request.order_id), event.ts, _WORKING, "pending_replace")]


def _rejected(event: orders.OrderRejected, view: View) -> list[Change]:
    order = view.order(event.order_id)
    # A request about another account's order is refused as unknown: it says nothing of it.
    if order is None or order.account_id != event.account_id:
        return []
    if event.request == "new":
        if not order.is_open:
            return []
        return _finished(
            _replace(
                order,
                status="rejected",
                reject_code=str(event.code),
                reject_reason=event.message,
                failed_at=event.ts,
                updated_at=event.ts,
            )
        )
    pending: OrderStatus = "pending_cancel" if event.request == "cancel" else "pending_replace"
    if order.status != pending:
        return []
    return [_replace(order, status=_working_status(order), updated_at=event.ts)]


def _execution(event: orders.Execution, seq: int, view: View) -> list[Change]:
    side = 1 if event.side == "buy" else -1
    out: list[Change] = [
        Fill(
            order_id=event.order_id,
            match_id=event.match_id,
            account_id=event.account_id,
            symbol=event.symbol,
            side=event.side,
            price=event.price,
            qty=event.qty,
            leaves_qty=event.leaves_qty,
            liquidity=event.liquidity,
            ts=event.ts,
            seq=seq,
        )
    ]
    account = view.account(event.account_id)
    if account is not None and account.status == "ACTIVE":
        cash = account.cash - side * event.qty * event.price
        out.append(_replace(account, cash=cash, updated_at=event.ts))
    order = view.order(event.order_id)
    if order is None:
        return out
    filled_qty = order.filled_qty + event.qty
    notional = order.filled_notional + event.qty * event.price
    status: OrderStatus
    if event.leaves_qty == 0:
        status = "filled"
    elif order.status in ("pending_cancel", "pending_replace"):
        status = order.status
    else:
        status = "partially_filled"
    updated = _replace(
        order,
        filled_qty=filled_qty,
        filled_notional=notional,
        filled_avg_price=_AVERAGE.divide(notional, filled_qty),
        status=status,
        filled_at=event.ts if status == "filled" else None,
        updated_at=event.ts,
    )
    out.extend(_finished(updated))
    return out


def _cancelled(event: orders.OrderCancelled, view: View) -> list[Change]:
    order = view.order(event.order_id)
    if order is None or not order.is_open:
        return []
    if event.reason == "expired":
        done = _replace(order, status="expired", expired_at=event.ts, updated_at=event.ts)
    else:
        done = _replace(order, status="canceled", canceled_at=event.ts, updated_at=event.ts)
    return _finished(done)


def _replaced(event: orders.OrderReplaced, view: View) -> list[Change]:
    old = view.order(event.order_id)
    if old is None or view.order(event.new_order_id) is not None:
        return []
    pending = view.pending_replace(event.new_order_id)
    # Without the request (older than the stream's retention) the new order id stands in.
    client_order_id = pending.new_client_order_id if pending else ""
    new = _replace(
        old,
        id=event.new_order_id,
        client_order_id=client_order_id or event.new_order_id,
        holds_client_order_id=False,
        qty=event.qty,
        limit_price=event.limit_price,
        stop_price=event.stop_price,
        created_at=event.ts,
        updated_at=event.ts,
        submitted_at=event.ts,
        replaces=old.id,
    )
    new = _replace(new, status=_working_status(new))
    replaced = _replace(
        old,
        status="replaced",
        replaced_by=event.new_order_id,
        replaced_at=event.ts,
        updated_at=event.ts,
    )
    return [*_finished(replaced), _claim_client_order_id(new, view)]


def _opened(event: orders.AccountOpened, view: View) -> list[Change]:
    account = view.account(event.account_id)
    if account is not None and account.status == "ACTIVE":
        return []  # opening twice changes nothing, as in the ledger
    if account is None:
        account = _placeholder(event.account_id, event.ts)
    return [
        _replace(
            account,
            status="ACTIVE",
            created_at=event.ts,
            updated_at=event.ts,
            shorting_enabled=event.shorting_enabled,
        )
    ]


def _placeholder(account_id: str, ts: int) -> Account:
    return Account(
        id=account_id,
        status="ONBOARDING",
        created_at=None,
        updated_at=ts,
        trading_blocked=False,
        blocked_reason=None,
        shorting_enabled=False,
        cash=ZERO,
        realized_pnl=ZERO,
    )


def _account_or_placeholder(view: View, account_id: str, ts: int) -> Account:
    account = view.account(account_id)
    return account if account is not None else _placeholder(account_id, ts)


def _position(event: positions.PositionChanged, view: View) -> list[Change]:
    account = _account_or_placeholder(view, event.account_id, event.ts)
    out: list[Change] = [_replace(account, realized_pnl=event.realized_pnl, updated_at=event.ts)]
    if event.qty == 0:
        out.append(PositionClosed(account_id=event.account_id, symbol=event.symbol))
    else:
        out.append(
            Position(
                account_id=event.account_id,
                symbol=event.symbol,
                qty=event.qty,
                avg_entry_price=event.avg_entry_price,
                cost_basis=event.qty * event.avg_entry_price,
                updated_at=event.ts,
            )
        )
    return out
