"""Packing, ids, sizes and the read-marker algorithm: pure checks, plus the emulator's verdict on sizes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from storex_sync_firestore.errors import EntryTooLargeError, PermanentSharedLogError
from storex_sync_firestore.models import SharedEntry
from storex_sync_firestore.shared_log import firestore_layout as layout
from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog
from storex_sync_firestore.shared_log.firestore_marker import Marker, Position, advance
from storex_sync_firestore.testing.conformance import drain, keys, make_entries

DEV = "d" * 32


def sized(hlc: int, size: int, char: str = "x") -> SharedEntry:
    return SharedEntry(DEV, hlc, char * size)


def test_packing_is_deterministic_and_ids_follow_content() -> None:
    entries = make_entries(DEV, 1, 50)
    first, again = layout.pack(entries, DEV), layout.pack(list(entries), DEV)
    assert [b.doc_id for b in first] == [b.doc_id for b in again]
    assert first[0].doc_id.startswith(f"{DEV}-{1:016x}-")
    changed = [*entries[:-1], SharedEntry(DEV, 50, "other")]
    assert layout.pack(changed, DEV)[0].doc_id != first[0].doc_id


def test_documents_stay_under_one_mib_with_utf8_counted() -> None:
    entries = [sized(i, 100_000, "é") for i in range(1, 30)]  # 200,000 UTF-8 bytes each
    packed = layout.pack(entries, DEV)
    assert len(packed) == 6 and sum(len(b.hlcs) for b in packed) == 29
    for batch in packed:
        path = ("storexSync", "u" * layout.MAX_ID_BYTES, "batches", batch.doc_id)
        assert layout.document_size(path, batch.fields(DEV, datetime.now(UTC))) <= layout.DOC_LIMIT


def test_entries_per_document_are_capped() -> None:
    packed = layout.pack([sized(i, 1) for i in range(1, 25_001)], DEV)
    assert [len(b.hlcs) for b in packed] == [10_000, 10_000, 5_000]


def test_too_large_entry_is_named() -> None:
    with pytest.raises(EntryTooLargeError, match=f"{DEV}/7 is {layout.MAX_ENTRY_BYTES + 1:,} bytes"):
        layout.pack([sized(6, 10), sized(7, layout.MAX_ENTRY_BYTES + 1)], DEV)


def test_foreign_or_unordered_entries_are_refused() -> None:
    with pytest.raises(PermanentSharedLogError, match="another device"):
        layout.pack([SharedEntry("other", 1, "{}")], DEV)
    with pytest.raises(PermanentSharedLogError, match="ascending"):
        layout.pack([sized(2, 1), sized(2, 1)], DEV)


def test_commit_size_bound() -> None:
    per_entry = 32  # the smallest average entry max_batch_bytes is promised for
    n = layout.MAX_BATCH_BYTES // per_entry
    layout.check_commit_size(layout.pack([sized(i, per_entry) for i in range(1, n + 1)], DEV))
    with pytest.raises(PermanentSharedLogError, match="max_batch_bytes"):
        layout.check_commit_size(layout.pack([sized(i, 5) for i in range(1, 200_001)], DEV))


@pytest.mark.parametrize("bad", ["", "a/b", ".", "..", "__x__", "x" * 513])
def test_ids_are_validated(bad: str) -> None:
    with pytest.raises(PermanentSharedLogError):
        layout.validate_id("user id", bad)


def test_largest_entry_and_largest_batch_are_accepted_by_the_emulator(firestore_client: Any) -> None:
    log = FirestoreSharedLog(firestore_client, retry=None)
    user = "u" * layout.MAX_ID_BYTES
    a, b = log.create_device_id(user_id=user), log.create_device_id(user_id=user)
    big = [SharedEntry(a, 1, "x" * log.max_entry_bytes)]  # type: ignore[operator]
    assert log.write_entries(big, user_id=user, device_id=a).documents_written == 1
    n = layout.MAX_BATCH_BYTES // 200
    batch = [SharedEntry(a, 10 + i, "y" * 200) for i in range(n)]  # a full 2 MiB upload, one commit
    assert log.write_entries(batch, user_id=user, device_id=a).documents_written == 3
    got = drain(log, b, user_id=user)
    assert keys(got) == keys(big + batch) and got[0].data == big[0].data


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
