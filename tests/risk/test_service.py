"""The risk service over the real exchange: a losing trader trips the kill switch through the
HTTP API, an admin resumes it, and a restarted service publishes nothing twice."""

from __future__ import annotations

from decimal import Decimal

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bourse.bus.fold import FoldService
from bourse.bus.streams import ORDERS, RISK
from bourse.model import orders, subjects
from bourse.risk import messages
from bourse.risk.core import HALT_REASON_PREFIX
from bourse.risk.rules import RiskConfig, RuleOverrides
from bourse.risk.service import RiskFold, risk_service
from tests.conftest import eventually
from tests.gateway.conftest import ExchangeStack, Trader
from tests.gateway.test_orders_api import limit
from tests.risk.inputs import fill, submitted


async def alert_counts(js: JetStreamContext) -> dict[str, int]:
    """Alerts on RISK per severity."""
    info = await js.stream_info(RISK.name, subjects_filter=subjects.risk_alert("*"))
    return {subject.rsplit(".", 1)[-1]: n for subject, n in (info.state.subjects or {}).items()}


async def risk_halts(js: JetStreamContext) -> list[orders.TradingHalted]:
    """The kill switch's halts on the journal."""
    info = await js.stream_info(ORDERS.name, subjects_filter=subjects.ORDERS_ADMIN)
    total = sum((info.state.subjects or {}).values())
    subscription = await js.subscribe(subjects.ORDERS_ADMIN, ordered_consumer=True)
    try:
        events = [
            orders.decode((await subscription.next_msg(timeout=5)).data) for _ in range(total)
        ]
    finally:
        await subscription.unsubscribe()
    return [
        e
        for e in events
        if isinstance(e, orders.TradingHalted) and e.reason.startswith(HALT_REASON_PREFIX)
    ]


async def blocked(trader: Trader) -> bool:
    account = (await trader.http.get("/v2/account")).json()
    return bool(account["trading_blocked"])


async def restarted(
    nc: NATS, service: FoldService[orders.OrdersEvent], config: RiskConfig, *, crash: bool
) -> FoldService[orders.OrdersEvent]:
    """`service` stopped (as by a crash, or cleanly) and a new one caught up."""
    await service.wait_caught_up()
    await (service.abort() if crash else service.stop())
    again = await risk_service(nc, config=config).start()
    await again.wait_caught_up()
    return again


def test_marks_come_from_the_journal_each_just_before_its_message() -> None:
    fold = RiskFold(RiskConfig(accounts={"bob": RuleOverrides(daily_loss_limit=Decimal(50))}))
    assert fold.apply(orders.AccountOpened(ts=0, account_id="bob")) == []
    assert fold.apply(orders.CashDeposited(ts=0, account_id="bob", amount=Decimal(10_000))) == []
    order = msgspec.structs.replace(submitted("bob", "o1", ts=1), reference_price=Decimal(100))
    assert fold.apply(order) == []
    assert fold.risk.marks == {"AAPL": Decimal(100)}
    # Valued at its own price, not at the mark before it: no loss, so no warning at 40.
    assert fold.apply(fill("bob", "AAPL", "buy", 10, "104.00", 1)) == []
    assert fold.risk.marks == {"AAPL": Decimal(104)}
    # Another account's order moves the mark: bob is 40 down, the warning level.
    other = msgspec.structs.replace(order, account_id="eve", reference_price=Decimal(100))
    [(subject, alert)] = fold.apply(other)
    assert subject == subjects.risk_alert("warning")
    assert isinstance(alert, messages.RiskAlert) and alert.value == Decimal(40)
    # A fill at 96 marks bob's position there before it closes it: the halt, then the alert.
    halt, critical = fold.apply(fill("bob", "AAPL", "sell", 10, "96.00", 2))
    assert halt[0] == subjects.ORDERS_ADMIN and isinstance(halt[1], orders.TradingHalted)
    assert critical[0] == subjects.risk_alert("critical")
    # Reading its own halt back publishes nothing: the journal says what the core knew.
    assert not fold.risk.accounts["bob"].halted
    assert fold.apply(halt[1]) == []
    assert fold.risk.accounts["bob"].halted


async def test_a_losing_trader_is_halted_until_an_admin_resumes_it(
    exchange: ExchangeStack,
) -> None:
    await exchange.reference("AAPL", "100.00")
    maker = await exchange.trader(shorting=True)
    loser = await exchange.trader("10000")
    # Started after the accounts were opened: it folds the journal from its start.
    config = RiskConfig(accounts={loser.account_id: RuleOverrides(daily_loss_limit=Decimal(50))})
    risk = await risk_service(exchange.nc, config=config).start()
    critical: list[Msg] = []

    async def collect(msg: Msg) -> None:
        critical.append(msg)

    await exchange.nc.subscribe(subjects.risk_alert("critical"), cb=collect)
    try:
        # Buy high...
        offer = await maker.http.post("/v2/orders", json=limit("AAPL", "sell", "10", "104.00"))
        assert offer.status_code == 200, offer.text
        bought = await loser.http.post("/v2/orders", json=limit("AAPL", "buy", "10", "104.00"))
        assert bought.json()["status"] == "filled", bought.text
        # ... sell low: a loss of 80 against a limit of 50.
        bid = await maker.http.post("/v2/orders", json=limit("AAPL", "buy", "10", "96.00"))
        assert bid.status_code == 200, bid.text
        sold = await loser.http.post("/v2/orders", json=limit("AAPL", "sell", "10", "96.00"))
        assert sold.json()["status"] == "filled", sold.text

        await eventually(lambda: len(critical) == 1, message="no critical alert")
        alert = messages.decode(critical[0].data)
        assert (alert.account_id, alert.rule, alert.severity) == (
            loser.account_id,
            "daily_loss",
            "critical",
        )
        assert alert.value == Decimal(80) and alert.limit == Decimal(50)
        await eventually(lambda: blocked(loser), message="the account was never halted")
        account = (await loser.http.get("/v2/account")).json()
        assert account["blocked_reason"].startswith(HALT_REASON_PREFIX)
        refused = await loser.http.post("/v2/orders", json=limit("AAPL", "buy", "1", "100.00"))
        assert refused.status_code == 403, refused.text
        assert refused.json()["reason"] == "trading_halted"
        assert not await blocked(maker)

        # A crash and a rebuild from the whole journal: what was published is not again.
        risk = await restarted(exchange.nc, risk, config, crash=True)
        assert (risk.stats.published, risk.stats.suppressed) == (0, 3)  # warning, halt, alert

        resumed = await exchange.admin.http.post(f"/admin/accounts/{loser.account_id}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["id"] == loser.account_id
        assert resumed.json()["trading_blocked"] is False
        assert resumed.json()["blocked_reason"] is None
        assert not await blocked(loser)  # the journal's order: accounts has it before this
        again = await loser.http.post("/v2/orders", json=limit("AAPL", "buy", "1", "100.00"))
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "new"

        # A clean stop and a start from the snapshot.
        risk = await restarted(exchange.nc, risk, config, crash=False)
        assert risk.stats.restored_seq > 0
        assert (risk.stats.published, risk.stats.suppressed) == (0, 0)

        halts = await risk_halts(exchange.js)
        assert [h.account_id for h in halts] == [loser.account_id]
        # The resume re-armed the switch from the equity then: the loss is back under.
        assert await alert_counts(exchange.js) == {"warning": 1, "critical": 1, "info": 1}
        assert len(critical) == 1
    finally:
        await risk.stop()


async def test_an_admin_halts_and_resumes_an_account(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "100.00")
    alice = await exchange.trader()
    path = f"/admin/accounts/{alice.account_id}"

    halted = await exchange.admin.http.post(f"{path}/halt", json={"reason": "  KYC  review "})
    assert halted.status_code == 200, halted.text
    assert halted.json()["trading_blocked"] is True
    assert halted.json()["blocked_reason"] == "admin: KYC review"
    assert (await alice.http.get("/v2/account")).json()["blocked_reason"] == "admin: KYC review"
    refused = await alice.http.post("/v2/orders", json=limit("AAPL", "buy", "1", "100.00"))
    assert (refused.status_code, refused.json()["reason"]) == (403, "trading_halted")

    resumed = await exchange.admin.http.post(f"{path}/resume")
    assert resumed.json()["trading_blocked"] is False
    placed = await alice.http.post("/v2/orders", json=limit("AAPL", "buy", "1", "100.00"))
    assert placed.status_code == 200, placed.text


async def test_halt_and_resume_need_an_admin_a_known_account_and_a_reason(
    exchange: ExchangeStack,
) -> None:
    alice = await exchange.trader()
    admin = exchange.admin.http
    path = f"/admin/accounts/{alice.account_id}"
    assert (await alice.http.post(f"{path}/resume")).status_code == 403
    assert (await alice.http.post(f"{path}/halt", json={"reason": "x"})).status_code == 403
    unknown = await admin.post("/admin/accounts/nobody/resume")
    assert (unknown.status_code, unknown.json()["reason"]) == (404, "not_found")
    assert (
        await admin.post("/admin/accounts/nobody/halt", json={"reason": "x"})
    ).status_code == 404
    for body in ({}, {"reason": "   "}, {"reason": "x" * 201}, {"reason": "x", "extra": 1}):
        answer = await admin.post(f"{path}/halt", json=body)
        assert answer.status_code == 422, (body, answer.text)
    assert not await blocked(alice)
