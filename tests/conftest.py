"""Shared fixtures: real SQLite files, one per simulated device, syncing through a shared log."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from storex_sync_firestore import MemorySharedLog, SyncedDatabase, SyncSummary, do_sync, register_device
from storex_sync_firestore.shared_log.base import SharedSyncLog
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

NOTES_SCHEMA = """
CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT, body TEXT, rank INTEGER);
CREATE TABLE tags (note_id TEXT NOT NULL, tag TEXT NOT NULL, colour TEXT, PRIMARY KEY (note_id, tag));
"""
SYNCED = ["notes", "tags"]


class Device:
    """One simulated device: a SQLite file, a plain sqlite3 connection for app writes, and sync."""

    def __init__(self, path: Path, log: SharedSyncLog, user_id: str, schema: str, tables: list[str]) -> None:
        self.path = path
        self.log = log
        self.app = sqlite3.connect(path, isolation_level=None)
        self.app.executescript(schema)
        self.db = SyncedDatabase(f"sqlite:///{path}")
        self.db.enable_sync(tables)
        self.device_id = register_device(self.db, log, user_id=user_id)
        self.tables = tables

    def sql(self, statement: str, *params: Any) -> None:
        self.app.execute(statement, params)

    def sync(self, **options: Any) -> SyncSummary:
        return do_sync(self.db, self.log, **options)

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        return self.app.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        return {t: self.rows(t) for t in self.tables}

    def query(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.app.execute(statement, params).fetchall()


DeviceFactory = Callable[..., list[Device]]


@pytest.fixture
def memory_log() -> MemorySharedLog:
    return MemorySharedLog()


@pytest.fixture(params=["memory", "filesystem", "firestore", "postgresql"])
def backend_log(request: pytest.FixtureRequest, tmp_path: Path) -> SharedSyncLog:
    """Each shared-log backend in turn, for the tests that must hold on all of them."""
    if request.param == "memory":
        return MemorySharedLog()
    if request.param == "postgresql":
        from storex_sync_firestore.shared_log import open_shared_log

        return open_shared_log(request.getfixturevalue("postgres_urls")())
    if request.param == "filesystem":
        from storex_sync_firestore.shared_log.filesystem import FilesystemSharedLog

        return FilesystemSharedLog(tmp_path / "shared-log")
    from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog

    return FirestoreSharedLog(request.getfixturevalue("firestore_client"))


@pytest.fixture
def make_devices(tmp_path: Path, memory_log: MemorySharedLog) -> Iterator[DeviceFactory]:
    made: list[Device] = []

    def make(
        n: int,
        *,
        log: SharedSyncLog | None = None,
        schema: str = NOTES_SCHEMA,
        tables: list[str] | None = None,
        user_id: str = "alice",
    ) -> list[Device]:
        devices = [
            Device(
                tmp_path / f"device{len(made) + i}.db", log or memory_log, user_id, schema, tables or SYNCED
            )
            for i in range(n)
        ]
        made.extend(devices)
        return devices

    yield make
    for device in made:
        device.app.close()
        device.db.engine.dispose()


def sync_all(devices: list[Device], rounds: int = 2) -> None:
    """Sync every device in turn, twice, so that everything reaches everyone."""
    for _ in range(rounds):
        for device in devices:
            device.sync()


def assert_converged(devices: list[Device]) -> dict[str, list[tuple[Any, ...]]]:
    first = devices[0].snapshot()
    for other in devices[1:]:
        assert other.snapshot() == first, f"{other.path.name} differs from {devices[0].path.name}"
    return first


@pytest.fixture
def as_user(firestore_user_client: Callable[..., Any]) -> Callable[..., Any]:
    """``as_user("alice", **claims)``: a Firestore client acting as that user under the repo's
    firestore.rules: the pytest plugin's ``firestore_user_client``, which end users test their rules with."""
    return firestore_user_client
