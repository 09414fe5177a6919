"""What an agent reads back when it starts: its account's setup, positions and old orders.

- `published_ids`: which of the agent's own message ids are already on a subject of the
  journal (headers only), so opening and funding its account happen once, however often and
  however long after the agent restarts (the stream's duplicate window is only 2 minutes).
- `read_positions`: accounts' last `PositionChanged` per symbol for the account, and the
  POSITIONS sequence to follow from.
- `OrderRegistry`: the ids of the orders an agent may have resting, in the KV bucket
  `AGENTS` (key `<account>.<symbol>`), written before the orders are sent. A run that died
  without cancelling its orders leaves their ids there, and the next run cancels them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable

import msgspec
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from bourse.bus import pull
from bourse.bus.publisher import MSG_ID_HEADER
from bourse.bus.pull import Delivery, PullRequest, PullStatus
from bourse.bus.streams import POSITIONS, key_value
from bourse.errors import BrokerError
from bourse.model import positions, subjects

log = logging.getLogger(__name__)

REGISTRY_BUCKET = "AGENTS"
_KV_OPERATION = "KV-Operation"  # header of a KV delete or purge marker
_PULL_EXPIRES = 1.0  # seconds a pull waits; a read that gets nothing for this long has ended
_CONSUMER_IDLE = 30.0  # the server deletes a reader's consumer this long after it died


class _ReadConfig(msgspec.Struct, frozen=True, kw_only=True):
    """An ephemeral reader (pull.ConsumerConfig has no `headers_only`)."""

    name: str
    filter_subjects: tuple[str, ...]
    deliver_policy: str  # all | last_per_subject
    headers_only: bool
    ack_policy: str = "none"
    inactive_threshold: int = pull.nanos(_CONSUMER_IDLE)
    num_replicas: int = 1
    mem_storage: bool = True


class _CreateReader(msgspec.Struct, frozen=True):
    stream_name: str
    config: _ReadConfig


async def read_view(
    nc: NATS,
    stream: str,
    filter_subject: str,
    *,
    deliver_policy: str = "all",
    headers_only: bool = False,
) -> list[Delivery]:
    """Every message of `stream` on `filter_subject` when called, in stream order."""
    name = f"agent_read_{nc.new_inbox().rsplit('.', 1)[-1]}"
    config = _ReadConfig(
        name=name,
        filter_subjects=(filter_subject,),
        deliver_policy=deliver_policy,
        headers_only=headers_only,
    )
    info = await pull.api_request(
        nc,
        pull.consumer_subject("CREATE", stream, name),
        _CreateReader(stream, config),
        pull.ConsumerInfo,
    )
    got: list[Delivery] = []
    puller = await pull.Puller(nc, stream=stream, consumer=name).start()
    try:
        while len(got) < info.num_pending:
            request = PullRequest(
                batch=min(info.num_pending - len(got), 1000), expires=pull.nanos(_PULL_EXPIRES)
            )
            async for item in puller.pull(request, timeout=2 * _PULL_EXPIRES):
                if isinstance(item, PullStatus):
                    if item.code in (pull.REQUEST_TIMEOUT, pull.NO_MESSAGES):
                        return got  # fewer than counted: some aged out meanwhile
                    raise BrokerError(
                        f"reading {filter_subject} from {stream} failed: "
                        f"{item.code} {item.description}"
                    )
                if item.consumer_seq != len(got) + 1:
                    raise BrokerError(f"a message of {stream} went missing while reading it")
                got.append(item)
    finally:
        await puller.close()
        with contextlib.suppress(Exception):  # it expires on its own after _CONSUMER_IDLE
            await pull.delete_consumer(nc, stream, name)
    return got


async def published_ids(nc: NATS, stream: str, subject: str, ids: Iterable[str]) -> set[str]:
    """Which of `ids` are the `Nats-Msg-Id` of a message on `subject`."""
    wanted = set(ids)
    found: set[str] = set()
    for delivery in await read_view(nc, stream, subject, headers_only=True):
        msg_id = delivery.headers.get(MSG_ID_HEADER)
        if msg_id in wanted:
            found.add(msg_id)
    return found


async def read_positions(nc: NATS, account_id: str) -> tuple[list[positions.PositionChanged], int]:
    """The account's last position per symbol, and the POSITIONS sequence after them.

    Following POSITIONS from that sequence misses nothing and repeats nothing: a report
    published after this read has a higher sequence than every report it returned.
    """
    # The end of the stream before the read: with no report found, nothing of the account is
    # up to there, and whatever came after is in the read or after it.
    end = (await pull.stream_info(nc, POSITIONS.name)).state.last_seq
    deliveries = await read_view(
        nc,
        POSITIONS.name,
        subjects.positions(account_id, "*"),
        deliver_policy="last_per_subject",
    )
    found = []
    for delivery in deliveries:
        try:
            found.append(positions.decode(delivery.data))
        except msgspec.DecodeError as error:
            # Anyone may publish on POSITIONS, which keeps messages by size, not age: one
            # that does not decode must not keep the agent from starting, ever.
            log.warning(
                "skipping POSITIONS message %d on %s, which does not decode: %s",
                delivery.stream_seq,
                delivery.subject,
                error,
            )
    return found, (deliveries[-1].stream_seq if deliveries else end) + 1


class OrderRegistry:
    """Order ids an agent may have resting, per account and symbol, kept in a KV bucket."""

    def __init__(self, nc: NATS, *, bucket: str = REGISTRY_BUCKET, replicas: int = 1) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.bucket = bucket
        self._replicas = replicas
        self._kv: KeyValue | None = None

    async def _store(self) -> KeyValue:
        if self._kv is None:
            self._kv = await key_value(
                self._js,
                KeyValueConfig(
                    bucket=self.bucket,
                    description="agents: ids of orders that may rest, per account.symbol",
                    history=1,
                    storage=StorageType.FILE,
                    replicas=self._replicas,
                ),
            )
        return self._kv

    async def load(self, account_id: str) -> dict[str, list[str]]:
        """Symbol -> order ids the account's last run may have left resting."""
        await self._store()
        # Read the bucket's stream directly: nats-py's `keys()` can end its initial replay
        # early (a false "no keys" would forget resting orders) and waits without a bound.
        found: dict[str, list[str]] = {}
        prefix = f"$KV.{self.bucket}.{account_id}."
        for delivery in await read_view(
            self._nc,
            f"KV_{self.bucket}",
            f"{prefix}*",
            deliver_policy="last_per_subject",
        ):
            if delivery.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
                continue
            ids = msgspec.json.decode(delivery.data or b"[]", type=list[str])
            if ids:
                found[delivery.subject[len(prefix) :]] = ids
        return found

    async def save(self, account_id: str, symbol: str, order_ids: Iterable[str]) -> None:
        kv = await self._store()
        await kv.put(f"{account_id}.{symbol}", msgspec.json.encode(sorted(order_ids)))
