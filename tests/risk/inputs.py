"""Inputs for the risk core, written by hand, and a driver that runs it beside the exchange."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal as D

from bourse.model import marketdata, orders, subjects
from bourse.model.orders import Side
from bourse.risk.core import RiskCore, RiskInput, RiskOutput
from bourse.risk.messages import Mark, RiskAlert
from tests.exchange.journal import Exchange

T0 = 1_718_000_000_000_000_000  # 2024-06-10T06:13:20Z, in ns
SECOND = 1_000_000_000


def opened(account: str, cash: D | int, ts: int = T0) -> list[RiskInput]:
    return [
        orders.AccountOpened(ts=ts, account_id=account),
        orders.CashDeposited(ts=ts, account_id=account, amount=D(cash)),
    ]


def fill(
    account: str,
    symbol: str,
    side: Side,
    qty: D | int | str,
    price: D | int | str,
    match_id: int,
    ts: int = T0,
) -> orders.Execution:
    return orders.Execution(
        ts=ts,
        order_id=f"{account}-{symbol}-{match_id}",
        account_id=account,
        symbol=symbol,
        side=side,
        price=D(price),
        qty=D(qty),
        leaves_qty=D(0),
        liquidity="taker",
        match_id=match_id,
    )


def submitted(account: str, order_id: str, ts: int, symbol: str = "AAPL") -> orders.OrderSubmitted:
    return orders.OrderSubmitted(
        ts=ts,
        order_id=order_id,
        client_order_id=order_id,
        account_id=account,
        symbol=symbol,
        side="buy",
        kind="limit",
        time_in_force="day",
        qty=D(1),
        limit_price=D("100.00"),
    )


def feed(core: RiskCore, inputs: Iterable[RiskInput]) -> list[RiskOutput]:
    out: list[RiskOutput] = []
    for event in inputs:
        out.extend(core.apply(event))
    return out


def alerts(outputs: Iterable[RiskOutput]) -> list[RiskAlert]:
    return [o.message for o in outputs if isinstance(o.message, RiskAlert)]


def halts(outputs: Iterable[RiskOutput]) -> list[orders.TradingHalted]:
    return [o.message for o in outputs if isinstance(o.message, orders.TradingHalted)]


def summary(outputs: Iterable[RiskOutput]) -> list[tuple[str, str]]:
    """(kind, rule or account) per output: what a test reads at a glance."""
    return [
        (o.message.severity, o.message.rule)
        if isinstance(o.message, RiskAlert)
        else ("halt", o.message.account_id)
        for o in outputs
    ]


class Platform:
    """The exchange (accounts and engine cores over one journal) with the risk core reading
    that journal, as the services would over NATS: risk's halts go back on `orders.admin`."""

    def __init__(self, risk: RiskCore) -> None:
        self.exchange = Exchange()
        self.risk = risk
        self.outputs: list[RiskOutput] = []
        self.inputs: list[RiskInput] = []  # everything risk read, in order (for replays)
        self._read = 0

    def submit(self, *requests: tuple[str, orders.OrdersEvent]) -> None:
        self.exchange.submit(requests)
        self._pump()

    def mark(self, symbol: str, price: D | str, ts: int) -> None:
        self._take(Mark(ts=ts, symbol=symbol, price=D(price)))
        self._pump()

    def _pump(self) -> None:
        journal = self.exchange.journal
        while self._read < len(journal):
            _, message = journal[self._read]
            self._read += 1
            if not isinstance(message, marketdata.MarketData):
                self._take(message)

    def _take(self, event: RiskInput) -> None:
        self.inputs.append(event)
        for output in self.risk.apply(event):
            self.outputs.append(output)
            if output.subject == subjects.ORDERS_ADMIN:
                assert isinstance(output.message, orders.TradingHalted)
                self.exchange.journal.append((output.subject, output.message))
                self.exchange.run()

    def rejections(self, account: str) -> list[orders.OrderRejected]:
        return [
            m
            for _, m in self.exchange.journal
            if isinstance(m, orders.OrderRejected) and m.account_id == account
        ]
