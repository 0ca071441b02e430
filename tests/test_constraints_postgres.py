"""Converging under the schema on PostgreSQL, with immediate and deferred foreign keys, and mixed with
SQLite devices: the same races and the same rules as ``test_constraints``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from storex_sync_firestore import MemorySharedLog
from storex_sync_firestore.shared_log.base import SharedSyncLog
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

from .pg_devices import PgDevice, SqliteDevice

Made = Callable[..., Any]


def notes_schema(deferred: bool = False, *, sqlite: bool = False) -> str:
    later = " DEFERRABLE INITIALLY DEFERRED" if deferred else ""
    return f"""
    CREATE TABLE notes (id text PRIMARY KEY, title text);
    CREATE TABLE comments (id text PRIMARY KEY, note_id text NOT NULL REFERENCES notes(id){later}, body text);
    CREATE TABLE likes (id text PRIMARY KEY, comment_id text REFERENCES comments(id){later});
    """ + ("PRAGMA foreign_keys = ON;" if sqlite else "")


TABLES = ["notes", "comments", "likes"]
USERS = "CREATE TABLE users (id text PRIMARY KEY, email text UNIQUE, name text);"
RANGES = "CREATE TABLE ranges (id text PRIMARY KEY, lo integer, hi integer, CHECK (lo <= hi));"


@pytest.fixture
def make(postgres_urls: Any, tmp_path: Path) -> Iterator[Made]:
    made: list[Any] = []

    def device(log: SharedSyncLog, schema: str, tables: list[str], *, sqlite: bool = False) -> Any:
        if sqlite:
            new: Any = SqliteDevice(tmp_path / f"s{len(made)}.db", log, schema, tables)
        else:
            new = PgDevice(postgres_urls(), log, schema, tables)
        made.append(new)
        return new

    yield device
    for d in made:
        d.close()


def later() -> None:
    """Let the wall clock move on: writes in one millisecond would be ordered by device id instead."""
    time.sleep(0.005)


def settle(devices: list[Any], rounds: int = 2) -> None:
    for _ in range(rounds):
        for device in devices:
            device.sync()


def snapshot(device: Any, tables: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    return {t: [tuple(r) for r in device.query(f"SELECT * FROM {t} ORDER BY 1")] for t in tables}


def converged(devices: list[Any], tables: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    first = snapshot(devices[0], tables)
    for other in devices[1:]:
        assert snapshot(other, tables) == first
    for device in devices:
        assert device.query("SELECT reason FROM _sync_quarantine") == []
    return first


def rules_used(devices: list[Any]) -> set[tuple[str, str, str]]:
    return {tuple(r) for d in devices for r in d.query("SELECT tbl, pk, rule FROM _sync_resolutions")}


@pytest.mark.parametrize("deferred", [False, True], ids=["immediate", "deferred"])
@pytest.mark.parametrize("first", ["deleter", "inserter"])
def test_parent_delete_and_child_insert_in_either_order(make: Made, deferred: bool, first: str) -> None:
    log = MemorySharedLog()
    a, b = make(log, notes_schema(deferred), TABLES), make(log, notes_schema(deferred), TABLES)
    a.sql("INSERT INTO notes VALUES ('n1', 'note')")
    settle([a, b], 1)
    a.sql("DELETE FROM notes WHERE id = 'n1'")
    b.sql("INSERT INTO comments VALUES ('c1', 'n1', 'orphan')")
    b.sql("INSERT INTO likes VALUES ('l1', 'c1')")
    settle([a, b] if first == "deleter" else [b, a])
    assert converged([a, b], TABLES) == {"notes": [], "comments": [], "likes": []}
    assert ("comments", '["c1"]', "foreign key: deleted with its parent") in rules_used([a, b])


def test_three_devices_postgres_and_sqlite_through_firestore(make: Made, firestore_client: Any) -> None:
    from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog

    log = FirestoreSharedLog(firestore_client)
    a = make(log, notes_schema(), TABLES)
    b = make(log, notes_schema(True), TABLES)
    c = make(log, notes_schema(sqlite=True), TABLES, sqlite=True)
    a.sql("INSERT INTO notes VALUES ('n1', 'note')")
    a.sql("INSERT INTO notes VALUES ('n2', 'stays')")
    settle([a, b, c], 1)
    a.sql("DELETE FROM notes WHERE id = 'n1'")
    b.sql("INSERT INTO comments VALUES ('c1', 'n1', 'from b')")
    b.sql("INSERT INTO comments VALUES ('c3', 'n2', 'kept')")
    c.sql("INSERT INTO comments VALUES ('c2', 'n1', 'from c')")
    c.sql("INSERT INTO likes VALUES ('l2', 'c2')")
    settle([c, b, a], 3)
    assert converged([a, b, c], TABLES) == {
        "notes": [("n2", "stays")],
        "comments": [("c3", "n2", "kept")],
        "likes": [],
    }


@pytest.mark.parametrize("deferred", [False, True], ids=["immediate", "deferred"])
def test_parents_first_and_children_deleted_first_within_one_pass(make: Made, deferred: bool) -> None:
    log = MemorySharedLog()
    a, b = make(log, notes_schema(deferred), TABLES), make(log, notes_schema(deferred), TABLES)
    a.sql("INSERT INTO notes VALUES ('n1', 'old home')")
    a.sql("INSERT INTO comments VALUES ('c1', 'n1', 'moves')")
    a.sql("INSERT INTO likes VALUES ('l1', 'c1')")
    settle([a, b], 1)
    # In one pass for b: a new parent, the child moved to it, the old parent deleted, and a like removed.
    a.sql("INSERT INTO notes VALUES ('n2', 'new home')")
    a.sql("UPDATE comments SET note_id = 'n2' WHERE id = 'c1'")
    a.sql("DELETE FROM likes")
    a.sql("DELETE FROM notes WHERE id = 'n1'")
    summary = settle_one(a, b)
    assert summary.set_aside == 0 and summary.resolved == 0
    assert converged([a, b], TABLES) == {
        "notes": [("n2", "new home")],
        "comments": [("c1", "n2", "moves")],
        "likes": [],
    }


def settle_one(a: Any, b: Any) -> Any:
    a.sync()
    return b.sync()


@pytest.mark.parametrize("first", ["earlier", "later"])
def test_two_devices_inserting_the_same_unique_value(make: Made, first: str) -> None:
    log = MemorySharedLog()
    a, b = make(log, USERS, ["users"]), make(log, USERS, ["users"])
    a.sql("INSERT INTO users VALUES ('u1', 'sku-1', 'first')")
    later()
    b.sql("INSERT INTO users VALUES ('u2', 'sku-1', 'second')")
    settle([a, b] if first == "earlier" else [b, a])
    assert converged([a, b], ["users"]) == {"users": [("u1", "sku-1", "first")]}
    assert ("users", '["u2"]', "unique (email): delete-later") in rules_used([a, b])


def test_a_check_only_the_merged_row_violates(make: Made) -> None:
    log = MemorySharedLog()
    a = make(log, RANGES, ["ranges"])
    b = make(log, RANGES.replace("integer", "INTEGER") + "PRAGMA foreign_keys = ON;", ["ranges"], sqlite=True)
    a.sql("INSERT INTO ranges VALUES ('r', 1, 10)")
    settle([a, b], 1)
    a.sql("UPDATE ranges SET lo = 5 WHERE id = 'r'")
    later()
    b.sql("UPDATE ranges SET hi = 3 WHERE id = 'r'")  # later by the clock: it loses
    settle([a, b])
    assert converged([a, b], ["ranges"]) == {"ranges": [("r", 5, 10)]}
    assert ("ranges", '["r"]', "check: the later change lost") in rules_used([a, b])
