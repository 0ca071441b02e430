"""Setup state that cannot be wrong: however a database was set up, the CLI finds all it needs, and a
refused or failed ``init`` changes nothing; a damaged SQLite file is never written."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from storex_sync_firestore import (
    DamagedDatabaseError,
    SyncedDatabase,
    do_sync,
    open_shared_log,
    register_device,
)
from storex_sync_firestore.continuous import sync_and_record
from storex_sync_firestore.testing.emulator import free_port
from tests.test_cli import cli, one_line_error, sql, url

NOTES = "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT, body TEXT)"


def sync_objects(path: Path) -> list[tuple[str, str]]:
    """Everything sync installed in the file: its triggers and tables."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name LIKE '\\_sync\\_%' ESCAPE '\\' ORDER BY 2"
        ).fetchall()
    finally:
        conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_database_set_up_from_python_has_what_the_cli_needs(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    sql(path, NOTES, "INSERT INTO notes VALUES ('1', 'from python', NULL)")
    db = SyncedDatabase(url(path))
    db.enable_sync(["notes"])
    log = open_shared_log(str(tmp_path / "shared-log"))
    device = register_device(db, log, user_id="alice")  # no log_url: the log knows its own
    do_sync(db, log)
    status = json.loads(cli("status", "--db", url(path), "--json").stdout)
    assert status["device_id"] == device and status["log"] == str((tmp_path / "shared-log").resolve())
    other = tmp_path / "other.db"
    sql(other, NOTES)
    cli("init", "--db", url(other), "--tables", "notes", "--user", "alice", "--log", status["log"])
    assert "received 1, applied 1" in cli("sync", "--db", url(other)).stdout
    assert "sent 0" in cli("sync", "--db", url(path)).stdout


def test_a_log_without_url_is_named_as_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    sql(path, NOTES)
    db = SyncedDatabase(url(path))
    db.enable_sync(["notes"])
    register_device(db, open_shared_log("memory://"), user_id="alice", log_url=None)
    db.update_state(log=None)  # as a custom backend without a URL leaves it
    msg = one_line_error(cli("sync", "--db", url(path), check=False))
    assert "which shared log it syncs through is not recorded" in msg and "--log" in msg


def test_init_for_another_user_is_refused_and_says_what_becomes_of_the_data(tmp_path: Path) -> None:
    log = str(tmp_path / "shared-log")
    laptop, phone = tmp_path / "laptop.db", tmp_path / "phone.db"
    for path in (laptop, phone):
        sql(path, NOTES)
    sql(laptop, "INSERT INTO notes VALUES ('1', 'written as alice', NULL)")
    cli("init", "--db", url(laptop), "--tables", "notes", "--user", "alice", "--log", log)
    cli("sync", "--db", url(laptop))
    before = json.loads(cli("status", "--db", url(laptop), "--json").stdout)

    msg = one_line_error(cli("init", "--db", url(laptop), "--user", "bob", check=False))
    assert "'alice'" in msg and "'bob'" in msg and "--switch-user" in msg
    assert "shares all its rows again" in msg and "stays in alice's log" in msg
    assert json.loads(cli("status", "--db", url(laptop), "--json").stdout) == before  # nothing changed

    moved = json.loads(cli("init", "--db", url(laptop), "--user", "bob", "--switch-user", "--json").stdout)
    assert moved["user_id"] == "bob" and moved["device_id"] != before["device_id"]
    cli("sync", "--db", url(laptop))
    cli("init", "--db", url(phone), "--tables", "notes", "--user", "bob", "--log", log)
    cli("sync", "--db", url(phone))
    assert sqlite3.connect(phone).execute("SELECT id, title FROM notes").fetchall() == [
        ("1", "written as alice")
    ]  # what the laptop shared as alice reached bob's phone: it was shared again in bob's log


def test_the_api_refuses_another_user_too(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    sql(path, NOTES)
    db = SyncedDatabase(url(path))
    db.enable_sync(["notes"])
    log = open_shared_log("memory://switch-api")
    register_device(db, log, user_id="alice")
    with pytest.raises(Exception, match="switch-user") as info:
        register_device(db, log, user_id="bob")
    assert db.state()["user_id"] == "alice" and "bob" in str(info.value)


def test_a_failed_init_changes_nothing_and_the_same_init_then_works(
    tmp_path: Path, firestore_project: str
) -> None:
    path = tmp_path / "notes.db"
    sql(path, NOTES, "INSERT INTO notes VALUES ('1', 'x', NULL)")
    args = ["init", "--db", url(path), "--tables", "notes", "--user", "alice"]
    args += ["--log", f"firestore://{firestore_project}", "--timeout", "1"]
    dead = {**os.environ, "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}
    msg = one_line_error(cli(*args, env=dead, check=False))
    assert "Firestore unavailable" in msg and "run the same init again" in msg
    assert "next sync" not in msg  # the hint of a failed sync does not fit init
    assert sync_objects(path) == []  # no triggers, no state: as it was
    assert "not set up for sync" in one_line_error(cli("sync", "--db", url(path), check=False))

    cli(*args)  # the emulator is up now: the same command succeeds
    assert "sent 1" in cli("sync", "--db", url(path)).stdout


def test_a_refused_table_registers_no_device(tmp_path: Path) -> None:
    log = tmp_path / "shared-log"
    path = tmp_path / "counted.db"
    sql(path, "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT)")
    msg = one_line_error(cli("init", "--db", url(path), "--tables", "items", "--log", str(log), check=False))
    assert "auto-incremented" in msg
    assert sync_objects(path) == [] and not list(log.glob("*/devices/*"))


def test_init_on_a_missing_file_leaves_no_file_behind(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    msg = one_line_error(
        cli("init", "--db", url(missing), "--tables", "notes", "--log", str(tmp_path / "log"), check=False)
    )
    assert "no database file" in msg and "create it and its tables" in msg
    assert not missing.exists()


def damage(path: Path) -> None:
    """Overwrite one leaf page of the notes table: ``PRAGMA quick_check`` reports it."""
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    page = conn.execute(
        "SELECT max(pageno) FROM dbstat WHERE name = 'notes' AND pagetype = 'leaf'"
    ).fetchone()[0]
    conn.close()
    with path.open("r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(b"\xff" * page_size)


def many_notes(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(NOTES)
        conn.executemany(
            "INSERT INTO notes VALUES (?, ?, ?)", ((f"n{i:05d}", "t" * 20, "b" * 100) for i in range(3000))
        )
    conn.close()


def test_sync_never_writes_to_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    many_notes(path)
    cli("init", "--db", url(path), "--tables", "notes", "--log", str(tmp_path / "log"))
    cli("sync", "--db", url(path))
    damage(path)
    before = digest(path)
    for command in ("sync", "init"):
        msg = one_line_error(cli(command, "--db", url(path), check=False))
        assert "damaged" in msg and "wrote nothing" in msg and ".recover" in msg
    assert digest(path) == before


def test_a_sync_that_fails_on_a_damaged_page_does_not_record_its_failure_there(tmp_path: Path) -> None:
    """As ``watch`` runs after a good sync (no check first): the failure is checked before it is kept."""
    path = tmp_path / "notes.db"
    many_notes(path)
    db = SyncedDatabase(url(path))
    db.enable_sync(["notes"])
    log = open_shared_log(str(tmp_path / "log"))
    register_device(db, log, user_id="alice")
    sync_and_record(db, log)
    sql(path, "UPDATE notes SET title = 'changed' WHERE id = 'n02999'")  # stamping will read its page
    damage(path)
    db.engine.dispose()
    before = digest(path)
    with pytest.raises(DamagedDatabaseError, match="damaged"):
        sync_and_record(db, log, check_first=False)
    db.engine.dispose()
    assert digest(path) == before
