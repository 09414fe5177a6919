"""Snapshots of fold services, kept in the JetStream object store bucket `SNAPSHOTS`.

One object per service, named after it, replaced by each save. An object store rather than a
key-value bucket because a KV value must fit in one message (1 MB by default) while a
service's state grows with the journal (accounts remember every client order id); the object
store chunks it. The object store publishes the new chunks first and the object's metadata
last, so a crash half-way through a save leaves the previous snapshot readable.

The object holds a `FoldSnapshot` encoded with msgpack and compressed with zlib.
"""

from __future__ import annotations

import contextlib
import logging
import zlib

import msgspec
from nats.aio.client import Client as NATS
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from bourse.errors import BourseError

log = logging.getLogger(__name__)

SNAPSHOT_BUCKET = "SNAPSHOTS"
SNAPSHOT_FORMAT = 1


class SnapshotError(BourseError):
    """A stored snapshot cannot be used: unreadable, another format, or another service's."""

    def __init__(self, service: str, problem: str) -> None:
        self.service = service
        self.problem = problem
        super().__init__(f"snapshot of {service}: {problem}")


class FoldSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A fold service's state once every input up to `input_seq` was applied and every
    output of those inputs acknowledged by JetStream.

    `output_marks` holds, for each stream the service publishes to, that stream's last
    sequence when the snapshot was taken: outputs of later inputs can only be after it.
    """

    service: str
    stream: str
    input_seq: int
    processed: int
    output_marks: dict[str, int]
    state_digest: str
    state: bytes
    format: int = SNAPSHOT_FORMAT


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(FoldSnapshot)


def encode_snapshot(snapshot: FoldSnapshot) -> bytes:
    return zlib.compress(_encoder.encode(snapshot), level=1)


def decode_snapshot(service: str, data: bytes) -> FoldSnapshot:
    """Raise SnapshotError when `data` is not a snapshot of `service` this version reads."""
    try:
        snapshot = _decoder.decode(zlib.decompress(data))
    except (zlib.error, msgspec.DecodeError) as exc:
        raise SnapshotError(service, f"unreadable ({exc})") from exc
    if snapshot.format != SNAPSHOT_FORMAT:
        raise SnapshotError(
            service, f"format {snapshot.format}; this version reads {SNAPSHOT_FORMAT}"
        )
    if snapshot.service != service:
        raise SnapshotError(service, f"it was written by {snapshot.service!r}")
    return snapshot


class SnapshotStore:
    """Load, save and delete fold snapshots in an object store bucket (made when missing)."""

    def __init__(self, nc: NATS, *, bucket: str = SNAPSHOT_BUCKET, replicas: int = 1) -> None:
        self._js = nc.jetstream()
        self.bucket = bucket
        self._replicas = replicas
        self._store: ObjectStore | None = None

    async def _objects(self) -> ObjectStore:
        if self._store is None:
            try:
                self._store = await self._js.object_store(self.bucket)
            except BucketNotFoundError:
                log.info("creating the snapshot bucket %s", self.bucket)
                self._store = await self._js.create_object_store(
                    self.bucket,
                    ObjectStoreConfig(
                        description="fold service snapshots, one object per service",
                        storage=StorageType.FILE,
                        replicas=self._replicas,
                    ),
                )
        return self._store

    async def load(self, service: str) -> FoldSnapshot | None:
        """The latest snapshot of `service`, or None when it has none."""
        store = await self._objects()
        try:
            result = await store.get(service)
        except ObjectNotFoundError:
            return None
        return decode_snapshot(service, result.data or b"")

    async def save(self, snapshot: FoldSnapshot) -> None:
        store = await self._objects()
        await store.put(snapshot.service, encode_snapshot(snapshot))

    async def delete(self, service: str) -> None:
        """Forget `service`'s snapshot: its next start replays the whole journal."""
        store = await self._objects()
        with contextlib.suppress(ObjectNotFoundError):
            await store.delete(service)
