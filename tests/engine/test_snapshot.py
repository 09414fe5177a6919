"""The engine snapshot: a restored engine is the same engine, now and for every later input."""

from __future__ import annotations

import pytest

from bourse.accounts import snapshot as accounts_snapshot
from bourse.engine import snapshot
from bourse.engine.core import MatchingEngine
from bourse.engine.snapshot import EngineSnapshotError
from bourse.model.instruments import DEFAULT_UNIVERSE
from tests.exchange.journal import Exchange
from tests.exchange.test_exchange_fold import random_session


def test_a_restored_engine_has_the_same_state_and_answers_the_rest_of_the_session_alike() -> None:
    requests = random_session(seed=21, count=3_000)
    live = Exchange()
    for request in requests[:1_500]:
        live.submit([request])
    data = snapshot.dump(live.engine)
    restored = Exchange()
    restored.engine = snapshot.load(data, DEFAULT_UNIVERSE)
    # Its own copy of the accounts core, so the two runs share nothing.
    restored.accounts = accounts_snapshot.load(
        accounts_snapshot.dump(live.accounts), DEFAULT_UNIVERSE
    )
    assert restored.engine.state_digest() == live.engine.state_digest()
    assert snapshot.dump(restored.engine) == data
    assert any(len(live.engine.book(i.symbol)) for i in DEFAULT_UNIVERSE), "books must hold orders"

    mark = len(live.journal)
    for request in requests[1_500:]:
        live.submit([request])
        restored.submit([request])
    assert restored.journal == live.journal[mark:]
    assert restored.engine.state_digest() == live.engine.state_digest()


def test_the_snapshot_knows_every_piece_of_engine_state() -> None:
    # A new attribute on the engine or its books is state the snapshot must carry (or
    # configuration it must not): this fails until snapshot.py says which.
    engine = MatchingEngine(DEFAULT_UNIVERSE)
    assert set(vars(engine)) == {"_scales", "_books", "_md_seq", "_last", "_volume"}
    assert set(vars(engine.book("AAPL"))) == {
        "symbol",
        "self_trade",
        "_asks",
        "_bids",
        "_buy_stops",
        "_sell_stops",
        "_resting",
        "_stops",
        "last_price",
        "match_count",
    }


def test_a_snapshot_is_not_read_against_a_changed_instrument() -> None:
    live = Exchange()
    for request in random_session(seed=2, count=200):
        live.submit([request])
    data = snapshot.dump(live.engine)
    fewer = tuple(i for i in DEFAULT_UNIVERSE if i.symbol != "AAPL")
    with pytest.raises(EngineSnapshotError, match="AAPL"):
        snapshot.load(data, fewer)
    with pytest.raises(EngineSnapshotError, match="unreadable"):
        snapshot.load(b"\x00garbage", DEFAULT_UNIVERSE)
