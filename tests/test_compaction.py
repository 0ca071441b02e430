"""Compaction: covered batches go, nothing is lost, devices away past their retention rejoin safely."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pytest_mock import MockerFixture

from storex_sync_firestore.compaction import compact
from storex_sync_firestore.shared_log.base import SharedSyncLog
from storex_sync_firestore.snapshot import write_snapshot

from .conftest import DeviceFactory, assert_converged, sync_all

NOW = lambda: datetime.now(UTC)  # noqa: E731
LATER = timedelta(days=60)


def busy(a: Any, b: Any, rounds: int = 4) -> None:
    for i in range(rounds):
        a.sql("INSERT OR REPLACE INTO notes VALUES (?, 'a', ?, ?)", f"a{i % 2}", f"v{i}", i)
        b.sql("INSERT OR REPLACE INTO notes VALUES (?, 'b', ?, ?)", f"b{i % 2}", f"v{i}", i)
        sync_all([a, b], rounds=1)
    sync_all([a, b])


def test_compaction_deletes_what_the_snapshot_covers_and_a_new_device_still_gets_everything(
    make_devices: DeviceFactory, backend_log: SharedSyncLog
) -> None:
    a, b = make_devices(2, log=backend_log)
    busy(a, b)
    before = len(backend_log.list_batches(user_id="alice"))
    write_snapshot(a.db, backend_log)
    b.sync()
    done = compact(b.db, backend_log, older_than=timedelta(0))
    assert done.batches_deleted == before and backend_log.list_batches(user_id="alice") == []
    assert compact(b.db, backend_log, older_than=timedelta(0)).batches_deleted == 0  # idempotent
    a.sql("UPDATE notes SET body = 'after' WHERE id = 'b1'")
    a.sync()
    (c,) = make_devices(1, log=backend_log)
    sync_all([c, a, b])
    assert ("b1", "b", "after", 3) in assert_converged([a, b, c])["notes"]


def test_the_default_window_keeps_recent_batches_and_active_devices_hold_the_log(
    make_devices: DeviceFactory, memory_log: Any
) -> None:
    a, b = make_devices(2)
    busy(a, b)
    write_snapshot(a.db, memory_log)
    assert compact(a.db, memory_log).batches_deleted == 0, "younger than the default 7 days"
    a.sql("INSERT INTO notes VALUES ('new', 'x', NULL, 1)")
    a.sync()  # b has not read it: it stays until b has
    write_snapshot(a.db, memory_log)
    compact(a.db, memory_log, older_than=timedelta(0))
    assert len(memory_log.list_batches(user_id="alice")) == 1
    b.sync()
    compact(a.db, memory_log, older_than=timedelta(0))
    assert memory_log.list_batches(user_id="alice") == []
    assert_converged([a, b])


@pytest.mark.parametrize("tombstones_pruned", [False, True])
def test_a_device_away_past_its_retention_keeps_its_offline_edits_and_resurrects_nothing(
    make_devices: DeviceFactory, backend_log: SharedSyncLog, tombstones_pruned: bool
) -> None:
    a, b = make_devices(2, log=backend_log)
    busy(a, b)
    b.sql("UPDATE notes SET body = 'offline edit of a live row' WHERE id = 'a1'")
    b.sql("UPDATE notes SET body = 'offline edit of a row deleted meanwhile' WHERE id = 'a0'")
    b.sql("INSERT INTO notes VALUES ('b-offline', 'new offline', NULL, 7)")
    # b is away; a deletes a0 after b's edit (so the delete wins), edits more, snapshots and compacts
    a.sql("DELETE FROM notes WHERE id = 'a0'")
    a.sql("UPDATE notes SET title = 'edited on a' WHERE id = 'a1'")
    for i in range(3):
        a.sql("UPDATE notes SET rank = ? WHERE id = 'b0'", 100 + i)
        a.sync(cleanup_after_reconcile=tombstones_pruned)
    write_snapshot(a.db, backend_log)
    done = compact(a.db, backend_log, older_than=timedelta(0), retention=timedelta(0), now=NOW() + LATER)
    assert done.batches_deleted > 0 and b.device_id in done.inactive_devices
    summary = b.sync()  # b comes back: the batches it missed are gone; it bootstraps
    assert summary.received > 0
    sync_all([a, b])
    state = assert_converged([a, b])
    rows = {r[0]: r for r in state["notes"]}
    assert "a0" not in rows, "a row deleted while b was away came back"
    assert rows["a1"][1:3] == ("edited on a", "offline edit of a live row")
    assert rows["b-offline"] == ("b-offline", "new offline", None, 7)
    assert rows["b0"][3] == 102


def test_two_devices_compacting_at_once(make_devices: DeviceFactory, backend_log: SharedSyncLog) -> None:
    a, b = make_devices(2, log=backend_log)
    busy(a, b)
    write_snapshot(a.db, backend_log)
    b.sync()
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(device: Any) -> None:
        try:
            results.append(compact(device.db, backend_log, older_than=timedelta(0)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and backend_log.list_batches(user_id="alice") == []
    (c,) = make_devices(1, log=backend_log)
    sync_all([c, a, b])
    assert_converged([a, b, c])


def test_old_snapshots_go_after_a_newer_one_is_complete_and_the_grace_period_passed(
    make_devices: DeviceFactory, memory_log: Any
) -> None:
    a, b = make_devices(2)
    busy(a, b)
    first = write_snapshot(a.db, memory_log)
    second = write_snapshot(b.db, memory_log)
    compact(a.db, memory_log, older_than=timedelta(0))
    assert len(memory_log.list_snapshots(user_id="alice")) == 2, "within the grace period"
    compact(a.db, memory_log, older_than=timedelta(0), now=NOW() + timedelta(days=2))
    assert [m.batch_id for m in memory_log.list_snapshots(user_id="alice")] == [second.snapshot_id]
    assert memory_log.get_snapshot_chunks(first.snapshot_id, user_id="alice") == []


# ---- crashes between any two steps ------------------------------------------------------------------------


class CrashError(Exception):
    pass


@pytest.fixture(params=["memory", "firestore"])
def crash_log(request: pytest.FixtureRequest) -> SharedSyncLog:
    """The logs the crash tests run on: memory, and the emulator."""
    if request.param == "memory":
        from storex_sync_firestore import MemorySharedLog

        return MemorySharedLog()
    from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog

    return FirestoreSharedLog(request.getfixturevalue("firestore_client"), retry=None)


@pytest.mark.parametrize("step", ["write_snapshot_manifest", "write_snapshot_chunks"])
def test_a_crash_while_writing_a_snapshot_leaves_no_snapshot_and_the_next_one_cleans_up(
    make_devices: DeviceFactory, crash_log: Any, mocker: MockerFixture, step: str
) -> None:
    a, b = make_devices(2, log=crash_log)
    busy(a, b)
    a.sql("INSERT INTO notes VALUES ('big', 'x', ?, 1)", "y" * 3_000_000)  # two chunks: one lands
    a.sync()
    real = getattr(crash_log, step)
    calls: list[int] = []

    def crash_on_second(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if step == "write_snapshot_chunks" and len(calls) == 1:
            return real(*args, **kwargs)
        raise CrashError

    mocker.patch.object(crash_log, step, side_effect=crash_on_second)
    with pytest.raises(CrashError):
        write_snapshot(a.db, crash_log)
    mocker.stopall()
    crashed = a.db.state()["snapshot_pending"]
    assert crash_log.list_snapshots(user_id="alice") == [], "incomplete: never read"
    assert crash_log.get_snapshot_chunks(crashed, user_id="alice") != []
    (c,) = make_devices(1, log=crash_log)
    c.sync()  # no snapshot to load: the history
    written = write_snapshot(a.db, crash_log)
    assert [m.batch_id for m in crash_log.list_snapshots(user_id="alice")] == [written.snapshot_id]
    assert crash_log.get_snapshot_chunks(crashed, user_id="alice") == [], "orphan chunks removed"
    sync_all([a, b, c])
    assert_converged([a, b, c])


@pytest.mark.parametrize("step", ["delete_batches", "touch_device", "delete_snapshot"])
def test_a_crash_during_compaction_loses_nothing(
    make_devices: DeviceFactory, crash_log: Any, mocker: MockerFixture, step: str
) -> None:
    a, b = make_devices(2, log=crash_log)
    busy(a, b)
    write_snapshot(a.db, crash_log)
    write_snapshot(a.db, crash_log)
    b.sync()
    mocker.patch.object(crash_log, step, side_effect=CrashError)
    with pytest.raises(CrashError):
        compact(a.db, crash_log, older_than=timedelta(0), now=NOW() + timedelta(days=2))
    mocker.stopall()
    (c,) = make_devices(1, log=crash_log)
    sync_all([c, a, b])
    assert_converged([a, b, c])
    compact(a.db, crash_log, older_than=timedelta(0), now=NOW() + timedelta(days=2))
    assert (
        crash_log.list_batches(user_id="alice") == [] and len(crash_log.list_snapshots(user_id="alice")) == 1
    )
    (d,) = make_devices(1, log=crash_log)
    sync_all([d, a])
    assert_converged([a, b, c, d])


@pytest.mark.parametrize("step", ["get_snapshot_chunks", "insert_received", "mark_as_seen"])
def test_a_crash_during_bootstrap_loses_nothing(
    make_devices: DeviceFactory, crash_log: Any, mocker: MockerFixture, step: str
) -> None:
    from storex_sync_firestore import client_log

    a, b = make_devices(2, log=crash_log)
    busy(a, b)
    write_snapshot(a.db, crash_log)
    b.sync()
    compact(a.db, crash_log, older_than=timedelta(0))
    (c,) = make_devices(1, log=crash_log)
    c.sql("INSERT INTO notes VALUES ('c1', 'c', NULL, 1)")
    target = client_log if step == "insert_received" else crash_log
    mocker.patch.object(target, step, side_effect=CrashError)
    with pytest.raises(CrashError):
        c.sync()
    mocker.stopall()
    sync_all([c, a, b])
    state = assert_converged([a, b, c])
    assert ("c1", "c", None, 1) in state["notes"] and len(state["notes"]) == 5


def test_a_device_registered_with_shared_until_keeps_working_and_holds_back_what_it_has_not_read(
    tmp_path: Any, memory_log: Any
) -> None:
    import sqlite3

    from storex_sync_firestore import SyncedDatabase, do_sync, register_device

    from .conftest import NOTES_SCHEMA, SYNCED, Device

    a = Device(tmp_path / "a.db", memory_log, "alice", NOTES_SCHEMA, SYNCED)
    a.sql("INSERT INTO notes VALUES ('old', 'before the copy', NULL, 1)")
    a.sync()
    # c starts from a copy of a's data: it skips the history shared until now
    sqlite3.connect(tmp_path / "c.db").executescript(
        NOTES_SCHEMA + "INSERT INTO notes VALUES ('old', 'before the copy', NULL, 1);"
    )
    c_db = SyncedDatabase(f"sqlite:///{tmp_path / 'c.db'}")
    c_db.enable_sync(SYNCED)
    register_device(c_db, memory_log, user_id="alice", shared_until=NOW())
    a.sql("INSERT INTO notes VALUES ('new', 'after the copy', NULL, 2)")
    a.sync()
    write_snapshot(a.db, memory_log)
    compact(a.db, memory_log, older_than=timedelta(0))
    assert len(memory_log.list_batches(user_id="alice")) == 1, "c has not read a's second batch yet"
    # c may load the snapshot (a compaction passed batches it skipped on purpose): merging it is harmless
    do_sync(c_db, memory_log)
    with sqlite3.connect(tmp_path / "c.db") as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM notes ORDER BY id")] == ["new", "old"]
    a.sync()
    write_snapshot(a.db, memory_log)
    compact(a.db, memory_log, older_than=timedelta(0))
    assert memory_log.list_batches(user_id="alice") == []
    a.app.close()
    c_db.engine.dispose()


def test_compaction_goes_by_the_snapshot_that_verifies_and_drops_a_forged_one(
    make_devices: DeviceFactory, memory_log: Any
) -> None:
    from storex_sync_firestore.models import StoredBatch
    from storex_sync_firestore.shared_log import snapshot_format as sf
    from storex_sync_firestore.signing import DeviceKey

    a, b = make_devices(2)
    busy(a, b)
    good = write_snapshot(a.db, memory_log)
    b.sync()
    sid, fields = sf.encode_manifest(
        hlc=2**62, count=0, frontier={a.device_id: 2**62, b.device_id: 2**62}, digests=[],
        user_id="alice", device_id=a.device_id, key=DeviceKey.generate(),
    )  # fmt: skip
    memory_log.write_snapshot_manifest(StoredBatch(sid, fields), user_id="alice", device_id=a.device_id)
    a.sql("INSERT INTO notes VALUES ('after', 'the snapshot', NULL, 1)")
    a.sync()
    b.sync()
    done = compact(a.db, memory_log, older_than=timedelta(0), now=NOW() + timedelta(days=2))
    assert done.snapshot == good.snapshot_id
    assert len(memory_log.list_batches(user_id="alice")) == 1, "the batch after the real frontier stays"
    assert [m.batch_id for m in memory_log.list_snapshots(user_id="alice")] == [good.snapshot_id]
    (c,) = make_devices(1)
    sync_all([c, a, b])
    assert ("after", "the snapshot", None, 1) in assert_converged([a, b, c])["notes"]
