"""SQLite capture: triggers log every write, by any writer, in the writer's transaction."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from storex_sync_firestore import (
    SQLITE_UUID7_DEFAULT,
    HybridLogicalClock,
    SyncedDatabase,
    UnsuitableTableError,
)
from storex_sync_firestore.client_log import stamp_pending

SCHEMA = "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT, body BLOB, score REAL, n INTEGER);"


def captured(conn: sqlite3.Connection) -> list[tuple[str, list[Any], Any]]:
    """Stamp what the triggers captured so far into the log, as a sync does, and return the new entries."""
    (path,) = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
    db = SyncedDatabase(f"sqlite:///{path}")
    with db.transaction() as sa:
        before = sa.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM _sync_log").scalar()
        stamp_pending(sa, db.dialect, db.synced_tables(), HybridLogicalClock(), "this-device")
        rows = sa.exec_driver_sql(
            "SELECT op, pk, value FROM _sync_log WHERE seq > ? ORDER BY hlc", (before,)
        ).all()
    db.engine.dispose()
    return [(op, json.loads(pk), None if v is None else json.loads(v)) for op, pk, v in rows]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync(["notes"])
    db.update_state(device_id="this-device")
    return path


@pytest.fixture
def app(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None)
    yield conn
    conn.close()


def test_insert_update_delete_are_captured(app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO notes VALUES ('a', 'hi', x'00ff', 1.5, 0)")
    assert captured(app) == [
        ("create", ["a"], {"title": "hi", "body": {"$bytes": "00ff"}, "score": 1.5, "n": 0})
    ]
    app.execute("UPDATE notes SET title = 'hello', n = 0 WHERE id = 'a'")  # n unchanged
    app.execute("UPDATE notes SET title = 'hello' WHERE id = 'a'")  # nothing changed: nothing logged
    assert captured(app) == [("modify", ["a"], {"title": "hello"})]
    app.execute("DELETE FROM notes WHERE id = 'a'")
    assert captured(app) == [("delete", ["a"], None)]


def test_changes_stamped_late_carry_values_no_older_entry_contradicts(app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO notes VALUES ('a', 'v1', NULL, NULL, 1)")
    app.execute("UPDATE notes SET title = 'v2' WHERE id = 'a'")
    app.execute("INSERT INTO notes VALUES ('gone', 'x', NULL, NULL, 1)")
    app.execute("UPDATE notes SET n = 2 WHERE id = 'gone'")
    app.execute("DELETE FROM notes WHERE id = 'gone'")
    assert captured(app) == [
        ("create", ["a"], {"title": "v2", "body": None, "score": None, "n": 1}),
        ("modify", ["a"], {"title": "v2"}),  # the later entry carries the value the create read
        ("delete", ["gone"], None),  # a row deleted before the sync logs only its delete
    ]


def test_falsy_values_survive(app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO notes VALUES ('a', '', NULL, 0.0, 0)")  # flaw 3.15: '' and 0 became null
    assert captured(app)[0][2] == {"title": "", "body": None, "score": 0.0, "n": 0}


def test_key_change_is_a_delete_and_a_create(app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO notes VALUES ('a', 't', NULL, NULL, 1)")
    captured(app)
    app.execute("UPDATE notes SET id = 'b', n = 2 WHERE id = 'a'")
    assert captured(app) == [
        ("delete", ["a"], None),
        ("create", ["b"], {"title": "t", "body": None, "score": None, "n": 2}),
    ]


def test_rolled_back_transaction_leaves_no_entry(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO notes (id, title) VALUES ('a', 'draft')")
    conn.rollback()
    assert captured(conn) == []
    conn.close()


def test_every_writer_is_captured(db_path: Path, app: sqlite3.Connection) -> None:
    engine = create_engine(f"sqlite:///{db_path}")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO notes (id, title) VALUES (:i, :t)"),
            [{"i": "sa1", "t": "x"}, {"i": "sa2", "t": "y"}],
        )
    engine.dispose()
    app.executemany(
        "UPDATE notes SET n = ? WHERE id = ?", [(1, "sa1"), (2, "sa2")]
    )  # one statement, many rows
    assert [(op, pk) for op, pk, _ in captured(app)] == [
        ("create", ["sa1"]), ("create", ["sa2"]), ("modify", ["sa1"]), ("modify", ["sa2"])
    ]  # fmt: skip


def test_enable_is_idempotent_and_logs_existing_rows_once(tmp_path: Path) -> None:
    path = tmp_path / "existing.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA + "INSERT INTO notes VALUES ('old', 'kept', NULL, NULL, 7);")
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync(["notes"])
    db.enable_sync(["notes"])
    db.update_state(device_id="this-device")
    conn = sqlite3.connect(path)
    assert captured(conn) == [("create", ["old"], {"title": "kept", "body": None, "score": None, "n": 7})]
    assert conn.execute("SELECT * FROM notes").fetchall() == [("old", "kept", None, None, 7)]
    db.disable_sync()
    conn.execute("INSERT INTO notes (id) VALUES ('after-disable')")
    conn.commit()
    assert conn.execute("SELECT count(*) FROM _sync_capture").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM notes").fetchone() == (2,)


def test_autoincrement_key_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "auto.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT)")
        conn.execute("CREATE TABLE plain (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE nokey (name TEXT)")
    db = SyncedDatabase(f"sqlite:///{path}")
    for table in ("items", "plain"):
        with pytest.raises(UnsuitableTableError, match="auto-incremented integer primary key") as info:
            db.enable_sync([table])
        assert "uuid7" in str(info.value)
    with pytest.raises(UnsuitableTableError, match="no primary key"):
        db.enable_sync(["nokey"])
    with pytest.raises(UnsuitableTableError, match="no table"):
        db.enable_sync(["missing"])


def test_composite_keys_and_uuid_default(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE docs (id TEXT PRIMARY KEY DEFAULT {SQLITE_UUID7_DEFAULT}, t TEXT)")
        conn.execute("CREATE TABLE members (org INTEGER, person TEXT, role TEXT, PRIMARY KEY (org, person))")
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync(["docs", "members"])
    db.update_state(device_id="this-device")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO docs (t) VALUES ('no key given')")
    conn.execute("INSERT INTO members VALUES (1, 'ann', 'admin')")
    (key,) = conn.execute("SELECT id FROM docs").fetchone()
    assert uuid.UUID(key).version == 7
    assert [(op, pk) for op, pk, _ in captured(conn)] == [("create", [key]), ("create", [1, "ann"])]


def test_wide_tables_and_awkward_names(tmp_path: Path) -> None:
    path = tmp_path / "wide.db"
    cols = ", ".join(f'"c {i}"" x" TEXT' for i in range(130))
    with sqlite3.connect(path) as conn:
        conn.execute(f'CREATE TABLE "odd ""name""" (id TEXT PRIMARY KEY, {cols})')
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync(['odd "name"'])
    db.update_state(device_id="this-device")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute('INSERT INTO "odd ""name""" (id, "c 129"" x") VALUES (\'r\', \'v\')')
    (create,) = captured(conn)
    conn.execute('UPDATE "odd ""name""" SET "c 0"" x" = \'w\' WHERE id = \'r\'')
    (modify,) = captured(conn)
    assert len(create[2]) == 130 and create[2]['c 129" x'] == "v"
    assert modify[2] == {'c 0" x': "w"}


def test_special_values_are_tagged(app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO notes VALUES ('a', '2024-05-01T10:00:00', x'', 1e999, NULL)")
    value = captured(app)[0][2]
    assert value["title"] == "2024-05-01T10:00:00"  # text stays text (flaw 3.16: dates were guessed)
    assert value["body"] == {"$bytes": ""}
    assert value["score"] == {"$float": "inf"}


def test_remote_changes_are_applied_silently(tmp_path: Path) -> None:
    from storex_sync_firestore import MemorySharedLog, do_sync, register_device

    log = MemorySharedLog()
    dbs = []
    for name in ("a", "b"):
        with sqlite3.connect(tmp_path / f"{name}.db") as conn:
            conn.executescript(SCHEMA)
        db = SyncedDatabase(f"sqlite:///{tmp_path / name}.db")
        db.enable_sync(["notes"])
        register_device(db, log, user_id="u")
        dbs.append(db)
    with sqlite3.connect(tmp_path / "a.db") as conn:
        conn.execute("INSERT INTO notes (id, title) VALUES ('x', 'from a')")
    do_sync(dbs[0], log)
    summary = do_sync(dbs[1], log)
    assert summary.applied == 1 and summary.sent == 0
    conn = sqlite3.connect(tmp_path / "b.db")
    assert conn.execute("SELECT count(*) FROM _sync_capture").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM _sync_log WHERE shared_on = 0").fetchone() == (0,)
    assert do_sync(dbs[1], log).sent == 0  # never re-uploaded


def test_reals_cross_the_log_exactly(make_devices: Any) -> None:
    a, b = make_devices(2, schema="CREATE TABLE m (id TEXT PRIMARY KEY, v REAL);", tables=["m"])
    values = [0.1 + 0.2, 1 / 3, 9007199254740993.0, 1e-300, -2.5, 5e-324]
    for i, v in enumerate(values):
        a.sql("INSERT INTO m VALUES (?, ?)", f"k{i}", v)
    a.sync()
    b.sync()
    assert [v for _k, v in b.rows("m")] == values  # SQLite's own JSON keeps only 15 digits
