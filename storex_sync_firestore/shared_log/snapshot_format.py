"""Snapshot documents as bytes: chunks and the manifest, packed, signed and sealed like log batches.

A snapshot is the merged state of the synced tables as one device (the writer) had it, as the entries
that state needs for later merges: per object its latest create or delete (its tombstone) and the latest
writer of each column, each with its origin device and clock. It is stored as:

* chunks ``{snapshotId}/{index:06d}``: fields ``v, deviceId, snapshot, index, count, size, z, p, sig``
  (+ ``enc, kid`` when sealed); ``p`` is zstd of UTF-8 lines ``<origin>\\t<hlc>\\t<entry JSON>\\n``
  sorted by (origin, hlc), the entry JSON canonical as in a batch;
* the manifest ``{snapshotId}`` = ``{deviceId}-{hlc:016x}``, written last: fields ``v, deviceId, hlc,
  chunks, count, size, z, p, sig`` (+ ``enc, kid``); ``p`` is zstd of the JSON
  ``{"frontier": {origin: clock}, "digests": [sha256 hex of each chunk's signed message]}``.

Each document is signed by the writer (``kind`` ``"chunk"`` or ``"manifest"`` in the signed message, so
neither can pose as a batch or as the other), and in an encrypted log its payload is sealed with the data
key with the signed header as associated data. The manifest names its chunks by digest, so a chunk from
another snapshot, or a snapshot missing one, does not verify. Pure; ``validate.Verifier`` does the checks
that need the device registry.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..encryption import CIPHER, AuthenticationError, DataKey
from ..signing import SIGNATURE_BYTES, DeviceKey
from . import format as fmt
from .format import RejectedBatchError

KIND_CHUNK = "chunk"
KIND_MANIFEST = "manifest"
F_SNAPSHOT = "snapshot"
F_INDEX = "index"
F_HLC = "hlc"
F_CHUNKS = "chunks"
CHUNK_FIELDS = (fmt.F_VERSION, fmt.F_DEVICE_ID, F_SNAPSHOT, F_INDEX, fmt.F_COUNT, fmt.F_SIZE, fmt.F_CODEC)
MANIFEST_FIELDS = (fmt.F_VERSION, fmt.F_DEVICE_ID, F_HLC, F_CHUNKS, fmt.F_COUNT, fmt.F_SIZE, fmt.F_CODEC)
MAX_CHUNKS = 100_000
_INT63 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class SnapshotLine:
    """One entry of a snapshot: its origin device, clock and text (the canonical entry JSON)."""

    device_id: str
    hlc: int
    text: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest that checked out: who wrote it, when (its clock), its frontier and chunk digests."""

    snapshot_id: str
    device_id: str
    hlc: int
    count: int
    frontier: dict[str, int]
    digests: tuple[str, ...]


def snapshot_id(device_id: str, hlc: int) -> str:
    return f"{device_id}-{hlc:016x}"


def chunk_id(index: int) -> str:
    return f"{index:06d}"


def _header_bytes(kind: str, user_id: str, order: Sequence[str], header: Mapping[str, Any]) -> bytes:
    parts = [kind, user_id, *(header[f] for f in order)]
    parts += [header[f] for f in fmt.ENCRYPTION_FIELDS if f in header]
    return fmt.MAGIC + orjson.dumps(parts)


def _message(kind: str, user_id: str, order: Sequence[str], header: Mapping[str, Any], p: bytes) -> bytes:
    return _header_bytes(kind, user_id, order, header) + b"\x00" + hashlib.sha256(p).digest()


def _seal(
    kind: str,
    order: Sequence[str],
    header: dict[str, Any],
    raw: bytes,
    *,
    user_id: str,
    key: DeviceKey,
    cipher: DataKey | None,
) -> tuple[dict[str, Any], bytes]:
    payload = fmt.compress(raw)
    if cipher is not None:
        header |= {fmt.F_CIPHER: CIPHER, fmt.F_KEY_ID: cipher.key_id}
        payload = cipher.seal(payload, _header_bytes(kind, user_id, order, header))
    message = _message(kind, user_id, order, header, payload)
    return {**header, fmt.F_PAYLOAD: payload, fmt.F_SIGNATURE: key.sign(message)}, message


def encode_chunk(
    lines: Sequence[SnapshotLine],
    *,
    snapshot: str,
    index: int,
    user_id: str,
    device_id: str,
    key: DeviceKey,
    cipher: DataKey | None = None,
) -> tuple[str, dict[str, Any], str]:
    """(chunk id, fields, digest for the manifest) of one chunk of ``lines`` (sorted by origin, clock)."""
    raw = "".join(f"{x.device_id}\t{x.hlc}\t{x.text}\n" for x in lines).encode("utf-8")
    header = {
        fmt.F_VERSION: fmt.VERSION,
        fmt.F_DEVICE_ID: device_id,
        F_SNAPSHOT: snapshot,
        F_INDEX: index,
        fmt.F_COUNT: len(lines),
        fmt.F_SIZE: len(raw),
        fmt.F_CODEC: fmt.CODEC,
    }
    fields, message = _seal(KIND_CHUNK, CHUNK_FIELDS, header, raw, user_id=user_id, key=key, cipher=cipher)
    return chunk_id(index), fields, hashlib.sha256(message).hexdigest()


def encode_manifest(
    *,
    hlc: int,
    count: int,
    frontier: Mapping[str, int],
    digests: Sequence[str],
    user_id: str,
    device_id: str,
    key: DeviceKey,
    cipher: DataKey | None = None,
) -> tuple[str, dict[str, Any]]:
    """(snapshot id, fields) of a manifest naming ``digests`` (one per chunk, by index)."""
    raw = orjson.dumps({"frontier": dict(sorted(frontier.items())), "digests": list(digests)})
    header = {
        fmt.F_VERSION: fmt.VERSION,
        fmt.F_DEVICE_ID: device_id,
        F_HLC: hlc,
        F_CHUNKS: len(digests),
        fmt.F_COUNT: count,
        fmt.F_SIZE: len(raw),
        fmt.F_CODEC: fmt.CODEC,
    }
    fields, _ = _seal(KIND_MANIFEST, MANIFEST_FIELDS, header, raw, user_id=user_id, key=key, cipher=cipher)
    return snapshot_id(device_id, hlc), fields


# ---- reading ----------------------------------------------------------------------------------------------


def _shape(fields: Mapping[str, Any], order: Sequence[str], cipher: DataKey | None) -> None:
    if not isinstance(fields, Mapping):
        raise RejectedBatchError("the document is not a set of fields")
    allowed = {*order, fmt.F_PAYLOAD, fmt.F_SIGNATURE, *fmt.ENCRYPTION_FIELDS}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise RejectedBatchError(f"unexpected fields {unknown}"[:300])
    if fields.get(fmt.F_VERSION) != fmt.VERSION or type(fields.get(fmt.F_VERSION)) is not int:
        raise RejectedBatchError(
            f"unknown snapshot format version {fields.get(fmt.F_VERSION)!r}"[:200],
            hint="a newer storex-sync wrote it: upgrade this device's storex-sync to read it",
        )
    fmt.claimed_device(fields)
    fmt._int(fields, fmt.F_COUNT, 0, 10**9)
    fmt._int(fields, fmt.F_SIZE, 1, fmt.MAX_SIZE)
    if fields.get(fmt.F_CODEC) != fmt.CODEC:
        raise RejectedBatchError(f"unknown payload codec {fields.get(fmt.F_CODEC)!r}"[:200])
    if len(fmt._bytes(fields, fmt.F_SIGNATURE)) != SIGNATURE_BYTES:
        raise RejectedBatchError("the signature is not 64 bytes")
    fmt._bytes(fields, fmt.F_PAYLOAD)
    fmt._check_encryption(fields, cipher)


def check_manifest(
    snapshot: str, fields: Mapping[str, Any], *, user_id: str, cipher: DataKey | None
) -> bytes:
    """Check a manifest's shape and id; return the message its signature must cover."""
    _shape(fields, MANIFEST_FIELDS, cipher)
    hlc = fmt._int(fields, F_HLC, 1)
    fmt._int(fields, F_CHUNKS, 0, MAX_CHUNKS)
    if snapshot != snapshot_id(fields[fmt.F_DEVICE_ID], hlc):
        raise RejectedBatchError("the snapshot id does not match its manifest (altered or copied)")
    return _message(KIND_MANIFEST, user_id, MANIFEST_FIELDS, fields, fields[fmt.F_PAYLOAD])


def _open(
    kind: str, order: Sequence[str], fields: Mapping[str, Any], user_id: str, cipher: DataKey | None
) -> bytes:
    stored = fields[fmt.F_PAYLOAD]
    if fmt.F_CIPHER in fields:
        if cipher is None:
            raise RejectedBatchError("an encrypted snapshot, and this device has no key")
        try:
            stored = cipher.open(stored, _header_bytes(kind, user_id, order, fields))
        except AuthenticationError as exc:
            raise RejectedBatchError(f"the payload does not decrypt: {exc}") from exc
    return fmt.inflate(stored, fields[fmt.F_SIZE])


def open_manifest(
    snapshot: str, fields: Mapping[str, Any], *, user_id: str, cipher: DataKey | None
) -> Manifest:
    """Read a manifest whose signature was checked."""
    raw = _open(KIND_MANIFEST, MANIFEST_FIELDS, fields, user_id, cipher)
    try:
        body = orjson.loads(raw)
        frontier = body["frontier"]
        digests = body["digests"]
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise RejectedBatchError(f"the manifest's payload is not readable: {exc}") from exc
    if (
        not isinstance(frontier, dict)
        or any(type(v) is not int or not 0 < v <= _INT63 for v in frontier.values())
        or not isinstance(digests, list)
        or any(not isinstance(d, str) for d in digests)
        or len(digests) != fields[F_CHUNKS]
    ):
        raise RejectedBatchError("the manifest's frontier or chunk list is malformed")
    return Manifest(
        snapshot,
        fields[fmt.F_DEVICE_ID],
        fields[F_HLC],
        fields[fmt.F_COUNT],
        {str(k): v for k, v in frontier.items()},
        tuple(digests),
    )


def check_chunk(
    chunk: str, fields: Mapping[str, Any], manifest: Manifest, *, user_id: str, cipher: DataKey | None
) -> bytes:
    """Check a chunk's shape, id and place in ``manifest``; return the message its signature covers."""
    _shape(fields, CHUNK_FIELDS, cipher)
    index = fmt._int(fields, F_INDEX, 0, MAX_CHUNKS)
    if chunk != chunk_id(index) or fields.get(F_SNAPSHOT) != manifest.snapshot_id:
        raise RejectedBatchError(f"chunk {chunk!r} is not a chunk of snapshot {manifest.snapshot_id!r}")
    if fields[fmt.F_DEVICE_ID] != manifest.device_id:
        raise RejectedBatchError("a chunk written by another device than its manifest")
    message = _message(KIND_CHUNK, user_id, CHUNK_FIELDS, fields, fields[fmt.F_PAYLOAD])
    if index >= len(manifest.digests) or hashlib.sha256(message).hexdigest() != manifest.digests[index]:
        raise RejectedBatchError(f"chunk {chunk!r} is not the one its manifest names")
    return message


def open_chunk(fields: Mapping[str, Any], *, user_id: str, cipher: DataKey | None) -> list[SnapshotLine]:
    """Read a chunk whose signature and digest were checked: its lines, sorted and counted."""
    raw = _open(KIND_CHUNK, CHUNK_FIELDS, fields, user_id, cipher)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedBatchError(f"the payload is not UTF-8: {exc}") from exc
    if text and not text.endswith("\n"):
        raise RejectedBatchError("the payload does not end with a line break")
    lines: list[SnapshotLine] = []
    for row in text[:-1].split("\n") if text else []:
        device, tab1, rest = row.partition("\t")
        hlc, tab2, body = rest.partition("\t")
        if not (tab1 and tab2 and device and hlc.isascii() and hlc.isdigit() and len(hlc) <= 19):
            raise RejectedBatchError("a snapshot line is not '<device>\\t<clock>\\t<entry>'")
        if (len(hlc) > 1 and hlc[0] == "0") or not 0 < int(hlc) <= _INT63:
            raise RejectedBatchError("a snapshot line's clock is not canonical")
        lines.append(SnapshotLine(device, int(hlc), body))
    if len(lines) != fields[fmt.F_COUNT]:
        raise RejectedBatchError(
            f"the chunk holds {len(lines)} entries, its header says {fields[fmt.F_COUNT]}"
        )
    if any((b.device_id, b.hlc) <= (a.device_id, a.hlc) for a, b in itertools.pairwise(lines)):
        raise RejectedBatchError("the chunk's entries are not sorted by (device, clock)")
    return lines


__all__ = [
    "KIND_CHUNK",
    "KIND_MANIFEST",
    "Manifest",
    "SnapshotLine",
    "check_chunk",
    "check_manifest",
    "encode_chunk",
    "encode_manifest",
    "open_chunk",
    "open_manifest",
    "snapshot_id",
]
