"""Which analytics messages a stream already holds: the message ids after a point, read from
headers only (the payloads are not fetched).

A restarted analytics service replays MARKET_DATA from its snapshot; the messages that replay
produces were partly published before the restart. JetStream drops a resend with the same
`Nats-Msg-Id` only within its duplicate window (2 minutes), so after a longer stop the service
reads the ids published since its snapshot and skips those itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from bourse.bus import pull
from bourse.bus.publisher import MSG_ID_HEADER
from bourse.bus.pull import PullRequest, PullStatus
from bourse.errors import BrokerError

_PULL_EXPIRES = 1.0
_CONSUMER_IDLE = 30.0


class _ScanConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A consumer reading headers only (pull.ConsumerConfig has no `headers_only`)."""

    name: str
    deliver_policy: str
    opt_start_seq: int | None = None
    opt_start_time: str | None = None
    filter_subjects: tuple[str, ...] | None = None
    ack_policy: str = "none"
    headers_only: bool = True
    inactive_threshold: int = pull.nanos(_CONSUMER_IDLE)
    num_replicas: int = 1
    mem_storage: bool = True


class _CreateScan(msgspec.Struct, frozen=True):
    stream_name: str
    config: _ScanConfig


async def published_ids(
    nc: NATS,
    stream: str,
    *,
    after_seq: int | None = None,
    since_ns: int | None = None,
    filters: Iterable[str] = (),
) -> set[str]:
    """The `Nats-Msg-Id`s of `stream`'s messages after sequence `after_seq`, or stored since
    `since_ns` (ns since the epoch), or all of them when neither is given."""
    name = f"scan_{nc.new_inbox().rsplit('.', 1)[-1]}"
    if after_seq is not None:
        config = _ScanConfig(
            name=name, deliver_policy="by_start_sequence", opt_start_seq=after_seq + 1
        )
    elif since_ns is not None:
        config = _ScanConfig(
            name=name, deliver_policy="by_start_time", opt_start_time=pull.rfc3339(since_ns)
        )
    else:
        config = _ScanConfig(name=name, deliver_policy="all")
    wanted = tuple(filters)
    if wanted:
        config = msgspec.structs.replace(config, filter_subjects=wanted)
    info = await pull.api_request(
        nc,
        pull.consumer_subject("CREATE", stream, name),
        _CreateScan(stream, config),
        pull.ConsumerInfo,
    )
    remaining = info.num_pending
    found: set[str] = set()
    puller = await pull.Puller(nc, stream=stream, consumer=name).start()
    try:
        expected = 1
        while remaining > 0:
            request = PullRequest(batch=min(remaining, 1000), expires=pull.nanos(_PULL_EXPIRES))
            async for item in puller.pull(request, timeout=2 * _PULL_EXPIRES):
                if isinstance(item, PullStatus):
                    if item.code in (pull.REQUEST_TIMEOUT, pull.NO_MESSAGES):
                        return found  # fewer than counted: some aged out meanwhile
                    raise BrokerError(
                        f"reading the message ids of {stream} failed: {item.code} "
                        f"{item.description}"
                    )
                if item.consumer_seq != expected:
                    raise BrokerError(f"a delivery from {stream} went missing while scanning")
                expected += 1
                remaining -= 1
                msg_id = item.headers.get(MSG_ID_HEADER)
                if msg_id:
                    found.add(msg_id)
    finally:
        await puller.close()
        with contextlib.suppress(BrokerError, NatsError):
            await pull.delete_consumer(nc, stream, name, timeout=2.0)
    return found
