"""Parking poison messages on `deadletter.<original subject>` (the DEAD_LETTERS stream).

The dead letter carries the original payload unchanged and the original headers (except
NATS's own), plus headers that say where it came from and why it was parked. Its
`Nats-Msg-Id` is derived from the stream, consumer and sequence, so a retried publish is
stored once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from enum import StrEnum

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bourse.bus.streams import DEAD_LETTERS
from bourse.model import subjects

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 500
_PUBLISH_TIMEOUT = 2.0
_RETRY_DELAYS = (0.1, 0.5, 1.0)


class DeadLetterHeader(StrEnum):
    """Headers on every dead letter."""

    SUBJECT = "Bourse-Original-Subject"
    STREAM = "Bourse-Original-Stream"
    SEQUENCE = "Bourse-Original-Sequence"
    CONSUMER = "Bourse-Consumer"
    DELIVERIES = "Bourse-Delivery-Count"
    REASON = "Bourse-Dead-Letter-Reason"
    ERROR = "Bourse-Error"


class DeadLetterReason(StrEnum):
    """Why a message was parked: it could not be decoded, or its handler kept failing."""

    MALFORMED = "malformed"
    HANDLER_FAILED = "handler-failed"


def _one_line(text: str) -> str:
    # Header values cannot hold line breaks; keep them readable and bounded.
    return " ".join(text.split())[:_MAX_ERROR_CHARS]


def build_dead_letter_headers(
    *,
    subject: str,
    stream: str,
    sequence: int,
    consumer: str,
    deliveries: int,
    reason: DeadLetterReason,
    error: BaseException,
    original: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers of a dead letter: the original's own headers (less `Nats-*`) plus provenance."""
    headers = {
        name: value for name, value in (original or {}).items() if not name.startswith("Nats-")
    }
    headers.update(
        {
            DeadLetterHeader.SUBJECT: subject,
            DeadLetterHeader.STREAM: stream,
            DeadLetterHeader.SEQUENCE: str(sequence),
            DeadLetterHeader.CONSUMER: consumer,
            DeadLetterHeader.DELIVERIES: str(deliveries),
            DeadLetterHeader.REASON: reason,
            DeadLetterHeader.ERROR: _one_line(f"{type(error).__name__}: {error}"),
            # One dead letter per stream message, however often it is parked.
            "Nats-Msg-Id": f"{stream}.{consumer}.{sequence}",
        }
    )
    return headers


def dead_letter_headers(msg: Msg, reason: DeadLetterReason, error: BaseException) -> dict[str, str]:
    """The headers of the dead letter for JetStream message `msg`."""
    meta = msg.metadata
    return build_dead_letter_headers(
        subject=msg.subject,
        stream=meta.stream,
        sequence=meta.sequence.stream,
        consumer=meta.consumer,
        deliveries=meta.num_delivered,
        reason=reason,
        error=error,
        original=msg.headers,
    )


async def publish_dead_letter(
    js: JetStreamContext, msg: Msg, reason: DeadLetterReason, error: BaseException
) -> None:
    """Store `msg` on the DEAD_LETTERS stream, retrying briefly; raise if it cannot be stored."""
    subject = subjects.dead_letter(msg.subject)
    headers = dead_letter_headers(msg, reason, error)
    for delay in (*_RETRY_DELAYS, None):
        try:
            await js.publish(
                subject,
                msg.data,
                timeout=_PUBLISH_TIMEOUT,
                stream=DEAD_LETTERS.name,
                headers=dict(headers),
            )
            return
        except Exception as exc:  # nats raises several unrelated types; retry them all
            if delay is None:
                raise
            log.warning("storing a dead letter on %s failed (%s); retrying", subject, exc)
            await asyncio.sleep(delay)
