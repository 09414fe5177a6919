"""Alerts fire once per crossing, warning before critical, and re-arm when back under."""

from __future__ import annotations

from decimal import Decimal as D

from bourse.model import orders, subjects
from bourse.risk import messages
from bourse.risk.core import RiskCore
from bourse.risk.levels import Level, next_level
from bourse.risk.rules import RiskConfig, RiskRules, RuleName, RuleOverrides
from tests.risk.inputs import SECOND, T0, alerts, feed, fill, opened, submitted, summary


def long_aapl(rules: RiskRules, cash: int = 100_000) -> RiskCore:
    """An account holding 100 AAPL bought at 100."""
    core = RiskCore(RiskConfig(defaults=rules))
    feed(core, [*opened("alice", cash), fill("alice", "AAPL", "buy", 100, "100", 1)])
    return core


def test_a_falling_price_warns_then_goes_critical_and_halts_once() -> None:
    core = long_aapl(RiskRules(daily_loss_limit=D(1000)))
    steps = {}
    for n, price in enumerate(["99", "95", "92", "91", "90", "89", "85"]):
        steps[price] = summary(core.on_mark("AAPL", D(price), T0 + n))
    assert steps == {
        "99": [],
        "95": [],
        "92": [("warning", "daily_loss")],  # loss 800 = 80 % of 1,000
        "91": [],
        "90": [("halt", "alice"), ("critical", "daily_loss")],  # loss 1,000
        "89": [],
        "85": [],  # deeper losses: no new alert, no new halt
    }


def test_an_alert_says_what_crossed_and_goes_out_on_its_severity_subject() -> None:
    core = long_aapl(RiskRules(daily_loss_limit=D(1000)))
    out = core.on_mark("AAPL", D(90), T0 + 5)
    halt, critical = out
    assert halt.subject == subjects.ORDERS_ADMIN
    assert halt.message == orders.TradingHalted(
        ts=T0 + 5, account_id="alice", reason="risk: daily loss 1000.00 reached the limit 1000.00"
    )
    assert halt.msg_id == "risk-halt:alice:1"
    assert critical.subject == "risk.alerts.critical"
    assert critical.msg_id == "risk-alert:alice:1"
    assert critical.message == messages.RiskAlert(
        ts=T0 + 5,
        alert_id="risk-alert:alice:1",
        account_id="alice",
        rule=RuleName.DAILY_LOSS,
        severity="critical",
        value=D(1000),
        limit=D(1000),
        threshold=D(1000),
        message=(
            "daily loss 1000.00 reached the limit 1000.00: "
            "trading halted until an admin resumes the account"
        ),
    )
    assert messages.decode(messages.encode(critical.message)) == critical.message


def test_back_under_a_level_is_an_info_alert_and_the_level_fires_again_next_time() -> None:
    core = long_aapl(RiskRules(daily_loss_limit=D(1000)))
    core.on_mark("AAPL", D(90), T0 + 1)  # critical (and the halt)
    out = core.on_mark("AAPL", D("91.5"), T0 + 2)  # loss 850: under the limit less 5 %
    [info] = alerts(out)
    assert (info.severity, info.threshold) == ("info", D(1000))
    assert info.message == "daily loss 850.00 is back under the limit 1000.00"
    assert out[0].subject == "risk.alerts.info"
    out = core.on_mark("AAPL", D(90), T0 + 3)
    assert summary(out) == [("critical", "daily_loss")]  # no second halt: still tripped
    out = core.on_mark("AAPL", D(100), T0 + 4)
    [info] = alerts(out)
    assert (info.severity, info.threshold) == ("info", D(800))
    assert "back under the warning level 800.00" in info.message


def test_a_value_hovering_at_a_threshold_alerts_once_not_on_every_tick() -> None:
    core = long_aapl(RiskRules(daily_loss_limit=D(1000)))
    out = []
    for n in range(200):
        out += core.on_mark("AAPL", D("92.00") if n % 2 else D("92.10"), T0 + n)
    assert summary(out) == [("warning", "daily_loss")]


def test_without_hysteresis_each_crossing_fires() -> None:
    core = long_aapl(RiskRules(daily_loss_limit=D(1000), hysteresis=D(0)))
    out = []
    for n in range(4):
        out += core.on_mark("AAPL", D("92.00") if n % 2 else D("92.10"), T0 + n)
    assert summary(out) == [
        ("warning", "daily_loss"),
        ("info", "daily_loss"),
        ("warning", "daily_loss"),
    ]


def test_a_jump_past_the_limit_is_one_critical_alert_not_a_warning_first() -> None:
    core = long_aapl(RiskRules(max_drawdown=D("0.05")))
    [alert] = alerts(core.on_mark("AAPL", D(40), T0 + 1))  # equity 94,000 from 100,000
    assert (alert.severity, alert.rule, alert.value) == ("critical", "drawdown", D("0.06"))
    assert alert.message == "drawdown 6.00% reached the limit 5.00%"


def test_exposure_and_concentration_rules() -> None:
    rules = RiskRules(
        max_gross_exposure=D(20_000),
        max_net_exposure=D(15_000),
        max_concentration=D("0.9"),
    )
    core = RiskCore(RiskConfig(defaults=rules))
    feed(core, opened("alice", 100_000))
    out = feed(core, [fill("alice", "AAPL", "buy", 100, "100", 1)])  # gross = net = 10,000
    assert summary(out) == [("critical", "concentration")]  # one position: 100 % of gross
    [concentrated] = alerts(out)
    assert concentrated.symbol == "AAPL"
    assert concentrated.message.endswith("(largest position: AAPL)")

    out = feed(core, [fill("alice", "MSFT", "sell", 20, "300", 1)])  # short 6,000
    # gross 16,000 (80 %: warning), net 4,000, AAPL 62.5 % of gross: back under 0.72
    assert summary(out) == [("warning", "gross_exposure"), ("info", "concentration")]

    out = feed(core, [fill("alice", "AAPL", "buy", 20, "100", 2)])  # gross 18,000, net 6,000
    assert summary(out) == []
    out = core.on_mark("MSFT", D(100), T0 + 1)  # short worth 2,000: gross 14,000, net 10,000
    # ... and AAPL is 12,000 / 14,000 = 85.7 % of gross: past the concentration warning (72 %)
    assert summary(out) == [("info", "gross_exposure"), ("warning", "concentration")]
    out = core.on_mark("AAPL", D(120), T0 + 2)  # long 14,400: gross 16,400, net 12,400
    assert summary(out) == [("warning", "gross_exposure"), ("warning", "net_exposure")]


def test_order_rate_counts_orders_in_the_rolling_window() -> None:
    core = RiskCore(RiskConfig(defaults=RiskRules(max_order_rate=5)))
    feed(core, opened("alice", 1_000))
    steps = []
    for n in range(7):
        ts = T0 + n * SECOND // 10  # 10 orders a second
        steps.append(summary(feed(core, [submitted("alice", f"o{n}", ts)])))
    assert steps == [[], [], [], [("warning", "order_rate")], [("critical", "order_rate")], [], []]
    assert core.metrics("alice") is not None
    # A quiet spell: the window empties, the next order finds the rate back to 1.
    out = feed(core, [submitted("alice", "later", T0 + 10 * SECOND)])
    [info] = alerts(out)
    assert (info.severity, info.value) == ("info", D(1))
    assert info.message == "order rate 1 per 1s is back under the warning level 4 per 1s"


def test_orders_of_other_accounts_do_not_count() -> None:
    core = RiskCore(RiskConfig(defaults=RiskRules(max_order_rate=2)))
    feed(core, [*opened("alice", 1), *opened("bob", 1)])
    out = feed(core, [submitted("alice", "a1", T0), submitted("bob", "b1", T0 + 1)])
    assert out == []
    out = feed(core, [submitted("bob", "b2", T0 + 2)])
    assert [(a.account_id, a.severity) for a in alerts(out)] == [("bob", "critical")]


def test_per_account_rules_apply_to_their_account_only() -> None:
    config = RiskConfig(
        defaults=RiskRules(daily_loss_limit=D(1000)),
        accounts={"bob": RuleOverrides(daily_loss_limit=None)},
    )
    core = RiskCore(config)
    feed(core, [*opened("alice", 100_000), *opened("bob", 100_000)])
    feed(
        core,
        [fill("alice", "AAPL", "buy", 100, "100", 1), fill("bob", "AAPL", "buy", 100, "100", 2)],
    )
    out = core.on_mark("AAPL", D(50), T0 + 1)  # both lose 5,000; only alice has a limit
    assert summary(out) == [("halt", "alice"), ("critical", "daily_loss")]
    assert {o.message.account_id for o in out} == {"alice"}


def test_levels_hold_until_the_value_falls_by_the_hysteresis() -> None:
    limit, warn, hyst = D(100), D("0.8"), D("0.05")
    assert next_level(Level.NORMAL, D(79), limit, warn, hyst) is Level.NORMAL
    assert next_level(Level.NORMAL, D(80), limit, warn, hyst) is Level.WARNING
    assert next_level(Level.WARNING, D(76), limit, warn, hyst) is Level.WARNING
    assert next_level(Level.WARNING, D(74), limit, warn, hyst) is Level.NORMAL
    assert next_level(Level.CRITICAL, D(96), limit, warn, hyst) is Level.CRITICAL
    assert next_level(Level.CRITICAL, D(94), limit, warn, hyst) is Level.WARNING
    assert next_level(Level.CRITICAL, D(10), limit, warn, hyst) is Level.NORMAL
    assert next_level(Level.NORMAL, D(100), limit, warn, hyst) is Level.CRITICAL
