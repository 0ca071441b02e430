"""do_sync's options and hooks, bad input from the shared log, and the summary it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from storex_sync_firestore import (
    JsonSerializer,
    LastWriteWins,
    LogEntry,
    MemorySharedLog,
    StoredBatch,
    SyncEvents,
    WriteResult,
)

from .conftest import DeviceFactory, assert_converged, sync_all
from .forge import Writer, observed


def foreign(log: MemorySharedLog, payloads: Sequence[Any], user_id: str = "alice") -> str:
    """Upload raw entries from another device; a payload that is a str is sent as is."""
    return Writer.register(log, user_id).upload(payloads).fields["deviceId"]  # type: ignore[no-any-return]


def test_stages_can_be_switched_off(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n', 't', NULL, 1)")
    assert a.sync(stages=["receive", "reconcile"]).sent == 0
    assert a.sync(stages=["share"]).sent == 1
    summary = b.sync(stages=["receive"])
    assert summary.received == 1 and b.rows("notes") == []
    assert b.sync(stages=["reconcile"]).applied == 1
    assert b.rows("notes") == [("n", "t", None, 1)]


def test_single_batch_runs_every_stage_once(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2)
    for i in range(5):
        a.sql("INSERT INTO notes VALUES (?, 't', NULL, ?)", f"a{i}", i)
        b.sql("INSERT INTO notes VALUES (?, 't', NULL, ?)", f"b{i}", i)
    a.sync()
    summary = b.sync(single_batch=True, upload_batch_size=2, download_batch_size=1, reconcile_batch_size=2)
    assert (summary.received, summary.sent, summary.applied) == (5, 2, 2)  # flaw 3.17: not stuck in receive
    assert summary.stages == ["receive", "share", "reconcile"]
    while b.sync(single_batch=True, upload_batch_size=2, reconcile_batch_size=2).sent:
        pass
    sync_all([a, b])
    assert len(assert_converged([a, b])["notes"]) == 10


def test_continue_sync_can_stop_after_any_batch(make_devices: DeviceFactory) -> None:
    (a,) = make_devices(1)
    for i in range(4):
        a.sql("INSERT INTO notes VALUES (?, 't', NULL, ?)", f"a{i}", i)
    asked: list[str] = []

    def stop_after_first_share(stage: str) -> bool:
        asked.append(stage)
        return stage != "share"

    summary = a.sync(upload_batch_size=1, continue_sync=stop_after_first_share)
    assert not summary.finished and summary.sent == 1 and asked == ["share"]
    assert a.sync().sent == 3


def test_all_four_events_are_emitted(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n', 't', NULL, 1)")
    seen: list[str] = []
    events = SyncEvents()
    for name in (
        "sending_shared_entries",
        "received_shared_entries",
        "reconciling_entries",
        "reconciled_entries",
    ):
        events.on(name, lambda name=name, **payload: seen.append(name))
    a.sync(events=events)
    b.sync(events=events)
    assert seen == [
        "sending_shared_entries",
        "received_shared_entries",
        "reconciling_entries",
        "reconciled_entries",
    ]


def test_listener_removal_removes_only_that_listener() -> None:
    events = SyncEvents()
    calls: list[str] = []
    mine = events.on("reconciled_entries", lambda **_: calls.append("mine"))
    events.on("reconciled_entries", lambda **_: calls.append("theirs"))
    events.off("reconciled_entries", mine)
    events.emit("reconciled_entries")
    assert calls == ["theirs"]  # flaw 3.21: the original removed every listener


class ReversingSerializer(JsonSerializer):
    """A stand-in for end-to-end encryption: the shared log never sees plain JSON."""

    def dumps(self, payload: Mapping[str, Any]) -> str:
        return super().dumps(payload)[::-1]

    def loads(self, text: str) -> Mapping[str, Any]:
        return super().loads(text[::-1])


def test_serializer_and_hooks(make_devices: DeviceFactory, memory_log: MemorySharedLog) -> None:
    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n1', 'public', NULL, 1)")
    a.sql("INSERT INTO notes VALUES ('secret', 'private', NULL, 2)")

    def pre_send(entry: LogEntry) -> LogEntry | None:
        return None if entry.pk == ("secret",) else entry

    def post_receive(entry: LogEntry) -> LogEntry | None:
        value = dict(entry.value or {})
        value["title"] = str(value.get("title", "")).upper()
        return LogEntry(entry.device_id, entry.hlc, entry.table, entry.pk, entry.op, value, True)

    summary = a.sync(serializer=ReversingSerializer(), pre_send=pre_send)
    assert (summary.sent, summary.withheld) == (1, 1)
    [(_device, _hlc, text)] = observed(memory_log)
    assert text.startswith("}")
    b.sync(serializer=ReversingSerializer(), post_receive=post_receive)
    assert b.rows("notes") == [("n1", "PUBLIC", None, 1)]
    assert a.sync().sent == 0  # the withheld entry stays withheld


def test_post_receive_drop_is_set_aside_not_lost(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n', 't', NULL, 1)")
    a.sync()
    summary = b.sync(post_receive=lambda entry: None)
    assert summary.set_aside == 1 and b.rows("notes") == []
    assert b.query("SELECT reason FROM _sync_quarantine") == [("dropped by the post_receive hook",)]


class RecordingLog(MemorySharedLog):
    """The memory log, remembering the stored payload size of every write, with small documents."""

    max_batch_bytes = 2_000

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    def write_batches(self, batches: Sequence[StoredBatch], *, user_id: str, device_id: str) -> WriteResult:
        self.writes.extend(len(b.fields["p"]) for b in batches)
        return super().write_batches(batches, user_id=user_id, device_id=device_id)


def noise(n: int, seed: int) -> str:
    """``n`` characters that do not compress (so sizes are what a test says they are)."""
    import base64
    import random

    return base64.b64encode(random.Random(seed).randbytes(n)).decode()[:n]


def test_byte_limit_counts_stored_bytes_and_oversized_entries_do_not_wedge(
    make_devices: DeviceFactory,
) -> None:
    log = RecordingLog()
    a, b = make_devices(2, log=log)
    a.sql("INSERT INTO notes VALUES ('first', ?, NULL, 1)", "é" * 100)  # 200 bytes, 100 characters
    a.sql(
        "INSERT INTO notes VALUES ('huge', ?, NULL, 2)", noise(5_000, 1)
    )  # flaw 3.12: too big for a document
    for i in range(20):
        a.sql("INSERT INTO notes VALUES (?, ?, NULL, 3)", f"later{i}", noise(300, i))
    summary = a.sync()
    assert summary.set_aside == 1 and summary.sent == 21
    assert max(log.writes) <= 2_000 and len(log.writes) > 3  # flaw 3.11: real stored bytes
    [(reason,)] = a.query("SELECT reason FROM _sync_quarantine WHERE direction = 'outgoing'")
    assert "notes key ['huge']" in reason
    b.sync()
    assert len(b.rows("notes")) == 21


def test_entries_are_shared_in_clock_order(make_devices: DeviceFactory, memory_log: MemorySharedLog) -> None:
    (a,) = make_devices(1)
    for i in range(7):
        a.sql("INSERT INTO notes VALUES (?, 't', NULL, ?)", f"n{i}", i)
    a.sync(upload_batch_size=3)  # flaw 3.13: a limit without order marked unsent entries as shared
    hlcs = [hlc for _device, hlc, _text in observed(memory_log)]
    assert len(hlcs) == 7 and hlcs == sorted(hlcs)


def test_download_pages(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2)
    for i in range(10):
        a.sql("INSERT INTO notes VALUES (?, 't', NULL, ?)", f"n{i}", i)
    a.sync(upload_batch_size=2)
    summary = b.sync(download_batch_size=3)  # flaw 3.5: paging was ignored
    assert summary.received == 10 and summary.documents_read == 5
    assert len(b.rows("notes")) == 10


def test_bad_entries_are_set_aside_and_the_rest_applied(
    make_devices: DeviceFactory, memory_log: MemorySharedLog
) -> None:
    (b,) = make_devices(1)
    good = {
        "op": "create",
        "table": "notes",
        "pk": ["ok"],
        "value": {"title": "fine", "body": None, "rank": 1},
    }
    hostile = [
        {"op": "create", "table": "notes; DROP TABLE notes", "pk": ["x"], "value": {}},
        {
            "op": "create",
            "table": "notes",
            "pk": ["x"],
            "value": {"title": "t", 'evil"; DROP TABLE notes; --': 1},
        },
        {"op": "create", "table": "notes", "pk": ["x", "y"], "value": {}},
        {"op": "create", "table": "notes", "pk": ["x"], "value": {"title": {"$bytes": "zz"}}},
        {"op": "create", "table": "notes", "pk": ["x"], "value": {"title": {"$nope": 1}}},
        {"op": "explode", "table": "notes", "pk": ["x"]},
        {"op": "modify", "table": "notes", "pk": ["x"], "value": "not an object"},
        {"op": "create", "table": "notes", "pk": [None], "value": {}},
        "this is not JSON",
        ["a", "list"],
        '{"op": "create", "table": "notes", "pk": [NaN], "value": {}}',
        '{"op": "create", "table": "notes", "pk": ["x"], "value": {"rank": Infinity}}',
        "[" * 100_000 + "]" * 100_000,
        '{"op": "create", "table": "notes", "pk": ["x"], "value": {"body": {"$json": [NaN]}}}',
        {"op": "create", "table": "notes", "pk": ["x"], "value": {"rank": 10**23}},
        {"op": "create", "table": "notes", "pk": [10**30], "value": {}},
        {"op": "create", "table": "notes", "pk": ["x"], "value": {"body": {"$decimal": "1e999999999"}}},
    ]
    foreign(memory_log, [hostile[0], good, *hostile[1:]])
    summary = b.sync()
    assert summary.received == 1 and summary.set_aside == len(hostile)
    assert b.rows("notes") == [("ok", "fine", None, 1)]
    reasons = [r for (r,) in b.query("SELECT reason FROM _sync_quarantine ORDER BY id")]
    assert "not synced on this device" in reasons[0]
    assert "not synced columns" in reasons[1]
    assert len(reasons) == len(hostile)


def test_a_row_the_database_refuses_is_set_aside(
    tmp_path: Any, make_devices: DeviceFactory, memory_log: MemorySharedLog
) -> None:
    schema = "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT, rank INTEGER);"
    (b,) = make_devices(1, schema=schema, tables=["notes"])
    foreign(memory_log, [
        {"op": "create", "table": "notes", "pk": ["bad"], "value": {"title": None, "body": None, "rank": 1}},
        {"op": "create", "table": "notes", "pk": ["good"], "value": {"title": "t", "body": None, "rank": 2}},
    ])  # fmt: skip
    summary = b.sync()
    assert summary.applied == 1 and summary.set_aside == 1
    assert b.rows("notes") == [("good", "t", None, 2)]
    [(reason,)] = b.query("SELECT reason FROM _sync_quarantine")
    assert "NOT NULL" in reason
    assert b.query("SELECT count(*) FROM _sync_log WHERE needs_integration = 1") == [(0,)]


def test_double_create_in_error_mode_sets_aside_without_blocking(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('same', 'from a', NULL, 1)")
    b.sql("INSERT INTO notes VALUES ('same', 'from b', NULL, 2)")
    a.sql("INSERT INTO notes VALUES ('other', 'fine', NULL, 3)")
    a.sync()
    summary = b.sync(reconciler=LastWriteWins(double_create="error"))  # flaw 3.8: this blocked forever
    assert summary.set_aside == 1
    assert ("other", "fine", None, 3) in b.rows("notes")
    assert b.sync(reconciler=LastWriteWins(double_create="error")).set_aside == 0


def test_cleanup_keeps_tombstones(make_devices: DeviceFactory, memory_log: MemorySharedLog) -> None:
    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n', 'created', NULL, 1)")
    a.sql("UPDATE notes SET title = 'edited' WHERE id = 'n'")
    a.sql("UPDATE notes SET title = 'edited again' WHERE id = 'n'")
    sync_all([a, b])
    b.sql("DELETE FROM notes WHERE id = 'n'")
    sync_all([b, a])
    for d in (a, b):
        assert d.rows("notes") == []
        assert d.query("SELECT op FROM _sync_log WHERE pk = '[\"n\"]'") == [("delete",)]
    # Re-deliver the original create and edits (flaw 3.6 / 3.9): the object must stay deleted.
    replay = [(hlc, text) for device, hlc, text in observed(memory_log) if device == a.device_id]
    Writer.of(a.db, memory_log).upload([t for _, t in replay[:-1]], [h for h, _ in replay[:-1]])
    b.app.execute("DELETE FROM _sync_log WHERE device_id = ?", (a.device_id,))
    sync_all([b])
    assert b.rows("notes") == []


def test_reconciliation_processor_sees_and_may_change_operations(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n', 't', NULL, 1)")
    a.sync()
    seen: list[Any] = []
    b.sync(reconciliation_processor=lambda operations: seen.extend(operations) or [])
    assert [o.kind for o in seen] == ["insert"] and b.rows("notes") == []


def test_reader_between_two_batches_of_one_sync_gets_both(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('first', 't', NULL, 1)")
    a.sql("INSERT INTO notes VALUES ('second', 't', NULL, 2)")

    def let_b_read(stage: str) -> bool:
        b.sync()  # flaw 3.3: batches of one sync shared a timestamp and the reader skipped the rest
        return True

    a.sync(upload_batch_size=1, continue_sync=let_b_read)
    b.sync()
    assert [r[0] for r in b.rows("notes")] == ["first", "second"]


def test_many_objects_are_reconciled_per_pass(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2)
    a.app.executemany("INSERT INTO notes VALUES (?, 't', NULL, 1)", [(f"n{i}",) for i in range(1500)])
    a.sync()
    passes: list[int] = []
    events = SyncEvents()
    events.on("reconciled_entries", lambda histories, **_: passes.append(len(histories)))
    b.sync(events=events)  # flaw 3.20: the original made 2 queries and 1 batch per object
    assert passes == [1500]


def test_a_copied_database_registers_anew_and_keeps_its_unshared_changes(
    make_devices: DeviceFactory, memory_log: MemorySharedLog, tmp_path: Any
) -> None:
    import shutil

    from storex_sync_firestore import SyncedDatabase, register_device

    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n', 'original', NULL, 1)")
    a.sync()
    a.sql("INSERT INTO notes VALUES ('copied', 'not yet shared', NULL, 2)")
    a.sync(stages=["receive"])  # stamped under a's id, not shared
    shutil.copy(a.path, tmp_path / "copy.db")
    copy = SyncedDatabase(f"sqlite:///{tmp_path / 'copy.db'}")
    old = copy.state()["device_id"]
    new = register_device(copy, memory_log, user_id="alice", new_device=True)
    assert new != old
    from storex_sync_firestore import do_sync

    assert do_sync(copy, memory_log).sent == 1
    b.sync()
    assert ("copied", "not yet shared", None, 2) in b.rows("notes")
    copy.engine.dispose()


def test_entries_with_broken_identity_are_set_aside(
    make_devices: DeviceFactory, memory_log: MemorySharedLog
) -> None:
    (b,) = make_devices(1)
    writer = Writer.register(memory_log)
    good = writer.batch([{"op": "create", "table": "notes", "pk": ["x"], "value": {"title": "t"}}])
    broken = [{"firstHlc": "12"}, {"lastHlc": -5}, {"count": True}, {"deviceId": 7}, {"v": 3}]
    batches = [StoredBatch(good.batch_id, {**good.fields, **change}) for change in broken]
    memory_log.write_batches(batches[:1], user_id="alice", device_id=writer.device_id)
    for i, batch in enumerate(batches[1:]):  # distinct ids, or the log would keep only the first
        memory_log.write_batches(
            [StoredBatch(f"{batch.batch_id}{i}", batch.fields)], user_id="alice", device_id="x"
        )
    summary = b.sync()
    assert summary.set_aside == len(broken) and b.rows("notes") == []


def test_entries_set_aside_for_a_missing_column_come_back_after_the_migration(
    tmp_path: Any, memory_log: MemorySharedLog
) -> None:
    from .conftest import Device

    new = Device(
        tmp_path / "new.db",
        memory_log,
        "alice",
        "CREATE TABLE t (id TEXT PRIMARY KEY, a TEXT, b TEXT);",
        ["t"],
    )
    old = Device(
        tmp_path / "old.db", memory_log, "alice", "CREATE TABLE t (id TEXT PRIMARY KEY, a TEXT);", ["t"]
    )
    new.sql("INSERT INTO t VALUES ('x', 'a1', 'b1')")
    new.sync()
    assert old.sync().set_aside == 1 and old.rows("t") == []
    old.sql("ALTER TABLE t ADD COLUMN b TEXT")  # the old device migrates ...
    old.db.enable_sync(["t"])  # ... and re-runs enable_sync (storex-sync init)
    assert old.query("SELECT count(*) FROM _sync_quarantine") == [(0,)]
    old.sync()
    assert old.rows("t") == [("x", "a1", "b1")]


def test_a_planned_batch_is_resumed_exactly_as_planned(
    make_devices: DeviceFactory, memory_log: MemorySharedLog, mocker: Any
) -> None:
    """Hooks run when a batch is planned; a resumed batch is the same bytes, not planned again."""
    (a,) = make_devices(1)
    a.sql("INSERT INTO notes VALUES ('n', 't', NULL, 1)")
    mocker.patch.object(MemorySharedLog, "write_batches", side_effect=RuntimeError("network down"))
    with pytest.raises(RuntimeError):
        a.sync()
    [(planned,)] = a.query("SELECT batch_id FROM _sync_outbox")
    mocker.stopall()
    summary = a.sync(pre_send=lambda entry: None)  # the hook would drop it now: too late, it was planned
    assert summary.sent == 1 and summary.withheld == 0
    assert [
        b.batch_id for b in memory_log.get_unsynced_batches(user_id="alice", device_id=a.device_id).batches
    ] == [planned]
    assert a.query("SELECT count(*) FROM _sync_log WHERE shared_on = 0") == [(0,)]
    assert a.query("SELECT count(*) FROM _sync_outbox") == [(0,)]
    assert a.sync().sent == 0
