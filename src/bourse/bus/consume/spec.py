"""What a consumer is: the durable name, the subjects it reads, and how it retries.

Specs are frozen msgspec Structs that refuse unknown fields, so a configuration file with a
misspelt setting fails loudly instead of being ignored. Each spec turns into the JetStream
consumer configuration it stands for; creating a consumer from the same spec again is a no-op,
and from a changed spec updates the editable settings.
"""

from __future__ import annotations

import re

import msgspec
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bourse.errors import ConfigError
from bourse.model import subjects

# Consumer names become subject tokens in the JetStream API.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$(?!\n)")


def _check_name(setting: str, name: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(setting, name, "letters, digits, '-' and '_' (up to 64), e.g. bars-1m")


def _check_positive(setting: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(setting, value, "a number greater than zero")


class ConsumerSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings every consumer shares.

    - `durable`: the consumer's name; it survives restarts, so a consumer started again with
      the same name resumes after the last message it acknowledged.
    - `filter_subjects`: what it reads, e.g. `("md.*.AAPL",)` or `("md.nyse.>", "md.arca.>")`.
    - `stream`: the stream to read; None finds the stream that holds the first filter subject.
    - `ack_wait`: seconds JetStream waits for an acknowledgement before redelivering. The
      consumers send progress updates while a message is being worked on, so a slow handler
      does not cause redelivery.
    - `max_deliver`: deliveries allowed per message (-1: unlimited). A message whose handler
      still fails on its last delivery is dead-lettered.
    - `retry_delays`: seconds to wait before redelivering after the n-th failed delivery; the
      last entry repeats.
    - `max_ack_pending`: messages delivered but not yet acknowledged, at most; JetStream stops
      delivering at this bound, which is what keeps a slow consumer's memory bounded.
    """

    durable: str
    filter_subjects: tuple[str, ...]
    stream: str | None = None
    ack_wait: float = 30.0
    max_deliver: int = 5
    retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)
    max_ack_pending: int = 1000

    def __post_init__(self) -> None:
        _check_name("durable", self.durable)
        if self.stream is not None:
            _check_name("stream", self.stream)
        if not self.filter_subjects:
            raise ConfigError("filter_subjects", self.filter_subjects, "at least one subject")
        for pattern in self.filter_subjects:
            subjects.check_filter(pattern)
        _check_positive("ack_wait", self.ack_wait)
        if self.max_deliver < 1 and self.max_deliver != -1:
            raise ConfigError("max_deliver", self.max_deliver, "a count of at least 1, or -1")
        if not self.retry_delays or not all(delay > 0 for delay in self.retry_delays):
            raise ConfigError(
                "retry_delays", self.retry_delays, "one or more delays in seconds, each above 0"
            )
        if self.max_ack_pending < 1:
            raise ConfigError("max_ack_pending", self.max_ack_pending, "a count of at least 1")

    def retry_delay(self, num_delivered: int) -> float:
        """Seconds before redelivering a message whose `num_delivered`-th delivery failed."""
        return self.retry_delays[min(max(num_delivered, 1), len(self.retry_delays)) - 1]

    def is_last_delivery(self, num_delivered: int) -> bool:
        return self.max_deliver != -1 and num_delivered >= self.max_deliver

    def consumer_config(self) -> ConsumerConfig:
        """The JetStream configuration of this durable consumer, explicitly acknowledged."""
        single = len(self.filter_subjects) == 1
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
            filter_subject=self.filter_subjects[0] if single else None,
            filter_subjects=None if single else list(self.filter_subjects),
        )


class PullSpec(ConsumerSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A pull consumer: fetches up to `batch_size` messages at a time.

    `fetch_timeout` is the longest one fetch waits for messages; `stop()` waits for the fetch
    in progress, so it also bounds how long stopping an idle consumer takes.
    """

    batch_size: int = 100
    fetch_timeout: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1:
            raise ConfigError("batch_size", self.batch_size, "a count of at least 1")
        _check_positive("fetch_timeout", self.fetch_timeout)


class BatchSpec(PullSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A batching consumer: a batch closes at `batch_size` messages or `batch_timeout`
    seconds after its first message, whichever comes first."""

    batch_timeout: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive("batch_timeout", self.batch_timeout)


class PushSpec(ConsumerSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A push consumer whose instances share the work as a queue group.

    - `deliver_group`: the queue group (defaults to the durable name); JetStream hands each
      message to one instance of the group.
    - `idle_heartbeat`: seconds between the server's heartbeats while idle; flow control is
      always on.
    - `pending_msgs_limit`, `pending_bytes_limit`: the client-side buffer of one instance. It
      must hold `max_ack_pending` messages, since that is the most JetStream will send it
      unacknowledged; then the buffer can never overflow and drop messages.
    """

    deliver_group: str | None = None
    idle_heartbeat: float = 5.0
    pending_msgs_limit: int = 1000
    pending_bytes_limit: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.deliver_group is not None:
            _check_name("deliver_group", self.deliver_group)
        _check_positive("idle_heartbeat", self.idle_heartbeat)
        if self.pending_msgs_limit < self.max_ack_pending:
            raise ConfigError(
                "pending_msgs_limit",
                self.pending_msgs_limit,
                f"at least max_ack_pending ({self.max_ack_pending})",
            )
        _check_positive("pending_bytes_limit", self.pending_bytes_limit)

    @property
    def group(self) -> str:
        return self.deliver_group or self.durable

    def push_config(self, stream: str) -> ConsumerConfig:
        """The JetStream configuration: flow control, heartbeats and a fixed delivery subject."""
        config = self.consumer_config()
        config.deliver_subject = subjects.deliver_subject(stream, self.durable)
        config.deliver_group = self.group
        config.flow_control = True
        config.idle_heartbeat = self.idle_heartbeat
        return config
