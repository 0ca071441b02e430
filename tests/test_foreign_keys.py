"""Rows that reference each other arrive in the order they were made, so foreign keys hold on apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storex_sync_firestore import MemorySharedLog
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

from .pg_devices import PgDevice, SqliteDevice

SQLITE = """
CREATE TABLE vendor (id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE item (id TEXT PRIMARY KEY, name TEXT, vendor_id TEXT REFERENCES vendor(id));
"""
POSTGRES = """
CREATE TABLE vendor (id text PRIMARY KEY, name text);
CREATE TABLE item (id text PRIMARY KEY, name text, vendor_id text REFERENCES vendor(id));
"""


def test_parents_before_children_across_reconcile_passes(postgres_urls: Any, tmp_path: Path) -> None:
    log = MemorySharedLog()
    till = SqliteDevice(tmp_path / "till.db", log, SQLITE, ["vendor", "item"])
    shop = PgDevice(postgres_urls(), log, POSTGRES, ["vendor", "item"])
    try:
        for v in range(5):
            till.sql("INSERT INTO vendor VALUES (?, ?)", (f"v{v}", f"vendor {v}"))
        for i in range(30):
            till.sql("INSERT INTO item VALUES (?, ?, ?)", (f"i{i:02d}", f"item {i}", f"v{i % 5}"))
        till.sync()
        summary = shop.sync(reconcile_batch_size=10)  # several passes, as a large catalogue would need
        assert summary.set_aside == 0 and summary.applied == 35
        assert shop.query("SELECT count(*) FROM item") == [(30,)]
    finally:
        shop.close()
        till.close()
