"""Logs and databases written by 0.1.x (log format v1) keep syncing: fixtures made by that version.

``fixtures/make_v1_log.py`` wrote them with storex-sync-firestore 0.1.0: Firestore documents, a folder log
and its two SQLite databases, and the rows every device ended with.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from storex_sync_firestore import SyncedDatabase, do_sync, register_device
from storex_sync_firestore.errors import ConfigurationError
from storex_sync_firestore.shared_log.filesystem import FilesystemSharedLog
from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog

from .conftest import Device, DeviceFactory

FIXTURES = Path(__file__).parent / "fixtures"
SCHEMA = """
CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT, body BLOB, score REAL, rank INTEGER);
CREATE TABLE tags (note_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (note_id, tag));
"""
TIMES = ("sharedOn", "createdAt", "markerTs", "sharedUntil")


def expected() -> dict[str, list[tuple[Any, ...]]]:
    rows = json.loads((FIXTURES / "v1_rows.json").read_text())
    return {
        table: [
            tuple(bytes.fromhex(v) if table == "notes" and i == 2 and v else v for i, v in enumerate(r))
            for r in rs
        ]
        for table, rs in rows.items()
    }


def load_firestore_fixture(client: Any) -> None:
    """Put the 0.1.x documents into the emulator as that version left them (timestamps restored)."""
    for doc in json.loads((FIXTURES / "v1_firestore.json").read_text()):
        fields = dict(doc["fields"])
        for name in TIMES:
            if isinstance(fields.get(name), str):
                fields[name] = datetime.fromisoformat(fields[name])
        fields["markerSeen"] = (
            [{**seen, "t": datetime.fromisoformat(seen["t"])} for seen in fields.get("markerSeen", [])]
            if "markerSeen" in fields
            else fields.get("markerSeen")
        )
        if fields["markerSeen"] is None:
            del fields["markerSeen"]
        client.document(doc["path"]).set(fields)


def test_a_v1_firestore_log_syncs_into_a_new_device(
    make_devices: DeviceFactory, firestore_client: Any
) -> None:
    load_firestore_fixture(firestore_client)
    log = FirestoreSharedLog(firestore_client)
    (new,) = make_devices(1, log=log, schema=SCHEMA, tables=["notes", "tags"])
    summary = new.sync()
    assert summary.set_aside == 0 and summary.received == 6
    assert new.snapshot() == expected()
    # It writes format v2 from now on, and a second new device reads both.
    new.sql("INSERT INTO notes VALUES ('n4', 'after the upgrade', NULL, 1.5, 4)")
    new.sync()
    (other,) = make_devices(1, log=log, schema=SCHEMA, tables=["notes", "tags"])
    other.sync()
    assert other.snapshot() == new.snapshot()
    assert ("n4", "after the upgrade", None, 1.5, 4) in other.rows("notes")


def test_a_v1_folder_log_and_its_databases_keep_syncing(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "v1_folder", tmp_path / "log")
    log = FilesystemSharedLog(tmp_path / "log")
    for name in ("laptop", "phone"):
        shutil.copy(FIXTURES / f"v1_folder_{name}.db", tmp_path / f"{name}.db")
    laptop = SyncedDatabase(f"sqlite:///{tmp_path / 'laptop.db'}")
    phone = SyncedDatabase(f"sqlite:///{tmp_path / 'phone.db'}")
    try:
        old_id = laptop.state()["device_id"]
        with pytest.raises(ConfigurationError, match="older storex-sync"):
            do_sync(laptop, log)  # a 0.1.x database has no signing key: it says what to do
        for db in (laptop, phone):
            register_device(db, log, user_id="alice")  # what 'storex-sync init --db' does
        assert laptop.state()["device_id"] != old_id and laptop.state()["signing_key"]
        with sqlite3.connect(tmp_path / "laptop.db") as app:
            app.execute("UPDATE notes SET title = 'edited after the upgrade' WHERE id = 'n3'")
        for db in (laptop, phone, laptop):
            assert do_sync(db, log).set_aside == 0
        new = Device(tmp_path / "new.db", log, "alice", SCHEMA, ["notes", "tags"])
        new.sync()
        want = expected()
        want["notes"] = [
            (r[0], "edited after the upgrade", *r[2:]) if r[0] == "n3" else r for r in want["notes"]
        ]
        assert new.snapshot() == want
        with sqlite3.connect(tmp_path / "phone.db") as app:
            assert app.execute("SELECT title FROM notes WHERE id = 'n3'").fetchall() == [
                ("edited after the upgrade",)
            ]
        new.app.close()
        new.db.engine.dispose()
    finally:
        laptop.engine.dispose()
        phone.engine.dispose()
