"""Read markers and batch metadata written past the rules cannot break a device (issue 10 point 5).

Each case was a crash or a silent stop on the original: ``sharedOn`` as a string or an integer (a
``TypeError`` on every sync, or only on a device joining later), a ``markerSeen`` item without ``id``
(``KeyError`` on every sync), ``markerTs: "yesterday"`` (syncs that succeed and receive nothing), 800
empty batches with 1,400-byte ids (a marker over 1 MiB: every sync fails). Now the marker is parsed
defensively and repaired (reset to a safe earlier position and read again), documents without a
timestamp ``sharedOn`` are read by no device, and the marker stays bounded whatever ids others write.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from storex_sync_firestore.shared_log import firestore_layout as layout
from storex_sync_firestore.shared_log.filesystem import FilesystemSharedLog
from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog
from storex_sync_firestore.shared_log.firestore_marker import MAX_SEEN, Marker, Position, advance

from .conftest import Device, DeviceFactory

T = datetime(2026, 1, 1, tzinfo=UTC)


def note(device: Device, key: str) -> None:
    device.sql("INSERT INTO notes VALUES (?, 'from ' || ?, NULL, 1)", key, device.path.stem)


def keys(device: Device) -> list[str]:
    return [r[0] for r in device.rows("notes")]


@pytest.fixture
def log(firestore_client: Any) -> FirestoreSharedLog:
    return FirestoreSharedLog(firestore_client, settle_time=timedelta(0))


@pytest.mark.parametrize("shared_on", ["2026-01-01", 1_700_000_000_000, None, {"t": 1}])
def test_a_batch_whose_shared_on_is_no_timestamp_is_read_by_no_device(
    make_devices: DeviceFactory, log: FirestoreSharedLog, firestore_client: Any, shared_on: object
) -> None:
    a, b = make_devices(2, log=log)
    note(a, "before")
    a.sync()
    b.sync()
    batches = firestore_client.collection(*layout.batches_path(log.root, "alice"))
    batches.document("odd").create({"deviceId": a.device_id, "sharedOn": shared_on, "v": 2})
    note(a, "after")
    a.sync()
    (c,) = make_devices(1, log=log)  # joins afterwards: reads the log from its start
    for device in (b, c, a):
        device.sync()
        assert keys(device) == ["after", "before"], device.path.name


@pytest.mark.parametrize(
    "fields",
    [
        {"markerTs": "yesterday"},
        {"markerTs": 17},
        {"markerTs": datetime(2117, 3, 26, tzinfo=UTC)},  # a time no batch has yet: b would read nothing
        {"markerSeen": [{"t": datetime(2117, 3, 26, tzinfo=UTC), "id": "b"}]},
        {"markerId": 5},
        {"markerId": "x" * 1_600},
        {"markerSeen": [{"t": T}]},
        {"markerSeen": [{"id": "b"}]},
        {"markerSeen": ["junk", None]},
        {"markerSeen": "not a list"},
    ],
    ids=lambda f: f"{next(iter(f))}={str(next(iter(f.values())))[:12]}",
)
def test_a_broken_marker_is_repaired_and_the_device_reads_on(
    make_devices: DeviceFactory, log: FirestoreSharedLog, firestore_client: Any, fields: dict[str, Any]
) -> None:
    a, b = make_devices(2, log=log)
    note(a, "before")
    a.sync()
    junk = firestore_client.collection(*layout.batches_path(log.root, "alice")).document("junk")
    junk.create({"deviceId": a.device_id, "sharedOn": firestore.SERVER_TIMESTAMP})
    b.sync()
    assert b.query("SELECT count(*) FROM _sync_quarantine") == [(1,)]
    # Written past the rules (an admin key, or another of the user's devices before the rules had it).
    firestore_client.document(*layout.device_path(log.root, "alice", b.device_id)).update(fields)
    note(a, "after")
    a.sync()
    b.sync()
    assert keys(b) == ["after", "before"]
    stored = firestore_client.document(*layout.device_path(log.root, "alice", b.device_id)).get().to_dict()
    marker, repaired = Marker.parse(stored)
    assert not repaired and marker.pos is not None  # the repair was written back
    assert b.query("SELECT count(*) FROM _sync_quarantine") == [(1,)]  # read again, not set aside again
    note(a, "later")
    a.sync()
    assert b.sync().received == 1 and keys(b) == ["after", "before", "later"]


def test_many_batches_with_long_ids_keep_the_marker_small(
    make_devices: DeviceFactory, firestore_client: Any
) -> None:
    # settle_time far ahead: everything stays in the unsettled tail, the worst case for its size.
    log = FirestoreSharedLog(firestore_client, settle_time=timedelta(hours=1), page_docs=500)
    a, b = make_devices(2, log=log)
    batches = firestore_client.collection(*layout.batches_path(log.root, "alice"))
    for start in range(0, 800, 400):
        wb = firestore_client.batch()
        for i in range(start, start + 400):
            doc = batches.document(f"{i:04d}" + "x" * 1_396)  # 1,400-byte ids
            wb.create(doc, {"deviceId": a.device_id, "sharedOn": firestore.SERVER_TIMESTAMP})
        wb.commit()
    note(a, "after")
    a.sync()
    summary = b.sync()
    assert keys(b) == ["after"] and summary.set_aside == 800
    size = len(json.dumps(Marker.parse(device_doc(firestore_client, log, b))[0].to_fields(), default=str))
    assert size < 100_000
    note(a, "later")
    a.sync()
    assert b.sync().set_aside == 0 and keys(b) == ["after", "later"]


def device_doc(client: Any, log: FirestoreSharedLog, device: Device) -> dict[str, Any]:
    return client.document(*layout.device_path(log.root, "alice", device.device_id)).get().to_dict()  # type: ignore[no-any-return]


def test_the_seen_tail_is_bounded_in_count() -> None:
    consumed = [Position(T + timedelta(microseconds=i), f"b{i:05d}") for i in range(MAX_SEEN + 10)]
    marker = advance(Marker(), consumed, cut=False, horizon=T - timedelta(days=1))
    assert len(marker.seen) == MAX_SEEN
    assert marker.pos == Position(consumed[9].ts, consumed[9].doc_id)


@pytest.mark.parametrize(
    "content", [b'{"seq": "yesterday"}', b'{"seq": -4}', b"[1]", b"\xff", b'{"seq": 10**9}']
)
def test_a_broken_folder_marker_is_repaired(
    make_devices: DeviceFactory, tmp_path: Path, content: bytes
) -> None:
    log = FilesystemSharedLog(tmp_path / "log")
    a, b = make_devices(2, log=log)
    note(a, "before")
    a.sync()
    b.sync()
    (tmp_path / "log" / "alice" / "markers" / f"{b.device_id}.json").write_bytes(
        b'{"seq": 1000000000}' if content == b'{"seq": 10**9}' else content
    )
    note(a, "after")
    a.sync()
    b.sync()
    assert keys(b) == ["after", "before"]
    note(a, "later")
    a.sync()
    assert b.sync().received == 1


def test_batches_dated_in_the_future_neither_hold_nor_move_the_marker(
    make_devices: DeviceFactory, log: FirestoreSharedLog, firestore_client: Any
) -> None:
    a, b = make_devices(2, log=log)
    batches = firestore_client.collection(*layout.batches_path(log.root, "alice"))
    for i in range(3):
        batches.document(f"future-{i}").create(
            {"deviceId": a.device_id, "sharedOn": datetime(2099, 1, 1, tzinfo=UTC)}
        )
    note(a, "now")
    a.sync()
    b.sync()
    marker = Marker.parse(device_doc(firestore_client, log, b))[0]
    assert marker.pos is not None and marker.pos.ts.year < 2099 and not marker.seen
    note(a, "later")
    a.sync()
    b.sync()
    assert keys(b) == ["later", "now"]


def test_a_newcomer_reads_past_batches_with_long_ids_at_the_end_of_a_page(
    make_devices: DeviceFactory, firestore_client: Any
) -> None:
    """The settled position may land on a document whose id is longer than the seen tail keeps: it
    keeps the real id (a cursor needs it), or the device read the same page again, forever."""
    log = FirestoreSharedLog(firestore_client, settle_time=timedelta(0), page_docs=3)
    (a,) = make_devices(1, log=log)
    note(a, "before")
    a.sync()
    batches = firestore_client.collection(*layout.batches_path(log.root, "alice"))
    for i in range(5):
        batches.document(f"{i}" + "x" * 1_399).create(
            {"deviceId": a.device_id, "sharedOn": firestore.SERVER_TIMESTAMP}
        )
    (c,) = make_devices(1, log=log)
    assert c.sync().set_aside == 5
    note(a, "after")
    a.sync()
    assert c.sync().received == 1 and keys(c) == ["after", "before"]
