"""Converging under the schema on SQLite (foreign keys on), through the Firestore emulator: the races
that a per-column merge alone left diverged for good, each ending in identical tables equal to the
documented rule (README, "Constraints, conflicts and migrations")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from storex_sync_firestore import MemorySharedLog, RulesMismatchError, UniqueConflict
from storex_sync_firestore.commands import database_status
from storex_sync_firestore.shared_log.base import SharedSyncLog

from .conftest import Device

NOTES = """
CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT);
CREATE TABLE comments (id TEXT PRIMARY KEY, note_id TEXT NOT NULL REFERENCES notes(id), body TEXT);
CREATE TABLE likes (id TEXT PRIMARY KEY, comment_id TEXT NOT NULL REFERENCES comments(id));
"""
NOTE_TABLES = ["notes", "comments", "likes"]
USERS = "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT UNIQUE, name TEXT);"
RANGES = "CREATE TABLE ranges (id TEXT PRIMARY KEY, lo INTEGER, hi INTEGER, CHECK (lo <= hi));"


class Devices:
    """SQLite devices of one user, each written through its own sqlite3 connection with foreign keys on."""

    def __init__(self, folder: Path, log: SharedSyncLog) -> None:
        self.folder, self.log, self.made = folder, log, list[Device]()

    def __call__(self, n: int, schema: str, tables: list[str], **enable: Any) -> list[Device]:
        made = []
        for _ in range(n):
            device = Device(self.folder / f"d{len(self.made)}.db", self.log, "alice", schema, tables)
            if enable:
                device.db.enable_sync(tables, **enable)  # again, with the rules
            device.app.execute("PRAGMA foreign_keys = ON")
            self.made.append(device)
            made.append(device)
        return made

    def close(self) -> None:
        for device in self.made:
            device.app.close()
            device.db.engine.dispose()


@pytest.fixture
def firestore_devices(tmp_path: Path, firestore_client: Any) -> Iterator[Devices]:
    from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog

    devices = Devices(tmp_path, FirestoreSharedLog(firestore_client))
    yield devices
    devices.close()


@pytest.fixture
def memory_devices(tmp_path: Path) -> Iterator[Devices]:
    devices = Devices(tmp_path, MemorySharedLog())
    yield devices
    devices.close()


def later() -> None:
    """Let the wall clock move on: writes in one millisecond would be ordered by device id instead."""
    time.sleep(0.005)


def settle(devices: list[Device], rounds: int = 2) -> None:
    for _ in range(rounds):
        for device in devices:
            device.sync()


def converged(devices: list[Device]) -> dict[str, list[tuple[Any, ...]]]:
    first = devices[0].snapshot()
    for other in devices[1:]:
        assert other.snapshot() == first, f"{other.path.name} differs from {devices[0].path.name}"
    for device in devices:
        assert device.query("SELECT reason FROM _sync_quarantine") == []
        assert device.query("PRAGMA foreign_key_check") == []
    return first


def rules_used(devices: list[Device]) -> set[tuple[str, str, str]]:
    return {(t, k, r) for d in devices for t, k, r in d.query("SELECT tbl, pk, rule FROM _sync_resolutions")}


def with_note(devices: list[Device]) -> None:
    devices[0].sql("INSERT INTO notes VALUES ('n1', 'note')")
    settle(devices, 1)


# --- foreign keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["deleter", "inserter"])
def test_parent_delete_and_offline_child_insert_converge_in_either_order(
    firestore_devices: Devices, first: str
) -> None:
    a, b = firestore_devices(2, NOTES, NOTE_TABLES)
    with_note([a, b])
    a.sql("DELETE FROM notes WHERE id = 'n1'")
    b.sql("INSERT INTO comments VALUES ('c1', 'n1', 'on a deleted note')")  # b is offline
    settle([a, b] if first == "deleter" else [b, a])
    # The rule: the comment follows its note, as ON DELETE CASCADE would. Before, a had neither and b
    # kept both, each with an entry set aside for ever.
    assert converged([a, b]) == {"notes": [], "comments": [], "likes": []}
    assert ("comments", '["c1"]', "foreign key: deleted with its parent") in rules_used([a, b])


def test_parent_delete_and_child_inserts_on_three_devices(firestore_devices: Devices) -> None:
    a, b, c = firestore_devices(3, NOTES, NOTE_TABLES)
    with_note([a, b, c])
    a.sql("DELETE FROM notes WHERE id = 'n1'")
    b.sql("INSERT INTO comments VALUES ('c1', 'n1', 'from b')")
    c.sql("INSERT INTO comments VALUES ('c2', 'n1', 'from c')")
    c.sql("INSERT INTO likes VALUES ('l2', 'c2')")  # a grandchild: follows its parent too
    c.sql("UPDATE notes SET title = 'edited on c' WHERE id = 'n1'")  # an edit does not revive a delete
    settle([c, b, a], 3)
    assert converged([a, b, c]) == {"notes": [], "comments": [], "likes": []}
    assert {k for _, k, _ in rules_used([a, b, c])} == {'["c1"]', '["c2"]', '["l2"]'}


def test_a_child_edited_after_its_insert_still_follows_its_parent(firestore_devices: Devices) -> None:
    a, b = firestore_devices(2, NOTES, NOTE_TABLES)
    with_note([a, b])
    b.sql("INSERT INTO comments VALUES ('c1', 'n1', 'draft')")
    b.sync()  # the comment reaches the log, not yet a
    a.sql("DELETE FROM comments")  # nothing there yet on a
    a.sql("DELETE FROM notes WHERE id = 'n1'")
    b.sql("UPDATE comments SET body = 'edited later' WHERE id = 'c1'")
    settle([a, b])
    assert converged([a, b]) == {"notes": [], "comments": [], "likes": []}


def test_a_parent_recreated_later_does_not_bring_its_children_back(firestore_devices: Devices) -> None:
    a, b = firestore_devices(2, NOTES, NOTE_TABLES)
    with_note([a, b])
    a.sql("DELETE FROM notes WHERE id = 'n1'")
    b.sql("INSERT INTO comments VALUES ('c1', 'n1', 'orphan')")
    settle([a, b])
    a.sql("INSERT INTO notes VALUES ('n1', 'back again')")  # the same key, created anew
    settle([a, b])
    assert converged([a, b]) == {"notes": [("n1", "back again")], "comments": [], "likes": []}


def test_a_parent_recreated_before_the_child_arrives_keeps_the_child(firestore_devices: Devices) -> None:
    a, b = firestore_devices(2, NOTES, NOTE_TABLES)
    with_note([a, b])
    a.sql("DELETE FROM notes WHERE id = 'n1'")
    a.sync()
    a.sql("INSERT INTO notes VALUES ('n1', 'undone')")  # undo, before b ever saw the delete
    a.sync()
    b.sql("INSERT INTO comments VALUES ('c1', 'n1', 'kept')")
    settle([b, a])  # b meets the delete and the re-creation together: its comment has a parent
    assert converged([a, b]) == {"notes": [("n1", "undone")], "comments": [("c1", "n1", "kept")], "likes": []}
    assert rules_used([a, b]) == set()


def test_on_delete_set_null_clears_the_reference_instead(memory_devices: Devices) -> None:
    schema = """
    CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT);
    CREATE TABLE comments (
        id TEXT PRIMARY KEY, note_id TEXT REFERENCES notes(id) ON DELETE SET NULL, body TEXT
    );
    """
    a, b = memory_devices(2, schema, ["notes", "comments"])
    with_note([a, b])
    a.sql("DELETE FROM notes WHERE id = 'n1'")
    b.sql("INSERT INTO comments VALUES ('c1', 'n1', 'kept, unattached')")
    settle([a, b])
    assert converged([a, b]) == {"notes": [], "comments": [("c1", None, "kept, unattached")]}
    assert rules_used([a, b]) == {("comments", '["c1"]', "foreign key: reference cleared")}


def test_a_tree_in_one_table_follows_the_same_rule(memory_devices: Devices) -> None:
    schema = "CREATE TABLE folders (id TEXT PRIMARY KEY, parent TEXT REFERENCES folders(id), name TEXT);"
    a, b = memory_devices(2, schema, ["folders"])
    a.sql("INSERT INTO folders VALUES ('root', NULL, 'root')")
    a.sql("INSERT INTO folders VALUES ('f1', 'root', 'old')")
    settle([a, b], 1)
    a.sql("DELETE FROM folders WHERE id = 'f1'")
    b.sql("INSERT INTO folders VALUES ('f2', 'f1', 'under old')")
    b.sql("INSERT INTO folders VALUES ('f3', 'f2', 'deeper')")
    settle([a, b])
    assert converged([a, b]) == {"folders": [("root", None, "root")]}
    (late,) = memory_devices(1, schema, ["folders"])
    late.sync(reconcile_batch_size=1)
    assert converged([a, late]) == {"folders": [("root", None, "root")]}


def test_a_device_joining_later_replays_the_log_to_the_same_state(memory_devices: Devices) -> None:
    a, b = memory_devices(2, NOTES, NOTE_TABLES)
    with_note([a, b])
    a.sql("INSERT INTO notes VALUES ('n2', 'stays')")
    a.sql("DELETE FROM notes WHERE id = 'n1'")
    b.sql("INSERT INTO comments VALUES ('c1', 'n1', 'orphan')")
    b.sql("INSERT INTO likes VALUES ('l1', 'c1')")
    settle([a, b])
    (late,) = memory_devices(1, NOTES, NOTE_TABLES)
    late.sync(reconcile_batch_size=1)  # one object per pass: parents and children in different passes
    state = converged([a, b, late])
    assert state == {"notes": [("n2", "stays")], "comments": [], "likes": []}
    assert late.query("SELECT count(*) FROM _sync_resolutions") == [(0,)]  # it replays, not re-decides


def test_children_are_applied_after_their_parents_in_one_pass(memory_devices: Devices) -> None:
    a, b = memory_devices(2, NOTES, NOTE_TABLES)
    a.sql("INSERT INTO notes VALUES ('n1', 'note')")
    a.sql("INSERT INTO comments VALUES ('c1', 'n1', 'child')")
    a.sql("INSERT INTO likes VALUES ('l1', 'c1')")
    a.sync()
    b.sync(reconcile_batch_size=1)
    a.sql("DELETE FROM likes")
    a.sql("DELETE FROM comments")
    a.sql("DELETE FROM notes")
    a.sync()
    b.sync()  # children deleted before parents, in one pass
    assert converged([a, b]) == {"notes": [], "comments": [], "likes": []}
    assert rules_used([a, b]) == set()


# --- unique columns -----------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["earlier", "later"])
def test_two_devices_inserting_the_same_unique_value(firestore_devices: Devices, first: str) -> None:
    a, b = firestore_devices(2, USERS, ["users"])
    a.sql("INSERT INTO users VALUES ('u1', 'ann@example.com', 'Ann on a')")
    later()
    b.sql("INSERT INTO users VALUES ('u2', 'ann@example.com', 'Ann on b')")  # later by the clock
    settle([a, b] if first == "earlier" else [b, a])
    # The rule: the row that claimed the value later loses; with delete-later it is deleted.
    assert converged([a, b]) == {"users": [("u1", "ann@example.com", "Ann on a")]}
    (record,) = {r for d in (a, b) for r in d.query("SELECT pk, rule, detail FROM _sync_resolutions")}
    assert record[:2] == ('["u2"]', "unique (email): delete-later")
    assert json.loads(record[2])["row"] == {"email": "ann@example.com", "name": "Ann on b"}  # kept for you


def test_the_later_claim_loses_even_when_the_row_is_older(memory_devices: Devices) -> None:
    a, b = memory_devices(2, USERS, ["users"])
    b.sql("INSERT INTO users VALUES ('u2', 'old@example.com', 'Bo')")
    settle([a, b])
    a.sql("INSERT INTO users VALUES ('u1', 'ann@example.com', 'Ann')")
    later()
    b.sql("UPDATE users SET email = 'ann@example.com' WHERE id = 'u2'")  # claimed after a's insert
    settle([a, b])
    assert converged([a, b]) == {"users": [("u1", "ann@example.com", "Ann")]}


def test_clear_later_keeps_the_later_row_without_its_value(memory_devices: Devices) -> None:
    a, b = memory_devices(2, USERS, ["users"], on_conflict="clear-later")
    a.sql("INSERT INTO users VALUES ('u1', 'ann@example.com', 'Ann')")
    later()
    b.sql("INSERT INTO users VALUES ('u2', 'ann@example.com', 'Ann again')")
    settle([b, a])
    assert converged([a, b]) == {"users": [("u1", "ann@example.com", "Ann"), ("u2", None, "Ann again")]}


def suffix_the_key(conflict: UniqueConflict) -> Mapping[str, Any]:
    """A custom rule: the later row keeps its value, made unique with its key."""
    return {c: f"{conflict.loser_values[c]}#{conflict.loser[0]}" for c in conflict.columns}


def test_a_custom_on_conflict_function_decides(memory_devices: Devices) -> None:
    a, b = memory_devices(2, USERS, ["users"], on_conflict=suffix_the_key)
    a.sql("INSERT INTO users VALUES ('u1', 'ann@example.com', 'Ann')")
    later()
    b.sql("INSERT INTO users VALUES ('u2', 'ann@example.com', 'Ann again')")
    settle([b, a])
    assert converged([a, b])["users"] == [
        ("u1", "ann@example.com", "Ann"),
        ("u2", "ann@example.com#u2", "Ann again"),
    ]
    assert rules_used([a, b]) == {
        ("users", '["u2"]', "unique (email): tests.test_constraints:suffix_the_key")
    }


def test_devices_with_different_rules_are_told_and_can_agree(memory_devices: Devices) -> None:
    (a,) = memory_devices(1, USERS, ["users"])
    a.sql("INSERT INTO users VALUES ('u1', 'ann@example.com', 'Ann')")
    a.sync()  # a declared delete-later first
    (b,) = memory_devices(1, USERS, ["users"], on_conflict="clear-later")
    later()
    b.sql("INSERT INTO users VALUES ('u2', 'ann@example.com', 'Ann again')")
    with pytest.raises(RulesMismatchError, match=r"clear-later.*delete-later") as told:
        b.sync()
    assert "--on-conflict delete-later" in str(told.value.hint)
    assert b.rows("users") == [("u2", "ann@example.com", "Ann again")]  # nothing reconciled meanwhile
    a.sync()  # a is not stopped: its rules are the log's
    b.db.enable_sync(["users"], on_conflict="delete-later")
    settle([b, a])
    assert converged([a, b]) == {"users": [("u1", "ann@example.com", "Ann")]}


# --- CHECK and NOT NULL -------------------------------------------------------------------------------


def test_a_check_only_the_merged_row_violates(firestore_devices: Devices) -> None:
    a, b = firestore_devices(2, RANGES, ["ranges"])
    a.sql("INSERT INTO ranges VALUES ('r', 1, 10)")
    settle([a, b], 1)
    a.sql("UPDATE ranges SET lo = 5 WHERE id = 'r'")  # fine on a: 5 <= 10
    later()
    b.sql("UPDATE ranges SET hi = 3 WHERE id = 'r'")  # fine on b: 1 <= 3, and later by the clock
    settle([a, b])
    # The merge (5, 3) breaks the CHECK: the later change (b's hi = 3) loses, hi is 10 again.
    assert converged([a, b]) == {"ranges": [("r", 5, 10)]}
    assert ("ranges", '["r"]', "check: the later change lost") in rules_used([a, b])


def test_a_row_refused_as_written_is_set_aside_with_a_hint(memory_devices: Devices) -> None:
    (loose,) = memory_devices(1, "CREATE TABLE t (id TEXT PRIMARY KEY, name TEXT);", ["t"])
    (strict,) = memory_devices(1, "CREATE TABLE t (id TEXT PRIMARY KEY, name TEXT NOT NULL);", ["t"])
    loose.sql("INSERT INTO t VALUES ('x', NULL)")
    settle([loose, strict])
    assert strict.rows("t") == [] and strict.query("SELECT count(*) FROM _sync_resolutions") == [(0,)]
    (reason,) = strict.query("SELECT reason FROM _sync_quarantine")[0]
    assert "NOT NULL" in reason and "refused as written" in reason and "storex-sync init --db" in reason


def test_status_lists_the_last_resolutions(memory_devices: Devices) -> None:
    a, b = memory_devices(2, USERS, ["users"])
    a.db.update_state(log="memory://")
    a.sql("INSERT INTO users VALUES ('u1', 'ann@example.com', 'Ann')")
    later()
    b.sql("INSERT INTO users VALUES ('u2', 'ann@example.com', 'Ann again')")
    settle([b, a])
    info = database_status(a.db)
    assert info["resolved"] == 1
    (last,) = info["resolutions"]
    assert (last["table"], last["pk"], last["rule"]) == ("users", ["u2"], "unique (email): delete-later")


def test_the_cli_sets_the_rule_and_shows_the_resolutions(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from storex_sync_firestore import FilesystemSharedLog
    from storex_sync_firestore.cli import cli

    folder = tmp_path / "log"
    devices = Devices(tmp_path, FilesystemSharedLog(folder))
    try:
        a, b = devices(2, USERS, ["users"])
        runner = CliRunner()
        for device in (a, b):
            device.db.update_state(log=str(folder))
            url = f"sqlite:///{device.path}"
            done = runner.invoke(
                cli, ["init", "--db", url, "--tables", "users", "--on-conflict", "clear-later"]
            )
            assert done.exit_code == 0, done.output
        a.sql("INSERT INTO users VALUES ('u1', 'ann@example.com', 'Ann')")
        later()
        b.sql("INSERT INTO users VALUES ('u2', 'ann@example.com', 'Ann again')")
        synced = runner.invoke(cli, ["sync", "--db", f"sqlite:///{a.path}"])
        assert synced.exit_code == 0 and "resolved" not in synced.output, synced.output
        synced = runner.invoke(cli, ["sync", "--db", f"sqlite:///{b.path}"])
        assert synced.exit_code == 0 and "resolved 1 (see status)" in synced.output
        shown = runner.invoke(cli, ["status", "--db", f"sqlite:///{b.path}"]).output
        assert 'users ["u2"] unique (email): clear-later' in shown
        info = json.loads(runner.invoke(cli, ["status", "--db", f"sqlite:///{b.path}", "--json"]).output)
        assert info["resolutions"][0]["rule"] == "unique (email): clear-later"
        assert b.rows("users") == [("u1", "ann@example.com", "Ann"), ("u2", None, "Ann again")]
    finally:
        devices.close()
