"""Push consumers in a queue group: several instances share one durable consumer's work."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo

from bourse.bus.consume.base import Consumer
from bourse.bus.consume.settle import Handler
from bourse.bus.consume.spec import PushSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


class PushConsumer(Consumer[T]):
    """One instance of a queue group on a durable push consumer.

    Every instance started with the same spec joins the group, and JetStream delivers each
    message to exactly one of them (again to one of them if it is redelivered). Messages are
    handled one at a time per instance, with the same outcomes as `PullConsumer`. Memory is
    bounded: JetStream sends an instance at most `max_ack_pending` unacknowledged messages,
    and the client buffer holds that many. Flow control and idle heartbeats are on.

    `stop()` unsubscribes, then handles and settles every message that reached the instance.
    JetStream pushes without being asked, so messages it sent just as the subscription
    closed (up to `max_ack_pending`) can miss it; they stay pending until `ack_wait` and are
    then redelivered (to another instance of the group, or to this one when it starts
    again). Pull consumers have no such window.
    """

    def __init__(
        self,
        nc: NATS,
        spec: PushSpec,
        handler: Handler[T],
        *,
        decode: Callable[[bytes], T],
    ) -> None:
        super().__init__(nc, spec, decode=decode)
        self._push_spec = spec
        self._handler = handler
        self._subscription: JetStreamContext.PushSubscription | None = None

    @property
    def pending(self) -> int:
        """Messages delivered to this instance and waiting in its buffer."""
        return self._subscription.pending_msgs if self._subscription is not None else 0

    def _consumer_config(self, stream: str) -> ConsumerConfig:
        return self._push_spec.push_config(stream)

    async def _open(self, stream: str, info: ConsumerInfo) -> None:
        self._subscription = await self._js.subscribe_bind(
            stream=stream,
            config=info.config,
            consumer=info.name,
            cb=self._on_message,
            manual_ack=True,
            pending_msgs_limit=self._push_spec.pending_msgs_limit,
            pending_bytes_limit=self._push_spec.pending_bytes_limit,
        )

    async def _on_message(self, msg: Msg) -> None:
        try:
            with self._settling.keep_alive((msg,)):
                await self._settling.process(msg, self._handler)
        except Exception:
            log.exception("consumer %s: processing %s failed", self._spec.durable, msg.subject)

    async def _close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is None:
            return
        try:
            # Unsubscribe, let the server flush what it already sent, and handle all of it.
            # (nats-py leaves drain() unannotated.)
            await subscription.drain()  # type: ignore[no-untyped-call]
        except nats.errors.Error as exc:
            log.warning("consumer %s: drain failed: %s", self._spec.durable, exc)
        finally:
            # drain() leaves the client's heartbeat monitor running; unsubscribe() would stop
            # it but refuses a drained subscription, so stop it as unsubscribe() does.
            jsi = subscription._sub._jsi
            if jsi is not None and jsi._hbtask is not None:
                jsi._hbtask.cancel()
