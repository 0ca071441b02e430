"""What one SQLite device wrote is what every other device reads, bit for bit (issue 9, issue 10 point 4).

Values travel by storage class, never by declared type, through one canonical encoder; keys are made
canonical against the receiving column, so one row is one object in every client log. Each test here
failed on 10db6de; the property tests of the same rules, through the Firestore emulator, are in
``test_exact_sync.py``.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storex_sync_firestore import (
    HybridLogicalClock,
    MemorySharedLog,
    SyncedDatabase,
    UnsuitableTableError,
)
from storex_sync_firestore.client_log import stamp_pending
from storex_sync_firestore.clock import wall_clock_ms
from storex_sync_firestore.codec import dumps, encode_value

from .conftest import DeviceFactory, sync_all
from .forge import Writer


def cells(device: Any, table: str) -> list[tuple[Any, ...]]:
    """Every cell as (typeof, quote, value), floats by their bits: quote() shows 15 digits, no sign of 0."""
    names = [r[1] for r in device.query(f"PRAGMA table_info({table})")]
    select = ", ".join(f'typeof("{n}"), quote("{n}"), "{n}"' for n in names)
    rows = device.query(f"SELECT {select} FROM {table} ORDER BY 2")
    return [tuple(v.hex() if isinstance(v, float) else v for v in row) for row in rows]


def foreign(log: MemorySharedLog, payloads: Sequence[dict[str, Any]], user_id: str = "alice") -> None:
    """Entries written by another device a minute ago (older than anything the test writes)."""
    clock = HybridLogicalClock(now_ms=lambda: wall_clock_ms() - 60_000)
    Writer.register(log, user_id).upload(payloads, hlcs=[clock.stamp() for _ in payloads])


def logged_keys(device: Any) -> list[str]:
    return [k for (k,) in device.query("SELECT DISTINCT pk FROM _sync_log ORDER BY pk")]


# --- defect 1: date-like, JSON and boolean text is rewritten ---------------------------------------------

REWRITTEN = {
    "DATETIME": ["2019-09-08T23:23:45.000Z", "1970-01-01 00:00:00.000000", "2024-05-01 10:00"],
    "TIMESTAMP": ["2019-09-08T23:23:45.000Z", "1970-01-01 00:00:00.000000"],
    "DATE": ["2019-09-08T23:23:45.000Z", "2024-05-01"],
    "JSON": ['{"a" : 1, "a": 2}', '{"n": 1e2}', "[1.0, 2.50]"],
    "BOOLEAN": [2, -1, "true", 0.5],
}


@pytest.mark.parametrize("declared", REWRITTEN)
def test_text_and_numbers_arrive_as_written_whatever_the_declared_type(
    make_devices: DeviceFactory, declared: str
) -> None:
    schema = f"CREATE TABLE t (id TEXT PRIMARY KEY, v {declared});"
    a, b = make_devices(2, schema=schema, tables=["t"])
    for i, value in enumerate(REWRITTEN[declared]):
        a.sql("INSERT INTO t VALUES (?, ?)", f"k{i}", value)
    written = cells(a, "t")
    sync_all([a, b])
    assert cells(b, "t") == written
    assert b.query("SELECT count(*) FROM _sync_quarantine") == [(0,)]


def test_the_writers_own_rows_survive_a_double_create_merge(
    tmp_path: Path, memory_log: MemorySharedLog
) -> None:
    """Two databases start with the same rows: whichever copy wins the merge, both stay as written."""
    schema = "CREATE TABLE t (id TEXT PRIMARY KEY, at DATETIME, doc JSON, ok BOOLEAN);"
    rows = [
        ("r1", "2019-09-08T23:23:45.000Z", '{"a" : 1, "a": 2}', 2),
        ("r2", "1970-01-01 00:00:00.000000", "{}", -1),
    ]
    paths = [tmp_path / "a.db", tmp_path / "b.db"]
    for path in paths:
        with sqlite3.connect(path) as conn:
            conn.executescript(schema)
            conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    from .conftest import Device

    a, b = (Device(p, memory_log, "alice", "", ["t"]) for p in paths)
    written = cells(a, "t")
    sync_all([a, b])
    assert cells(a, "t") == written and cells(b, "t") == written
    at = "2019-09-08T23:23:45.000Z"
    assert (
        a.query("SELECT id FROM t WHERE at = ?", at)
        == b.query("SELECT id FROM t WHERE at = ?", at)
        == [("r1",)]
    )


# --- defect 2: values a receiver could not decode vanished --------------------------------------------------


def test_values_sqlite_accepts_reach_every_sqlite_device(make_devices: DeviceFactory) -> None:
    schema = "CREATE TABLE t (id TEXT PRIMARY KEY, d DATE, ts TIMESTAMP, n NUMERIC, u UUID);"
    a, b = make_devices(2, schema=schema, tables=["t"])
    a.sql("INSERT INTO t VALUES ('r', '31/12/2024', 'yesterday', 'abc', 'not-a-uuid')")
    sync_all([a, b])
    assert b.query("SELECT d, ts, n, u FROM t") == [("31/12/2024", "yesterday", "abc", "not-a-uuid")]
    assert a.query("SELECT count(*) FROM _sync_quarantine") == b.query(
        "SELECT count(*) FROM _sync_quarantine"
    )
    assert b.query("SELECT count(*) FROM _sync_quarantine") == [(0,)]


# --- defect 3: floats lost their last bit -------------------------------------------------------------------

FLOATS = [
    1.7976931348623157e308, -1.7976931348623157e308, 5e-324, 2.2250738585072014e-308, 2.225073858507201e-308,
    0.1 + 0.2, 1e23, 9007199254740993.0, 1e-7, 123456789.12345679, float("inf"), float("-inf"),
]  # fmt: skip


def test_reals_arrive_bit_for_bit(make_devices: DeviceFactory) -> None:
    schema = "CREATE TABLE t (id TEXT PRIMARY KEY, r REAL, untyped);"
    a, b = make_devices(2, schema=schema, tables=["t"])
    for i, value in enumerate([*FLOATS, -0.0]):
        a.sql("INSERT INTO t VALUES (?, ?, ?)", f"k{i:02}", value, value)
    sync_all([a, b])
    bits = [struct.pack("<dd", r, u) for r, u in b.query("SELECT r, untyped FROM t ORDER BY id")]
    assert bits == [struct.pack("<dd", r, u) for r, u in a.query("SELECT r, untyped FROM t ORDER BY id")]
    assert struct.pack("<d", b.query("SELECT untyped FROM t WHERE id = 'k12'")[0][0]) == struct.pack(
        "<d", -0.0
    )


# --- defect 4: a REAL key never converged -------------------------------------------------------------------


def test_a_real_key_is_one_object_on_every_device(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2, schema="CREATE TABLE m (id REAL PRIMARY KEY, v TEXT);", tables=["m"])
    a.sql("INSERT INTO m VALUES (0.1, 'from a')")
    sync_all([a, b])
    b.sql("UPDATE m SET v = 'edited on b' WHERE id = 0.1")
    sync_all([b, a])
    assert a.rows("m") == b.rows("m") == [(0.1, "edited on b")]
    assert logged_keys(a) == logged_keys(b) == ["[0.1]"]


# --- issue 10 point 4: [777] and ["777"] are one SQLite row ----------------------------------------------

KEYED = "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT, body TEXT, rank INTEGER);"


def test_an_older_create_under_an_integer_key_does_not_overwrite_a_newer_row(
    make_devices: DeviceFactory, memory_log: MemorySharedLog
) -> None:
    (a,) = make_devices(1, schema=KEYED, tables=["notes"])
    foreign(memory_log, [{"op": "create", "table": "notes", "pk": [777], "value": {"title": "older"}}])
    a.sql("INSERT INTO notes (id, title) VALUES ('777', 'newer')")
    a.sync()
    assert a.query("SELECT id, title FROM notes") == [("777", "newer")]
    assert logged_keys(a) == ['["777"]']


def test_a_deleted_row_does_not_come_back_on_a_device_that_joins_later(
    make_devices: DeviceFactory, memory_log: MemorySharedLog
) -> None:
    (a,) = make_devices(1, schema=KEYED, tables=["notes"])
    foreign(memory_log, [{"op": "create", "table": "notes", "pk": [777], "value": {"title": "older"}}])
    a.sql("INSERT INTO notes (id, title) VALUES ('777', 'newer')")
    a.sync()
    a.sql("DELETE FROM notes WHERE id = '777'")
    a.sync()
    (c,) = make_devices(1, schema=KEYED, tables=["notes"])
    c.sync()
    assert a.rows("notes") == c.rows("notes") == []


# SQLite's affinities, by declared type: what a key column stores for each kind of JSON key.
KEY_TYPES = [
    "TEXT",
    "VARCHAR(20)",
    "INTEGER",
    "BIGINT",
    "REAL",
    "DOUBLE",
    "NUMERIC",
    "DECIMAL(10,2)",
    "DATETIME",
]
KEY_VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        ["777", "1e2", " 12 ", "0x10", "1.0", "-0", "12.50", "9223372036854775808", "1e400", "+5"]
    ),
    st.binary(max_size=4),
)


@settings(max_examples=100, deadline=None)
@given(declared=st.sampled_from(KEY_TYPES), value=KEY_VALUES)
def test_a_received_key_reads_as_the_local_capture_of_its_row(
    tmp_path_factory: pytest.TempPathFactory, declared: str, value: Any
) -> None:
    """Whatever JSON form a key arrives in, it is made what capture reads from the row it names."""
    path = tmp_path_factory.mktemp("keys") / "k.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE t (id {declared}, n INTEGER, PRIMARY KEY (id, n))")
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync(["t"])
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO t VALUES (?, 1)", (value,))
        (stored,) = conn.execute("SELECT id FROM t").fetchone()
    with db.transaction() as sa:
        stamp_pending(sa, db.dialect, db.synced_tables(sa), HybridLogicalClock(), "me")
        (local,) = sa.exec_driver_sql("SELECT pk FROM _sync_log").scalars().all()
    column = db.synced_tables()["t"].pk_columns[0]
    from storex_sync_firestore.capture.sqlite import affinity

    assert affinity(declared) != "BLOB"
    forms = [encode_value(value), encode_value(stored)]  # as written elsewhere; as this row sends it
    if isinstance(value, int):
        forms.append(str(value))  # an integer key from a TEXT column elsewhere
    for form in forms:
        assert dumps([db.dialect.canonical_key(column, form), 1]) == local, form
    db.engine.dispose()


# --- what cannot travel is refused or set aside by the sender itself ---------------------------------------


@pytest.mark.parametrize(("declared", "refused"), [("", True), ("BLOB", True), ("ANY", False)])
def test_a_key_column_without_affinity_is_refused(tmp_path: Path, declared: str, refused: bool) -> None:
    path = tmp_path / "k.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE t (id {declared} PRIMARY KEY, v TEXT)")
    if not refused:
        SyncedDatabase(f"sqlite:///{path}").enable_sync(["t"])  # ANY has NUMERIC affinity
        return
    with pytest.raises(UnsuitableTableError, match=r"1 and 1\.0") as error:
        SyncedDatabase(f"sqlite:///{path}").enable_sync(["t"])
    assert "declare the key column TEXT" in (error.value.hint or "")


def test_text_that_is_not_utf8_is_set_aside_by_the_sender(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2, schema=KEYED, tables=["notes"])
    a.sql("INSERT INTO notes VALUES ('bad', CAST(x'ff41' AS TEXT), 'b', 1)")
    a.sql("INSERT INTO notes VALUES ('good', 'fine', 'b', 2)")
    summary = a.sync()
    assert summary.sent == 1
    ((direction, tbl, reason),) = a.query("SELECT direction, tbl, reason FROM _sync_quarantine")
    assert (
        (direction, tbl) == ("outgoing", "notes") and "notes.title" in reason and "not valid UTF-8" in reason
    )
    b.sync()
    assert b.query("SELECT id FROM notes") == [("good",)]


def test_a_null_key_is_set_aside_by_the_sender(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2, schema=KEYED, tables=["notes"])
    a.sql("INSERT INTO notes VALUES (NULL, 'no key', NULL, 1)")
    a.sql("INSERT INTO notes VALUES ('k', 'a key', NULL, 1)")
    assert a.sync().sent == 1
    b.sync()
    assert b.query("SELECT id FROM notes") == [("k",)]
    assert [r for (r,) in a.query("SELECT reason FROM _sync_quarantine")] == [
        "a NULL key cannot name the row on other devices"
    ]
