"""Whatever goes wrong with one object's entries sets that object aside; the other objects keep syncing.

Issue 10 point 1: an entry nesting 977 levels passed the receive check, was stored, and then raised
``RecursionError`` in every reconcile pass, forever, on every device. Now one codec reads what was
stored, the receive stage refuses what it could not read back, a stored row that does not read back
(left by an older version) is set aside, and an exception while reconciling or applying one object
(here: the application's reconciler or processor) sets that object aside instead of stopping the pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from storex_sync_firestore import HybridLogicalClock, MemorySharedLog
from storex_sync_firestore.models import Operation, Reconciliation, WriteResult
from storex_sync_firestore.reconcile import LastWriteWins, ObjectHistory
from storex_sync_firestore.sync import MAX_STALLED_PAGES
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

from .conftest import Device, DeviceFactory
from .forge import Writer


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def store_as_an_older_version_did(device: Device, key: str, value_json: str) -> None:
    """A received entry, needing integration, as a version with laxer receive checks stored it."""
    device.sql(
        "INSERT INTO _sync_log (device_id, hlc, tbl, pk, op, value, shared_on, needs_integration) "
        "VALUES ('older-device', ?, 'notes', ?, 'create', ?, 1, 1)",
        HybridLogicalClock().stamp(),
        f'["{key}"]',
        value_json,
    )


def pending(device: Device) -> int:
    return int(device.query("SELECT count(*) FROM _sync_log WHERE needs_integration = 1")[0][0])


def test_a_stored_poison_entry_is_set_aside_and_the_other_objects_sync(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2)
    # 977 levels: deeper than the receive stage takes; 1,100 levels: deeper than the codec reads at all.
    store_as_an_older_version_did(b, "deep", f'{{"title":"t","body":{{"$json":{nested(977)}}},"rank":1}}')
    store_as_an_older_version_did(b, "deeper", f'{{"title":"t","body":{{"$json":{nested(1_100)}}},"rank":1}}')
    a.sql("INSERT INTO notes VALUES ('fine', 'from a', NULL, 1)")
    a.sync()
    b.sync()
    assert b.rows("notes") == [("fine", "from a", None, 1)]
    assert pending(b) == 0
    reasons = sorted(r for (r,) in b.query("SELECT reason FROM _sync_quarantine"))
    assert len(reasons) == 2
    assert "does not read back" in reasons[0]  # 1,100 levels
    assert "nests deeper than the receive stage allows" in reasons[1]  # 977 levels
    a.sql("INSERT INTO notes VALUES ('later', 'from a', NULL, 2)")
    a.sync()
    assert b.sync().set_aside == 0  # set aside once; later rows still arrive
    assert [r[0] for r in b.rows("notes")] == ["fine", "later"]


def test_an_entry_nesting_977_levels_is_set_aside_at_receive_by_every_device(
    make_devices: DeviceFactory, memory_log: MemorySharedLog
) -> None:
    a, b = make_devices(2)
    poison = f'{{"op":"create","table":"notes","pk":["deep"],"value":{{"body":{{"$json":{nested(977)}}}}}}}'
    Writer.register(memory_log).upload([poison])
    a.sql("INSERT INTO notes VALUES ('fine', 'from a', NULL, 1)")
    summaries = [a.sync(), b.sync()]
    (c,) = make_devices(1)  # and one that joins afterwards
    summaries.append(c.sync())
    for device, summary in zip((a, b, c), summaries, strict=True):
        assert summary.set_aside == 1, device.path.name
        assert device.rows("notes") == [("fine", "from a", None, 1)]
        assert pending(device) == 0
        [(reason,)] = device.query("SELECT reason FROM _sync_quarantine")
        assert "nests deeper" in reason or "cannot read" in reason


class FailsOn(LastWriteWins):
    """An application's reconciler with a bug that shows for one object only."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def __call__(self, histories: Sequence[ObjectHistory]) -> Reconciliation:
        if any(h.pk == (self.key,) for h in histories):
            raise ZeroDivisionError(f"cannot reconcile {self.key}")
        return super().__call__(histories)


def test_a_reconciler_failing_on_one_object_sets_only_that_object_aside(make_devices: DeviceFactory) -> None:
    a, b, c = make_devices(3)
    for key in ("before", "bad", "after"):
        a.sql("INSERT INTO notes VALUES (?, 'from a', NULL, 1)", key)
    a.sync()
    for device in (b, c):  # every device decides alike
        summary = device.sync(reconciler=FailsOn("bad"))
        assert [r[0] for r in device.rows("notes")] == ["after", "before"]
        assert summary.set_aside == 1 and pending(device) == 0
        [(reason, replayable)] = device.query("SELECT reason, replayable FROM _sync_quarantine")
        assert reason == "reconciling it failed: ZeroDivisionError: cannot reconcile bad" and replayable
    a.sql("UPDATE notes SET title = 'again' WHERE id = 'after'")
    a.sync()
    b.sync(reconciler=FailsOn("bad"))
    assert ("after", "again", None, 1) in b.rows("notes")


def test_a_processor_failing_at_apply_on_one_object_sets_only_that_object_aside(
    make_devices: DeviceFactory,
) -> None:
    a, b = make_devices(2)
    for key in ("one", "bad", "two"):
        a.sql("INSERT INTO notes VALUES (?, 'from a', NULL, 1)", key)
    a.sync()

    def processor(operations: Sequence[Operation]) -> Sequence[Operation]:
        if any(op.pk == ("bad",) for op in operations):
            raise KeyError("the processor cannot handle bad")
        return operations

    summary = b.sync(reconciliation_processor=processor)
    assert [r[0] for r in b.rows("notes")] == ["one", "two"]
    assert summary.set_aside == 1 and pending(b) == 0
    [(reason,)] = b.query("SELECT reason FROM _sync_quarantine")
    assert reason.startswith("reconciling it failed: KeyError")


@pytest.mark.parametrize("path", ["per object", "set-based"])
def test_a_database_error_is_not_blamed_on_an_object(
    make_devices: DeviceFactory, mocker: Any, path: str
) -> None:
    """A lost connection or a lock is no object's fault: the sync fails and nothing is set aside."""
    from sqlalchemy.exc import OperationalError

    from storex_sync_firestore import constraints, reconcile_sets

    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n', 'from a', NULL, 1)")
    a.sync()
    owner, name = (constraints, "apply_operations") if path == "per object" else (reconcile_sets, "apply")
    mocker.patch.object(owner, name, side_effect=OperationalError("x", {}, Exception("locked")))
    options: dict[str, Any] = {}
    if path == "per object":  # a custom reconciler takes the per-object path
        options["reconciler"] = lambda histories: LastWriteWins()(histories)
    try:
        b.sync(**options)
    except OperationalError:
        pass
    else:
        raise AssertionError("the database error was swallowed")
    assert b.query("SELECT count(*) FROM _sync_quarantine") == [(0,)]
    mocker.stopall()
    b.sync()
    assert b.rows("notes") == [("n", "from a", None, 1)]


def test_on_postgresql_a_failed_statement_sets_only_its_object_aside(postgres_urls: Any, mocker: Any) -> None:
    """A statement that fails aborts a PostgreSQL transaction: the pass must roll back to a savepoint
    and go on object by object, not fail every statement after it."""
    from storex_sync_firestore import constraints

    from .pg_devices import PgDevice

    log = MemorySharedLog()
    schema = "CREATE TABLE notes (id text PRIMARY KEY, title text);"
    a, b = (PgDevice(postgres_urls(), log, schema, ["notes"]) for _ in range(2))
    try:
        for key in ("before", "bad", "after"):
            a.sql("INSERT INTO notes VALUES (:k, 'from a')", {"k": key})
        a.sync()
        real = constraints.apply_operations

        def apply(conn: Any, dialect: Any, tables: Any, operations: Sequence[Operation]) -> Any:
            if any(op.pk == ("bad",) for op in operations):
                conn.exec_driver_sql("SELECT 1 / 0")  # a DataError: the transaction is aborted
            return real(conn, dialect, tables, operations)

        mocker.patch.object(constraints, "apply_operations", side_effect=apply)
        summary = b.sync(reconciliation_processor=list)  # the per-object path (sets take the rest)
        assert b.query("SELECT id FROM notes ORDER BY id") == [("after",), ("before",)]
        assert summary.set_aside == 1
        [(reason,)] = b.query("SELECT reason FROM _sync_quarantine")
        assert reason.startswith("reconciling it failed: DataError")
    finally:
        a.close()
        b.close()


def test_a_log_whose_marker_does_not_move_stops_receive_with_a_clear_error(
    make_devices: DeviceFactory, memory_log: MemorySharedLog, mocker: Any
) -> None:
    """A backend that keeps saying "more" with the same page (a marker others damaged did that to the
    Firestore reader once) used to spin receive forever; it stops, the entries it did read kept."""
    from dataclasses import replace

    from storex_sync_firestore.errors import PermanentSharedLogError

    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n1', 'from a', NULL, 1)")
    a.sync()
    real = memory_log.get_unsynced_batches
    stuck = mocker.patch.object(
        memory_log, "get_unsynced_batches", side_effect=lambda **kw: replace(real(**kw), has_more=True)
    )
    mocker.patch.object(memory_log, "mark_as_seen", return_value=WriteResult())
    with pytest.raises(PermanentSharedLogError, match="read marker does not move"):
        b.sync()
    assert stuck.call_count == MAX_STALLED_PAGES + 2
    assert b.query("SELECT op FROM _sync_log WHERE pk = '[\"n1\"]'") == [("create",)]
