"""The market maker's bookkeeping of its orders and position, without NATS."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from bourse.agents.market_maker import Quote, WorkingOrder
from bourse.agents.working import Outcome, WorkingOrders
from bourse.model import orders
from bourse.model.orders import RejectCode

ACCOUNT = "mm-1"


def accepted(oid: str, account: str = ACCOUNT) -> orders.OrderAccepted:
    return orders.OrderAccepted(ts=1, order_id=oid, account_id=account, symbol="AAPL")


def execution(
    oid: str, side: orders.Side, qty: str, leaves: str, match_id: int, symbol: str = "AAPL"
) -> orders.Execution:
    return orders.Execution(
        ts=1,
        order_id=oid,
        account_id=ACCOUNT,
        symbol=symbol,
        side=side,
        price=D("100.05"),
        qty=D(qty),
        leaves_qty=D(leaves),
        liquidity="maker",
        match_id=match_id,
    )


def cancelled(oid: str) -> orders.OrderCancelled:
    return orders.OrderCancelled(
        ts=1, order_id=oid, account_id=ACCOUNT, symbol="AAPL", leaves_qty=D(0), reason="requested"
    )


def rejected(
    oid: str, request: str = "new", code: RejectCode = RejectCode.INSUFFICIENT_BUYING_POWER
) -> orders.OrderRejected:
    return orders.OrderRejected(
        ts=1,
        order_id=oid,
        account_id=ACCOUNT,
        request=request,  # type: ignore[arg-type]
        code=code,
        message="refused",
        symbol="AAPL",
    )


def book_with(*placed: tuple[str, str, str]) -> WorkingOrders:
    """A book with orders (id, side, price) of 100 AAPL each, just placed."""
    book = WorkingOrders(ACCOUNT)
    for oid, side, price in placed:
        book.placed(oid, "AAPL", Quote(side, D(price), D(100)))
    return book


def state(book: WorkingOrders, order_id: str) -> str | None:
    order = book.get(order_id)
    return order.state if order is not None else None


def test_an_order_is_live_from_placement_and_leaves_when_filled() -> None:
    book = book_with(("a1", "sell", "100.05"))
    assert book.live("AAPL") == [WorkingOrder("a1", "sell", D("100.05"), D(100))]
    assert book.apply(accepted("a1")) == Outcome("accepted", "AAPL")
    assert state(book, "a1") == "working"

    assert book.apply(execution("a1", "sell", "60", "40", 1)) == Outcome("filled", "AAPL")
    assert book.live("AAPL") == [WorkingOrder("a1", "sell", D("100.05"), D(40))]
    assert book.position("AAPL") == -60
    book.apply(execution("a1", "sell", "40", "0", 2))
    assert book.live("AAPL") == [] and len(book) == 0
    assert book.position("AAPL") == -100


def test_a_cancelling_order_is_not_live_but_still_holds_its_quantity_until_confirmed() -> None:
    book = book_with(("a1", "sell", "100.05"), ("b1", "buy", "99.95"))
    book.cancelling("a1")
    assert [o.order_id for o in book.live("AAPL")] == ["b1"]
    assert book.reserved_sells("AAPL") == 100
    assert book.uncancelled() == ["b1"]
    assert book.apply(cancelled("a1")) == Outcome("closed", "AAPL")
    assert book.reserved_sells("AAPL") == 0 and len(book) == 1


def test_a_refused_order_is_forgotten_and_its_refusal_returned() -> None:
    book = book_with(("b1", "buy", "99.95"))
    refusal = rejected("b1")
    assert book.apply(refusal) == Outcome("refused", "AAPL", refusal)
    assert len(book) == 0


def test_a_cancel_refused_as_unknown_forgets_the_order_and_any_other_refusal_keeps_it() -> None:
    book = book_with(("a1", "sell", "100.05"), ("a2", "sell", "100.10"))
    book.cancelling("a1")
    book.cancelling("a2")
    unknown = rejected("a1", "cancel", RejectCode.UNKNOWN_ORDER)
    assert book.apply(unknown) == Outcome("cancel_refused", "AAPL", unknown)
    assert book.get("a1") is None
    halted = rejected("a2", "cancel", RejectCode.TRADING_HALTED)
    assert book.apply(halted) == Outcome("cancel_refused", "AAPL", halted)
    assert [o.order_id for o in book.live("AAPL")] == ["a2"]  # to be cancelled again


def test_other_accounts_and_unknown_orders_change_nothing() -> None:
    book = book_with(("b1", "buy", "99.95"))
    assert book.apply(accepted("b1", account="alice")) is None
    assert book.apply(accepted("zz")) is None
    assert book.apply(cancelled("zz")) is None
    assert book.apply(rejected("zz", "cancel", RejectCode.UNKNOWN_ORDER)) is None
    assert state(book, "b1") == "pending"


def test_orders_adopted_from_an_earlier_run_are_tracked_until_their_cancel_is_answered() -> None:
    book = book_with(("new", "buy", "99.95"))
    book.adopt("old1", "AAPL")
    book.adopt("old2", "AAPL")
    book.adopt("old3", "MSFT")
    assert book.adopted == 3 and len(book) == 4
    assert sorted(book.order_ids("AAPL")) == ["new", "old1", "old2"]
    assert book.live("AAPL") == [WorkingOrder("new", "buy", D("99.95"), D(100))]
    assert book.apply(cancelled("old1")) == Outcome("closed", "AAPL")
    gone = rejected("old3", "cancel", RejectCode.UNKNOWN_ORDER)
    assert book.apply(gone) == Outcome("cancel_refused", "MSFT", gone)
    # A fill of an adopted order moves the position; the last one finishes it.
    book.apply(execution("old2", "buy", "100", "0", 7))
    assert book.adopted == 0 and book.position("AAPL") == 100


def test_a_position_report_and_the_executions_it_includes_count_once() -> None:
    book = WorkingOrders(ACCOUNT)
    book.position_reported("AAPL", D(-300), match_id=4)  # the start-up read
    book.apply(execution("x", "buy", "100", "0", 4))  # already in the report
    assert book.position("AAPL") == -300
    book.apply(execution("y", "buy", "100", "0", 5))  # not yet reported
    assert book.position("AAPL") == -200
    book.position_reported("AAPL", D(-200), match_id=5)
    assert book.position("AAPL") == -200
    book.position_reported("AAPL", D(-300), match_id=4)  # an older report: ignored
    assert book.position("AAPL") == -200
    # A report corrects an execution that never arrived.
    book.position_reported("AAPL", D(-100), match_id=9)
    assert book.position("AAPL") == -100


@settings(max_examples=300, deadline=None)
@given(
    fills=st.lists(
        st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 500)), min_size=1, max_size=12
    ),
    data=st.data(),
)
def test_the_position_is_exact_however_reports_and_executions_interleave(
    fills: list[tuple[orders.Side, int]], data: st.DataObject
) -> None:
    # Executions arrive in order, accounts' reports too (some lost), but the two streams
    # interleave in any way: a report may come before the execution it includes.
    signed = [qty if side == "buy" else -qty for side, qty in fills]
    executions = [
        execution(f"o{n}", side, str(qty), "0", n + 1) for n, (side, qty) in enumerate(fills)
    ]
    kept = data.draw(st.lists(st.booleans(), min_size=len(fills), max_size=len(fills)))
    reports = [(sum(signed[: n + 1]), n + 1) for n in range(len(fills)) if kept[n]]
    arrivals: list[orders.Execution | tuple[int, int]] = []
    exec_queue: list[orders.Execution | tuple[int, int]] = list(executions)
    report_queue: list[orders.Execution | tuple[int, int]] = list(reports)
    while exec_queue or report_queue:
        both = exec_queue and report_queue
        source = data.draw(st.sampled_from([exec_queue, report_queue])) if both else None
        arrivals.append((source or exec_queue or report_queue).pop(0))

    book = WorkingOrders(ACCOUNT)
    for arrival in arrivals:
        if isinstance(arrival, orders.Execution):
            book.apply(arrival)
        else:
            book.position_reported("AAPL", D(arrival[0]), arrival[1])
    assert book.position("AAPL") == sum(signed)
