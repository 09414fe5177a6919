"""Replay market data from the MARKET_DATA stream: from a position, until another, per symbol.

Positions are written as on the command line (`bourse replay --from ... --until ...`):

- `first`: the oldest message the stream still holds
- `last`: the newest message only
- `new`: only messages published from now on (a live tail: it never ends by itself)
- `seq:N`: the message with stream sequence N (or the next one the filter matches)
- `time:<ISO-8601>`: the first message the stream stored at or after that moment, e.g.
  `time:2026-05-01T13:30:00Z`; UTC unless the text gives an offset

`--until` takes `seq:N` or `time:<ISO-8601>` and is inclusive. Without `follow`, a replay ends
at the end of the stream as it was when the replay began; with it, it keeps delivering live
messages until `until`, the limit, or `stop`.

The reader is an ephemeral pull consumer with no acks (the server forgets it when the replay
ends, or 30 s after a crash), filtered with `filter_subjects` (`md.*.<SYMBOL>` per symbol).
Deliveries are checked for order by consumer sequence; should one go missing, the consumer is
made anew from the message after the last one seen, so a replay has no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Literal

import msgspec
from nats.aio.client import Client as NATS

from bourse.bus import pull
from bourse.bus.pull import Delivery, PullRequest, PullStatus
from bourse.bus.streams import MARKET_DATA
from bourse.errors import BrokerError, ConfigError
from bourse.model import subjects

log = logging.getLogger(__name__)

PositionKind = Literal["first", "last", "new", "seq", "time"]

_TIME_EXAMPLE = "e.g. time:2026-05-01T13:30:00Z; UTC unless an offset is given"
FROM_ACCEPTED: Final = f"first, last, new, seq:N (N >= 1) or time:<ISO-8601> ({_TIME_EXAMPLE})"
UNTIL_ACCEPTED: Final = f"seq:N (N >= 1) or time:<ISO-8601> ({_TIME_EXAMPLE})"
SYMBOLS_ACCEPTED: Final = "comma-separated symbols, e.g. AAPL,MSFT or BTC-USD"

_PULL_EXPIRES = 1.0  # seconds a pull waits for messages; also how often a live tail checks `stop`
_CONSUMER_IDLE = 30.0  # the server deletes a replay's consumer this long after its reader died


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """A place in the stream: see the module docstring for the five kinds."""

    kind: PositionKind
    seq: int = 0
    time_ns: int = 0

    def __str__(self) -> str:
        if self.kind == "seq":
            return f"seq:{self.seq}"
        if self.kind == "time":
            return f"time:{format_time(self.time_ns)}"
        return self.kind


def format_time(time_ns: int) -> str:
    """UTC ISO-8601 with milliseconds, e.g. `2026-05-01T13:30:00.123Z`."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{nanos // 1_000_000:03d}Z"


def _parse_seq(text: str, setting: str, spec: str, accepted: str) -> Position:
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(setting, spec, accepted)
    return Position(kind="seq", seq=int(text))


_FRACTION = re.compile(r"^(?P<head>.*\d{2}:\d{2}:\d{2})[.,](?P<digits>\d{1,9})(?P<tail>.*)$")


def _parse_time(text: str, setting: str, spec: str, accepted: str) -> Position:
    text = text.strip()
    extra_ns = 0
    # datetime stops at microseconds; JetStream times have nanoseconds, so take them apart.
    if match := _FRACTION.match(text):
        digits = match["digits"].ljust(9, "0")
        extra_ns = int(digits)
        text = match["head"] + match["tail"]
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(setting, spec, accepted) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    time_ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + extra_ns
    if time_ns < 0:
        raise ConfigError(setting, spec, f"{accepted}; not before 1970")
    return Position(kind="time", time_ns=time_ns)


_KEYWORDS: Final[dict[str, Position]] = {
    "first": Position(kind="first"),
    "last": Position(kind="last"),
    "new": Position(kind="new"),
}


def parse_start(spec: str) -> Position:
    """Parse a `--from` position; raise ConfigError saying what is accepted."""
    kind, _, value = spec.strip().partition(":")
    kind = kind.lower()
    if kind in _KEYWORDS and not value:
        return _KEYWORDS[kind]
    if kind == "seq":
        return _parse_seq(value, "--from", spec, FROM_ACCEPTED)
    if kind == "time":
        return _parse_time(value, "--from", spec, FROM_ACCEPTED)
    raise ConfigError("--from", spec, FROM_ACCEPTED)


def parse_until(spec: str) -> Position:
    """Parse an `--until` position (inclusive); raise ConfigError saying what is accepted."""
    kind, _, value = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "seq":
        return _parse_seq(value, "--until", spec, UNTIL_ACCEPTED)
    if kind == "time":
        return _parse_time(value, "--until", spec, UNTIL_ACCEPTED)
    raise ConfigError("--until", spec, UNTIL_ACCEPTED)


def parse_symbols(text: str | Sequence[str]) -> tuple[str, ...]:
    """`AAPL,msft` -> ("AAPL", "MSFT"): normalized, duplicates dropped, order kept."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    symbols: list[str] = []
    for part in parts:
        if not part.strip():
            raise ConfigError("--symbols", text, SYMBOLS_ACCEPTED)
        symbol = subjects.normalize_symbol(part)
        if symbol not in symbols:
            symbols.append(symbol)
    return tuple(symbols)


class ReplaySpec(msgspec.Struct, frozen=True, kw_only=True):
    """What to replay. Build it with `replay_spec()`, which checks it."""

    start: Position = Position(kind="first")
    until: Position | None = None
    symbols: tuple[str, ...] = ()
    limit: int | None = None
    follow: bool = False

    @property
    def live(self) -> bool:
        """Whether the replay goes on past the end of the stream (a `new` start always does)."""
        return self.follow or self.start.kind == "new"

    def filter_subjects(self) -> tuple[str, ...]:
        if not self.symbols:
            return (subjects.ALL_MARKET_DATA,)
        return tuple(subjects.market_data_filter("*", symbol) for symbol in self.symbols)


def replay_spec(
    start: str = "first",
    until: str | None = None,
    *,
    symbols: str | Sequence[str] | None = None,
    limit: int | None = None,
    follow: bool = False,
) -> ReplaySpec:
    """Parse and check command-line style arguments; raise ConfigError on bad input."""
    start_position = parse_start(start)
    until_position = parse_until(until) if until is not None else None
    if until_position is not None:
        same_kind = until_position.kind == start_position.kind
        if same_kind and (
            until_position.seq < start_position.seq
            or until_position.time_ns < start_position.time_ns
        ):
            raise ConfigError("--until", until, f"a position at or after --from {start}")
    if limit is not None and limit < 1:
        raise ConfigError("--limit", limit, "a whole number of at least 1")
    return ReplaySpec(
        start=start_position,
        until=until_position,
        symbols=parse_symbols(symbols) if symbols else (),
        limit=limit,
        follow=follow,
    )


# --- summary (pure) ------------------------------------------------------------------------

StopReason = Literal["end of stream", "until", "limit", "stopped"]


class ReplaySummary(msgspec.Struct, frozen=True, kw_only=True):
    messages: int
    per_symbol: dict[str, int]
    first_seq: int | None
    last_seq: int | None
    first_time_ns: int | None
    last_time_ns: int | None
    duration_s: float
    stopped_by: StopReason

    @property
    def rate(self) -> float:
        """Messages per second of wall-clock time."""
        return self.messages / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def span_s(self) -> float:
        """Seconds between the first and the last message replayed, as the stream stored them."""
        if self.first_time_ns is None or self.last_time_ns is None:
            return 0.0
        return (self.last_time_ns - self.first_time_ns) / 1e9


def symbol_of(subject: str) -> str:
    """The symbol of an `md.<venue>.<symbol>` subject; the subject itself for anything else."""
    try:
        return subjects.parse_market_data(subject)[1]
    except ValueError:
        return subject


class SummaryBuilder:
    """Counts what a replay delivered; pure, with the clock injected."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock = clock
        self._started_ns = clock()
        self.messages = 0
        self._per_symbol: Counter[str] = Counter()
        self._first: Delivery | None = None
        self._last: Delivery | None = None

    def add(self, delivery: Delivery) -> None:
        self.messages += 1
        self._per_symbol[symbol_of(delivery.subject)] += 1
        if self._first is None:
            self._first = delivery
        self._last = delivery

    @property
    def last_seq(self) -> int:
        return self._last.stream_seq if self._last is not None else 0

    def summary(self, stopped_by: StopReason) -> ReplaySummary:
        first, last = self._first, self._last
        return ReplaySummary(
            messages=self.messages,
            per_symbol=dict(sorted(self._per_symbol.items())),
            first_seq=first.stream_seq if first else None,
            last_seq=last.stream_seq if last else None,
            first_time_ns=first.time_ns if first else None,
            last_time_ns=last.time_ns if last else None,
            duration_s=(self._clock() - self._started_ns) / 1e9,
            stopped_by=stopped_by,
        )


# --- the replay (async shell) -------------------------------------------------------------

OnMessage = Callable[[Delivery], Awaitable[None] | None]
OnProgress = Callable[[int, int | None], None]


def consumer_config(spec: ReplaySpec, name: str, *, resume_after: int = 0) -> pull.ConsumerConfig:
    """The ephemeral consumer for `spec`; `resume_after` restarts after a stream sequence."""
    start = spec.start
    deliver: dict[str, object]
    if resume_after:
        deliver = {"deliver_policy": "by_start_sequence", "opt_start_seq": resume_after + 1}
    elif start.kind == "seq":
        deliver = {"deliver_policy": "by_start_sequence", "opt_start_seq": start.seq}
    elif start.kind == "time":
        deliver = {"deliver_policy": "by_start_time", "opt_start_time": pull.rfc3339(start.time_ns)}
    else:
        deliver = {"deliver_policy": "all" if start.kind == "first" else start.kind}
    return msgspec.structs.replace(
        pull.ConsumerConfig(
            name=name,
            description=f"bourse replay from {start}",
            ack_policy="none",
            filter_subjects=spec.filter_subjects(),
            replay_policy="instant",
            inactive_threshold=pull.nanos(_CONSUMER_IDLE),
            num_replicas=1,
            mem_storage=True,
        ),
        **deliver,
    )


class Replay:
    """One replay of `spec` from `stream`; `await Replay(...).run()` returns its summary."""

    def __init__(
        self,
        nc: NATS,
        spec: ReplaySpec,
        *,
        stream: str = MARKET_DATA.name,
        batch: int = 500,
        clock: Callable[[], int] = time.monotonic_ns,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._nc = nc
        self.spec = spec
        self._stream = stream
        self._batch = batch
        self._clock = clock
        self._wall_clock = wall_clock
        self._consumer = ""
        self._puller: pull.Puller | None = None
        self._next_delivery = 1
        self.total: int | None = None  # how many messages the replay will deliver, when known

    async def _create(self, resume_after: int = 0) -> pull.ConsumerInfo:
        name = f"replay_{self._nc.new_inbox().rsplit('.', 1)[-1]}"
        config = consumer_config(self.spec, name, resume_after=resume_after)
        try:
            info = await pull.create_consumer(self._nc, self._stream, name, config)
        except pull.JetStreamApiError as exc:
            raise BrokerError(
                f"cannot replay from stream {self._stream}: {exc.description}"
                " (is the platform running? `bourse up` creates the streams)"
            ) from exc
        self._consumer = name
        self._next_delivery = 1
        self._puller = await pull.Puller(self._nc, stream=self._stream, consumer=name).start()
        return info

    async def _drop(self, name: str) -> None:
        try:
            await pull.delete_consumer(self._nc, self._stream, name, timeout=2.0)
        except Exception as exc:  # it expires on its own after _CONSUMER_IDLE
            log.debug("could not delete replay consumer %s: %s", name, exc)

    async def _count_after(self, until: Position) -> int:
        """How many messages the filter matches after `until` (to size the progress bar)."""
        after = msgspec.structs.replace(
            self.spec,
            start=(
                Position(kind="seq", seq=until.seq + 1)
                if until.kind == "seq"
                else Position(kind="time", time_ns=until.time_ns + 1)
            ),
        )
        name = f"replay_{self._nc.new_inbox().rsplit('.', 1)[-1]}"
        info = await pull.create_consumer(
            self._nc, self._stream, name, consumer_config(after, name)
        )
        await self._drop(name)
        return info.num_pending

    async def _size(self, info: pull.ConsumerInfo) -> int | None:
        if self.spec.live:
            return None
        total = info.num_pending
        if self.spec.until is not None and total:
            total = max(0, total - await self._count_after(self.spec.until))
        if self.spec.limit is not None:
            total = min(total, self.spec.limit)
        return total

    def _past_until(self, delivery: Delivery) -> bool:
        until = self.spec.until
        if until is None:
            return False
        if until.kind == "seq":
            return delivery.stream_seq > until.seq
        return delivery.time_ns > until.time_ns

    def _until_has_passed(self) -> bool:
        """A live tail with a time `until` already behind us gets nothing more to deliver."""
        until = self.spec.until
        return until is not None and until.kind == "time" and self._wall_clock() > until.time_ns

    async def run(
        self,
        on_message: OnMessage | None = None,
        on_progress: OnProgress | None = None,
        *,
        stop: asyncio.Event | None = None,
    ) -> ReplaySummary:
        """Deliver the messages of the spec in stream order; setting `stop` ends at once."""
        info = await self._create()
        builder = SummaryBuilder(self._clock)
        try:
            end_seq = (await pull.stream_info(self._nc, self._stream)).state.last_seq
            self.total = await self._size(info)
            if self.total == 0 or (not self.spec.live and info.num_pending == 0):
                return builder.summary("end of stream")
            if stop is None:
                return builder.summary(
                    await self._deliver(builder, end_seq, on_message, on_progress)
                )
            delivering = asyncio.ensure_future(
                self._deliver(builder, end_seq, on_message, on_progress)
            )
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait((delivering, stopping), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (delivering, stopping):
                    task.cancel()
                await asyncio.gather(delivering, stopping, return_exceptions=True)
            if delivering.cancelled():
                return builder.summary("stopped")
            return builder.summary(delivering.result())
        finally:
            if self._puller is not None:
                await self._puller.close()
            await self._drop(self._consumer)

    async def _deliver(
        self,
        builder: SummaryBuilder,
        end_seq: int,
        on_message: OnMessage | None,
        on_progress: OnProgress | None,
    ) -> StopReason:
        spec = self.spec
        while True:
            batch = self._batch
            if spec.limit is not None:
                batch = min(batch, spec.limit - builder.messages)
            request = PullRequest(batch=batch, expires=pull.nanos(_PULL_EXPIRES))
            assert self._puller is not None
            async for item in self._puller.pull(request, timeout=_PULL_EXPIRES + 2.0):
                if isinstance(item, PullStatus):
                    stopped_by = await self._on_status(item, builder.last_seq)
                    if stopped_by is not None:
                        return stopped_by
                    break
                if item.consumer_seq != self._next_delivery:
                    log.warning(
                        "replay: delivery %d arrived where %d was due; resuming after "
                        "stream sequence %d",
                        item.consumer_seq,
                        self._next_delivery,
                        builder.last_seq,
                    )
                    await self._resume(builder.last_seq)
                    break
                self._next_delivery += 1
                if self._past_until(item):
                    return "until"
                builder.add(item)
                if on_message is not None:
                    result = on_message(item)
                    if inspect.isawaitable(result):
                        await result
                if on_progress is not None:
                    on_progress(builder.messages, self.total)
                stopped_by = self._after(item, builder.messages, end_seq)
                if stopped_by is not None:
                    return stopped_by

    def _after(self, delivery: Delivery, delivered: int, end_seq: int) -> StopReason | None:
        """Why the replay ends after `delivery`, if it does."""
        spec = self.spec
        until = spec.until
        if spec.limit is not None and delivered >= spec.limit:
            return "limit"
        if until is not None and until.kind == "seq" and delivery.stream_seq >= until.seq:
            return "until"
        if delivery.pending == 0 and spec.live and self._until_has_passed():
            return "until"
        if not spec.live and (delivery.pending == 0 or delivery.stream_seq >= end_seq):
            return "end of stream"
        return None

    async def _on_status(self, status: PullStatus, last_seq: int) -> StopReason | None:
        if status.code in (pull.REQUEST_TIMEOUT, pull.NO_MESSAGES):
            if not self.spec.live:
                return "end of stream"  # nothing came for a whole pull: caught up
            return "until" if self._until_has_passed() else None
        if status.code == pull.NO_ANSWER:
            return None  # the connection dropped; pull again once it is back
        if status.code == pull.NO_RESPONDERS or "deleted" in status.description.lower():
            log.warning("replay: consumer lost (%s); resuming", status.description)
            await self._resume(last_seq)
            return None
        if status.code == pull.CONFLICT:
            return None  # leadership change, server shutdown...: pull again
        raise BrokerError(f"replay pull refused: {status.code} {status.description}")

    async def _resume(self, last_seq: int) -> None:
        """Read from a new consumer that starts after `last_seq` (or where the replay began).

        The old consumer's inbox goes with it, so nothing it still delivers can mix in.
        """
        old = self._consumer
        if self._puller is not None:
            await self._puller.close()
            self._puller = None
        await self._create(resume_after=last_seq)
        await self._drop(old)


async def replay(
    nc: NATS,
    spec: ReplaySpec,
    *,
    on_message: OnMessage | None = None,
    on_progress: OnProgress | None = None,
    stop: asyncio.Event | None = None,
    stream: str = MARKET_DATA.name,
) -> ReplaySummary:
    """Replay `spec` from `stream`, calling `on_message` per message in stream order."""
    return await Replay(nc, spec, stream=stream).run(on_message, on_progress, stop=stop)


__all__ = [
    "FROM_ACCEPTED",
    "UNTIL_ACCEPTED",
    "Position",
    "Replay",
    "ReplaySpec",
    "ReplaySummary",
    "SummaryBuilder",
    "format_time",
    "parse_start",
    "parse_symbols",
    "parse_until",
    "replay",
    "replay_spec",
]
