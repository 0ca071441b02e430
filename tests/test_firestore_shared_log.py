"""FirestoreSharedLog on the emulator (never skipped): late commits; the contract is in test_conformance."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from storex_sync_firestore.shared_log import firestore_layout as layout
from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog
from storex_sync_firestore.testing.conformance import drain, keys, make_batch, write

# ---- targeted: batches that become visible late, with an equal or earlier sharedOn ----

USER = "u"


def inject(client: Any, log: FirestoreSharedLog, device: str, hlc: int, shared_on: Any, doc_id: str) -> None:
    """Write a batch as a commit that was in flight during the reader's query would appear afterwards."""
    batch = make_batch(device, hlc, 1, user_id=USER)
    client.collection(log.root, USER, layout.BATCHES).document(doc_id).create(
        {**batch.fields, layout.F_SHARED_ON: shared_on}
    )


@pytest.mark.parametrize("settle", [timedelta(seconds=1), timedelta(seconds=30)])
def test_late_batches_with_equal_or_earlier_timestamps_are_delivered_once(
    firestore_client: Any, settle: timedelta
) -> None:
    log = FirestoreSharedLog(firestore_client, settle_time=settle)
    a, reader = log.create_device_id(user_id=USER), log.create_device_id(user_id=USER)
    write(log, make_batch(a, 100, 1, user_id=USER), user_id=USER)
    first = drain(log, reader, user_id=USER)
    assert keys(first) == [(a, 100)]
    shown = next(iter(firestore_client.collection(log.root, USER, layout.BATCHES).stream()))
    ts = shown.get(layout.F_SHARED_ON)
    # Same millisecond, smaller id; and 100 ms earlier (the emulator stamps ~150 ms before the commit).
    inject(firestore_client, log, a, 1, ts, f"{a}-0000")
    inject(firestore_client, log, a, 2, ts - timedelta(milliseconds=100), f"{a}-zzzz")
    assert sorted(keys(drain(log, reader, user_id=USER))) == [(a, 1), (a, 2)]
    assert drain(log, reader, user_id=USER) == []


def test_late_batches_between_pages_of_one_read(firestore_client: Any) -> None:
    """A batch lands at an already-paged timestamp while the reader is in the middle of paging."""
    log = FirestoreSharedLog(firestore_client, settle_time=timedelta(seconds=30), page_docs=2)
    a, reader = log.create_device_id(user_id=USER), log.create_device_id(user_id=USER)
    for i in range(6):
        write(log, make_batch(a, 10 * i + 10, 1, user_id=USER), user_id=USER)
    got = []
    update = log.get_unsynced_batches(user_id=USER, device_id=reader, batch_size=1)
    got += update.batches
    log.mark_as_seen(update, user_id=USER, device_id=reader)
    ts = next(iter(firestore_client.collection(log.root, USER, layout.BATCHES).stream())).get(
        layout.F_SHARED_ON
    )
    inject(firestore_client, log, a, 1, ts, f"{a}-0000")
    got += drain(log, reader, user_id=USER, batch_size=1)
    assert sorted(keys(got)) == sorted([(a, 1), *[(a, 10 * i + 10) for i in range(6)]])
    assert len(got) == 7


def test_shared_until_is_stored_and_honoured(firestore_client: Any) -> None:
    """Regression for the original's flaw 1: create_device_id(shared_until=...) was ignored."""
    log = FirestoreSharedLog(firestore_client)
    a = log.create_device_id(user_id=USER)
    write(log, make_batch(a, 1, 3, user_id=USER), user_id=USER)
    cutoff = datetime.now(UTC) + timedelta(milliseconds=5)
    late = log.create_device_id(user_id=USER, shared_until=cutoff)
    info = log.get_device_info(user_id=USER, device_id=late)
    assert info is not None and info.shared_until == cutoff
    while datetime.now(UTC) <= cutoff:
        time.sleep(0.001)
    write(log, make_batch(a, 10, 1, user_id=USER), user_id=USER)
    assert keys(drain(log, late, user_id=USER)) == [(a, 10)]


def test_without_a_settle_time_late_batches_would_be_skipped(firestore_client: Any) -> None:
    """The settle time is what saves the cases above: a naive "last sharedOn" marker loses them."""
    log = FirestoreSharedLog(firestore_client, settle_time=timedelta(0))
    a, reader = log.create_device_id(user_id=USER), log.create_device_id(user_id=USER)
    write(log, make_batch(a, 100, 1, user_id=USER), user_id=USER)
    drain(log, reader, user_id=USER)
    ts = next(iter(firestore_client.collection(log.root, USER, layout.BATCHES).stream())).get(
        layout.F_SHARED_ON
    )
    inject(firestore_client, log, a, 1, ts, f"{a}-0000")
    assert drain(log, reader, user_id=USER) == []  # lost: this is the assumption documented on settle_time


def test_a_firebase_admin_client_works(firestore_project: str) -> None:
    from storex_sync_firestore.shared_log.firestore_clients import client_from_firebase_admin

    log = FirestoreSharedLog(client_from_firebase_admin(project=firestore_project))
    a, b = log.create_device_id(user_id=USER), log.create_device_id(user_id=USER)
    write(log, make_batch(a, 1, 2, user_id=USER), user_id=USER)
    assert keys(drain(log, b, user_id=USER)) == [(a, 1), (a, 2)]


def test_paging_a_backlog_keeps_the_marker_small(firestore_client: Any) -> None:
    """Settled batches leave the seen list as pages go by: a backlog of thousands of documents must not
    grow the device document towards Firestore's 1 MiB limit (found in review)."""
    log = FirestoreSharedLog(firestore_client, settle_time=timedelta(0), page_docs=4)
    a, reader = log.create_device_id(user_id=USER), log.create_device_id(user_id=USER)
    for i in range(40):
        write(log, make_batch(a, 1000 + i, 1, user_id=USER), user_id=USER)
    time.sleep(0.5)  # everything is older than the (zero) settle time
    got, seen_sizes = [], []
    for _ in range(100):
        update = log.get_unsynced_batches(user_id=USER, device_id=reader, batch_size=1000)
        got += update.batches
        log.mark_as_seen(update, user_id=USER, device_id=reader)
        device = firestore_client.document(*layout.device_path(log.root, USER, reader)).get().to_dict()
        seen_sizes.append(len(device[layout.F_MARKER_SEEN]))
        if not update.has_more:
            break
    assert len(got) == 40 and len(set(keys(got))) == 40
    assert max(seen_sizes) <= 4, seen_sizes
