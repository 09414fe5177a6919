"""Price alerts: each account's alerts on a symbol's price, evaluated as the price moves. A
pure core: no I/O, no clock of its own (time is the quotes' own timestamps), exact decimals.

    book = AlertBook(DEFAULT_UNIVERSE)
    book.apply(AlertCreated(...))       # an account's new alert (journaled by the gateway)
    fired = book.apply(quote)           # [AlertFired, ...] for the alerts this price crosses
    book.apply(AlertDeleted(...))
    data = book.snapshot(); AlertBook.restore(data)   # the same state, the same later events

**The price** an alert watches is the symbol's *reference price*, the one Bourse marks
positions at and stamps orders with (`analytics.reference`): the median of the latest
mid-prices of the external venues quoting the symbol, each fresh for `max_age_ns` (10 s)
after its quote, rounded to the instrument's tick. Our own `bourse` venue is left out, so no
account can set off alerts by trading with itself, and one venue's stray quote does not move
the median. A mid rather than the last trade because the venues quote continuously and print
only now and then. Freshness is measured on the quotes' own timestamps, so the price, and
every alert, is a function of the quotes alone: a replay fires the same alerts. (The rule is
`ReferencePrices`'s, copied so that it can be snapshotted; a property test holds the two equal.)

**Conditions** (the alert's `price` is its level L, `hysteresis` h >= 0):

- `above`: fires when the price is above L (strictly), at the first price evaluated if it
  already is; a recurring alert is then disarmed until the price is at or below L - h.
- `below`: fires when the price is below L, and re-arms at or above L + h.
- `crosses`: fires when the price passes from one side of L to beyond L by more than h on the
  other side, in either direction (`direction` says which). The side it starts on is the price
  when the alert is created, else the first price after; a price exactly at L is on neither
  side, so touching the level is not a crossing.

**Once per crossing.** An alert is evaluated on every new price of its symbol. A one-shot alert
fires once and leaves the book (its event says `recurring: false`); a recurring one fires once
per crossing and re-arms only after the price has gone back across (above: to L - h or lower;
below: L + h or higher; crosses: beyond L on the other side), so a price that hovers at the
level fires nothing more. Each firing is numbered per alert (`fire_count`, from 1), which with
the alert id makes a deterministic message id.

Alerts are evaluated in creation order, so the same inputs give the same events in the same
order. The core accepts what the gateway has validated; a create for an id it already holds,
a delete of an alert it does not hold or of another account's alert is ignored.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal, get_args

import msgspec

from bourse.analytics.reference import DEFAULT_MAX_AGE_NS, OWN_VENUE
from bourse.errors import BourseError
from bourse.model.instruments import DEFAULT_UNIVERSE, Instrument
from bourse.model.marketdata import MarketData, Quote
from bourse.model.subjects import Id, Symbol

Condition = Literal["above", "below", "crosses"]
Direction = Literal["up", "down"]
Side = Literal["above", "below"]
CONDITIONS: tuple[Condition, ...] = get_args(Condition)

_ZERO = Decimal(0)


# ---- the ALERTS stream's messages: one tagged union ----


class AlertCreated(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="alert_created"
):
    """An account's new alert on `symbol` at level `price`."""

    alert_id: Id
    account_id: Id
    symbol: Symbol
    condition: Condition
    price: Decimal
    recurring: bool = False
    hysteresis: Decimal = _ZERO
    ts: int  # when the account asked (ns since the epoch)

    def __post_init__(self) -> None:
        if not self.price.is_finite() or self.price <= 0:
            raise ValueError(f"price must be finite and positive, got {self.price}")
        if not self.hysteresis.is_finite() or self.hysteresis < 0:
            raise ValueError(f"hysteresis must be finite and not negative, got {self.hysteresis}")
        if not self.alert_id or not self.account_id or not self.symbol:
            raise ValueError("alert_id, account_id and symbol must not be empty")


class AlertDeleted(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="alert_deleted"
):
    """The account deleted its alert `alert_id`."""

    alert_id: Id
    account_id: Id
    ts: int


class AlertFired(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="alert_fired"):
    """The price of `symbol` crossed the alert's level: the `fire_count`-th firing of it."""

    alert_id: Id
    account_id: Id
    symbol: Symbol
    condition: Condition
    price: Decimal  # the alert's level
    market_price: Decimal  # the reference price that crossed it
    direction: Direction  # up: the price rose through the level; down: it fell
    fire_count: int  # 1 the first time this alert fires, 2 the next...
    recurring: bool  # false: this was the alert's only firing, it is done
    hysteresis: Decimal = _ZERO
    ts: int  # the time of the price that crossed (the quote's, ns since the epoch)


AlertsMessage = AlertCreated | AlertDeleted | AlertFired
AlertCommand = AlertCreated | AlertDeleted

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AlertsMessage] = msgspec.json.Decoder(AlertsMessage)


def encode(message: AlertsMessage) -> bytes:
    return _encoder.encode(message)


def decode(payload: bytes) -> AlertsMessage:
    """Decode one ALERTS message; raises msgspec.ValidationError/DecodeError if bad."""
    return _decoder.decode(payload)


def fired_msg_id(alert_id: str, fire_count: int) -> str:
    """The `Nats-Msg-Id` of an alert's `fire_count`-th firing: the same in every replay."""
    return f"alert-fired:{alert_id}:{fire_count}"


# ---- state ----


class _Alert(msgspec.Struct, kw_only=True):
    created: AlertCreated
    armed: bool = True  # above / below: may fire at the next price beyond the level
    side: Side | None = None  # crosses: where the price is (None: not known yet)
    fire_count: int = 0


class _State(msgspec.Struct, kw_only=True):
    format: int
    alerts: list[_Alert]  # in creation order
    mids: dict[str, dict[str, tuple[Decimal, int]]]  # symbol -> venue -> (mid, seen at)
    prices: dict[str, Decimal]


FORMAT = 1
_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(_State)


class AlertSnapshotError(BourseError):
    """A snapshot of the alert book cannot be restored (unreadable, or another format)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"cannot restore the alert book: {problem}")


def side_of(price: Decimal, level: Decimal, band: Decimal = _ZERO) -> Side | None:
    """`above` when price > level + band, `below` when price < level - band, else None."""
    if price > level + band:
        return "above"
    if price < level - band:
        return "below"
    return None


class AlertBook:
    """Every account's alerts and the reference prices they watch; see the module docstring."""

    def __init__(
        self,
        instruments: Iterable[Instrument] = DEFAULT_UNIVERSE,
        *,
        max_age_ns: int = DEFAULT_MAX_AGE_NS,
        exclude_venues: Iterable[str] = (OWN_VENUE,),
    ) -> None:
        self._ticks = {i.symbol: i.tick_size for i in instruments}
        self._max_age_ns = max_age_ns
        self._exclude = frozenset(exclude_venues)
        self._alerts: dict[str, _Alert] = {}  # by id, in creation order
        self._by_symbol: dict[str, dict[str, _Alert]] = {}
        self._mids: dict[str, dict[str, tuple[Decimal, int]]] = {}
        self._prices: dict[str, Decimal] = {}
        # Not state: which price each symbol's alerts were last evaluated at. Evaluating twice
        # at one price changes nothing, so this only saves work and need not be snapshotted.
        self._evaluated: dict[str, Decimal] = {}

    # ---- inputs ----

    def apply(self, event: AlertCommand | MarketData) -> list[AlertFired]:
        """Fold one input in; return the alerts it fires (trades and depth change nothing)."""
        match event:
            case Quote():
                return self.on_quote(event)
            case AlertCreated():
                self.create(event)
            case AlertDeleted():
                self.delete(event)
        return []

    def create(self, command: AlertCreated) -> bool:
        """Add an alert; False (and nothing changes) for an id already held or a symbol that
        has no instrument (it could never be priced)."""
        if command.alert_id in self._alerts or command.symbol not in self._ticks:
            return False
        alert = _Alert(created=command)
        if command.condition == "crosses":
            price = self._prices.get(command.symbol)
            alert.side = None if price is None else side_of(price, command.price)
        self._alerts[command.alert_id] = alert
        self._by_symbol.setdefault(command.symbol, {})[command.alert_id] = alert
        self._evaluated.pop(command.symbol, None)  # evaluate the new alert at the next price
        return True

    def delete(self, command: AlertDeleted) -> bool:
        """Remove an account's alert; False when it holds no such alert of that account."""
        alert = self._alerts.get(command.alert_id)
        if alert is None or alert.created.account_id != command.account_id:
            return False
        self._remove(alert)
        return True

    def on_quote(self, quote: Quote, now_ns: int | None = None) -> list[AlertFired]:
        """Take a quote (at `now_ns`, default its own timestamp); return the alerts it fires."""
        now = quote.ts if now_ns is None else now_ns
        price = self._reprice(quote, now)
        if price is None:
            return []
        alerts = self._by_symbol.get(quote.symbol)
        if not alerts or self._evaluated.get(quote.symbol) == price:
            return []
        self._evaluated[quote.symbol] = price
        fired = []
        for alert in list(alerts.values()):
            event = self._evaluate(alert, price, now)
            if event is not None:
                fired.append(event)
        return fired

    # ---- queries ----

    def price(self, symbol: str) -> Decimal | None:
        """The symbol's reference price as the alerts see it (None before any quote)."""
        return self._prices.get(symbol)

    def alert_ids(self, account_id: str | None = None) -> list[str]:
        """Ids of the alerts held (active ones: a one-shot alert leaves once it fires)."""
        return [
            alert_id
            for alert_id, alert in self._alerts.items()
            if account_id is None or alert.created.account_id == account_id
        ]

    def fire_count(self, alert_id: str) -> int | None:
        alert = self._alerts.get(alert_id)
        return None if alert is None else alert.fire_count

    def __len__(self) -> int:
        return len(self._alerts)

    # ---- snapshots ----

    def snapshot(self) -> bytes:
        """The whole state (msgpack); `restore` gives a book that answers every later input
        with the same events."""
        return _state_encoder.encode(
            _State(
                format=FORMAT,
                alerts=list(self._alerts.values()),
                mids=self._mids,
                prices=self._prices,
            )
        )

    @classmethod
    def restore(
        cls,
        data: bytes,
        instruments: Iterable[Instrument] = DEFAULT_UNIVERSE,
        *,
        max_age_ns: int = DEFAULT_MAX_AGE_NS,
        exclude_venues: Iterable[str] = (OWN_VENUE,),
    ) -> AlertBook:
        try:
            state = _state_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise AlertSnapshotError(f"unreadable ({exc})") from exc
        if state.format != FORMAT:
            raise AlertSnapshotError(f"format {state.format}; this version reads {FORMAT}")
        book = cls(instruments, max_age_ns=max_age_ns, exclude_venues=exclude_venues)
        for alert in state.alerts:
            book._alerts[alert.created.alert_id] = alert
            book._by_symbol.setdefault(alert.created.symbol, {})[alert.created.alert_id] = alert
        book._mids = state.mids
        book._prices = state.prices
        return book

    def state_digest(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()

    # ---- the price ----

    def _reprice(self, quote: Quote, now: int) -> Decimal | None:
        """The symbol's reference price after `quote` (as `ReferencePrices.on_quote`)."""
        tick = self._ticks.get(quote.symbol)
        if tick is None or quote.venue in self._exclude:
            return None
        if quote.ask < quote.bid:
            return self._prices.get(quote.symbol)
        venues = self._mids.setdefault(quote.symbol, {})
        venues[quote.venue] = ((quote.bid + quote.ask) / 2, now)
        fresh = [mid for mid, seen in venues.values() if now - seen <= self._max_age_ns]
        median = statistics.median(fresh)
        price = (median / tick).to_integral_value(ROUND_HALF_EVEN) * tick
        self._prices[quote.symbol] = price
        return price

    # ---- evaluation ----

    def _evaluate(self, alert: _Alert, price: Decimal, now: int) -> AlertFired | None:
        spec = alert.created
        level, band = spec.price, spec.hysteresis
        match spec.condition:
            case "above":
                if alert.armed and price > level:
                    alert.armed = False
                    return self._fire(alert, price, "up", now)
                if not alert.armed and price <= level - band:
                    alert.armed = True
            case "below":
                if alert.armed and price < level:
                    alert.armed = False
                    return self._fire(alert, price, "down", now)
                if not alert.armed and price >= level + band:
                    alert.armed = True
            case "crosses":
                beyond = side_of(price, level, band)
                if alert.side is None:
                    alert.side = side_of(price, level)  # where it starts: no crossing yet
                elif beyond is not None and beyond != alert.side:
                    alert.side = beyond
                    return self._fire(alert, price, "up" if beyond == "above" else "down", now)
        return None

    def _fire(self, alert: _Alert, price: Decimal, direction: Direction, now: int) -> AlertFired:
        spec = alert.created
        alert.fire_count += 1
        if not spec.recurring:
            self._remove(alert)
        return AlertFired(
            alert_id=spec.alert_id,
            account_id=spec.account_id,
            symbol=spec.symbol,
            condition=spec.condition,
            price=spec.price,
            market_price=price,
            direction=direction,
            fire_count=alert.fire_count,
            recurring=spec.recurring,
            hysteresis=spec.hysteresis,
            ts=now,
        )

    def _remove(self, alert: _Alert) -> None:
        spec = alert.created
        del self._alerts[spec.alert_id]
        alerts = self._by_symbol[spec.symbol]
        del alerts[spec.alert_id]
        if not alerts:
            del self._by_symbol[spec.symbol]
