"""FoldService with a tiny core (a running total per key) over a real nats-server."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from bourse.bus.fold import (
    INPUT_SEQ_HEADER,
    SNAPSHOT_BYTES_PER_INPUT,
    FoldError,
    FoldService,
    subject_matcher,
)
from bourse.bus.publisher import MSG_ID_HEADER
from bourse.bus.snapshots import FoldSnapshot, SnapshotError, SnapshotStore
from tests.conftest import eventually

INPUTS = "FOLD_IN"
OUTPUTS = "FOLD_OUT"


class Add(msgspec.Struct, frozen=True):
    key: str
    amount: int


class Total(msgspec.Struct, frozen=True):
    key: str
    total: int


class Totals:
    """Sums amounts per key; answers each input with the new total (and a second message for
    amounts over 100, so an input can have several outputs)."""

    def __init__(self, *, out_subject: str = "total") -> None:
        self.totals: dict[str, int] = {}
        self.out_subject = out_subject

    def apply(self, event: Add) -> list[tuple[str, Total]]:
        total = self.totals[event.key] = self.totals.get(event.key, 0) + event.amount
        out = [(f"{self.out_subject}.{event.key}", Total(key=event.key, total=total))]
        if event.amount > 100:
            out.append((f"big.{event.key}", Total(key=event.key, total=event.amount)))
        return out

    def snapshot(self) -> bytes:
        return msgspec.json.encode(self.totals)

    def restore(self, data: bytes) -> None:
        self.totals = msgspec.json.decode(data, type=dict[str, int])

    def state_digest(self) -> str:
        return hashlib.sha256(msgspec.json.encode(sorted(self.totals.items()))).hexdigest()


_decoder = msgspec.json.Decoder(Add)


def totals(
    nc: NATS,
    *,
    snapshot_every: int = 1000,
    core: Totals | None = None,
    filters: tuple[str, ...] = ("add.>",),
) -> FoldService[Add]:
    return FoldService(
        nc,
        name="totals",
        stream=INPUTS,
        filter_subjects=filters,
        outputs={OUTPUTS: ("total.*", "big.*")},
        core=core or Totals(),
        decode=_decoder.decode,
        snapshot_every=snapshot_every,
    )


@pytest.fixture
async def streams(js: JetStreamContext) -> AsyncIterator[JetStreamContext]:
    await js.add_stream(StreamConfig(name=INPUTS, subjects=["add.>", "more.>", "other.>"]))
    await js.add_stream(StreamConfig(name=OUTPUTS, subjects=["total.>", "big.>", "stray.>"]))
    yield js


async def add(js: JetStreamContext, key: str, amount: int) -> int:
    return (await js.publish(f"add.{key}", msgspec.json.encode(Add(key, amount)))).seq


async def outputs(js: JetStreamContext) -> list[tuple[str, Total, str, str]]:
    """(subject, message, Nats-Msg-Id, Bourse-Input-Seq) of every output, in order."""
    last = (await js.stream_info(OUTPUTS)).state.last_seq
    got = []
    for seq in range(1, last + 1):
        msg = await js.get_msg(OUTPUTS, seq)
        headers = msg.headers or {}
        got.append(
            (
                str(msg.subject),
                msgspec.json.decode(msg.data or b"", type=Total),
                headers[MSG_ID_HEADER],
                headers[INPUT_SEQ_HEADER],
            )
        )
    return got


# One filter is applied by the server, several by the service itself.
@pytest.mark.parametrize("filters", [("add.>",), ("add.>", "more.>")])
async def test_outputs_follow_the_inputs_in_order_with_ids_and_input_sequences(
    nc: NATS, streams: JetStreamContext, filters: tuple[str, ...]
) -> None:
    service = await totals(nc, filters=filters).start()
    try:
        a1 = await add(streams, "a", 5)
        await streams.publish("other.noise", b"not for the fold")
        await streams.publish("add.a", b"{not json")  # skipped, the same way by every replay
        a2 = await add(streams, "a", 200)
        b1 = await add(streams, "b", 1)
        await service.wait_caught_up()
        assert await outputs(streams) == [
            ("total.a", Total("a", 5), f"totals.{a1}.0", str(a1)),
            ("total.a", Total("a", 205), f"totals.{a2}.0", str(a2)),
            ("big.a", Total("a", 200), f"totals.{a2}.1", str(a2)),
            ("total.b", Total("b", 1), f"totals.{b1}.0", str(b1)),
        ]
        assert (service.last_seq, service.processed, service.stats.skipped) == (b1, 4, 1)
        await streams.publish("other.noise", b"after the last input")
        await service.wait_caught_up()
        assert service.processed == 4
    finally:
        await service.stop()


async def test_a_restart_without_snapshot_rebuilds_the_state_and_publishes_nothing_again(
    nc: NATS, streams: JetStreamContext
) -> None:
    first = await totals(nc).start()
    for n in range(30):
        await add(streams, f"k{n % 4}", n * 10)
    await first.wait_caught_up()
    digest = first.core.state_digest()
    await first.abort()  # a crash: no snapshot, nothing flushed on the way out
    published = await outputs(streams)

    second = await totals(nc).start()
    try:
        await second.wait_caught_up()
        assert second.core.state_digest() == digest
        assert second.stats.applied == 30
        assert second.stats.suppressed == len(published)
        # Nothing was sent at all: the duplicate window played no part.
        assert second.stats.published == second.publisher_stats.published == 0
        await add(streams, "k0", 1)
        await second.wait_caught_up()
        assert await outputs(streams) == [
            *published,
            ("total.k0", Total("k0", 1121), f"totals.{second.last_seq}.0", str(second.last_seq)),
        ]
    finally:
        await second.stop()


async def test_snapshots_bound_the_replay_to_the_tail(nc: NATS, streams: JetStreamContext) -> None:
    first = await totals(nc, snapshot_every=10).start()
    seqs = [await add(streams, "k", n) for n in range(25)]
    await first.wait_caught_up()
    assert first.stats.snapshots == 2
    digest = first.core.state_digest()
    await first.abort()

    second = await totals(nc, snapshot_every=10).start()
    try:
        assert second.stats.restored_seq == seqs[19]
        await second.wait_caught_up()
        assert (second.stats.applied, second.stats.published) == (5, 0)
        assert second.core.state_digest() == digest
        assert second.processed == 25
    finally:
        await second.stop()  # saves the tail: the next start replays nothing
    third = await totals(nc).start()
    try:
        assert third.stats.restored_seq == seqs[-1]
    finally:
        await third.stop()


async def test_a_lost_consumer_is_made_anew_after_the_last_input_applied(
    nc: NATS, streams: JetStreamContext
) -> None:
    service = await totals(nc).start()
    try:
        for n in range(5):
            await add(streams, "k", n)
        await service.wait_caught_up()
        for consumer in await streams.consumers_info(INPUTS):
            await streams.delete_consumer(INPUTS, consumer.name)
        for n in range(5, 10):
            await add(streams, "k", n)
        await eventually(lambda: service.stats.resets == 1)
        await service.wait_caught_up()
        assert service.core.totals == {"k": sum(range(10))}  # type: ignore[attr-defined]
        assert [m.total for _, m, _, _ in await outputs(streams)] == [
            sum(range(n + 1)) for n in range(10)
        ]
    finally:
        await service.stop()


async def test_an_output_outside_the_declared_subjects_stops_the_service(
    nc: NATS, streams: JetStreamContext
) -> None:
    service = await totals(nc, core=Totals(out_subject="stray")).start()
    await add(streams, "k", 1)
    with pytest.raises(FoldError, match=r"stray\.k"):
        await service.wait_caught_up()
    with pytest.raises(FoldError):
        await service.stop()
    assert (await streams.stream_info(OUTPUTS)).state.messages == 0


async def test_a_snapshot_that_does_not_fit_the_stream_or_the_core_is_refused(
    nc: NATS, streams: JetStreamContext
) -> None:
    await add(streams, "k", 1)
    store = SnapshotStore(nc)
    good = FoldSnapshot(
        service="totals",
        stream=INPUTS,
        input_seq=1,
        processed=1,
        output_marks={},
        state_digest=Totals().state_digest(),
        state=Totals().snapshot(),
    )
    await store.save(msgspec.structs.replace(good, input_seq=99))
    with pytest.raises(SnapshotError, match="ends at 1"):
        await totals(nc).start()
    await store.save(msgspec.structs.replace(good, state=b'{"k": 7}'))
    with pytest.raises(SnapshotError, match="differs"):
        await totals(nc).start()


async def test_a_journal_that_lost_its_beginning_is_not_folded_without_a_snapshot(
    nc: NATS, streams: JetStreamContext
) -> None:
    for n in range(3):
        await add(streams, "k", n)
    await streams.purge_stream(INPUTS, keep=1)
    with pytest.raises(FoldError, match="starts at sequence 3"):
        await totals(nc).start()


async def test_a_journal_that_lost_messages_after_the_snapshot_is_not_folded(
    nc: NATS, streams: JetStreamContext
) -> None:
    first = await totals(nc).start()
    for n in range(3):
        await add(streams, "k", n)
    await first.wait_caught_up()
    await first.stop()  # a snapshot at input 3
    for n in range(3):  # inputs 4-6, folded by nobody yet
        await add(streams, "k", n)
    await streams.purge_stream(INPUTS, keep=1)  # 4 and 5 are gone (max age, a purge...)
    with pytest.raises(FoldError, match="after the snapshot"):
        await totals(nc).start()


def _token_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching, token by token: what subject_matcher must agree with."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or token not in ("*", tokens[index]):
            return False
    return len(tokens) == len(wanted)


_tokens = st.sampled_from(["orders", "new", "executed", "x", "x-1", "a+b", "$JS"])
_subjects = st.lists(_tokens, min_size=1, max_size=5).map(".".join)
_filters = st.lists(
    st.lists(st.one_of(_tokens, st.just("*")), min_size=1, max_size=4).flatmap(
        lambda head: st.sampled_from([head, [*head, ">"]])
    ),
    min_size=1,
    max_size=4,
).map(lambda filters: [".".join(tokens) for tokens in filters])


@settings(max_examples=500, deadline=None)
@given(filters=_filters, subject=_subjects)
def test_subject_matcher_matches_as_nats_does(filters: list[str], subject: str) -> None:
    expected = any(_token_matches(pattern, subject) for pattern in filters)
    assert (subject_matcher(filters).fullmatch(subject) is not None) == expected


class Bulky(Totals):
    """Totals with a large state: the snapshot carries `pad` bytes of ballast."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def snapshot(self) -> bytes:
        return msgspec.json.encode(_BulkyState(totals=self.totals, pad="x" * self.pad))

    def restore(self, data: bytes) -> None:
        self.totals = msgspec.json.decode(data, type=_BulkyState).totals


class _BulkyState(msgspec.Struct):
    totals: dict[str, int]
    pad: str


async def test_a_large_state_is_snapshotted_less_often(nc: NATS, streams: JetStreamContext) -> None:
    # ~6.4 kB of state: at least 6,400 / SNAPSHOT_BYTES_PER_INPUT = 50 inputs between two
    # snapshots, where snapshot_every alone would take one every 10.
    pad = 50 * SNAPSHOT_BYTES_PER_INPUT
    first = await totals(nc, snapshot_every=10, core=Bulky(pad)).start()
    seqs = [await add(streams, "k", n) for n in range(100)]
    await first.wait_caught_up()
    assert first.stats.snapshots == 2  # after inputs 10 and 60 (the next is due after 110)
    digest = first.core.state_digest()
    await first.abort()

    # A restart spaces its snapshots by the state it restored, not by snapshot_every alone.
    second = await totals(nc, snapshot_every=10, core=Bulky(pad)).start()
    try:
        assert second.stats.restored_seq == seqs[59]
        await second.wait_caught_up()
        assert second.core.state_digest() == digest
        more = [await add(streams, "k", 1) for _ in range(5)]
        await second.wait_caught_up()
        assert second.stats.applied == 40 + len(more)
        assert second.stats.snapshots == 0  # 45 inputs since the restored one (10 would do one)
    finally:
        await second.abort()
