"""Determinism, conservation and atomic buying power over a seeded random session."""

from __future__ import annotations

import random
from decimal import Decimal as D

from bourse.model import orders
from bourse.model.instruments import DEFAULT_UNIVERSE
from tests.exchange.journal import Exchange

ACCOUNTS = [f"acct{i}" for i in range(8)]
REFERENCE = {"AAPL": D("190.00"), "MSFT": D("420.00"), "BTC-USD": D("65000.00")}
START_CASH = D("1000000")


def opening() -> list[tuple[str, orders.OrdersEvent]]:
    out: list[tuple[str, orders.OrdersEvent]] = []
    for account in ACCOUNTS:
        out.append(
            ("orders.admin", orders.AccountOpened(ts=0, account_id=account, shorting_enabled=True))
        )
        out.append(
            ("orders.admin", orders.CashDeposited(ts=0, account_id=account, amount=START_CASH))
        )
    return out


def random_session(seed: int, count: int) -> list[tuple[str, orders.OrdersEvent]]:
    rng = random.Random(seed)
    instruments = {i.symbol: i for i in DEFAULT_UNIVERSE}
    requests = opening()
    placed: list[tuple[str, str]] = []
    for n in range(count):
        ts = 1_000 + n
        account = rng.choice(ACCOUNTS)
        roll = rng.random()
        if roll < 0.15 and placed:
            oid, owner = rng.choice(placed)
            requests.append(
                ("orders.cancel", orders.CancelRequested(ts=ts, order_id=oid, account_id=owner))
            )
            continue
        if roll < 0.2 and placed:
            oid, owner = rng.choice(placed)
            new_id = f"r{n}"
            requests.append(
                (
                    "orders.replace",
                    orders.ReplaceRequested(
                        ts=ts,
                        order_id=oid,
                        new_order_id=new_id,
                        new_client_order_id=new_id,
                        account_id=owner,
                        qty=D(rng.randint(1, 20)),
                    ),
                )
            )
            placed.append((new_id, owner))
            continue
        symbol = rng.choice(list(REFERENCE))
        instrument = instruments[symbol]
        reference = REFERENCE[symbol]
        side = rng.choice(["buy", "sell"])
        kind = rng.choices(["limit", "market", "stop", "stop_limit"], [70, 20, 5, 5])[0]
        tif = (
            rng.choice(["gtc", "day", "ioc", "fok"])
            if kind == "limit"
            else "gtc"
            if kind != "market"
            else "day"
        )
        offset = D(rng.randint(-30, 30)) * instrument.tick_size * 10
        price = (reference + offset).quantize(instrument.tick_size)
        qty = D(rng.randint(1, 50)) * instrument.lot_size * (100 if instrument.lot_size < 1 else 1)
        oid = f"o{n}"
        requests.append(
            (
                "orders.new",
                orders.OrderSubmitted(
                    ts=ts,
                    order_id=oid,
                    client_order_id=oid,
                    account_id=account,
                    symbol=symbol,
                    side=side,
                    kind=kind,
                    time_in_force=tif,
                    qty=qty,  # type: ignore[arg-type]
                    limit_price=price if kind in ("limit", "stop_limit") else None,
                    stop_price=price if kind in ("stop", "stop_limit") else None,
                    reference_price=reference,
                ),
            )
        )
        placed.append((oid, account))
    return requests


def run_session(seed: int, count: int) -> Exchange:
    exchange = Exchange()
    for request in random_session(seed, count):
        exchange.submit([request])
    return exchange


def test_a_replayed_session_is_identical_output_for_output() -> None:
    first = run_session(seed=7, count=10_000)
    second = run_session(seed=7, count=10_000)
    assert first.digest.hexdigest() == second.digest.hexdigest()
    assert first.accounts.state_digest() == second.accounts.state_digest()
    assert first.engine.state_digest() == second.engine.state_digest()
    fills = sum(isinstance(m, orders.Execution) for _, m in first.journal)
    assert fills > 1_000, "the session must actually trade"
    assert run_session(seed=8, count=2_000).digest.hexdigest() != first.digest.hexdigest()


def test_cash_and_positions_are_conserved_and_nothing_goes_negative() -> None:
    exchange = run_session(seed=11, count=5_000)
    ledgers = exchange.accounts.ledgers
    assert sum(ledger.cash for ledger in ledgers.values()) == START_CASH * len(ACCOUNTS)
    for symbol in REFERENCE:
        assert sum(ledger.position(symbol).qty for ledger in ledgers.values()) == 0
    for ledger in ledgers.values():
        assert ledger.reserved_cash >= 0
        # Reservations are never more than the cash behind them (no double spending).
        assert ledger.buying_power >= 0 or (ledger.shorting_enabled and ledger.cash < 0)


def test_fifty_simultaneous_orders_for_all_buying_power_accept_exactly_one() -> None:
    exchange = Exchange()
    exchange.submit(
        [
            ("orders.admin", orders.AccountOpened(ts=0, account_id="solo")),
            ("orders.admin", orders.CashDeposited(ts=0, account_id="solo", amount=D("19000.00"))),
        ]
    )
    # All fifty reach the journal before accounts reads any of them.
    exchange.journal.extend(
        (
            "orders.new",
            orders.OrderSubmitted(
                ts=1,
                order_id=f"o{i}",
                client_order_id=f"c{i}",
                account_id="solo",
                symbol="AAPL",
                side="buy",
                kind="limit",
                time_in_force="gtc",
                qty=D(100),
                limit_price=D("190.00"),
                reference_price=D("190.00"),
            ),
        )
        for i in range(50)
    )
    exchange.run()
    validated = [m for s, m in exchange.journal if s.startswith("orders.validated.")]
    rejected = [m for s, m in exchange.journal if s.startswith("orders.rejected.")]
    assert len(validated) == 1 and len(rejected) == 49
    assert all(r.code is orders.RejectCode.INSUFFICIENT_BUYING_POWER for r in rejected)  # type: ignore[union-attr]
    assert exchange.accounts.ledgers["solo"].buying_power == 0
