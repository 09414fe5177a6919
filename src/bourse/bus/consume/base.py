"""The life cycle the consumers share: create the durable consumer, run, stop gracefully."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Self, TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, ConsumerInfo

from bourse.bus.consume.applied import AppliedSequences
from bourse.bus.consume.settle import ConsumerStats, Settler
from bourse.bus.consume.spec import ConsumerSpec
from bourse.errors import BrokerError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Consumer(ABC, Generic[T]):
    """A durable JetStream consumer run in the background.

    `start()` creates the durable consumer (or updates it to the spec) and begins consuming;
    `stop()` stops taking new messages, finishes the ones in hand, and returns once JetStream
    has confirmed every acknowledgement. `async with consumer:` does both. A consumer can be
    started again after `stop()`; it keeps its counters (`stats`) and its memory of applied
    stream sequences (`applied`, whose `high_water` is the highest one).
    """

    def __init__(self, nc: NATS, spec: ConsumerSpec, *, decode: Callable[[bytes], T]) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._spec = spec
        self._decode = decode
        self._settler: Settler[T] | None = None
        self._running = False
        self.stats = ConsumerStats()
        self.applied = AppliedSequences()

    @property
    def spec(self) -> ConsumerSpec:
        return self._spec

    @property
    def running(self) -> bool:
        return self._running

    @property
    def _settling(self) -> Settler[T]:
        if self._settler is None:
            raise RuntimeError(f"consumer {self._spec.durable} is not started")
        return self._settler

    async def start(self) -> Self:
        if self._running:
            return self
        durable = self._spec.durable
        try:
            stream = self._spec.stream or await self._js.find_stream_name_by_subject(
                self._spec.filter_subjects[0]
            )
            info = await self._js.add_consumer(stream, self._consumer_config(stream))
        except nats.errors.Error as exc:
            raise BrokerError(f"cannot create consumer {durable}: {exc}") from exc
        if info.ack_floor is not None:
            self.applied.advance_floor(info.ack_floor.stream_seq)
        self._settler = Settler(
            self._nc,
            self._js,
            self._spec,
            decode=self._decode,
            stream=stream,
            stats=self.stats,
            applied=self.applied,
        )
        await self._open(stream, info)
        self._running = True
        log.info("consumer %s started on %s", durable, ", ".join(self._spec.filter_subjects))
        return self

    async def stop(self) -> None:
        """Stop intake, finish and settle the messages in hand, wait for JetStream's word."""
        if not self._running:
            return
        self._running = False
        await self._close()
        await self._settling.wait_settled()
        log.info("consumer %s stopped: %s", self._spec.durable, self.stats)

    def _consumer_config(self, stream: str) -> ConsumerConfig:
        return self._spec.consumer_config()

    @abstractmethod
    async def _open(self, stream: str, info: ConsumerInfo) -> None:
        """Begin consuming."""

    @abstractmethod
    async def _close(self) -> None:
        """Stop intake and return when every message taken in is settled."""

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
