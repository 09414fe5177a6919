"""Consumer patterns on JetStream: pull, push in a queue group, and batching.

All three read a durable consumer with explicit acknowledgement, hand decoded messages to a
handler, retry failures with a delay, dead-letter what cannot be decoded or keeps failing
(on `deadletter.<original subject>`), recognise redeliveries of applied messages, and stop
gracefully (`await consumer.stop()`, or `async with consumer:`).
"""

from bourse.bus.consume.applied import AppliedSequences
from bourse.bus.consume.base import Consumer
from bourse.bus.consume.batch import BatchConsumer, BatchHandler
from bourse.bus.consume.deadletter import DeadLetterHeader, DeadLetterReason
from bourse.bus.consume.pull import PullConsumer
from bourse.bus.consume.push import PushConsumer
from bourse.bus.consume.settle import ConsumerStats, Handler
from bourse.bus.consume.spec import BatchSpec, ConsumerSpec, PullSpec, PushSpec

__all__ = [
    "AppliedSequences",
    "BatchConsumer",
    "BatchHandler",
    "BatchSpec",
    "Consumer",
    "ConsumerSpec",
    "ConsumerStats",
    "DeadLetterHeader",
    "DeadLetterReason",
    "Handler",
    "PullConsumer",
    "PullSpec",
    "PushConsumer",
    "PushSpec",
]
