"""The market-data stream's pure parts: frames, timestamps, requests and subscriptions."""

from __future__ import annotations

from datetime import UTC, datetime

import msgpack
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bourse.gateway import mdwire
from bourse.gateway.mdsubs import Auth, Change, Refusal, Subscriptions, parse_request


@pytest.mark.parametrize(("size", "header"), [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_frame_lengths(size: int, header: int) -> None:
    payload = b"x" * size
    built = mdwire.frame(payload, "json")
    assert built[0] == 0x81 and len(built) == header + size and built.endswith(payload)
    assert mdwire.frame(payload, "msgpack")[0] == 0x82
    assert built[1] & 0x80 == 0  # a server's frames are never masked


@given(st.integers(min_value=0, max_value=(1 << 40) * 1_000_000_000))
def test_msgpack_timestamps_round_trip(ns: int) -> None:
    stamp = msgpack.unpackb(msgspec.msgpack.encode(mdwire.msgpack_timestamp(ns)))
    assert isinstance(stamp, msgpack.Timestamp) and stamp.to_unix_nano() == ns


@given(st.integers(min_value=0, max_value=253_402_300_799_999_999_999))  # to the end of 9999
def test_rfc3339_keeps_nanoseconds(ns: int) -> None:
    text = mdwire.rfc3339_ns(ns)
    seconds = datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    assert int(seconds) * 1_000_000_000 + int(text[20:29]) == ns and text.endswith("Z")


def test_parse_auth_and_changes() -> None:
    assert parse_request({"action": "auth", "key": "k", "secret": "s"}, mdwire.SIP) == Auth(
        "k", "s"
    )
    change = parse_request({"action": "unsubscribe", "trades": ["aapl", "*"]}, mdwire.SIP)
    assert change == Change(add=False, channels={"trades": ["AAPL", "*"]})
    crypto = parse_request({"action": "subscribe", "quotes": ["btc/usd", "ETH-USD"]}, mdwire.CRYPTO)
    assert crypto == Change(add=True, channels={"quotes": ["BTC/USD", "ETH-USD"]})


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({}, 400),
        ({"action": 1}, 400),
        ({"action": "auth", "key": "k"}, 400),
        ({"action": "listen"}, 400),
        ({"action": "subscribe", "bogus": []}, 400),
        ({"action": "subscribe", "lulds": ["AAPL"]}, 410),
        ({"action": "subscribe", "trades": ["BTC"]}, 400),  # on the crypto feed: not a pair
    ],
)
def test_refusals(message: dict[str, object], code: int) -> None:
    feed = mdwire.CRYPTO if "BTC" in str(message) else mdwire.SIP
    with pytest.raises(Refusal) as refused:
        parse_request(message, feed)
    assert refused.value.code == code and refused.value.detail


def test_subscriptions_keep_spellings_and_limits() -> None:
    subs = Subscriptions(mdwire.CRYPTO)
    added, removed = subs.apply(Change(True, {"trades": ["BTC/USD", "*"]}), max_symbols=2)
    assert added == [("trades", "BTC-USD", "BTC/USD"), ("trades", "*", "*")] and removed == []
    added, removed = subs.apply(Change(True, {"trades": ["BTC-USD"]}), max_symbols=2)
    assert added == [("trades", "BTC-USD", "BTC-USD")] and removed == []  # re-spelled
    assert subs.lists() == {"trades": ["*", "BTC-USD"]} and subs.count() == 1
    with pytest.raises(Refusal) as refused:
        subs.apply(Change(True, {"quotes": ["ETH/USD", "SOL/USD"]}), max_symbols=2)
    assert refused.value.code == 405 and subs.lists() == {"trades": ["*", "BTC-USD"]}
    added, removed = subs.apply(Change(False, {"trades": ["BTC/USD", "*"]}), max_symbols=2)
    assert added == [] and sorted(removed) == [("trades", "*"), ("trades", "BTC-USD")]
    assert subs.lists() == {}


def test_subscription_message_mirrors_trades_on_stock_feeds() -> None:
    message = mdwire.subscription_message(mdwire.IEX, {"trades": ["AAPL"], "bars": ["*"]})
    assert message["corrections"] == message["cancelErrors"] == ["AAPL"]
    assert mdwire.subscription_message(mdwire.CRYPTO, {})["orderbooks"] == []
