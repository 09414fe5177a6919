"""The risk core is a function of its inputs: same inputs, same outputs, ids and digest;
a snapshot restored mid-way continues exactly as the core that never stopped; and the
books balance whatever the fills and marks."""

from __future__ import annotations

import random
from decimal import Decimal as D

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bourse.model import orders
from bourse.risk import snapshot
from bourse.risk.core import RiskCore, RiskInput, RiskOutput
from bourse.risk.messages import Mark
from bourse.risk.rules import RiskConfig, RiskRules
from bourse.risk.snapshot import RiskSnapshotError
from tests.exchange.test_exchange_fold import ACCOUNTS, REFERENCE, random_session
from tests.risk.inputs import T0, Platform, feed, fill, opened

CONFIG = RiskConfig(
    defaults=RiskRules(
        max_gross_exposure=D(110_000),
        max_net_exposure=D(80_000),
        max_concentration=D("0.8"),
        daily_loss_limit=D(12_000),
        max_drawdown=D("0.02"),
        max_order_rate=12,
        order_rate_window=D("0.0000002"),  # the session's orders are 1 ns apart: 200 ns
    )
)


def recorded_session(seed: int, count: int) -> tuple[list[RiskInput], list[RiskOutput]]:
    """Run a seeded random session through the exchange with risk reading its journal and
    marks moving every 25 requests; return what risk read and what it published."""
    rng = random.Random(seed)
    platform = Platform(RiskCore(CONFIG))
    marks = dict(REFERENCE)
    requests = random_session(seed, count)
    for n, request in enumerate(requests):
        platform.submit(request)
        if n % 25 == 0:
            for symbol in sorted(marks):
                marks[symbol] = (marks[symbol] * D(rng.randint(970, 1030)) / 1000).quantize(
                    D("0.01")
                )
                platform.mark(symbol, marks[symbol], 1_000 + n)
        if n == count // 2:
            platform.submit(
                ("orders.session", orders.SessionClosed(ts=1_000 + n, trading_day="2024-06-10"))
            )
    resumes = [
        ("orders.admin", orders.TradingResumed(ts=10**6, account_id=account))
        for account in ACCOUNTS
    ]
    platform.submit(*resumes)
    return platform.inputs, platform.outputs


def encoded(outputs: list[RiskOutput]) -> list[tuple[str, bytes, str]]:
    return [(o.subject, msgspec.json.encode(o.message), o.msg_id) for o in outputs]


@pytest.fixture(scope="module")
def session() -> tuple[list[RiskInput], list[RiskOutput]]:
    return recorded_session(seed=7, count=3_000)


def test_the_session_exercises_every_kind_of_output(
    session: tuple[list[RiskInput], list[RiskOutput]],
) -> None:
    _, outputs = session
    kinds = {(o.subject, getattr(o.message, "rule", "")) for o in outputs}
    assert {subject for subject, _ in kinds} == {
        "orders.admin",
        "risk.alerts.info",
        "risk.alerts.warning",
        "risk.alerts.critical",
    }
    assert {rule for _, rule in kinds} >= {
        "daily_loss",
        "drawdown",
        "gross_exposure",
        "net_exposure",
        "concentration",
        "order_rate",
    }


def test_the_same_inputs_give_the_same_outputs_ids_and_state(
    session: tuple[list[RiskInput], list[RiskOutput]],
) -> None:
    inputs, outputs = session
    again = recorded_session(seed=7, count=3_000)
    assert encoded(again[1]) == encoded(outputs)

    replayed = RiskCore(CONFIG)
    assert encoded(feed(replayed, inputs)) == encoded(outputs)
    first = RiskCore(CONFIG)
    feed(first, inputs)
    assert replayed.state_digest() == first.state_digest()
    assert snapshot.dump(replayed) == snapshot.dump(first)
    ids = [o.msg_id for o in outputs]
    assert len(set(ids)) == len(ids)


def test_a_restored_snapshot_continues_exactly_as_the_core_that_never_stopped(
    session: tuple[list[RiskInput], list[RiskOutput]],
) -> None:
    inputs, _ = session
    for cut in (len(inputs) // 3, len(inputs) // 2, 2 * len(inputs) // 3):
        live = RiskCore(CONFIG)
        feed(live, inputs[:cut])
        data = snapshot.dump(live)
        restored = snapshot.load(data, CONFIG)
        assert restored.state_digest() == live.state_digest()
        assert snapshot.dump(restored) == data
        assert encoded(feed(restored, inputs[cut:])) == encoded(feed(live, inputs[cut:]))
        assert restored.state_digest() == live.state_digest()


def test_a_halt_is_requested_once_per_breach_and_accounts_then_refuses_every_order(
    session: tuple[list[RiskInput], list[RiskOutput]],
) -> None:
    inputs, outputs = session
    requested = [o.message for o in outputs if isinstance(o.message, orders.TradingHalted)]
    halted = [h.account_id for h in requested]
    assert halted and len(set(halted)) == len(halted)  # nobody resumed before the end
    for account in halted:
        after = inputs[inputs.index(next(h for h in requested if h.account_id == account)) :]
        resumed = next(i for i, e in enumerate(after) if isinstance(e, orders.TradingResumed))
        mine = [e for e in after[:resumed] if getattr(e, "account_id", "") == account]
        refused = [e for e in mine if isinstance(e, orders.OrderRejected) and e.request == "new"]
        assert refused and all(e.code is orders.RejectCode.TRADING_HALTED for e in refused)
        assert not [e for e in mine if isinstance(e, orders.OrderValidated)]
    core = RiskCore(CONFIG)
    feed(core, inputs)
    assert not any(account.kill_switch_tripped for account in core.accounts.values())


def test_the_snapshot_knows_every_piece_of_risk_state() -> None:
    # A new attribute is state the snapshot must carry (or configuration/derived data).
    assert set(vars(RiskCore())) == {
        "config",
        "accounts",
        "marks",
        "clock",
        "last_closed_day",
        "_rules",
        "_holders",
    }


def test_an_unreadable_snapshot_is_refused() -> None:
    with pytest.raises(RiskSnapshotError, match="unreadable"):
        snapshot.load(b"\x00garbage")
    data = msgspec.msgpack.encode(
        {"format": 99, "accounts": [], "marks": {}, "clock": 0, "last_closed_day": ""}
    )
    with pytest.raises(RiskSnapshotError, match="format 99; this version reads 1"):
        snapshot.load(data)


SYMBOLS = ("AAPL", "MSFT", "BTC-USD")
cents = st.integers(min_value=1, max_value=50_000).map(lambda c: D(c) / 100)
step = st.one_of(
    st.tuples(
        st.just("fill"),
        st.sampled_from(SYMBOLS),
        st.sampled_from(["buy", "sell"]),
        st.integers(min_value=1, max_value=300).map(D),
        cents,
    ),
    st.tuples(st.just("mark"), st.sampled_from(SYMBOLS), cents),
    st.tuples(st.just("deposit"), st.integers(min_value=1, max_value=10_000).map(D)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=60))
def test_equity_is_cash_plus_positions_at_their_marks(steps: list[tuple[object, ...]]) -> None:
    core = RiskCore(RiskConfig(defaults=RiskRules(daily_loss_limit=D(500), max_drawdown=D("0.1"))))
    feed(core, opened("alice", 100_000))
    deposited = D(100_000)
    matches = dict.fromkeys(SYMBOLS, 0)
    halts = 0
    for n, item in enumerate(steps):
        ts = T0 + n
        match item:
            case ("fill", str(symbol), "buy" | "sell" as side, D() as qty, D() as price):
                matches[symbol] += 1
                out = feed(core, [fill("alice", symbol, side, qty, price, matches[symbol], ts)])
            case ("mark", str(symbol), D() as price):
                out = feed(core, [Mark(ts=ts, symbol=symbol, price=price)])
            case ("deposit", D() as amount):
                deposited += amount
                out = feed(core, [orders.CashDeposited(ts=ts, account_id="alice", amount=amount)])
            case _:
                raise AssertionError(item)
        halts += sum(isinstance(o.message, orders.TradingHalted) for o in out)
        metrics = core.metrics("alice")
        assert metrics is not None
        ledger = core.accounts["alice"].ledger
        positions = ledger.positions.values()
        marks = {p.symbol: core.marks.get(p.symbol, p.avg_entry_price) for p in positions}
        assert metrics.equity == ledger.cash + sum(
            (p.qty * marks[p.symbol] for p in positions), D(0)
        )
        assert metrics.gross_exposure == sum(
            (abs(p.qty) * marks[p.symbol] for p in positions), D(0)
        )
        assert metrics.peak_equity >= metrics.equity
        assert 0 <= metrics.concentration <= 1
        # P&L decomposes: what the account made is realized plus unrealized (to the 28
        # significant digits an average entry price carries).
        made = metrics.equity - deposited
        assert abs(made - metrics.realized_pnl - metrics.unrealized_pnl) < D("1e-12")
    assert halts <= 1  # one breach at most: nobody resumed the account
