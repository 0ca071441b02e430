"""Cost targets, counted in documents actually written and read (spied on the Firestore client).

Targets for ~200-byte entries: at most 2 document writes per 1,000 entries uploaded and 2 document reads
per 1,000 entries downloaded, plus a small constant per sync; a sync with nothing new costs the marker
read and one empty query and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from google.cloud.firestore_v1.batch import WriteBatch
from google.cloud.firestore_v1.document import DocumentReference
from google.cloud.firestore_v1.query import Query
from pytest_mock import MockerFixture

from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog
from storex_sync_firestore.testing.conformance import keys, make_batch

USER = "u"
N = 20_000


class Counter:
    """Counts documents that reach Firestore: created in commits, returned by gets and queries."""

    def __init__(self, mocker: MockerFixture) -> None:
        self.written = self.read = 0
        real_commit, real_get, real_stream = WriteBatch.commit, DocumentReference.get, Query.stream
        real_update = DocumentReference.update
        counter = self

        def commit(self: WriteBatch, *a: Any, **k: Any) -> Any:
            counter.written += len(self._write_pbs)
            return real_commit(self, *a, **k)

        def update(self: DocumentReference, *a: Any, **k: Any) -> Any:
            counter.written += 1
            return real_update(self, *a, **k)

        def get(self: DocumentReference, *a: Any, **k: Any) -> Any:
            counter.read += 1
            return real_get(self, *a, **k)

        def stream(self: Query, *a: Any, **k: Any) -> Iterator[Any]:
            n = 0
            try:
                for doc in real_stream(self, *a, **k):
                    n += 1
                    yield doc
            finally:  # also when the reader stops early
                counter.read += max(1, n)  # an empty query is billed as one read

        mocker.patch.object(WriteBatch, "commit", commit)
        mocker.patch.object(DocumentReference, "update", update)
        mocker.patch.object(DocumentReference, "get", get)
        mocker.patch.object(Query, "stream", stream)

    def reset(self) -> None:
        self.written = self.read = 0


def upload(log: FirestoreSharedLog, device: str, count: int, size: int = 200, per_batch: int = 10_000) -> int:
    """Upload ``count`` entries in batches of ``per_batch`` (the engine's default upload batch size)."""
    written = 0
    for start in range(1, count + 1, per_batch):
        batch = make_batch(device, start, min(per_batch, count + 1 - start), size)
        written += log.write_batches([batch], user_id=USER, device_id=device).documents_written
    return written


@pytest.mark.parametrize("settle", [timedelta(0), timedelta(seconds=30)])
def test_document_reads_and_writes_per_thousand_entries(
    firestore_client: Any, mocker: MockerFixture, settle: timedelta
) -> None:
    log = FirestoreSharedLog(firestore_client, settle_time=settle)
    a, b = log.create_device_id(user_id=USER), log.create_device_id(user_id=USER)
    counter = Counter(mocker)

    reported = upload(log, a, N)
    assert counter.written == reported == log.stats.documents_written - 2
    assert counter.written <= 2 * N / 1000, f"{counter.written} writes for {N} entries"

    counter.reset()
    received, syncs, reported_reads = 0, 0, 0
    while True:
        update = log.get_unsynced_batches(user_id=USER, device_id=b, batch_size=5_000)
        log.mark_as_seen(update, user_id=USER, device_id=b)
        received, syncs, reported_reads = (
            received + len(keys(update.batches)),
            syncs + 1,
            reported_reads + update.documents_read,
        )
        if not update.has_more:
            break
    assert received == N
    assert counter.read == reported_reads
    assert counter.read <= 2 * N / 1000 + 2 * syncs, f"{counter.read} reads in {syncs} calls"
    print(f"settle={settle}: {reported} docs written, {counter.read} read in {syncs} calls for {N} entries")

    counter.reset()  # a sync with nothing new: marker + one query, no write
    update = log.get_unsynced_batches(user_id=USER, device_id=b)
    log.mark_as_seen(update, user_id=USER, device_id=b)
    assert keys(update.batches) == []
    assert counter.written == 0
    if settle:  # the recent batches are not settled yet, so they are re-read (and dropped) until they are
        assert counter.read <= 1 + reported
    else:
        assert counter.read == update.documents_read == 2
