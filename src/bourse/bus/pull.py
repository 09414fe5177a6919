"""Raw JetStream pull requests and API calls, for features nats-py does not wrap.

nats-py 2.16 has no priority groups (pinned clients), no consumer reset and no unpin, and its
`fetch` hides the status messages that those features speak in. This module talks to the
JetStream API directly: JSON requests on `$JS.API.*` subjects, pull requests on
`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` answered on a private inbox.

`Puller` keeps one pull request outstanding at a time. Each request gets its own reply subject
(`<inbox>.<n>`), so a message or status that arrives for an older request is recognised and
dropped instead of being mistaken for an answer to the current one.

`DirectQueue` stands in for a subscription's message queue so that nats-py's reading task
hands each message straight to a reader that needs no task of its own (the analytics batch
reader, `AckedPublisher`'s acks):
no task, queue or awaited callback per message (nats-py reaches the queue through
`put_nowait`, `qsize`, `empty`, `task_done` and `join` only). `Puller` keeps nats-py's
callback: measured on the order path at 800 orders/s, the direct hand-over saved nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from enum import Enum
from types import MappingProxyType
from typing import Final, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import Header

from bourse.errors import BrokerError

log = logging.getLogger(__name__)

API_PREFIX: Final = "$JS.API"
PIN_ID_HEADER: Final = "Nats-Pin-Id"

# Status codes JetStream sends on a pull request's inbox (headers only, no payload).
HEARTBEAT: Final = 100
BAD_REQUEST: Final = 400
NO_MESSAGES: Final = 404
REQUEST_TIMEOUT: Final = 408
CONFLICT: Final = 409  # consumer deleted, leadership change, max waiting, server shutdown...
PIN_ID_MISMATCH: Final = 423
NO_RESPONDERS: Final = 503
NO_ANSWER: Final = 0  # not from the server: nothing came back before the client gave up

NANOS: Final = 1_000_000_000


def nanos(seconds: float) -> int:
    return int(seconds * NANOS)


def rfc3339(time_ns: int) -> str:
    """Nanoseconds since the epoch as the RFC 3339 UTC text JetStream accepts."""
    seconds, fraction = divmod(time_ns, NANOS)
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def consumer_subject(action: str, stream: str, consumer: str) -> str:
    """`$JS.API.CONSUMER.<ACTION>.<stream>.<consumer>`: CREATE, INFO, DELETE, RESET, UNPIN..."""
    return f"{API_PREFIX}.CONSUMER.{action}.{stream}.{consumer}"


def next_message_subject(stream: str, consumer: str) -> str:
    return consumer_subject("MSG.NEXT", stream, consumer)


def stream_info_subject(stream: str) -> str:
    return f"{API_PREFIX}.STREAM.INFO.{stream}"


# --- API messages -------------------------------------------------------------------------


class ApiError(msgspec.Struct, frozen=True):
    code: int = 0
    err_code: int = 0
    description: str = ""


class ApiResponse(msgspec.Struct, frozen=True, kw_only=True):
    error: ApiError | None = None


class SequenceInfo(msgspec.Struct, frozen=True):
    consumer_seq: int = 0
    stream_seq: int = 0


class PriorityGroupState(msgspec.Struct, frozen=True):
    group: str = ""
    pinned_client_id: str = ""


class ConsumerInfo(ApiResponse, frozen=True, kw_only=True):
    name: str = ""
    delivered: SequenceInfo = SequenceInfo()
    ack_floor: SequenceInfo = SequenceInfo()
    num_ack_pending: int = 0
    num_pending: int = 0
    num_waiting: int = 0
    priority_groups: tuple[PriorityGroupState, ...] = ()


class ConsumerResetInfo(ConsumerInfo, frozen=True, kw_only=True):
    reset_seq: int = 0


class StreamState(msgspec.Struct, frozen=True):
    messages: int = 0
    first_seq: int = 0
    last_seq: int = 0


class StreamInfo(ApiResponse, frozen=True, kw_only=True):
    state: StreamState = StreamState()


class ConsumerConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The consumer settings Bourse uses, spelled as the JetStream API spells them.

    Durations are nanoseconds. Unset fields are left out, so the server's defaults apply.
    """

    name: str | None = None
    durable_name: str | None = None
    description: str | None = None
    deliver_policy: str | None = None  # all | last | new | by_start_sequence | by_start_time
    opt_start_seq: int | None = None
    opt_start_time: str | None = None  # RFC 3339
    ack_policy: str | None = None  # explicit | none | all
    ack_wait: int | None = None
    max_deliver: int | None = None
    filter_subjects: tuple[str, ...] | None = None
    replay_policy: str | None = None
    max_waiting: int | None = None
    max_ack_pending: int | None = None
    inactive_threshold: int | None = None
    num_replicas: int | None = None
    mem_storage: bool | None = None
    priority_policy: str | None = None  # pinned_client | overflow
    priority_groups: tuple[str, ...] | None = None
    priority_timeout: int | None = None


class _CreateConsumer(msgspec.Struct, frozen=True):
    stream_name: str
    config: ConsumerConfig


class _Reset(msgspec.Struct, frozen=True, omit_defaults=True):
    seq: int = 0


class _Unpin(msgspec.Struct, frozen=True):
    group: str


class PullRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The body of a pull request; `group` and `id` are for priority groups (ADR-42)."""

    batch: int
    expires: int = 0  # nanoseconds; 0 = until the batch is filled
    no_wait: bool = False
    idle_heartbeat: int = 0
    group: str | None = None
    id: str | None = None  # the pin id the server gave this client, once it has one


class JetStreamApiError(BrokerError):
    """The JetStream API refused a request (no such stream or consumer, a bad setting...)."""

    def __init__(self, subject: str, code: int, err_code: int, description: str) -> None:
        self.subject = subject
        self.code = code
        self.err_code = err_code
        self.description = description
        super().__init__(f"JetStream refused {subject}: {description} ({code}/{err_code})")


_encoder = msgspec.json.Encoder()
_Response = TypeVar("_Response", bound=ApiResponse)


async def api_request(
    nc: NATS,
    subject: str,
    body: msgspec.Struct | None,
    response_type: type[_Response],
    *,
    timeout: float = 5.0,
) -> _Response:
    """One JetStream API call; raise JetStreamApiError if refused, BrokerError if unanswered."""
    payload = _encoder.encode(body) if body is not None else b""
    try:
        reply = await nc.request(subject, payload, timeout=timeout)
    except NoRespondersError as exc:
        raise BrokerError(f"JetStream is not available for {subject} (no responders)") from exc
    except NatsTimeoutError as exc:
        raise BrokerError(f"JetStream did not answer {subject} within {timeout}s") from exc
    try:
        response = msgspec.json.decode(reply.data, type=response_type)
    except msgspec.DecodeError as exc:
        raise BrokerError(
            f"unreadable JetStream answer to {subject}: {reply.data[:200]!r}"
        ) from exc
    if response.error is not None:
        error = response.error
        raise JetStreamApiError(subject, error.code, error.err_code, error.description)
    return response


async def create_consumer(
    nc: NATS, stream: str, name: str, config: ConsumerConfig, *, timeout: float = 5.0
) -> ConsumerInfo:
    """Create `name` on `stream`, or update it when a consumer of that name exists."""
    return await api_request(
        nc,
        consumer_subject("CREATE", stream, name),
        _CreateConsumer(stream_name=stream, config=config),
        ConsumerInfo,
        timeout=timeout,
    )


async def consumer_info(nc: NATS, stream: str, name: str, *, timeout: float = 5.0) -> ConsumerInfo:
    return await api_request(
        nc, consumer_subject("INFO", stream, name), None, ConsumerInfo, timeout=timeout
    )


async def delete_consumer(nc: NATS, stream: str, name: str, *, timeout: float = 5.0) -> None:
    await api_request(
        nc, consumer_subject("DELETE", stream, name), None, ApiResponse, timeout=timeout
    )


async def drop_consumer(nc: NATS, stream: str, name: str, *, owner: str, timeout: float) -> None:
    """Delete an ephemeral consumer we made, if we can: one that is not deleted (the broker
    is away or slow) expires on its own after its inactivity threshold, so a failure is only
    logged (at debug, under `owner`'s name)."""
    if not name:
        return
    try:
        await delete_consumer(nc, stream, name, timeout=timeout)
    except (BrokerError, NatsError) as error:
        logging.getLogger(__name__).debug(
            "%s: could not delete consumer %s: %s", owner, name, error
        )


async def reset_consumer(
    nc: NATS, stream: str, name: str, seq: int = 0, *, timeout: float = 5.0
) -> ConsumerResetInfo:
    """Forget deliveries not yet acknowledged and deliver again from `seq` (0: the ack floor).

    Needs nats-server 2.14 or later. Messages delivered before the reset and not acknowledged
    are delivered again, in stream order.
    """
    return await api_request(
        nc, consumer_subject("RESET", stream, name), _Reset(seq), ConsumerResetInfo, timeout=timeout
    )


async def unpin_consumer(
    nc: NATS, stream: str, name: str, group: str, *, timeout: float = 5.0
) -> None:
    """Release the pinned client of `group`, so the server pins another one at once."""
    await api_request(
        nc, consumer_subject("UNPIN", stream, name), _Unpin(group), ApiResponse, timeout=timeout
    )


async def stream_info(nc: NATS, stream: str, *, timeout: float = 5.0) -> StreamInfo:
    return await api_request(nc, stream_info_subject(stream), None, StreamInfo, timeout=timeout)


# --- Pulling --------------------------------------------------------------------------------


class AckMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """What a JetStream message's reply subject says about it."""

    stream_seq: int
    consumer_seq: int
    delivered: int  # how many times this message has been delivered (1 = first time)
    pending: int  # messages left for the consumer after this one
    time_ns: int  # when the stream stored it


def parse_ack_subject(reply: str) -> AckMetadata:
    """Parse `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>`.

    Also the longer form with a domain and account hash in front (12 tokens or more).
    Raise ValueError for anything else.
    """
    delivered, stream_seq, consumer_seq, time_ns, pending = _ack_fields(reply)
    return AckMetadata(
        stream_seq=stream_seq,
        consumer_seq=consumer_seq,
        delivered=delivered,
        pending=pending,
        time_ns=time_ns,
    )


def _ack_fields(reply: str) -> tuple[int, int, int, int, int]:
    """(delivered, stream seq, consumer seq, time, pending) from an ack subject."""
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    first = 4 if len(tokens) == 9 else 6  # v2 inserts <domain>.<account hash> after ACK
    delivered, stream_seq, consumer_seq, time_ns, pending = map(int, tokens[first : first + 5])
    return delivered, stream_seq, consumer_seq, time_ns, pending


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One message delivered by a pull consumer."""

    subject: str
    data: bytes
    headers: Mapping[str, str]
    reply: str  # where acknowledgements go
    stream_seq: int
    consumer_seq: int
    delivered: int
    pending: int
    time_ns: int

    @property
    def pin_id(self) -> str | None:
        return self.headers.get(PIN_ID_HEADER)


class PullStatus(msgspec.Struct, frozen=True):
    """A status answer to a pull request (or NO_ANSWER when nothing came back in time)."""

    code: int
    description: str = ""


def status_of(msg: Msg) -> PullStatus | None:
    """The status a header-only message on a request's reply subject carries, if any."""
    headers = msg.headers
    if not headers or msg.data:
        return None
    status = headers.get("Status")
    if status is None:
        return None
    try:
        code = int(status)
    except ValueError:
        return PullStatus(BAD_REQUEST, f"unreadable status {status!r}")
    return PullStatus(code, headers.get("Description", ""))


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def _header_name(key: str) -> str:
    # nats-py keys the headers it parses out of a status line with `Header` enum members.
    return key.value if isinstance(key, Enum) else key


def _delivery_of(msg: Msg) -> Delivery:
    delivered, stream_seq, consumer_seq, time_ns, pending = _ack_fields(msg.reply)
    headers: Mapping[str, str] = msg.headers or _NO_HEADERS
    if Header.DESCRIPTION in headers:  # only a status line gives nats-py an enum key
        headers = {_header_name(k): v for k, v in headers.items()}
    return Delivery(
        subject=msg.subject,
        data=msg.data,
        headers=headers,
        reply=msg.reply,
        stream_seq=stream_seq,
        consumer_seq=consumer_seq,
        delivered=delivered,
        pending=pending,
        time_ns=time_ns,
    )


class DirectQueue:
    """A subscription's message queue that hands each message to `deliver` at once, in
    nats-py's reading task (see the module docstring). `deliver` must not block or await; an
    exception it raises is logged and the message dropped (escaping, it would end nats-py's
    reading loop, and the connection would hear nothing more)."""

    def __init__(self, subscription: Subscription, deliver: Callable[[Msg], None]) -> None:
        self._subscription = subscription
        self._deliver = deliver

    def put_nowait(self, msg: Msg) -> None:
        self._subscription._pending_size = 0  # nats-py counts it up; nothing waits here
        try:
            self._deliver(msg)
        except Exception:
            log.exception("dropped a message on %s: its reader failed on it", msg.subject)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        pass

    async def join(self) -> None:
        pass


class Puller:
    """Pull requests on one consumer, answered on one private inbox.

    `pull()` yields the messages of one request and, when the server ends the request with a
    status (timeout, no messages, pin id mismatch, conflict...), that status last. A request
    whose batch is filled ends without a status. NO_ANSWER ends a request the server never
    answered (the connection dropped): the caller simply pulls again.

    JetStream delivers a message under its own subject, so deliveries cannot be told apart by
    request: they are yielded in the order they arrive, whichever request they answer (a late
    one from an abandoned request is as good as any, and skipping it would leave a gap).
    Statuses arrive on the request's reply subject, so one that answers an older request is
    recognised and dropped.
    """

    def __init__(self, nc: NATS, *, stream: str, consumer: str) -> None:
        self._nc = nc
        self._stream = stream
        self.consumer = consumer
        self._prefix = ""
        self._token = 0
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._subscription: Subscription | None = None
        self.stale = 0  # statuses that answered a request already given up

    async def start(self) -> Puller:
        self._prefix = self._nc.new_inbox()
        self._subscription = await self._nc.subscribe(
            f"{self._prefix}.*",
            cb=self._on_message,
            pending_msgs_limit=-1,  # bounded by the requests' batch sizes instead
            pending_bytes_limit=-1,
        )
        return self

    async def _on_message(self, msg: Msg) -> None:
        self._queue.put_nowait(msg)

    @property
    def buffered(self) -> int:
        """Messages received and not yet yielded: a reader that reached the end of the stream
        (`pending == 0`) while this is not 0 has more in hand before it needs to wait."""
        return self._queue.qsize()

    async def pull(
        self, request: PullRequest, *, timeout: float
    ) -> AsyncIterator[Delivery | PullStatus]:
        """Send one pull request and yield its answers until it ends (or `timeout` passes)."""
        if self._subscription is None:
            raise RuntimeError("Puller.start() was not called")
        self._token += 1
        reply = f"{self._prefix}.{self._token}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        received = 0
        await self._nc.publish(
            next_message_subject(self._stream, self.consumer),
            _encoder.encode(request),
            reply=reply,
        )
        while received < request.batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                try:
                    msg = await asyncio.wait_for(self._queue.get(), max(remaining, 0.0))
                except TimeoutError:
                    yield PullStatus(NO_ANSWER, f"no answer within {timeout}s")
                    return
            else:
                msg = self._queue.get_nowait()
            if msg.subject.startswith(self._prefix):
                status = status_of(msg)
                if msg.subject != reply or status is None:
                    self.stale += 1
                elif status.code != HEARTBEAT:
                    yield status
                    return
            else:
                received += 1
                yield _delivery_of(msg)

    async def close(self) -> None:
        """Stop listening: the server drops requests whose inbox has no interest any more."""
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            # A closed connection has nothing left to unsubscribe.
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


__all__ = [
    "ConsumerConfig",
    "ConsumerInfo",
    "Delivery",
    "DirectQueue",
    "JetStreamApiError",
    "PullRequest",
    "PullStatus",
    "Puller",
    "api_request",
    "consumer_info",
    "create_consumer",
    "delete_consumer",
    "parse_ack_subject",
    "reset_consumer",
    "status_of",
    "stream_info",
    "unpin_consumer",
]
