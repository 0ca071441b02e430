"""Where the Firestore shared log keeps things, and its size limits: pure functions, no I/O.

Layout, per user (a person, or an organisation whose devices share one log)::

    {root}/{userId}/devices/{deviceId}   registry + public key + that device's read marker (only it writes)
    {root}/{userId}/batches/{batchId}    one immutable batch document (format v2, ``shared_log.format``)
    {root}/{userId}/keys/data            an encrypted log's data key, wrapped by the passphrase
    {root}/{userId}/snapshots/{snapshotId}                  a snapshot's manifest (written last)
    {root}/{userId}/snapshots/{snapshotId}/chunks/{chunkId} its chunks (immutable, create-only)

Every collection is per user, so no index (and no document) is shared by all users or written by all
devices. A batch document holds the batch's fields as they are (its entries in one compressed bytes field
``p``) plus ``sharedOn``, the server's time of the commit, which orders the log.
``firestore.indexes.json`` exempts the payload, the signature and the marker's list from indexing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ..errors import EntryTooLargeError, PermanentSharedLogError
from ..models import StoredBatch
from . import format as fmt

DEFAULT_ROOT = "storexSync"
DEVICES = "devices"
BATCHES = "batches"
KEYS = "keys"
SNAPSHOTS = "snapshots"
CHUNKS = "chunks"
DATA_KEY = "data"
# Batch document fields besides the batch's own (``format.V2_FIELDS``): the server's commit time.
F_DEVICE_ID = fmt.F_DEVICE_ID
F_SHARED_ON = "sharedOn"
# Device document fields (F_DEVICE_ID too). The marker fields are the only ones an update may change.
F_CREATED_AT = "createdAt"
F_SHARED_UNTIL = "sharedUntil"
F_PUBLIC_KEY = "publicKey"
F_MARKER_TS = "markerTs"
F_MARKER_ID = "markerId"
F_MARKER_SEEN = "markerSeen"
MARKER_FIELDS = (F_MARKER_TS, F_MARKER_ID, F_MARKER_SEEN)
# Liveness fields, written by the device itself (``touch_device``): server time, and clock maps.
F_LAST_SEEN = "lastSeen"
F_FRONTIER = "frontier"
F_COMPACTED = "compacted"
LIVENESS_FIELDS = (F_LAST_SEEN, F_FRONTIER, F_COMPACTED)
#: Optional TTL field on batch documents and snapshots (docs/compaction.md): a second safety net.
F_EXPIRES = "expireAt"

# Size limits. Firestore: 1 MiB per document; the emulator caps a request (one commit) at 4 MiB (gRPC),
# production at 10 MiB, so 4 MiB is the binding limit for code that must run on both.
DOC_LIMIT = 1_048_576
#: Reserved per document for its name (root, user id, batch id) and the header fields; ids are capped below.
DOC_RESERVE = 8_192
MAX_ID_BYTES = fmt.MAX_ID_BYTES
#: Largest stored payload (``p``) of one batch document.
MAX_BATCH_BYTES = DOC_LIMIT - DOC_RESERVE
COMMIT_LIMIT = 4 * 1024 * 1024
COMMIT_MARGIN = 64 * 1024


def validate_id(kind: str, value: str) -> str:
    """Check that ``value`` can be a Firestore document id of bounded size; return it."""
    size = len(value.encode("utf-8"))
    if (
        not value
        or "/" in value
        or value in (".", "..")
        or (value.startswith("__") and value.endswith("__"))
        or size > MAX_ID_BYTES
    ):
        raise PermanentSharedLogError(
            f"{kind} {value!r} cannot be a Firestore document id",
            hint=f"use 1-{MAX_ID_BYTES} bytes without '/', not '.', '..' or '__x__'",
        )
    return value


def device_path(root: str, user_id: str, device_id: str) -> tuple[str, ...]:
    """Path segments of a device document."""
    return (root, validate_id("user id", user_id), DEVICES, validate_id("device id", device_id))


def devices_path(root: str, user_id: str) -> tuple[str, ...]:
    """Path segments of a user's devices collection."""
    return (root, validate_id("user id", user_id), DEVICES)


def key_path(root: str, user_id: str) -> tuple[str, ...]:
    """Path segments of the document holding an encrypted log's wrapped data key."""
    return (root, validate_id("user id", user_id), KEYS, DATA_KEY)


def snapshots_path(root: str, user_id: str) -> tuple[str, ...]:
    """Path segments of a user's snapshot manifests collection."""
    return (root, validate_id("user id", user_id), SNAPSHOTS)


def chunks_path(root: str, user_id: str, snapshot_id: str) -> tuple[str, ...]:
    """Path segments of one snapshot's chunks collection."""
    return (*snapshots_path(root, user_id), validate_id("snapshot id", snapshot_id), CHUNKS)


def batches_path(root: str, user_id: str) -> tuple[str, ...]:
    """Path segments of a user's batches collection."""
    return (root, validate_id("user id", user_id), BATCHES)


def commit_size_upper_bound(batches: Sequence[StoredBatch]) -> int:
    """An upper bound of the commit request's encoded size for creating ``batches`` in one commit."""
    return 1_024 + sum(
        DOC_RESERVE + sum(len(v) for v in b.fields.values() if isinstance(v, bytes)) for b in batches
    )


def check_commit_size(batches: Sequence[StoredBatch]) -> None:
    """Raise a PermanentSharedLogError if the documents cannot go into one commit or one is too large."""
    for batch in batches:
        payload = batch.fields.get(fmt.F_PAYLOAD)
        if isinstance(payload, bytes) and len(payload) > MAX_BATCH_BYTES:
            raise EntryTooLargeError(
                f"batch {batch.batch_id} holds {len(payload):,} payload bytes; a document holds at most "
                f"{MAX_BATCH_BYTES:,}",
                hint="sync plans batches under max_batch_bytes; this is a bug in planning, please report it",
            )
    size = commit_size_upper_bound(batches)
    if size > COMMIT_LIMIT - COMMIT_MARGIN:
        raise PermanentSharedLogError(
            f"{len(batches)} documents would make a commit of up to {size:,} bytes, over the "
            f"{COMMIT_LIMIT - COMMIT_MARGIN:,}-byte limit of one atomic write",
            hint="write fewer batches per call",
        )


# ---- Queries, declared as data so tests can check them against firestore.indexes.json ----


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A query this package makes: collection id, filters (field, op) and order (field, direction)."""

    name: str
    collection: str
    filters: tuple[tuple[str, str], ...] = ()
    order_by: tuple[tuple[str, Literal["ASCENDING", "DESCENDING"]], ...] = ()

    def fields(self) -> list[str]:
        """Fields the query touches, in index order, without the implicit ``__name__``."""
        seen: list[str] = []
        for field, _ in (*self.filters, *self.order_by):
            if field != "__name__" and field not in seen:
                seen.append(field)
        return seen

    def needs_composite_index(self) -> bool:
        """True when single-field indexes cannot serve the query (it touches more than one field)."""
        return len(self.fields()) > 1


NAME = "__name__"
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
"""The earliest Firestore timestamp: ``sharedOn >= EARLIEST`` holds for every timestamp and nothing else."""
#: Unseen batches after the marker's settled position: ``sharedOn > ts`` or ``>= ts`` with a
#: (sharedOn, __name__) cursor; from the start, every batch whose ``sharedOn`` is a timestamp.
UNSEEN_FROM_START = QuerySpec(
    "unseen batches from the start",
    BATCHES,
    filters=((F_SHARED_ON, ">="),),
    order_by=((F_SHARED_ON, "ASCENDING"), (NAME, "ASCENDING")),
)
UNSEEN_AFTER_TIME = QuerySpec(
    "unseen batches after a time",
    BATCHES,
    filters=((F_SHARED_ON, ">"),),
    order_by=((F_SHARED_ON, "ASCENDING"), (NAME, "ASCENDING")),
)
UNSEEN_AFTER_CURSOR = QuerySpec(
    "unseen batches after a cursor",
    BATCHES,
    filters=((F_SHARED_ON, ">="),),
    order_by=((F_SHARED_ON, "ASCENDING"), (NAME, "ASCENDING")),
)
QUERIES: tuple[QuerySpec, ...] = (UNSEEN_FROM_START, UNSEEN_AFTER_TIME, UNSEEN_AFTER_CURSOR)
#: Array fields that no query uses; exempted from indexing in firestore.indexes.json.
UNINDEXED_FIELDS: tuple[tuple[str, str], ...] = (
    (BATCHES, fmt.F_PAYLOAD),
    (BATCHES, fmt.F_SIGNATURE),
    (BATCHES, fmt.F_HLCS),
    (BATCHES, fmt.F_DATA),
    (DEVICES, F_MARKER_SEEN),
    (DEVICES, F_PUBLIC_KEY),
    (DEVICES, F_FRONTIER),
    (DEVICES, F_COMPACTED),
    (SNAPSHOTS, fmt.F_PAYLOAD),
    (SNAPSHOTS, fmt.F_SIGNATURE),
    (CHUNKS, fmt.F_PAYLOAD),
    (CHUNKS, fmt.F_SIGNATURE),
)
