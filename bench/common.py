"""Pieces the benchmark scripts share: the table, a device, a Firestore log on the emulator, a timer."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from storex_sync_firestore import SyncedDatabase, register_device
from storex_sync_firestore.shared_log.base import SharedSyncLog

SCHEMA = "CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT, price REAL, qty INTEGER, note TEXT);"
NOTE = "n" * 90  # with the other columns, a serialized change of about 200 bytes


def row(i: int) -> tuple[Any, ...]:
    return (f"item-{i:09d}", f"product {i}", i * 0.5, i % 1000, NOTE)


@dataclass
class Device:
    path: Path
    db: SyncedDatabase


def make_device(path: Path, log: SharedSyncLog, user_id: str) -> Device:
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync(["items"])
    register_device(db, log, user_id=user_id)
    return Device(path, db)


def fill(device: Device, n: int, start: int = 0) -> None:
    with sqlite3.connect(device.path) as conn:
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?)", (row(i) for i in range(start, start + n))
        )


def firestore_log(emulator: Any, project: str) -> tuple[Any, Any]:
    """A FirestoreSharedLog on the emulator, and its bare client (for the baseline)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog

    client = firestore.Client(project=project, credentials=AnonymousCredentials())
    return FirestoreSharedLog(client), client


def firestore_size(value: Any) -> int:
    """Bytes Firestore bills for storing ``value`` (its documented storage-size rules): a string is its
    UTF-8 bytes plus one, a number 8, bytes their length, an array or map the sum of its parts."""
    if isinstance(value, str):
        return len(value.encode("utf-8")) + 1
    if isinstance(value, bytes):
        return len(value)
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float):
        return 8
    if isinstance(value, list | tuple):
        return sum(firestore_size(v) for v in value)
    if isinstance(value, dict):
        return sum(firestore_size(k) + firestore_size(v) for k, v in value.items())
    return 8  # a timestamp


def document_size(path: tuple[str, ...], fields: dict[str, Any]) -> int:
    """A document's storage size: its name (path segments), its fields, and 32 bytes of overhead."""
    return sum(firestore_size(p) for p in path) + 16 + firestore_size(fields) + 32


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.seconds = time.perf_counter() - self.start
