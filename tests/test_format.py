"""Log format v2 (docs/format.md): the bytes are pinned, and every check a reader makes can fail."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import zstandard

from storex_sync_firestore.shared_log import format as fmt
from storex_sync_firestore.signing import DeviceKey, verify

KEY = DeviceKey(bytes(range(32)))
LINES = [
    fmt.Line(5, '{"op":"create","table":"notes","pk":["n1"],"value":{"title":"milk"}}'),
    fmt.Line(9, '{"op":"delete","table":"notes","pk":["n1"]}'),
]


def encoded() -> tuple[str, dict[str, Any]]:
    return fmt.encode_batch(LINES, user_id="alice", device_id="d1", key=KEY)


def test_the_bytes_are_pinned() -> None:
    batch_id, fields = encoded()
    raw = zstandard.ZstdDecompressor().decompress(fields["p"])
    assert raw == (
        b'5\t{"op":"create","table":"notes","pk":["n1"],"value":{"title":"milk"}}\n'
        b'9\t{"op":"delete","table":"notes","pk":["n1"]}\n'
    )
    header = {k: v for k, v in fields.items() if k not in ("p", "sig")}
    assert header == {
        "v": 2,
        "deviceId": "d1",
        "firstHlc": 5,
        "lastHlc": 9,
        "count": 2,
        "size": len(raw),
        "z": "zstd",
    }
    message = (
        b"storex-sync/v2\x00"
        + f'["batch","alice",2,"d1",5,9,2,{len(raw)},"zstd"]'.encode()
        + b"\x00"
        + hashlib.sha256(fields["p"]).digest()
    )
    assert fmt.signed_message("batch", "alice", fields, fields["p"]) == message
    assert batch_id == f"d1-{5:016x}-{hashlib.sha256(message).hexdigest()[:16]}"
    assert verify(KEY.public_key, message, fields["sig"])
    assert encoded() == (batch_id, fields), "encoding is deterministic: a retry is the same document"


def test_a_checked_batch_opens_to_its_lines() -> None:
    batch_id, fields = encoded()
    assert fmt.check_v2(batch_id, fields, user_id="alice") == fmt.signed_message(
        "batch", "alice", fields, fields["p"]
    )
    assert list(fmt.open_v2(batch_id, fields).lines) == LINES


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": 3}, "unknown log format version"),
        ({"v": "2"}, "unknown log format version"),
        ({"extra": 1}, "unexpected fields"),
        ({"firstHlc": "5"}, "'firstHlc' must be an integer"),
        ({"count": 0}, "'count' must be an integer"),
        ({"size": 2**40}, "'size' must be an integer"),
        ({"z": "gzip"}, "unknown payload codec"),
        ({"sig": b"x" * 63}, "not 64 bytes"),
        ({"p": "text"}, "'p' must be bytes"),
        ({"deviceId": ""}, "'deviceId' must be a non-empty string"),
        ({"deviceId": "x" * 129}, "'deviceId' must be a non-empty string"),
        ({"lastHlc": 4}, "clock range"),
        ({"deviceId": "d2"}, "does not match its content"),
        ({"count": 3}, "does not match its content"),
        ({"p": zstandard.ZstdCompressor().compress(b"5\tx\n")}, "does not match its content"),
    ],
)
def test_every_header_check_can_fail(change: dict[str, Any], reason: str) -> None:
    batch_id, fields = encoded()
    with pytest.raises(fmt.RejectedBatchError, match=reason):
        fields = {**fields, **change}
        fmt.version_of(fields)
        fmt.check_v2(batch_id, fields, user_id="alice")


def test_a_batch_copied_to_another_user_or_kind_does_not_match() -> None:
    batch_id, fields = encoded()
    with pytest.raises(fmt.RejectedBatchError, match="does not match"):
        fmt.check_v2(batch_id, fields, user_id="bob")
    with pytest.raises(fmt.RejectedBatchError, match="does not match"):
        fmt.check_v2(batch_id, fields, user_id="alice", kind="snapshot")


def resealed(raw: bytes, *, size: int | None = None, count: int = 2, first: int = 5, last: int = 9) -> Any:
    """A batch whose header is consistent with a hand-made payload, so only the payload checks can fail."""
    fields = {"v": 2, "deviceId": "d1", "firstHlc": first, "lastHlc": last, "count": count}
    fields |= {"size": len(raw) if size is None else size, "z": "zstd"}
    fields["p"] = zstandard.ZstdCompressor(write_content_size=True).compress(raw)
    message = fmt.signed_message("batch", "alice", fields, fields["p"])
    fields["sig"] = KEY.sign(message)
    return fmt.document_id("d1", first, message), fields


@pytest.mark.parametrize(
    ("raw", "options", "reason"),
    [
        (b"5\ta\n9\tb\n", {"size": 7}, "does not declare its size"),
        (b"5\ta\n9\tb", {}, "does not end with a line break"),
        (b"5\ta\n\xff\tb\n", {}, "not UTF-8"),
        (b"5\ta\n09\tb\n", {}, "is not '<clock>"),
        (b"5\ta\n\xc2\xb2\tb\n", {}, "is not '<clock>"),
        (b"5 a\n9\tb\n", {}, "is not '<clock>"),
        (b"5\ta\n9\tb\n", {"count": 3}, "holds 2 entries"),
        (b"5\ta\n9\tb\n", {"first": 4}, "do not match the header"),
        (b"9\ta\n5\tb\n", {"first": 9, "last": 5}, "clock range"),
        (b"5\ta\n5\tb\n", {"last": 5}, "clock range"),
    ],
)
def test_every_payload_check_can_fail(raw: bytes, options: dict[str, int], reason: str) -> None:
    batch_id, fields = resealed(raw, **options)
    with pytest.raises(fmt.RejectedBatchError, match=reason):
        fmt.check_v2(batch_id, fields, user_id="alice")
        fmt.open_v2(batch_id, fields)


def test_a_compression_bomb_is_refused_without_inflating_it() -> None:
    bomb = b"5\t" + b"x" * 50_000_000 + b"\n"
    batch_id, fields = resealed(bomb, size=100, count=1, first=5, last=5)
    with pytest.raises(fmt.RejectedBatchError, match="does not declare its size"):
        fmt.open_v2(batch_id, fields)


def test_v1_batches_are_read_and_their_ids_checked() -> None:
    fields = {
        "v": 1,
        "deviceId": "old",
        "h": [1, 2],
        "d": ["{}", "{}"],
        "firstHlc": 1,
        "lastHlc": 2,
        "count": 2,
    }
    good = fmt.legacy_id("old", [1, 2], ["{}", "{}"])
    assert [line.hlc for line in fmt.open_v1(good, fields).lines] == [1, 2]
    with pytest.raises(fmt.RejectedBatchError, match="does not match"):
        fmt.open_v1(good, {**fields, "d": ["{}", "[]"]})
    with pytest.raises(fmt.RejectedBatchError, match="equally long"):
        fmt.open_v1(good, {**fields, "h": [1]})
    with pytest.raises(fmt.RejectedBatchError, match="positive 64-bit"):
        fmt.open_v1(good, {**fields, "h": [1, "2"]})
