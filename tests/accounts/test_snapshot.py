"""The accounts snapshot: a restored core is the same core, now and for every later event."""

from __future__ import annotations

import pytest

from bourse.accounts import snapshot
from bourse.accounts.core import AccountsCore
from bourse.accounts.snapshot import AccountsSnapshotError
from bourse.engine import snapshot as engine_snapshot
from bourse.model.instruments import DEFAULT_UNIVERSE
from tests.exchange.journal import Exchange
from tests.exchange.test_exchange_fold import random_session


def test_a_restored_core_has_the_same_state_and_answers_the_rest_of_the_session_alike() -> None:
    requests = random_session(seed=22, count=3_000)
    live = Exchange()
    for request in requests[:1_500]:
        live.submit([request])
    data = snapshot.dump(live.accounts)
    restored = Exchange()
    restored.accounts = snapshot.load(data, DEFAULT_UNIVERSE)
    restored.engine = engine_snapshot.load(engine_snapshot.dump(live.engine), DEFAULT_UNIVERSE)
    assert restored.accounts.state_digest() == live.accounts.state_digest()
    assert snapshot.dump(restored.accounts) == data
    assert live.accounts.open_orders, "the session must leave orders open"

    mark = len(live.journal)
    for request in requests[1_500:]:
        live.submit([request])
        restored.submit([request])
    assert restored.journal == live.journal[mark:]
    assert restored.accounts.state_digest() == live.accounts.state_digest()


def test_the_snapshot_knows_every_piece_of_accounts_state() -> None:
    # A new attribute is state the snapshot must carry (or configuration it must not).
    core = AccountsCore(DEFAULT_UNIVERSE)
    assert set(vars(core)) == {
        "instruments",
        "config",
        "ledgers",
        "halted",
        "open_orders",
        "client_order_ids",
    }


def test_an_unreadable_snapshot_is_refused() -> None:
    with pytest.raises(AccountsSnapshotError, match="unreadable"):
        snapshot.load(b"\x00garbage", DEFAULT_UNIVERSE)
