"""Document sizes, ids and the read-marker algorithm: pure checks, plus the emulator's verdict on sizes."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from storex_sync_firestore.client_log import Signer, _fitting
from storex_sync_firestore.errors import EntryTooLargeError, PermanentSharedLogError
from storex_sync_firestore.models import StoredBatch
from storex_sync_firestore.shared_log import firestore_layout as layout
from storex_sync_firestore.shared_log import format as fmt
from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog
from storex_sync_firestore.shared_log.firestore_marker import Marker, Position, advance
from storex_sync_firestore.signing import DeviceKey
from storex_sync_firestore.testing.conformance import drain

DEV = "d" * 32


def noise_lines(start: int, count: int, size: int) -> list[fmt.Line]:
    """Lines of incompressible text, so that a payload's stored size is what the test says."""
    rng = random.Random(start)
    return [fmt.Line(start + i, base64.b64encode(rng.randbytes(size))[:size].decode()) for i in range(count)]


def fitting(lines: list[fmt.Line], signer: Signer, budget: int) -> tuple[str, dict[str, Any]] | None:
    """``_fitting`` over ``lines``, given as the planner gives them: payload lines and their clocks."""
    return _fitting([f"{x.hlc}\t{x.text}\n" for x in lines], [x.hlc for x in lines], signer, budget)


def test_documents_are_cut_to_fit_one_mib_even_when_the_data_does_not_compress() -> None:
    signer = Signer("u", DEV, DeviceKey.generate())
    lines = noise_lines(1, 30, 100_000)  # 3 MB that zstd cannot shrink
    fitted = fitting(lines, signer, layout.MAX_BATCH_BYTES)
    assert fitted is not None
    batch_id, fields = fitted
    assert 5 <= fields["count"] < 30 and len(fields["p"]) <= layout.MAX_BATCH_BYTES
    path = ("storexSync", "u" * layout.MAX_ID_BYTES, "batches", batch_id)
    assert document_size(path, {**fields, layout.F_SHARED_ON: datetime.now(UTC)}) <= layout.DOC_LIMIT


def document_size(path: tuple[str, ...], fields: dict[str, Any]) -> int:
    """Firestore's storage size (https://firebase.google.com/docs/firestore/storage-size)."""

    def size(value: Any) -> int:
        if isinstance(value, str):
            return len(value.encode()) + 1
        return len(value) if isinstance(value, bytes) else 8

    name = sum(len(seg.encode()) + 1 for seg in path) + 16
    return name + sum(len(k) + 1 + size(v) for k, v in fields.items()) + 32


def test_commit_size_bound() -> None:
    one = StoredBatch("b", {"p": bytes(layout.MAX_BATCH_BYTES)})
    layout.check_commit_size([one, one, one])
    with pytest.raises(PermanentSharedLogError, match="one atomic write"):
        layout.check_commit_size([one] * 4)
    with pytest.raises(EntryTooLargeError, match="a document holds at most"):
        layout.check_commit_size([StoredBatch("b", {"p": bytes(layout.MAX_BATCH_BYTES + 1)})])


@pytest.mark.parametrize("bad", ["", "a/b", ".", "..", "__x__", "x" * 513])
def test_ids_are_validated(bad: str) -> None:
    with pytest.raises(PermanentSharedLogError):
        layout.validate_id("user id", bad)


def test_largest_documents_are_accepted_by_the_emulator(firestore_client: Any) -> None:
    log = FirestoreSharedLog(firestore_client, retry=None)
    user = "u" * layout.MAX_ID_BYTES
    a, b = log.create_device_id(user_id=user), log.create_device_id(user_id=user)
    signer = Signer(user, a, DeviceKey.generate())
    batches = []
    for start in (1, 1_000, 2_000):  # three full documents: one commit of about 3 MiB
        fitted = fitting(noise_lines(start, 12, 100_000), signer, layout.MAX_BATCH_BYTES)
        assert fitted is not None and len(fitted[1]["p"]) > layout.MAX_BATCH_BYTES * 0.8
        batches.append(StoredBatch(*fitted))
    assert log.write_batches(batches, user_id=user, device_id=a).documents_written == 3
    got = drain(log, b, user_id=user)
    assert [(g.batch_id, dict(g.fields)) for g in got] == [(x.batch_id, dict(x.fields)) for x in batches]


# ---- the marker ----

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(ms: int, doc: str) -> Position:
    return Position(T0 + timedelta(milliseconds=ms), doc)


def test_marker_settles_only_up_to_the_horizon() -> None:
    consumed = [at(1, "a"), at(2, "b"), at(5, "c")]
    m = advance(Marker(), consumed, cut=False, horizon=T0 + timedelta(milliseconds=3))
    assert m.pos == at(2, "b") and m.seen == (at(5, "c"),)
    # Next read: c comes back (dropped as seen) together with a late batch sorting before it.
    m2 = advance(m, [at(4, "z"), at(5, "c")], cut=False, horizon=T0 + timedelta(milliseconds=10))
    assert m2 == Marker(at(5, "c"), ())


def test_marker_keeps_seen_batches_past_a_cut_and_forgets_deleted_ones() -> None:
    m = Marker(None, (at(5, "c"), at(6, "d")))
    cut = advance(m, [at(1, "a"), at(5, "c")], cut=True, horizon=T0)
    assert cut == Marker(None, (at(1, "a"), at(5, "c"), at(6, "d")))
    done = advance(m, [at(5, "c")], cut=False, horizon=T0)  # d no longer exists
    assert done == Marker(None, (at(5, "c"),))


def test_marker_round_trips_through_fields() -> None:
    m = Marker(Position(T0, None), (at(5, "c"),))
    assert Marker.from_fields(m.to_fields()) == m
    assert Marker.from_fields(Marker().to_fields()) == Marker()
