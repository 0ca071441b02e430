"""Where the Firestore shared log keeps things and how it packs entries: pure functions, no I/O.

Layout, per user (a person, or an organisation whose devices share one log)::

    {root}/{userId}/devices/{deviceId}   registry + that device's read marker (only that device writes it)
    {root}/{userId}/batches/{batchId}    many entries packed into one immutable document

Every collection is per user, so no index (and no document) is shared by all users or written by all
devices. A batch document holds the entries as two parallel arrays, ``h`` (HLCs, int64) and ``d`` (the
already-serialized entry JSON, as strings), so that its size is exact: Firestore counts a string as its
UTF-8 length + 1 and an integer as 8, with no escaping (a JSON-string encoding would double every quote).
``firestore.indexes.json`` exempts both arrays from indexing.

Batch ids are deterministic: ``{deviceId}-{firstHlc:016x}-{sha256(content)[:16]}``. A retried
``write_entries`` with the same list packs to the same ids, so ``create`` (must-not-exist) turns the retry
into a no-op; a *different* list that happens to start at the same HLC gets a different id (a harmless
duplicate that receivers drop by ``(device_id, hlc)``) instead of being silently swallowed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import EntryTooLargeError, PermanentSharedLogError
from ..models import SharedEntry
from .base import unpack_entries

DEFAULT_ROOT = "storexSync"
DEVICES = "devices"
BATCHES = "batches"
FORMAT_VERSION = 1

# Batch document fields.
F_DEVICE_ID = "deviceId"
F_SHARED_ON = "sharedOn"
F_FIRST_HLC = "firstHlc"
F_LAST_HLC = "lastHlc"
F_COUNT = "count"
F_HLCS = "h"
F_DATA = "d"
F_VERSION = "v"
# Device document fields (F_DEVICE_ID too). The marker fields are the only ones an update may change.
F_CREATED_AT = "createdAt"
F_SHARED_UNTIL = "sharedUntil"
F_MARKER_TS = "markerTs"
F_MARKER_ID = "markerId"
F_MARKER_SEEN = "markerSeen"
MARKER_FIELDS = (F_MARKER_TS, F_MARKER_ID, F_MARKER_SEEN)

# Size limits. Firestore: 1 MiB per document; the emulator caps a request (one commit) at 4 MiB (gRPC),
# production at 10 MiB, so 4 MiB is the binding limit for code that must run on both.
DOC_LIMIT = 1_048_576
#: Reserved per document for its name (root, user id, batch id) and the fixed fields; ids are capped below.
DOC_RESERVE = 8_192
MAX_ID_BYTES = 512
#: Firestore storage size of one entry inside a batch document besides its data: int64 (8) + string NUL (1).
ENTRY_DOC_OVERHEAD = 9
DOC_ENTRY_BUDGET = DOC_LIMIT - DOC_RESERVE
#: Largest ``len(entry.data.encode())`` that fits into one document.
MAX_ENTRY_BYTES = DOC_ENTRY_BUDGET - ENTRY_DOC_OVERHEAD
#: Keeps a document far below Firestore's 40,000 index entries even if the index exemptions are missing.
MAX_ENTRIES_PER_DOC = 10_000
COMMIT_LIMIT = 4 * 1024 * 1024
COMMIT_MARGIN = 64 * 1024
#: Upper bound of the protobuf bytes one entry adds to a commit besides its data (two Values in arrays).
ENTRY_WIRE_OVERHEAD = 24
#: Upper bound of a document's protobuf bytes besides its entries (name, fields, transform, precondition).
DOC_WIRE_OVERHEAD = DOC_RESERVE
#: Largest total of ``len(data.encode())`` per ``write_entries``. With ENTRY_WIRE_OVERHEAD per entry, this
#: fits one commit for entries averaging 32 bytes or more; smaller ones raise a PermanentSharedLogError.
MAX_BATCH_BYTES = 2 * 1024 * 1024

_INT64 = (-(2**63), 2**63 - 1)


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


def batches_path(root: str, user_id: str) -> tuple[str, ...]:
    """Path segments of a user's batches collection."""
    return (root, validate_id("user id", user_id), BATCHES)


def entry_bytes(entry: SharedEntry) -> int:
    """The size the engine and this backend agree to count for an entry: its data's UTF-8 length."""
    return len(entry.data.encode("utf-8"))


def value_size(value: Any) -> int:
    """Firestore storage size of a field value (https://firebase.google.com/docs/firestore/storage-size)."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float):
        return 8
    if isinstance(value, str):
        return len(value.encode("utf-8")) + 1
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(value_size(v) for v in value)
    if isinstance(value, dict):
        return sum(len(k.encode("utf-8")) + 1 + value_size(v) for k, v in value.items())
    return 8  # timestamps, the SERVER_TIMESTAMP sentinel


def document_size(path: Sequence[str], fields: dict[str, Any]) -> int:
    """Firestore storage size of a document at ``path`` (collection/doc segments) holding ``fields``."""
    name = sum(len(seg.encode("utf-8")) + 1 for seg in path) + 16
    return name + value_size(fields) + 32


@dataclass(frozen=True, slots=True)
class PackedBatch:
    """One batch document to create: its id and the entries it carries, in upload order."""

    doc_id: str
    hlcs: tuple[int, ...]
    data: tuple[str, ...]
    payload_bytes: int

    def fields(self, device_id: str, shared_on: Any) -> dict[str, Any]:
        """The document body; ``shared_on`` is the server-timestamp sentinel (kept out of this module)."""
        return {
            F_DEVICE_ID: device_id,
            F_SHARED_ON: shared_on,
            F_FIRST_HLC: self.hlcs[0],
            F_LAST_HLC: self.hlcs[-1],
            F_COUNT: len(self.hlcs),
            F_HLCS: list(self.hlcs),
            F_DATA: list(self.data),
            F_VERSION: FORMAT_VERSION,
        }


def batch_id(device_id: str, hlcs: Sequence[int], data: Sequence[str]) -> str:
    """Deterministic id from the device, the first HLC and a digest of the document's content."""
    digest = hashlib.sha256()
    for hlc, text in zip(hlcs, data, strict=True):
        digest.update(b"%d\x00" % hlc)
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return f"{device_id}-{hlcs[0] & 0xFFFFFFFFFFFFFFFF:016x}-{digest.hexdigest()[:16]}"


def check_entries(entries: Sequence[SharedEntry], device_id: str) -> None:
    """Raise unless every entry is ``device_id``'s, HLCs are int64 and ascending, and each fits a document."""
    previous: int | None = None
    for entry in entries:
        if entry.device_id != device_id:
            raise PermanentSharedLogError(
                f"entry {entry.device_id}/{entry.hlc} was written by another device than {device_id!r}",
                hint="write_entries takes only the calling device's own entries",
            )
        if not _INT64[0] <= entry.hlc <= _INT64[1] or (previous is not None and entry.hlc <= previous):
            raise PermanentSharedLogError(
                f"entry {device_id}/{entry.hlc}: HLCs must be int64 and strictly ascending",
                hint="pass entries in clock order, as the client log returns them",
            )
        previous = entry.hlc
        size = entry_bytes(entry)
        if size > MAX_ENTRY_BYTES:
            raise EntryTooLargeError(
                f"entry {device_id}/{entry.hlc} is {size:,} bytes of data; one Firestore document holds "
                f"at most {MAX_ENTRY_BYTES:,}",
                hint="sync sets such entries aside; store large blobs outside the synced tables",
            )


def pack(entries: Sequence[SharedEntry], device_id: str) -> list[PackedBatch]:
    """Split ``entries`` greedily, in order, into documents that each stay under the document budget.

    Deterministic: the same list always gives the same documents and ids, which is what makes a retried
    ``write_entries`` idempotent.
    """
    check_entries(entries, device_id)
    packed: list[PackedBatch] = []
    hlcs: list[int] = []
    data: list[str] = []
    used = 0
    for entry in entries:
        cost = entry_bytes(entry) + ENTRY_DOC_OVERHEAD
        if hlcs and (used + cost > DOC_ENTRY_BUDGET or len(hlcs) >= MAX_ENTRIES_PER_DOC):
            packed.append(PackedBatch(batch_id(device_id, hlcs, data), tuple(hlcs), tuple(data), used))
            hlcs, data, used = [], [], 0
        hlcs.append(entry.hlc)
        data.append(entry.data)
        used += cost
    if hlcs:
        packed.append(PackedBatch(batch_id(device_id, hlcs, data), tuple(hlcs), tuple(data), used))
    return packed


def commit_size_upper_bound(batches: Iterable[PackedBatch]) -> int:
    """An upper bound of the commit request's encoded size for creating ``batches`` in one commit."""
    total = 1_024
    for batch in batches:
        data_bytes = batch.payload_bytes - len(batch.hlcs) * ENTRY_DOC_OVERHEAD
        total += DOC_WIRE_OVERHEAD + data_bytes + len(batch.hlcs) * ENTRY_WIRE_OVERHEAD
    return total


def check_commit_size(batches: Sequence[PackedBatch]) -> None:
    """Raise a PermanentSharedLogError if the documents cannot go into one commit."""
    size = commit_size_upper_bound(batches)
    if size > COMMIT_LIMIT - COMMIT_MARGIN:
        entries = sum(len(b.hlcs) for b in batches)
        raise PermanentSharedLogError(
            f"{entries:,} entries in {len(batches)} documents would make a commit of up to {size:,} bytes, "
            f"over the {COMMIT_LIMIT - COMMIT_MARGIN:,}-byte limit of one atomic write",
            hint=f"cut upload batches at max_batch_bytes ({MAX_BATCH_BYTES:,}) of entry data",
        )


def unpack(device_id: str, fields: dict[str, Any]) -> list[SharedEntry]:
    """Entries of a batch document, in upload order (a malformed one comes back to be set aside)."""
    return unpack_entries(device_id, fields.get(F_HLCS), fields.get(F_DATA), source=repr(fields)[:10_000])


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
#: Unseen batches after the marker's settled position: ``sharedOn > ts`` or a (sharedOn, __name__) cursor.
UNSEEN_AFTER_TIME = QuerySpec(
    "unseen batches after a time",
    BATCHES,
    filters=((F_SHARED_ON, ">"),),
    order_by=((F_SHARED_ON, "ASCENDING"), (NAME, "ASCENDING")),
)
UNSEEN_AFTER_CURSOR = QuerySpec(
    "unseen batches after a cursor", BATCHES, order_by=((F_SHARED_ON, "ASCENDING"), (NAME, "ASCENDING"))
)
QUERIES: tuple[QuerySpec, ...] = (UNSEEN_AFTER_TIME, UNSEEN_AFTER_CURSOR)
#: Array fields that no query uses; exempted from indexing in firestore.indexes.json.
UNINDEXED_FIELDS: tuple[tuple[str, str], ...] = (
    (BATCHES, F_HLCS),
    (BATCHES, F_DATA),
    (DEVICES, F_MARKER_SEEN),
)
