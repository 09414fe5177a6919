"""The accounts service core: pre-trade checks, reservations and the ledger, as one fold.

It reads the ORDERS journal in stream order (requests from the gateway, administration, and
the engine's outcomes) and returns what to publish: `orders.validated.<id>` or
`orders.rejected.<id>` for each request, `positions.<account>.<symbol>` after each fill.
Everything it decides is a function of the journal alone (the gateway journals the
reference price with each order), so a replay gives the same decisions, byte for byte.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

import msgspec

from bourse.accounts.ledger import ZERO, Ledger
from bourse.model import orders, positions, subjects
from bourse.model.instruments import AssetClass, Instrument
from bourse.model.orders import RejectCode

Output = tuple[str, orders.OrdersEvent | positions.PositionChanged]


class AccountsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Pre-trade limits. Collars are fractions of the reference price (0.10 = 10 %)."""

    max_order_notional: Decimal = Decimal("1000000")
    price_collar: Decimal = Decimal("0.10")
    market_collar: Decimal = Decimal("0.05")


@dataclass(slots=True)
class OpenOrder:
    order_id: str
    account_id: str
    symbol: str
    side: int
    kind: str
    qty: Decimal
    leaves: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    reserve_price: Decimal
    reference_price: Decimal | None


def deposit_is_valid(event: orders.AssetDeposited) -> bool:
    """A deposit of units the ledgers book (accounts', and the risk engine's copy): a positive
    quantity at a positive cost basis. Accounts also ignores a symbol it does not list; the
    risk engine lists none, so its copy relies on the publishers (the gateway's admin
    endpoint, the market makers) checking the symbol, as both do, and on the lot size too."""
    qty, price = event.qty, event.price
    return qty.is_finite() and qty > 0 and price.is_finite() and price > 0


class _Refused(Exception):
    def __init__(self, code: RejectCode, message: str) -> None:
        self.code = code
        self.message = message


class AccountsCore:
    def __init__(self, instruments: tuple[Instrument, ...], config: AccountsConfig | None = None):
        self.instruments = {i.symbol: i for i in instruments}
        self.config = config or AccountsConfig()
        self.ledgers: dict[str, Ledger] = {}
        self.halted: dict[str, str] = {}
        self.open_orders: dict[str, OpenOrder] = {}
        self.client_order_ids: dict[tuple[str, str], str] = {}

    # ---- the fold ----

    def apply(self, event: orders.OrdersEvent) -> list[Output]:
        match event:
            case orders.OrderSubmitted():
                return [self._submit(event)]
            case orders.CancelRequested():
                return [self._cancel(event)]
            case orders.ReplaceRequested():
                return [self._replace(event)]
            case orders.AccountOpened(account_id=account):
                self.ledgers.setdefault(
                    account, Ledger(account, shorting_enabled=event.shorting_enabled)
                )
            case orders.CashDeposited(account_id=account, amount=amount):
                if account in self.ledgers and amount.is_finite() and amount > 0:
                    self.ledgers[account].deposit(amount)
            case orders.AssetDeposited():
                return self._asset_deposited(event)
            case orders.TradingHalted(account_id=account, reason=reason):
                self.halted[account] = reason
            case orders.TradingResumed(account_id=account):
                self.halted.pop(account, None)
            case orders.Execution():
                return self._execution(event)
            case orders.OrderCancelled(order_id=oid):
                self._close(oid)
            case orders.OrderReplaced():
                self._replaced(event)
            case orders.OrderRejected(order_id=oid, request=request, source="engine"):
                if request == "new":
                    self._close(oid)
                elif request == "replace":
                    self._drop_hold(oid)
            case _:
                pass  # accounts' own outputs and the engine's acceptances change nothing here
        return []

    def state_digest(self) -> str:
        digest = hashlib.sha256()
        for account in sorted(self.ledgers):
            ledger = self.ledgers[account]
            digest.update(
                f"{account}|{ledger.cash}|{ledger.realized_pnl}|{ledger.shorting_enabled}".encode()
            )
            for symbol in sorted(ledger.positions):
                p = ledger.positions[symbol]
                digest.update(f"|{symbol},{p.qty},{p.avg_entry_price}".encode())
            for oid in sorted(ledger.reservations):
                r = ledger.reservations[oid]
                digest.update(f"|{oid},{r.side},{r.price},{r.remaining},{r.short_qty}".encode())
            for oid in sorted(ledger.holds):
                digest.update(f"|h{oid},{ledger.holds[oid]}".encode())
        for oid in sorted(self.open_orders):
            digest.update(repr(self.open_orders[oid]).encode())
        digest.update(repr(sorted(self.halted.items())).encode())
        return digest.hexdigest()

    # ---- requests ----

    def _submit(self, order: orders.OrderSubmitted) -> Output:
        try:
            ledger = self._ledger(order.account_id)
            key = (order.account_id, order.client_order_id)
            if key in self.client_order_ids:
                raise _Refused(
                    RejectCode.DUPLICATE_CLIENT_ORDER_ID,
                    f"client_order_id {order.client_order_id!r} was already used by this account",
                )
            instrument = self._instrument(order.symbol)
            side = 1 if order.side == "buy" else -1
            self._check_qty(instrument, order.qty)
            self._check_prices(instrument, order.kind, order.limit_price, order.stop_price)
            reserve_price, protection = self._reserve_price(
                instrument,
                side,
                order.kind,
                order.limit_price,
                order.stop_price,
                order.reference_price,
            )
            self._check_affordable(ledger, instrument, side, order.qty, reserve_price)
        except _Refused as refused:
            return _rejection(order, refused)
        self.client_order_ids[(order.account_id, order.client_order_id)] = order.order_id
        ledger.reserve(order.order_id, order.symbol, side, order.qty, reserve_price)
        self.open_orders[order.order_id] = OpenOrder(
            order.order_id,
            order.account_id,
            order.symbol,
            side,
            order.kind,
            order.qty,
            order.qty,
            order.limit_price,
            order.stop_price,
            reserve_price,
            order.reference_price,
        )
        return (
            subjects.order_outcome("validated", order.order_id),
            orders.OrderValidated(ts=order.ts, order=order, protection_price=protection),
        )

    def _cancel(self, request: orders.CancelRequested) -> Output:
        order = self.open_orders.get(request.order_id)
        if order is None or order.account_id != request.account_id:
            return _refusal(
                request.ts,
                request.order_id,
                request.account_id,
                "cancel",
                RejectCode.UNKNOWN_ORDER,
                "no open order with this id",
            )
        return (
            subjects.order_outcome("validated", order.order_id),
            orders.CancelValidated(
                ts=request.ts,
                order_id=order.order_id,
                account_id=order.account_id,
                symbol=order.symbol,
            ),
        )

    def _replace(self, request: orders.ReplaceRequested) -> Output:
        order = self.open_orders.get(request.order_id)
        try:
            if order is None or order.account_id != request.account_id:
                raise _Refused(RejectCode.UNKNOWN_ORDER, "no open order with this id")
            if order.kind == "market":
                raise _Refused(RejectCode.NOT_REPLACEABLE, "market orders cannot be replaced")
            ledger = self._ledger(order.account_id)
            instrument = self._instrument(order.symbol)
            qty = request.qty if request.qty is not None else order.qty
            limit = request.limit_price if request.limit_price is not None else order.limit_price
            stop = request.stop_price if request.stop_price is not None else order.stop_price
            self._check_qty(instrument, qty)
            filled = order.qty - order.leaves
            if qty <= filled:
                raise _Refused(
                    RejectCode.INVALID_QUANTITY,
                    f"qty {qty} must exceed the {filled} already filled",
                )
            self._check_prices(instrument, order.kind, limit, stop)
            reference = request.reference_price or order.reference_price
            reserve_price, _ = self._reserve_price(
                instrument, order.side, order.kind, limit, stop, reference
            )
            old_cash = (
                ledger.reservations[order.order_id].cash
                if order.order_id in ledger.reservations
                else ZERO
            )
            new_leaves = qty - filled
            new_cash = reserve_price * new_leaves if order.side > 0 else ZERO
            extra = max(ZERO, new_cash - old_cash)
            if extra > ledger.buying_power:
                raise _Refused(
                    RejectCode.INSUFFICIENT_BUYING_POWER,
                    f"the replacement needs {extra} more buying power; "
                    f"{ledger.buying_power} is available",
                )
            if (
                order.side < 0
                and not ledger.shorting_enabled
                and new_leaves > ledger.sellable(order.symbol) + order.leaves
            ):
                raise _Refused(
                    RejectCode.INSUFFICIENT_POSITION,
                    f"cannot sell {new_leaves} {order.symbol}: not enough shares",
                )
        except _Refused as refused:
            return _refusal(
                request.ts,
                request.order_id,
                request.account_id,
                "replace",
                refused.code,
                refused.message,
            )
        ledger.hold(order.order_id, extra)
        return (
            subjects.order_outcome("validated", order.order_id),
            orders.ReplaceValidated(
                ts=request.ts,
                request=request,
                symbol=order.symbol,
                qty=qty,
                limit_price=limit,
                stop_price=stop,
            ),
        )

    # ---- outcomes ----

    def _execution(self, fill: orders.Execution) -> list[Output]:
        order = self.open_orders.get(fill.order_id)
        ledger = self.ledgers.get(fill.account_id)
        if ledger is None:
            return []
        side = 1 if fill.side == "buy" else -1
        ledger.apply_fill(fill.order_id, fill.symbol, side, fill.qty, fill.price)
        if order is not None:
            order.leaves = fill.leaves_qty
            if fill.leaves_qty == 0:
                self._close(fill.order_id)
        return [self._position_changed(ledger, fill.ts, fill.symbol, match_id=fill.match_id)]

    def _asset_deposited(self, event: orders.AssetDeposited) -> list[Output]:
        ledger = self.ledgers.get(event.account_id)
        instrument = self.instruments.get(event.symbol)
        if ledger is None or instrument is None or not deposit_is_valid(event):
            return []  # as a deposit of cash: only valid ones, into opened accounts
        ledger.deposit_asset(event.symbol, event.qty, event.price)
        return [self._position_changed(ledger, event.ts, event.symbol, match_id=0)]

    @staticmethod
    def _position_changed(ledger: Ledger, ts: int, symbol: str, *, match_id: int) -> Output:
        position = ledger.position(symbol)
        return (
            subjects.positions(ledger.account_id, symbol),
            positions.PositionChanged(
                ts=ts,
                account_id=ledger.account_id,
                symbol=symbol,
                qty=position.qty,
                avg_entry_price=position.avg_entry_price,
                realized_pnl=ledger.realized_pnl,
                cash=ledger.cash,
                match_id=match_id,
            ),
        )

    def _replaced(self, event: orders.OrderReplaced) -> None:
        order = self.open_orders.pop(event.order_id, None)
        if order is None:
            return
        ledger = self.ledgers[order.account_id]
        ledger.release_hold(event.order_id)
        instrument = self.instruments[order.symbol]
        order.order_id, order.qty, order.leaves = event.new_order_id, event.qty, event.leaves_qty
        order.limit_price, order.stop_price = event.limit_price, event.stop_price
        order.reserve_price, _ = self._reserve_price(
            instrument,
            order.side,
            order.kind,
            order.limit_price,
            order.stop_price,
            order.reference_price,
            checked=False,
        )
        ledger.release(event.order_id)
        ledger.reserve(order.order_id, order.symbol, order.side, order.leaves, order.reserve_price)
        self.open_orders[order.order_id] = order

    def _close(self, order_id: str) -> None:
        order = self.open_orders.pop(order_id, None)
        if order is not None and order.account_id in self.ledgers:
            ledger = self.ledgers[order.account_id]
            ledger.release(order_id)
            ledger.release_hold(order_id)

    def _drop_hold(self, order_id: str) -> None:
        order = self.open_orders.get(order_id)
        if order is not None:
            self.ledgers[order.account_id].release_hold(order_id)

    # ---- checks ----

    def _ledger(self, account_id: str) -> Ledger:
        ledger = self.ledgers.get(account_id)
        if ledger is None:
            raise _Refused(RejectCode.UNKNOWN_ACCOUNT, f"no account {account_id!r}")
        if account_id in self.halted:
            raise _Refused(
                RejectCode.TRADING_HALTED,
                f"trading is halted for this account: {self.halted[account_id]}",
            )
        return ledger

    def _instrument(self, symbol: str) -> Instrument:
        instrument = self.instruments.get(symbol)
        if instrument is None:
            raise _Refused(
                RejectCode.UNKNOWN_SYMBOL,
                f"{symbol!r} is not traded; known: {', '.join(sorted(self.instruments))}",
            )
        return instrument

    @staticmethod
    def _check_qty(instrument: Instrument, qty: Decimal) -> None:
        if not qty.is_finite() or qty <= 0:
            raise _Refused(RejectCode.INVALID_QUANTITY, f"qty must be a positive number, got {qty}")
        if qty % instrument.lot_size != 0:
            raise _Refused(
                RejectCode.INVALID_QUANTITY,
                f"qty {qty} is not a multiple of the lot size {instrument.lot_size}",
            )

    @staticmethod
    def _check_prices(
        instrument: Instrument, kind: str, limit: Decimal | None, stop: Decimal | None
    ) -> None:
        needs_limit = kind in ("limit", "stop_limit")
        needs_stop = kind in ("stop", "stop_limit")
        for name, value, needed in (
            ("limit_price", limit, needs_limit),
            ("stop_price", stop, needs_stop),
        ):
            if needed and value is None:
                raise _Refused(RejectCode.INVALID_PRICE, f"a {kind} order needs {name}")
            if not needed and value is not None:
                raise _Refused(RejectCode.INVALID_PRICE, f"a {kind} order takes no {name}")
            if value is None:
                continue
            if not value.is_finite() or value <= 0:
                raise _Refused(RejectCode.INVALID_PRICE, f"{name} must be positive, got {value}")
            if value % instrument.tick_size != 0:
                raise _Refused(
                    RejectCode.INVALID_PRICE,
                    f"{name} {value} is not a multiple of the tick size {instrument.tick_size}",
                )

    def _reserve_price(
        self,
        instrument: Instrument,
        side: int,
        kind: str,
        limit: Decimal | None,
        stop: Decimal | None,
        reference: Decimal | None,
        *,
        checked: bool = True,
    ) -> tuple[Decimal, Decimal | None]:
        """The price cash is reserved at, and a market order's protection price."""
        config = self.config
        if kind in ("limit", "stop_limit"):
            assert limit is not None
            if checked and reference is not None:
                high = reference * (1 + config.price_collar)
                low = reference * (1 - config.price_collar)
                if (side > 0 and limit > high) or (side < 0 and limit < low):
                    raise _Refused(
                        RejectCode.PRICE_COLLAR,
                        f"limit {limit} is more than {config.price_collar:%} through the "
                        f"reference price {reference}",
                    )
            return limit, None
        base = reference
        if kind == "stop":
            assert stop is not None
            base = (
                max(stop, reference)
                if (reference is not None and side > 0)
                else (min(stop, reference) if reference is not None else stop)
            )
        if base is None:
            raise _Refused(
                RejectCode.NO_REFERENCE_PRICE,
                f"no reference price for {instrument.symbol} yet; use a limit order",
            )
        if side > 0:
            protection = _to_tick(
                base * (1 + config.market_collar), instrument.tick_size, ROUND_CEILING
            )
        else:
            protection = _to_tick(
                base * (1 - config.market_collar), instrument.tick_size, ROUND_FLOOR
            )
            protection = max(protection, instrument.tick_size)
        return protection, protection

    def _check_affordable(
        self, ledger: Ledger, instrument: Instrument, side: int, qty: Decimal, price: Decimal
    ) -> None:
        notional = qty * price
        if notional > self.config.max_order_notional:
            raise _Refused(
                RejectCode.MAX_NOTIONAL,
                f"order notional {notional} exceeds the limit {self.config.max_order_notional}",
            )
        if side > 0:
            if notional > ledger.buying_power:
                raise _Refused(
                    RejectCode.INSUFFICIENT_BUYING_POWER,
                    f"needs {notional}; buying power is {ledger.buying_power}",
                )
            return
        short = max(ZERO, qty - ledger.sellable(instrument.symbol))
        if short == 0:
            return
        if not ledger.shorting_enabled or instrument.asset_class is AssetClass.CRYPTO:
            raise _Refused(
                RejectCode.INSUFFICIENT_POSITION,
                f"cannot sell {qty} {instrument.symbol}: {ledger.sellable(instrument.symbol)} "
                "available and shorting is not allowed",
            )
        if short * price > ledger.buying_power:
            raise _Refused(
                RejectCode.INSUFFICIENT_BUYING_POWER,
                f"a short sale of {short} needs {short * price} margin; "
                f"buying power is {ledger.buying_power}",
            )


def _to_tick(value: Decimal, tick: Decimal, rounding: str) -> Decimal:
    return (value / tick).to_integral_value(rounding=rounding) * tick


def _rejection(order: orders.OrderSubmitted, refused: _Refused) -> Output:
    return (
        subjects.order_outcome("rejected", order.order_id),
        orders.OrderRejected(
            ts=order.ts,
            order_id=order.order_id,
            account_id=order.account_id,
            request="new",
            code=refused.code,
            message=refused.message,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
        ),
    )


def _refusal(
    ts: int,
    order_id: str,
    account_id: str,
    request: Literal["new", "cancel", "replace"],
    code: RejectCode,
    message: str,
) -> Output:
    return (
        subjects.order_outcome("rejected", order_id),
        orders.OrderRejected(
            ts=ts,
            order_id=order_id,
            account_id=account_id,
            request=request,
            code=code,
            message=message,
        ),
    )
