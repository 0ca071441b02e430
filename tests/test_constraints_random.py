"""Random histories on a schema with a foreign key and a unique column, constraints on: every device, and
a device joining at the end, converge to the same valid tables."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storex_sync_firestore import MemorySharedLog

from .conftest import Device

SCHEMA = """
CREATE TABLE authors (id TEXT PRIMARY KEY, email TEXT UNIQUE, name TEXT);
CREATE TABLE books (
    id TEXT PRIMARY KEY,
    author_id TEXT NOT NULL REFERENCES authors(id) ON DELETE CASCADE,
    title TEXT
);
"""
TABLES = ["authors", "books"]
AUTHORS, BOOKS, EMAILS = ["a1", "a2", "a3"], ["b1", "b2", "b3"], ["e1", "e2", None]

action = st.one_of(
    st.tuples(st.just("author"), st.integers(0, 2), st.sampled_from(AUTHORS), st.sampled_from(EMAILS)),
    st.tuples(st.just("rename"), st.integers(0, 2), st.sampled_from(AUTHORS), st.integers(0, 9)),
    st.tuples(st.just("book"), st.integers(0, 2), st.sampled_from(BOOKS), st.sampled_from(AUTHORS)),
    st.tuples(st.just("drop author"), st.integers(0, 2), st.sampled_from(AUTHORS), st.just(0)),
    st.tuples(st.just("drop book"), st.integers(0, 2), st.sampled_from(BOOKS), st.just(0)),
    st.tuples(st.just("sync"), st.integers(0, 2), st.just(""), st.just(0)),
)


def write(device: Device, kind: str, key: str, value: Any) -> None:
    """What an application would do; the database refuses what breaks a constraint locally."""
    statements = {
        "author": (
            "INSERT INTO authors VALUES (?, ?, 'new') ON CONFLICT (id) DO UPDATE SET email = excluded.email",
            (key, value),
        ),
        "rename": ("UPDATE authors SET name = ? WHERE id = ?", (f"n{value}", key)),
        "book": (
            "INSERT INTO books VALUES (?, ?, 't') "
            "ON CONFLICT (id) DO UPDATE SET author_id = excluded.author_id",
            (key, value),
        ),
        "drop author": ("DELETE FROM authors WHERE id = ?", (key,)),
        "drop book": ("DELETE FROM books WHERE id = ?", (key,)),
    }
    statement, params = statements[kind]
    with contextlib.suppress(sqlite3.IntegrityError):
        device.app.execute(statement, params)


def sync_until_quiet(devices: list[Device], order: list[int]) -> None:
    for _ in range(6):
        busy = False
        for i in order:
            summary = devices[i].sync()
            busy = busy or bool(summary.sent or summary.applied or summary.resolved)
        if not busy:
            return
    raise AssertionError("the devices kept changing: sync does not settle")


@pytest.mark.parametrize("on_conflict", ["delete-later", "clear-later"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(action, min_size=1, max_size=30), order=st.permutations([0, 1, 2]))
def test_random_histories_converge_under_the_constraints(
    tmp_path_factory: Any, history: list[tuple[str, int, str, Any]], order: list[int], on_conflict: str
) -> None:
    log = MemorySharedLog()
    folder = tmp_path_factory.mktemp("c")
    devices = [Device(folder / f"d{i}.db", log, "alice", SCHEMA, TABLES) for i in range(3)]
    try:
        for device in devices:
            device.db.enable_sync(TABLES, on_conflict=on_conflict)
            device.app.execute("PRAGMA foreign_keys = ON")
        for kind, who, key, value in history:
            if kind == "sync":
                devices[who].sync()
            else:
                write(devices[who], kind, key, value)
        sync_until_quiet(devices, order)
        late = Device(folder / "late.db", log, "alice", SCHEMA, TABLES)
        late.db.enable_sync(TABLES, on_conflict=on_conflict)
        devices.append(late)
        late.sync(reconcile_batch_size=1)
        state = devices[0].snapshot()
        for device in devices:
            assert device.snapshot() == state, f"{device.path.name} differs"
            assert device.query("PRAGMA foreign_key_check") == []
            assert device.query("SELECT reason FROM _sync_quarantine") == []
        emails = [e for _, e, _ in state["authors"] if e is not None]
        assert len(emails) == len(set(emails))
    finally:
        for device in devices:
            device.app.close()
            device.db.engine.dispose()
