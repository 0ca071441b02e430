"""The shared log's documents as bytes: log format v2 (written) and v1 (still read). Pure, no I/O.

Every backend stores a batch as the same flat set of fields; only where they live differs (a Firestore
document, a file, a dict). ``docs/format.md`` specifies the format for writers of other clients.

A v2 batch::

    v         2
    deviceId  the writing device
    firstHlc  clock of the first entry        lastHlc   clock of the last entry
    count     number of entries               size      uncompressed payload bytes
    z         "zstd" (the payload's compression)
    p         the payload: zstd of UTF-8 lines "<hlc>\\t<entry JSON>\\n", clocks strictly ascending
    sig       Ed25519 signature by the device over signed_message(...)

and its id is ``{deviceId}-{firstHlc:016x}-{digest}``, ``digest`` the first 16 hex digits of the SHA-256 of
the signed message. The message binds the batch to its user (a copy under another user's log fails), to
its kind (a snapshot chunk cannot pose as a batch) and to every header field and the payload's digest;
the id binds the document to the message. So a reader checks, without trusting anyone: the id, the
signature against the device's registered public key, then decompresses at most ``size`` bytes.

Why one bytes field: the Firestore client converts array elements to protobuf one by one (25 documents of
4,000 entries took 2.4-3.1 s to commit as arrays, 0.3 s as one bytes field each), and compressed bytes
cost less to store and read. The header stays readable, for the rules and the Firebase console.

A v1 batch (written by 0.1.x) has ``h`` (clocks) and ``d`` (entry JSON strings) arrays instead of ``p``,
no signature, and an id whose digest covers the clocks and texts. It is read as it is, from devices that
have no public key (see ``validate``).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import zstandard

from ..encryption import CIPHER, AuthenticationError, DataKey
from ..errors import InvalidEntryError
from ..signing import SIGNATURE_BYTES, DeviceKey

VERSION = 2
LEGACY_VERSION = 1
KIND_BATCH = "batch"
CODEC = "zstd"
ZSTD_LEVEL = 3
MAGIC = b"storex-sync/v2\x00"

F_VERSION = "v"
F_DEVICE_ID = "deviceId"
F_FIRST_HLC = "firstHlc"
F_LAST_HLC = "lastHlc"
F_COUNT = "count"
F_SIZE = "size"
F_CODEC = "z"
F_PAYLOAD = "p"
F_SIGNATURE = "sig"
F_CIPHER = "enc"  # encrypted batches only
F_KEY_ID = "kid"  # encrypted batches only
F_HLCS = "h"  # v1
F_DATA = "d"  # v1
V2_FIELDS = (
    F_VERSION,
    F_DEVICE_ID,
    F_FIRST_HLC,
    F_LAST_HLC,
    F_COUNT,
    F_SIZE,
    F_CODEC,
    F_PAYLOAD,
    F_SIGNATURE,
)
SIGNED_FIELDS = V2_FIELDS[:7]
ENCRYPTION_FIELDS = (F_CIPHER, F_KEY_ID)
V1_FIELDS = (F_VERSION, F_DEVICE_ID, F_FIRST_HLC, F_LAST_HLC, F_COUNT, F_HLCS, F_DATA)

MAX_ID_BYTES = 512
MAX_DEVICE_ID_BYTES = 128
#: Most entries and uncompressed bytes a reader accepts in one batch: bounds what a hostile document costs.
MAX_ENTRIES = 200_000
MAX_SIZE = 64 * 1024 * 1024
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True, slots=True)
class Line:
    """One entry inside a batch: its clock and its text (the serialized entry, exactly as written)."""

    hlc: int
    text: str


@dataclass(frozen=True, slots=True)
class OpenedBatch:
    """A batch whose id, header and payload checked out: the claimed device and its entries' lines."""

    batch_id: str
    device_id: str
    version: int
    lines: tuple[Line, ...]


class RejectedBatchError(InvalidEntryError):
    """A batch document that fails a check: every reader sets it aside whole, for the same reason."""


# ---- writing ----------------------------------------------------------------------------------------------


def payload_text(lines: Sequence[Line]) -> bytes:
    """The uncompressed payload: one ``<hlc>\\t<text>\\n`` line per entry."""
    return "".join(f"{line.hlc}\t{line.text}\n" for line in lines).encode("utf-8")


def compress(raw: bytes) -> bytes:
    # The frame records its content size, so a reader can refuse a bomb before inflating it.
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(raw)


def header_of(device_id: str, lines: Sequence[Line], raw: bytes) -> dict[str, Any]:
    """The readable header fields of a batch holding ``lines`` (payload ``raw`` before compression)."""
    return span_header(device_id, lines[0].hlc, lines[-1].hlc, len(lines), raw)


def span_header(device_id: str, first_hlc: int, last_hlc: int, count: int, raw: bytes) -> dict[str, Any]:
    """:func:`header_of` for a payload of ``count`` lines from ``first_hlc`` to ``last_hlc``."""
    return {
        F_VERSION: VERSION,
        F_DEVICE_ID: device_id,
        F_FIRST_HLC: first_hlc,
        F_LAST_HLC: last_hlc,
        F_COUNT: count,
        F_SIZE: len(raw),
        F_CODEC: CODEC,
    }


def header_bytes(kind: str, user_id: str, header: Mapping[str, Any]) -> bytes:
    """Kind, user and every header field in a fixed order: where a payload belongs. It is signed, and it
    is the associated data of an encrypted payload, so a payload moved elsewhere does not verify."""
    parts = [kind, user_id, *(header[f] for f in SIGNED_FIELDS)]
    parts += [header[f] for f in ENCRYPTION_FIELDS if f in header]
    return MAGIC + orjson.dumps(parts)


def signed_message(kind: str, user_id: str, header: Mapping[str, Any], payload: bytes) -> bytes:
    """What the device signs: :func:`header_bytes` and the digest of the stored payload."""
    return header_bytes(kind, user_id, header) + b"\x00" + hashlib.sha256(payload).digest()


def document_id(device_id: str, first_hlc: int, message: bytes, cipher: DataKey | None = None) -> str:
    """``device-firstHlc-digest``; in an encrypted log the digest is keyed, so it reveals nothing."""
    digest = hashlib.sha256(message).hexdigest()[:16] if cipher is None else cipher.digest(message)[:16]
    return f"{device_id}-{first_hlc & 0xFFFFFFFFFFFFFFFF:016x}-{digest}"


def encode_batch(
    lines: Sequence[Line],
    *,
    user_id: str,
    device_id: str,
    key: DeviceKey,
    kind: str = KIND_BATCH,
    cipher: DataKey | None = None,
) -> tuple[str, dict[str, Any]]:
    """The id and fields of a signed v2 batch of ``lines`` (clock order), encrypted with ``cipher`` if
    given. Deterministic without a cipher; with one, each call draws a fresh nonce."""
    return seal_span(
        payload_text(lines),
        (lines[0].hlc, lines[-1].hlc, len(lines)),
        user_id=user_id,
        device_id=device_id,
        key=key,
        kind=kind,
        cipher=cipher,
    )


def seal_span(
    raw: bytes,
    span: tuple[int, int, int],
    *,
    user_id: str,
    device_id: str,
    key: DeviceKey,
    kind: str = KIND_BATCH,
    cipher: DataKey | None = None,
) -> tuple[str, dict[str, Any]]:
    """:func:`encode_batch` for a payload of ``span`` = (first clock, last clock, line count) assembled
    by the caller (the client log builds the lines in SQL, ready to concatenate)."""
    first_hlc, last_hlc, count = span
    header = span_header(device_id, first_hlc, last_hlc, count, raw)
    payload = compress(raw)
    if cipher is not None:
        header |= {F_CIPHER: CIPHER, F_KEY_ID: cipher.key_id}
        payload = cipher.seal(payload, header_bytes(kind, user_id, header))
    message = signed_message(kind, user_id, header, payload)
    fields = {**header, F_PAYLOAD: payload, F_SIGNATURE: key.sign(message)}
    return document_id(device_id, first_hlc, message, cipher), fields


def header_json(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields but the payload, as JSON-able data (bytes as ``{"$hex": ...}``): how a batch is kept in
    a file or a table beside its payload bytes."""
    return {k: {"$hex": v.hex()} if isinstance(v, bytes) else v for k, v in fields.items() if k != F_PAYLOAD}


def from_header_json(header: Mapping[str, Any], payload: bytes) -> dict[str, Any]:
    """Inverse of :func:`header_json`. Raises ``ValueError`` for a damaged header."""
    fields: dict[str, Any] = {}
    for k, v in header.items():
        fields[k] = bytes.fromhex(v["$hex"]) if isinstance(v, dict) else v
    fields[F_PAYLOAD] = payload
    return fields


# ---- reading ----------------------------------------------------------------------------------------------


def _int(fields: Mapping[str, Any], name: str, low: int = _INT64[0], high: int = _INT64[1]) -> int:
    value = fields.get(name)
    if type(value) is not int or not low <= value <= high:
        raise RejectedBatchError(f"field {name!r} must be an integer in [{low}, {high}], not {value!r}"[:300])
    return value


def _str(fields: Mapping[str, Any], name: str, max_bytes: int) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value or len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise RejectedBatchError(f"field {name!r} must be a non-empty string of at most {max_bytes} bytes")
    return value


def _bytes(fields: Mapping[str, Any], name: str) -> bytes:
    value = fields.get(name)
    if not isinstance(value, bytes):
        raise RejectedBatchError(f"field {name!r} must be bytes, not {type(value).__name__}")
    return value


def version_of(fields: Mapping[str, Any]) -> int:
    """The document's format version; an unknown one is refused with what to do."""
    version = fields.get(F_VERSION, LEGACY_VERSION)
    if version not in (VERSION, LEGACY_VERSION) or type(version) is not int:
        raise RejectedBatchError(
            f"unknown log format version {version!r}"[:200],
            hint="a newer storex-sync wrote it: upgrade this device's storex-sync to read it",
        )
    return version


def claimed_device(fields: Mapping[str, Any]) -> str:
    """The device a document says wrote it (to be checked, never trusted as it stands)."""
    return _str(fields, F_DEVICE_ID, MAX_DEVICE_ID_BYTES)


def check_v2(
    batch_id: str,
    fields: Mapping[str, Any],
    *,
    user_id: str,
    kind: str = KIND_BATCH,
    cipher: DataKey | None = None,
) -> bytes:
    """Check a v2 document's shape, its encryption against this device's key, and its id; return the
    message its signature must cover."""
    unknown = sorted(set(fields) - set(V2_FIELDS) - set(ENCRYPTION_FIELDS))
    if unknown:
        raise RejectedBatchError(f"unexpected fields {unknown}"[:300])
    _check_encryption(fields, cipher)
    device_id = claimed_device(fields)
    first, last = _int(fields, F_FIRST_HLC, 1), _int(fields, F_LAST_HLC, 1)
    count = _int(fields, F_COUNT, 1, MAX_ENTRIES)
    _int(fields, F_SIZE, 1, MAX_SIZE)
    if fields.get(F_CODEC) != CODEC:
        raise RejectedBatchError(f"unknown payload codec {fields.get(F_CODEC)!r}"[:200])
    if first > last or (count == 1) != (first == last):
        raise RejectedBatchError("the header's clock range does not fit its count")
    if len(_bytes(fields, F_SIGNATURE)) != SIGNATURE_BYTES:
        raise RejectedBatchError("the signature is not 64 bytes")
    message = signed_message(kind, user_id, fields, _bytes(fields, F_PAYLOAD))
    if batch_id != document_id(device_id, first, message, cipher):
        raise RejectedBatchError("the document id does not match its content (altered or copied)")
    return message


def _check_encryption(fields: Mapping[str, Any], cipher: DataKey | None) -> None:
    """An encrypted log holds only batches sealed with its key, and a plain log only plain batches."""
    if F_CIPHER not in fields and F_KEY_ID not in fields:
        if cipher is not None:
            raise RejectedBatchError("an unencrypted batch in an encrypted log (written past the rules?)")
        return
    if fields.get(F_CIPHER) != CIPHER:
        raise RejectedBatchError(f"unknown cipher {fields.get(F_CIPHER)!r}"[:200])
    if cipher is None:
        raise RejectedBatchError(
            "an encrypted batch, and this device has no key",
            hint="run 'storex-sync init --encrypt' on this database with the log's passphrase",
        )
    if fields.get(F_KEY_ID) != cipher.key_id:
        raise RejectedBatchError("the batch is encrypted with another key than this log's")


def open_v2(
    batch_id: str,
    fields: Mapping[str, Any],
    *,
    user_id: str = "",
    kind: str = KIND_BATCH,
    cipher: DataKey | None = None,
) -> OpenedBatch:
    """Decrypt (if sealed), decompress and split a v2 payload whose id and signature were checked;
    bounded by its header."""
    size = fields[F_SIZE]
    stored = fields[F_PAYLOAD]
    if F_CIPHER in fields:
        if cipher is None:
            raise RejectedBatchError("an encrypted batch, and this device has no key")
        try:
            stored = cipher.open(stored, header_bytes(kind, user_id, fields))
        except AuthenticationError as exc:
            raise RejectedBatchError(f"the payload does not decrypt: {exc}") from exc
    lines = _split(inflate(stored, size))
    _check_lines(lines, fields)
    return OpenedBatch(batch_id, fields[F_DEVICE_ID], VERSION, tuple(lines))


def inflate(stored: bytes, size: int) -> bytes:
    """Decompress a payload that declares ``size`` bytes, never inflating more."""
    try:
        reader = zstandard.ZstdDecompressor()
        params = zstandard.get_frame_parameters(stored)
        if params.content_size != size:
            raise RejectedBatchError(f"the payload does not declare its size {size}")
        raw = reader.decompress(stored, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise RejectedBatchError(f"the payload does not decompress: {exc}") from exc
    if len(raw) != size:
        raise RejectedBatchError(f"the payload holds {len(raw)} bytes, its header says {size}")
    return raw


def _split(raw: bytes) -> list[Line]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedBatchError(f"the payload is not UTF-8: {exc}") from exc
    if not text.endswith("\n"):
        raise RejectedBatchError("the payload does not end with a line break")
    lines: list[Line] = []
    for row in text[:-1].split("\n"):
        hlc, tab, body = row.partition("\t")
        if (
            not tab
            or not (hlc.isascii() and hlc.isdigit())
            or len(hlc) > 19
            or (len(hlc) > 1 and hlc[0] == "0")
        ):
            raise RejectedBatchError("a payload line is not '<clock>\\t<entry>'")
        lines.append(Line(int(hlc), body))
    return lines


def _check_lines(lines: Sequence[Line], fields: Mapping[str, Any]) -> None:
    if len(lines) != fields[F_COUNT]:
        raise RejectedBatchError(f"the payload holds {len(lines)} entries, its header says {fields[F_COUNT]}")
    if lines[0].hlc != fields[F_FIRST_HLC] or lines[-1].hlc != fields[F_LAST_HLC]:
        raise RejectedBatchError("the payload's clocks do not match the header's range")
    if any(b.hlc <= a.hlc for a, b in itertools.pairwise(lines)):
        raise RejectedBatchError("the payload's clocks are not strictly ascending")
    if lines[-1].hlc > _INT64[1]:
        raise RejectedBatchError("a clock does not fit 64 bits")


def legacy_id(device_id: str, hlcs: Sequence[int], data: Sequence[str]) -> str:
    """The id 0.1.x gave a v1 batch: device, first clock and a digest of the clocks and texts."""
    digest = hashlib.sha256()
    for hlc, text in zip(hlcs, data, strict=True):
        digest.update(b"%d\x00" % hlc)
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return f"{device_id}-{hlcs[0] & 0xFFFFFFFFFFFFFFFF:016x}-{digest.hexdigest()[:16]}"


def open_v1(batch_id: str, fields: Mapping[str, Any]) -> OpenedBatch:
    """Check and read a v1 document: shape, bounds and (its only integrity check) the id's digest."""
    device_id = claimed_device(fields)
    hlcs, data = fields.get(F_HLCS), fields.get(F_DATA)
    if not isinstance(hlcs, list) or not isinstance(data, list) or not hlcs or len(hlcs) != len(data):
        raise RejectedBatchError("a v1 batch needs equally long, non-empty 'h' and 'd' arrays")
    if len(hlcs) > MAX_ENTRIES:
        raise RejectedBatchError(f"a v1 batch of {len(hlcs)} entries is over the limit of {MAX_ENTRIES}")
    if any(type(h) is not int or not 0 < h <= _INT64[1] for h in hlcs) or any(
        not isinstance(d, str) for d in data
    ):
        raise RejectedBatchError("a v1 batch's clocks must be positive 64-bit integers and its data strings")
    if sum(len(d) for d in data) > MAX_SIZE:
        raise RejectedBatchError("a v1 batch is over the size limit")
    if batch_id != legacy_id(device_id, hlcs, data):
        raise RejectedBatchError("the document id does not match its content (altered or copied)")
    lines = [Line(h, d) for h, d in zip(hlcs, data, strict=True)]
    if any(b.hlc <= a.hlc for a, b in itertools.pairwise(lines)):
        raise RejectedBatchError("the batch's clocks are not strictly ascending")
    return OpenedBatch(batch_id, device_id, LEGACY_VERSION, tuple(lines))


__all__ = [
    "CODEC",
    "KIND_BATCH",
    "VERSION",
    "Line",
    "OpenedBatch",
    "RejectedBatchError",
    "check_v2",
    "claimed_device",
    "encode_batch",
    "from_header_json",
    "header_json",
    "inflate",
    "legacy_id",
    "open_v1",
    "open_v2",
    "seal_span",
    "signed_message",
    "version_of",
]
