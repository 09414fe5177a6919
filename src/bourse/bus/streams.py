"""The platform's streams, provisioned idempotently.

Each stream has defaults from ARCHITECTURE.md, overridable in configuration. Provisioning
creates a missing stream, updates one whose editable settings changed, and reports a setting
that NATS cannot change in place (storage, retention) as a StreamConfigConflict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from bourse.errors import StreamConfigConflict
from bourse.model import subjects

log = logging.getLogger(__name__)

HOUR = 3600.0
DAY = 24 * HOUR
GIB = 1024**3
DUPLICATE_WINDOW = 120.0


@dataclass(frozen=True, kw_only=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str
    max_age: float = 0.0  # seconds; 0 = unlimited
    max_bytes: int = -1
    max_msgs_per_subject: int = -1  # -1 = unlimited; 1 keeps only each subject's latest

    def config(self, replicas: int) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.max_age,
            max_bytes=self.max_bytes,
            max_msgs_per_subject=self.max_msgs_per_subject,
            num_replicas=replicas,
            duplicate_window=DUPLICATE_WINDOW,
        )


MARKET_DATA = StreamSpec(
    name="MARKET_DATA",
    subjects=(subjects.ALL_MARKET_DATA,),
    description="quotes, trades and bars on md.<venue>.<symbol>",
    max_age=24 * HOUR,
)
ORDERS = StreamSpec(
    name="ORDERS",
    subjects=(f"{subjects.ORDERS_ROOT}.>",),
    description="the order journal: new, validated, rejected, executed, cancelled",
    max_age=30 * DAY,
)
POSITIONS = StreamSpec(
    name="POSITIONS",
    subjects=(f"{subjects.POSITIONS_ROOT}.>",),
    description="positions.<account>.<instrument>",
    max_bytes=GIB,
)
RISK = StreamSpec(
    name="RISK",
    subjects=(f"{subjects.RISK_ROOT}.>",),
    description="risk.alerts.<severity> and risk metrics",
    max_age=7 * DAY,
)
DEAD_LETTERS = StreamSpec(
    name="DEAD_LETTERS",
    subjects=(subjects.ALL_DEAD_LETTERS,),
    description="poison messages parked by consumers: deadletter.<original subject>",
    max_age=7 * DAY,
)

ANALYTICS = StreamSpec(
    name="ANALYTICS",
    subjects=(subjects.ALL_ANALYTICS,),
    description="bars, indicators, VWAP, NBBO and arbitrage derived from MARKET_DATA",
    # A week of bars for charts; the size cap keeps a fast feed's 1-second bars and NBBO
    # changes from filling the disk (they can always be rebuilt from MARKET_DATA).
    max_age=7 * DAY,
    max_bytes=4 * GIB,
)

ALERTS = StreamSpec(
    name="ALERTS",
    subjects=(subjects.ALL_ALERTS,),
    description="price alerts: alerts.created|deleted|fired.<account>.<alert id>",
    # Alerts are account state: nothing ages out. Each subject keeps its latest message (an
    # alert's creation, deletion, and latest firing), so the stream grows with the alerts
    # made, not with how often they fire.
    max_msgs_per_subject=1,
    max_bytes=GIB,
)

PLATFORM_STREAMS: tuple[StreamSpec, ...] = (
    MARKET_DATA,
    ORDERS,
    POSITIONS,
    RISK,
    DEAD_LETTERS,
    ANALYTICS,
    ALERTS,
)

# Settings that NATS refuses to change on an existing stream.
_IMMUTABLE = ("storage", "retention")
# Settings that Bourse owns and brings back to the spec when they drift.
_EDITABLE = (
    "subjects",
    "max_age",
    "max_bytes",
    "max_msgs_per_subject",
    "num_replicas",
    "duplicate_window",
    "discard",
)


def _normalized(value: object) -> object:
    return sorted(value) if isinstance(value, list) else value


async def provision_stream(js: JetStreamContext, spec: StreamSpec, *, replicas: int) -> StreamInfo:
    """Create `spec`'s stream, or bring an existing one in line with it."""
    wanted = spec.config(replicas)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        log.info("creating stream %s on %s", spec.name, ", ".join(spec.subjects))
        return await js.add_stream(wanted)
    existing = info.config
    for field in _IMMUTABLE:
        if getattr(existing, field) != getattr(wanted, field):
            raise StreamConfigConflict(
                spec.name, field, getattr(existing, field), getattr(wanted, field)
            )
    changed = [
        field
        for field in _EDITABLE
        if _normalized(getattr(existing, field)) != _normalized(getattr(wanted, field))
    ]
    if not changed:
        return info
    log.info("updating stream %s: %s", spec.name, ", ".join(changed))
    return await js.update_stream(wanted)


async def key_value(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """The KV bucket `config.bucket`, created with `config` if it does not exist yet."""
    try:
        return await js.key_value(config.bucket)
    except BucketNotFoundError:
        log.info("creating the key-value bucket %s", config.bucket)
        return await js.create_key_value(config)


async def provision_streams(
    js: JetStreamContext,
    *,
    replicas: int = 1,
    specs: tuple[StreamSpec, ...] = PLATFORM_STREAMS,
) -> list[StreamInfo]:
    return [await provision_stream(js, spec, replicas=replicas) for spec in specs]
