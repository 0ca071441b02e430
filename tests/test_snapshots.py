"""Snapshots and bootstrap on every backend: a new device loads the merged state, not the history."""

from __future__ import annotations

from typing import Any

from storex_sync_firestore.shared_log.base import SharedSyncLog
from storex_sync_firestore.snapshot import write_snapshot

from .conftest import DeviceFactory, assert_converged, sync_all


def history(a: Any, b: Any) -> None:
    a.sql("INSERT INTO notes VALUES ('n1', 'groceries', 'milk', 1)")
    a.sql("INSERT INTO notes VALUES ('n2', 'todo', 'call mum', 2)")
    b.sql("INSERT INTO notes VALUES ('n3', 'ideas', 'x', 3)")
    sync_all([a, b])
    for i in range(5):
        b.sql("UPDATE notes SET body = ? WHERE id = 'n1'", f"milk {i}")
        b.sync()
    a.sql("DELETE FROM notes WHERE id = 'n2'")
    a.sql("INSERT INTO tags VALUES ('n1', 'home', 'red')")
    sync_all([a, b])


def test_a_new_device_bootstraps_from_the_snapshot(
    make_devices: DeviceFactory, backend_log: SharedSyncLog
) -> None:
    a, b = make_devices(2, log=backend_log)
    history(a, b)
    written = write_snapshot(a.db, backend_log)
    assert written.entries > 0 and written.chunks >= 1
    (c,) = make_devices(1, log=backend_log)
    c.sql("INSERT INTO notes VALUES ('n9', 'made on c before its first sync', NULL, 9)")
    summary = c.sync()
    assert summary.received == written.entries, "the state came from the snapshot, not the history"
    sync_all([c, a, b])
    state = assert_converged([a, b, c])
    assert [r[0] for r in state["notes"]] == ["n1", "n3", "n9"]
    assert state["notes"][0] == ("n1", "groceries", "milk 4", 1)
    # later edits still merge by the clock everywhere
    c.sql("UPDATE notes SET title = 'shopping' WHERE id = 'n1'")
    b.sql("DELETE FROM notes WHERE id = 'n3'")
    sync_all([a, b, c])
    assert [r[:2] for r in assert_converged([a, b, c])["notes"]] == [
        ("n1", "shopping"),
        ("n9", "made on c before its first sync"),
    ]


def test_batches_after_the_frontier_are_read_and_covered_ones_skipped(
    make_devices: DeviceFactory, backend_log: SharedSyncLog
) -> None:
    a, b = make_devices(2, log=backend_log)
    history(a, b)
    write_snapshot(a.db, backend_log)
    b.sql("UPDATE notes SET body = 'after the snapshot' WHERE id = 'n1'")
    b.sync()
    (c,) = make_devices(1, log=backend_log)
    c.sync()
    assert c.rows("notes")[0] == ("n1", "groceries", "after the snapshot", 1)
    sync_all([a, b, c])
    assert_converged([a, b, c])


def test_snapshot_of_an_empty_state(make_devices: DeviceFactory, memory_log: Any) -> None:
    (a,) = make_devices(1)
    a.sync()
    written = write_snapshot(a.db, memory_log)
    assert written.entries == 0 and written.chunks == 0
    (b,) = make_devices(1)
    assert b.sync().received == 0


def test_sync_writes_a_snapshot_past_the_threshold_and_not_when_switched_off(
    make_devices: DeviceFactory, memory_log: Any
) -> None:
    a, b = make_devices(2)
    for i in range(6):
        a.sql("INSERT INTO notes VALUES (?, 't', NULL, ?)", f"n{i}", i)
    a.sync(snapshot_after=None)
    assert memory_log.list_snapshots(user_id="alice") == []
    b.sync(snapshot_after=100)
    assert memory_log.list_snapshots(user_id="alice") == [], "6 entries are below the threshold"
    a.sql("UPDATE notes SET title = 'u'")
    a.sync(snapshot_after=10)  # 6 shared before + 6 now
    (snap,) = memory_log.list_snapshots(user_id="alice")
    a.sync(snapshot_after=10)
    assert len(memory_log.list_snapshots(user_id="alice")) == 1, "the count starts again"
    assert snap.batch_id.startswith(a.device_id)


def test_status_shows_the_log_size_the_snapshot_and_each_devices_lag(
    make_devices: DeviceFactory, memory_log: Any
) -> None:
    from datetime import timedelta

    from storex_sync_firestore.compaction import compact
    from storex_sync_firestore.log_status import log_status

    a, b = make_devices(2)
    history(a, b)
    write_snapshot(a.db, memory_log)
    b.sync()
    compact(a.db, memory_log, older_than=timedelta(0))
    a.sql("INSERT INTO notes VALUES ('late', 't', NULL, 1)")
    a.sync()
    info = log_status(b.db, memory_log)
    assert info["batches"] == 1 and info["entries"] == 1
    assert info["documents"] == 1 + 1 + 1 + 2  # the batch, the manifest, its chunk, two devices
    snap = info["snapshot"]
    assert snap["entries"] > 0 and set(snap["frontier"]) == {a.device_id, b.device_id} and snap["age_s"] >= 0
    lag = {d["device_id"]: d["lag_entries"] for d in info["devices"]}
    assert lag == {a.device_id: 0, b.device_id: 1}
    assert all(d["last_seen"] for d in info["devices"])


def test_a_device_that_bootstraps_does_not_write_the_same_snapshot_again(
    make_devices: DeviceFactory, memory_log: Any
) -> None:
    a, b = make_devices(2)
    history(a, b)
    write_snapshot(a.db, memory_log)
    (c,) = make_devices(1)
    assert c.sync(snapshot_after=3).received > 3
    assert len(memory_log.list_snapshots(user_id="alice")) == 1


def test_concurrent_snapshot_writers_are_harmless(
    make_devices: DeviceFactory, backend_log: SharedSyncLog
) -> None:
    import threading

    from storex_sync_firestore.snapshot import latest

    a, b = make_devices(2, log=backend_log)
    history(a, b)
    errors: list[BaseException] = []

    def write(device: Any) -> None:
        try:
            write_snapshot(device.db, backend_log)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(d,)) for d in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    manifests = backend_log.list_snapshots(user_id="alice")
    assert len(manifests) == 2 and latest(manifests) == latest(list(reversed(manifests)))
    (c,) = make_devices(1, log=backend_log)
    sync_all([c, a, b])
    assert_converged([a, b, c])
