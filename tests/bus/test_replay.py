from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from bourse.bus.pull import Delivery
from bourse.bus.replay import (
    Position,
    Replay,
    ReplaySummary,
    SummaryBuilder,
    format_time,
    parse_start,
    parse_symbols,
    parse_until,
    replay,
    replay_spec,
)
from bourse.bus.streams import MARKET_DATA
from bourse.errors import BrokerError, ConfigError
from bourse.model import marketdata, subjects
from tests.conftest import eventually

# (venue, symbol) of each message published by `_publish`, in order: stream seq = index + 1.
ROUTE = [("nyse", "AAPL"), ("nasdaq", "MSFT"), ("nasdaq", "AAPL"), ("nyse", "IBM")]


def _trade(venue: str, symbol: str, n: int) -> bytes:
    return marketdata.encode(
        marketdata.Trade(
            symbol=symbol,
            venue=venue,
            price=Decimal("100.25") + n,
            size=Decimal(10),
            side="buy",
            ts=1_700_000_000_000_000_000 + n,
            seq=n + 1,
        )
    )


async def _publish(js: JetStreamContext, count: int, first: int = 0) -> None:
    for n in range(first, first + count):
        venue, symbol = ROUTE[n % len(ROUTE)]
        await js.publish(subjects.market_data(venue, symbol), _trade(venue, symbol, n))


async def _replay(nc: NATS, *, start: str = "first", **arguments: object) -> list[Delivery]:
    got: list[Delivery] = []
    await replay(nc, replay_spec(start, **arguments), on_message=got.append)  # type: ignore[arg-type]
    return got


def _iso_ns(time_ns: int) -> str:
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


# --- parsing --------------------------------------------------------------------------------


def test_start_positions_parse() -> None:
    assert parse_start("first") == Position(kind="first")
    assert parse_start(" LAST ") == Position(kind="last")
    assert parse_start("new") == Position(kind="new")
    assert parse_start("seq:42") == Position(kind="seq", seq=42)
    assert parse_start("time:2026-05-01T13:30:00Z") == Position(
        kind="time", time_ns=1_777_642_200 * 1_000_000_000
    )


def test_times_keep_nanoseconds_and_offsets_and_default_to_utc() -> None:
    base = 1_777_642_200 * 1_000_000_000
    assert parse_start("time:2026-05-01T13:30:00.000000123Z").time_ns == base + 123
    assert parse_start("time:2026-05-01T13:30:00.5").time_ns == base + 500_000_000
    assert parse_start("time:2026-05-01T15:30:00+02:00").time_ns == base
    assert parse_start("time:2026-05-01").time_ns == base - 13 * 3600 * 1_000_000_000 - 1800e9
    assert str(parse_start("time:2026-05-01T13:30:00.25Z")) == "time:2026-05-01T13:30:00.250Z"


@pytest.mark.parametrize(
    "spec", ["seq:abc", "seq:", "seq:0", "seq:-3", "time:notadate", "time:", "yesterday", "first:1"]
)
def test_bad_start_says_what_is_accepted(spec: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_start(spec)
    message = str(caught.value)
    assert caught.value.setting == "--from"
    assert repr(spec) in message
    assert "first, last, new, seq:N" in message and "time:<ISO-8601>" in message


@pytest.mark.parametrize("spec", ["first", "new", "seq:x", "time:noon", "1234"])
def test_bad_until_says_what_is_accepted(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid --until: .*accepted: seq:N \(N >= 1\) or time"):
        parse_until(spec)


def test_until_before_from_is_refused() -> None:
    with pytest.raises(ConfigError, match="at or after --from seq:10"):
        replay_spec("seq:10", "seq:9")
    with pytest.raises(ConfigError, match="at or after --from"):
        replay_spec("time:2026-05-01T13:30:00Z", "time:2026-05-01T13:29:59Z")
    assert replay_spec("seq:10", "seq:10").until == Position(kind="seq", seq=10)


def test_symbols_and_limit_are_checked() -> None:
    assert parse_symbols("aapl, MSFT,AAPL,btc/usd") == ("AAPL", "MSFT", "BTC-USD")
    with pytest.raises(ConfigError, match="--symbols"):
        parse_symbols("AAPL,,MSFT")
    with pytest.raises(ConfigError, match="invalid symbol"):
        parse_symbols("AA PL")
    with pytest.raises(ConfigError, match="--limit"):
        replay_spec(limit=0)


def test_symbols_become_filter_subjects() -> None:
    assert replay_spec().filter_subjects() == ("md.>",)
    assert replay_spec(symbols="AAPL,MSFT").filter_subjects() == ("md.*.AAPL", "md.*.MSFT")
    assert replay_spec("new").live and replay_spec(follow=True).live
    assert not replay_spec("seq:3").live


def test_summary_counts_per_symbol_and_measures_rate() -> None:
    ticks = iter([0, 2_000_000_000])
    builder = SummaryBuilder(clock=lambda: next(ticks))
    for seq, subject in enumerate(["md.nyse.AAPL", "md.x.MSFT", "md.y.AAPL", "other.subject"], 1):
        builder.add(
            Delivery(
                subject=subject,
                data=b"",
                headers={},
                reply="",
                stream_seq=seq * 10,
                consumer_seq=seq,
                delivered=1,
                pending=0,
                time_ns=seq * 1_000_000_000,
            )
        )
    summary = builder.summary("end of stream")
    assert summary == ReplaySummary(
        messages=4,
        per_symbol={"AAPL": 2, "MSFT": 1, "other.subject": 1},
        first_seq=10,
        last_seq=40,
        first_time_ns=1_000_000_000,
        last_time_ns=4_000_000_000,
        duration_s=2.0,
        stopped_by="end of stream",
    )
    assert summary.rate == 2.0
    assert summary.span_s == 3.0
    assert format_time(1_500_000_000) == "1970-01-01T00:00:01.500Z"


# --- against a real server ------------------------------------------------------------------


async def test_from_first_replays_everything_in_order_with_a_summary(
    nc: NATS, js: JetStreamContext
) -> None:
    await _publish(js, 40)
    progress: list[tuple[int, int | None]] = []
    got: list[Delivery] = []
    summary = await replay(
        nc,
        replay_spec("first"),
        on_message=got.append,
        on_progress=lambda done, total: progress.append((done, total)),
    )

    assert [d.stream_seq for d in got] == list(range(1, 41))
    assert marketdata.decode(got[0].data) == marketdata.decode(_trade("nyse", "AAPL", 0))
    assert summary.messages == 40
    assert summary.per_symbol == {"AAPL": 20, "IBM": 10, "MSFT": 10}
    assert (summary.first_seq, summary.last_seq) == (1, 40)
    assert summary.first_time_ns == got[0].time_ns and summary.last_time_ns == got[-1].time_ns
    assert summary.stopped_by == "end of stream"
    assert summary.duration_s > 0 and summary.rate > 0
    assert progress[0] == (1, 40) and progress[-1] == (40, 40) and len(progress) == 40
    await eventually(_no_consumers_left(js))


def _no_consumers_left(js: JetStreamContext) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await js.stream_info(MARKET_DATA.name)).state.consumer_count == 0

    return check


async def test_an_empty_stream_ends_at_once(nc: NATS, js: JetStreamContext) -> None:
    summary = await replay(nc, replay_spec("first"))
    assert summary.messages == 0 and summary.first_seq is None
    assert summary.stopped_by == "end of stream"


async def test_from_last_replays_only_the_newest(nc: NATS, js: JetStreamContext) -> None:
    await _publish(js, 10)
    assert [d.stream_seq for d in await _replay(nc, start="last")] == [10]
    # With a symbol filter, the newest message of those symbols.
    assert [d.stream_seq for d in await _replay(nc, start="last", symbols="IBM")] == [8]


async def test_from_seq_starts_there_and_until_seq_is_inclusive(
    nc: NATS, js: JetStreamContext
) -> None:
    await _publish(js, 30)
    assert [d.stream_seq for d in await _replay(nc, start="seq:25")] == list(range(25, 31))
    got = await _replay(nc, start="seq:5", until="seq:12")
    assert [d.stream_seq for d in got] == list(range(5, 13))


async def test_from_time_and_until_time(nc: NATS, js: JetStreamContext) -> None:
    await _publish(js, 20)
    stored = {d.stream_seq: d.time_ns for d in await _replay(nc)}
    got = await _replay(nc, start=f"time:{_iso_ns(stored[8])}", until=f"time:{_iso_ns(stored[15])}")
    assert got[0].stream_seq <= 8  # messages stored in the same nanosecond come along
    assert [d.stream_seq for d in got if d.stream_seq >= 8] == list(range(8, 16))
    assert all(stored[8] <= d.time_ns <= stored[15] for d in got)


async def test_symbol_filter_uses_one_filter_per_symbol(nc: NATS, js: JetStreamContext) -> None:
    await _publish(js, 40)
    progress: list[tuple[int, int | None]] = []
    got: list[Delivery] = []
    summary = await replay(
        nc,
        replay_spec("first", "seq:30", symbols="IBM,msft"),
        on_message=got.append,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert {subjects.parse_market_data(d.subject)[1] for d in got} == {"IBM", "MSFT"}
    assert [d.stream_seq for d in got] == [s for s in range(1, 31) if s % 2 == 0]
    assert summary.per_symbol == {"IBM": 7, "MSFT": 8}
    assert summary.stopped_by == "until"
    assert progress[-1] == (15, 15)  # the total knew where `until` would stop


async def test_limit_stops_early(nc: NATS, js: JetStreamContext) -> None:
    await _publish(js, 50)
    summary = await replay(nc, replay_spec("seq:10", limit=7))
    assert (summary.messages, summary.first_seq, summary.last_seq) == (7, 10, 16)
    assert summary.stopped_by == "limit"


async def test_new_waits_for_live_messages_only(nc: NATS, js: JetStreamContext) -> None:
    await _publish(js, 5)
    got: list[Delivery] = []
    task = asyncio.create_task(replay(nc, replay_spec("new", limit=3), on_message=got.append))
    await eventually(_consumers(js, 1))
    await _publish(js, 4, first=5)
    summary = await asyncio.wait_for(task, 10)
    assert [d.stream_seq for d in got] == [6, 7, 8]
    assert summary.stopped_by == "limit"


def _consumers(js: JetStreamContext, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await js.stream_info(MARKET_DATA.name)).state.consumer_count == count

    return check


async def test_follow_goes_on_live_until_stopped(nc: NATS, js: JetStreamContext) -> None:
    await _publish(js, 5)
    got: list[Delivery] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        replay(nc, replay_spec("first", follow=True), on_message=got.append, stop=stop)
    )
    await eventually(lambda: len(got) == 5)
    await _publish(js, 5, first=5)
    await eventually(lambda: len(got) == 10)
    stop.set()
    summary = await asyncio.wait_for(task, 10)
    assert [d.stream_seq for d in got] == list(range(1, 11))
    assert summary.stopped_by == "stopped"


async def test_a_lost_consumer_is_made_anew_without_gap_or_duplicate(
    nc: NATS, js: JetStreamContext
) -> None:
    await _publish(js, 10)
    got: list[Delivery] = []
    stop = asyncio.Event()

    async def on_message(delivery: Delivery) -> None:
        got.append(delivery)
        if delivery.stream_seq == 10:  # the replay reader vanishes (as on a broker restart)
            (consumer,) = await js.consumers_info(MARKET_DATA.name)
            await js.delete_consumer(MARKET_DATA.name, consumer.name)

    task = asyncio.create_task(
        replay(nc, replay_spec("first", follow=True), on_message=on_message, stop=stop)
    )
    await eventually(lambda: len(got) == 10)
    await eventually(_consumers(js, 1))  # made anew
    await _publish(js, 5, first=10)
    await eventually(lambda: len(got) == 15)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert [d.stream_seq for d in got] == list(range(1, 16))


async def test_follow_ends_at_a_time_until_already_passed(nc: NATS, js: JetStreamContext) -> None:
    await _publish(js, 6)
    stored = [d.time_ns for d in await _replay(nc)]
    summary = await replay(nc, replay_spec("first", f"time:{_iso_ns(stored[2])}", follow=True))
    assert summary.messages == 3 and summary.stopped_by == "until"


async def test_a_missing_stream_is_reported(nc: NATS, js: JetStreamContext) -> None:
    with pytest.raises(BrokerError, match="cannot replay from stream NOPE"):
        await Replay(nc, replay_spec(), stream="NOPE").run()
