"""The set-based reconcile path against the per-object reference: the same tables from the same histories.

Random histories (several devices, tombstones, double creates, late old entries, entries already
integrated) are put in a device's client log; the same database is then reconciled twice, once by the
default reconciler (set-based, ``reconcile_sets``) and once by the same reconciler wrapped as a custom
one (per object, ``reconcile`` + ``constraints``). Tables, log states, what was set aside and the
resolutions the rules wrote must be identical. The schema has a CHECK and a NOT NULL (the set-based
chunk is refused and falls back to the per-object path) and a unique column (routed per object).
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from storex_sync_firestore import (
    LastWriteWins,
    LogEntry,
    MemorySharedLog,
    SyncedDatabase,
    do_sync,
    register_device,
)
from storex_sync_firestore.client_log import insert_received
from storex_sync_firestore.reconcile import ObjectHistory, reconcile_sync_log
from storex_sync_firestore.reconcile_sets import plain_tables

SCHEMA = """
CREATE TABLE notes (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    body TEXT,
    rank INTEGER CHECK (rank IS NULL OR rank < 8)
);
CREATE TABLE labels (id TEXT PRIMARY KEY, label TEXT UNIQUE, colour TEXT);
"""
TABLES = ["labels", "notes"]
WALL = 1_700_000_000_000 << 16

note_values = st.fixed_dictionaries(
    {},
    optional={
        "title": st.sampled_from(["a", "b", None]),  # NULL breaks NOT NULL
        "body": st.sampled_from(["x", "y", None]),
        "rank": st.sampled_from([1, 7, 9, 9, 9, None]),  # 9 breaks the CHECK
    },
)
label_values = st.fixed_dictionaries(
    {}, optional={"label": st.sampled_from(["red", "blue", None]), "colour": st.sampled_from(["c1", "c2"])}
)
NOTE_COLUMNS = {"title": "a", "body": None, "rank": 1}
LABEL_COLUMNS = {"label": None, "colour": "c1"}


@st.composite
def entry(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], str, dict[str, Any] | None, str, bool]:
    table = draw(st.sampled_from(["notes", "notes", "labels"]))
    pk: tuple[Any, ...] = (
        (draw(st.sampled_from(["n1", "n2", "n3"])),)
        if table == "notes"
        else (draw(st.sampled_from(["l1", "l2"])),)
    )
    op = draw(st.sampled_from(["create", "create", "modify", "modify", "delete"]))
    full = NOTE_COLUMNS if table == "notes" else LABEL_COLUMNS
    drawn = draw(note_values if table == "notes" else label_values)
    value = None if op == "delete" else ({**full, **drawn} if op == "create" else drawn)
    device = draw(st.sampled_from(["d1", "d2", "d3"]))
    return table, pk, op, value, device, draw(st.booleans())


def entries_of(drawn: Sequence[tuple[Any, ...]]) -> tuple[list[LogEntry], list[LogEntry]]:
    """Old (integrated before) and new entries; clocks all distinct, in an order unrelated to arrival."""
    old, new = [], []
    for i, (table, pk, op, value, device, is_old) in enumerate(drawn):
        hlc = WALL + (i * 7919) % 1000 * 16 + i % 16  # distinct; arrival order is not clock order
        e = LogEntry(device, hlc, table, pk, op, value, needs_integration=True)
        (old if is_old else new).append(e)
    return old, new


def per_object(histories: Sequence[ObjectHistory]) -> Any:
    return reconcile_sync_log(histories)  # the default, as a custom reconciler: the per-object path


def state(path: Path) -> dict[str, Any]:
    """Everything the two paths must agree on (resolutions' clocks excepted: they are stamped now)."""
    with sqlite3.connect(path) as conn:
        return {
            "notes": conn.execute("SELECT * FROM notes ORDER BY id").fetchall(),
            "labels": conn.execute("SELECT * FROM labels ORDER BY id").fetchall(),
            "log": conn.execute(
                "SELECT device_id, hlc, tbl, pk, op, value, needs_integration FROM _sync_log "
                "WHERE device_id IN ('d1', 'd2', 'd3') ORDER BY device_id, hlc"
            ).fetchall(),
            "resolutions": conn.execute(
                "SELECT tbl, pk, op, value FROM _sync_log WHERE device_id NOT IN ('d1', 'd2', 'd3') "
                "ORDER BY tbl, pk, hlc"
            ).fetchall(),
            "set_aside": conn.execute(
                "SELECT device_id, hlc, tbl, pk FROM _sync_quarantine ORDER BY device_id, hlc"
            ).fetchall(),
        }


def copy(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def reconcile(path: Path, log: MemorySharedLog, reconciler: Any) -> Any:
    db = SyncedDatabase(f"sqlite:///{path}")
    try:
        return do_sync(db, log, stages=["reconcile"], reconciler=reconciler)
    finally:
        db.engine.dispose()


def test_only_tables_without_rules_take_the_set_based_path(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            SCHEMA + "CREATE TABLE parents (id TEXT PRIMARY KEY);"
            "CREATE TABLE children (id TEXT PRIMARY KEY, parent TEXT REFERENCES parents(id));"
        )
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync([*TABLES, "parents", "children"])
    assert plain_tables(db.synced_tables()) == ["notes"]
    db.engine.dispose()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=st.lists(entry(), min_size=3, max_size=14))
@example(  # a merged row breaks the CHECK: the later change is reverted (a resolution)
    [
        ("notes", ("n1",), "create", NOTE_COLUMNS, "d1", True),
        ("notes", ("n2",), "create", NOTE_COLUMNS, "d1", False),
        ("notes", ("n1",), "modify", {"rank": 9}, "d2", False),
        ("notes", ("n1",), "modify", {"title": None}, "d3", False),
    ]
)
@example(  # a row refused as written (set aside), a double create merged, two labels claiming "red"
    [
        ("notes", ("n1",), "create", {**NOTE_COLUMNS, "rank": 9}, "d1", False),
        ("notes", ("n2",), "create", NOTE_COLUMNS, "d1", False),
        ("notes", ("n2",), "create", {**NOTE_COLUMNS, "body": "y"}, "d2", False),
        ("labels", ("l1",), "create", {"label": "red", "colour": "c1"}, "d1", True),
        ("labels", ("l2",), "create", {"label": "red", "colour": "c2"}, "d2", False),
    ]
)
def test_set_based_path_matches_the_per_object_path(drawn: list[tuple[Any, ...]]) -> None:
    old, new = entries_of(drawn)
    log = MemorySharedLog()
    with tempfile.TemporaryDirectory() as tmp:
        base, by_sets, by_objects = (Path(tmp) / name for name in ("base.db", "sets.db", "objects.db"))
        with sqlite3.connect(base) as conn:
            conn.executescript(SCHEMA)
        db = SyncedDatabase(f"sqlite:///{base}")
        db.enable_sync(TABLES)
        register_device(db, log, user_id="u")
        with db.transaction() as conn:
            insert_received(conn, old, 1)
        db.engine.dispose()
        reconcile(base, log, per_object)  # the state before the new entries, by the reference
        db = SyncedDatabase(f"sqlite:///{base}")
        with db.transaction() as conn:
            insert_received(conn, new, 2)
        db.engine.dispose()
        copy(base, by_sets)
        copy(base, by_objects)
        got = reconcile(by_sets, log, reconcile_sync_log)
        want = reconcile(by_objects, log, per_object)
        assert state(by_sets) == state(by_objects)
        event(f"resolved or set aside: {bool(want.resolved or want.set_aside)}")
        assert (got.applied, got.integrated, got.set_aside, got.resolved) == (
            want.applied,
            want.integrated,
            want.set_aside,
            want.resolved,
        )


def test_a_refused_chunk_goes_object_by_object(tmp_path: Path) -> None:
    """One row breaking the CHECK: the set-based chunk is refused, the others still land, the bad one
    is set aside (as written by one device, nothing merged), exactly as the per-object path does."""
    log = MemorySharedLog()
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync(TABLES)
    register_device(db, log, user_id="u")
    good = [
        LogEntry("d1", WALL + i, "notes", (f"n{i}",), "create", {**NOTE_COLUMNS, "rank": 1}, True)
        for i in range(50)
    ]
    bad = LogEntry("d2", WALL + 99, "notes", ("bad",), "create", {**NOTE_COLUMNS, "rank": 9}, True)
    with db.transaction() as conn:
        insert_received(conn, [*good, bad], 1)
    summary = do_sync(db, log, stages=["reconcile"])
    db.engine.dispose()
    assert (summary.applied, summary.set_aside) == (50, 1)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (50,)
        assert conn.execute("SELECT pk FROM _sync_quarantine").fetchall() == [('["bad"]',)]


@pytest.mark.parametrize("double_create", ["merge", "error"])
def test_custom_and_error_reconcilers_keep_the_per_object_path(
    tmp_path: Path, mocker: Any, double_create: str
) -> None:
    from storex_sync_firestore import reconcile_sets

    spy = mocker.spy(reconcile_sets, "apply")
    log = MemorySharedLog()
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync(TABLES)
    register_device(db, log, user_id="u")
    with db.transaction() as conn:
        insert_received(conn, [LogEntry("d1", WALL, "notes", ("n",), "create", NOTE_COLUMNS, True)], 1)
    reconciler = LastWriteWins(double_create=double_create)  # type: ignore[arg-type]
    assert do_sync(db, log, stages=["reconcile"], reconciler=reconciler).applied == 1
    db.engine.dispose()
    assert spy.call_count == (1 if double_create == "merge" else 0)
