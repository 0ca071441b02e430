"""Devices for mixed PostgreSQL/SQLite sync tests: an application connection, sync, and snapshots."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from storex_sync_firestore import SyncedDatabase, SyncSummary, do_sync, register_device
from storex_sync_firestore.shared_log.base import SharedSyncLog


class PgDevice:
    """A PostgreSQL database as a device. ``sql`` writes through the application's own engine."""

    def __init__(self, url: str, log: SharedSyncLog, schema: str, tables: list[str], user_id: str = "shopco"):
        self.url = url
        self.log = log
        self.app = create_engine(url, pool_size=10)
        with self.app.begin() as conn:
            conn.exec_driver_sql(schema)
        self.db = SyncedDatabase(url)
        self.db.enable_sync(tables)
        self.device_id = register_device(self.db, log, user_id=user_id)
        self.tables = tables

    def sql(self, statement: str, params: dict[str, Any] | list[dict[str, Any]] | None = None) -> None:
        with self.app.begin() as conn:
            conn.execute(text(statement), params)

    def query(self, statement: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self.app.begin() as conn:
            return [tuple(r) for r in conn.execute(text(statement), params or {}).all()]

    def sync(self, **options: Any) -> SyncSummary:
        return do_sync(self.db, self.log, **options)

    def close(self) -> None:
        self.app.dispose()
        self.db.engine.dispose()


class SqliteDevice:
    """A SQLite file as a device, written through a plain ``sqlite3`` connection."""

    def __init__(
        self, path: Path, log: SharedSyncLog, schema: str, tables: list[str], user_id: str = "shopco"
    ):
        self.path = path
        self.log = log
        self.app = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.app.executescript(schema)
        self.db = SyncedDatabase(f"sqlite:///{path}")
        self.db.enable_sync(tables)
        self.device_id = register_device(self.db, log, user_id=user_id)
        self.tables = tables

    def sql(self, statement: str, params: Any = ()) -> None:
        self.app.execute(statement, params)

    def query(self, statement: str, params: Any = ()) -> list[tuple[Any, ...]]:
        return self.app.execute(statement, params).fetchall()

    def sync(self, **options: Any) -> SyncSummary:
        return do_sync(self.db, self.log, **options)

    def close(self) -> None:
        self.app.close()
        self.db.engine.dispose()


def sync_rounds(devices: list[Any], rounds: int = 2) -> None:
    """Sync every device in turn, ``rounds`` times, so that everything reaches everyone."""
    for _ in range(rounds):
        for device in devices:
            device.sync()


def set_aside(device: Any) -> list[tuple[Any, ...]]:
    """Rows of the device's ``_sync_quarantine`` (direction, table, pk, reason)."""
    return device.query("SELECT direction, tbl, pk, reason FROM _sync_quarantine ORDER BY id")
