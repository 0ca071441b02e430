"""Offline-first sync between SQL databases through a shared change log in Google Cloud Firestore.

Typical use::

    from storex_sync_firestore import SyncedDatabase, MemorySharedLog, register_device, do_sync

    db = SyncedDatabase("sqlite:///notes.db")
    db.enable_sync(["notes"])
    register_device(db, shared_log, user_id="alice")
    summary = do_sync(db, shared_log)

``FirestoreSharedLog`` lives in ``storex_sync_firestore.shared_log.firestore`` (imported on demand, so that
memory and folder users never load the Google client); ``open_shared_log("firestore://PROJECT")`` finds it.

Names are imported on first use (PEP 562 ``__getattr__``), so that ``storex-sync --help`` and the pytest
plugin, which import submodules of this package, do not pay for SQLAlchemy and the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .capture.base import ColumnInfo, TableInfo
    from .clock import HybridLogicalClock
    from .codec import JsonSerializer, Serializer, decode_value, encode_value
    from .compaction import compact
    from .continuous import ContinuousSync
    from .database import SyncedDatabase
    from .devices import register_device
    from .errors import (
        ConfigurationError,
        ContendedError,
        DamagedDatabaseError,
        DoubleCreateError,
        EntryTooLargeError,
        InvalidEntryError,
        PermanentSharedLogError,
        RulesMismatchError,
        SchemaChangedError,
        SharedLogError,
        SyncError,
        TransientSharedLogError,
        UnknownDeviceError,
        UnsuitableTableError,
    )
    from .events import SyncEvents
    from .keys import SQLITE_UUID7_DEFAULT, uuid7
    from .models import (
        Conflict,
        DeviceInfo,
        LogEntry,
        Operation,
        Reconciliation,
        StoredBatch,
        SyncSummary,
        UnsyncedUpdate,
        WriteResult,
    )
    from .policy import TableRules, UniqueConflict
    from .reconcile import LastWriteWins, ObjectHistory, Reconciler, reconcile_sync_log
    from .shared_log import FilesystemSharedLog, MemorySharedLog, open_shared_log
    from .shared_log.base import SharedSyncLog
    from .snapshot import write_snapshot
    from .sync import do_sync

#: Where each public name lives; ``__getattr__`` imports it from there on first use.
_EXPORTS: dict[str, str] = {
    "ColumnInfo": ".capture.base",
    "ConfigurationError": ".errors",
    "DamagedDatabaseError": ".errors",
    "Conflict": ".models",
    "ContinuousSync": ".continuous",
    "DeviceInfo": ".models",
    "ContendedError": ".errors",
    "DoubleCreateError": ".errors",
    "EntryTooLargeError": ".errors",
    "FilesystemSharedLog": ".shared_log",
    "HybridLogicalClock": ".clock",
    "InvalidEntryError": ".errors",
    "JsonSerializer": ".codec",
    "LastWriteWins": ".reconcile",
    "LogEntry": ".models",
    "MemorySharedLog": ".shared_log",
    "ObjectHistory": ".reconcile",
    "Operation": ".models",
    "PermanentSharedLogError": ".errors",
    "Reconciler": ".reconcile",
    "Reconciliation": ".models",
    "RulesMismatchError": ".errors",
    "SchemaChangedError": ".errors",
    "SQLITE_UUID7_DEFAULT": ".keys",
    "Serializer": ".codec",
    "SharedLogError": ".errors",
    "SharedSyncLog": ".shared_log.base",
    "StoredBatch": ".models",
    "SyncError": ".errors",
    "SyncEvents": ".events",
    "SyncSummary": ".models",
    "SyncedDatabase": ".database",
    "TableInfo": ".capture.base",
    "TableRules": ".policy",
    "TransientSharedLogError": ".errors",
    "UniqueConflict": ".policy",
    "UnknownDeviceError": ".errors",
    "UnsuitableTableError": ".errors",
    "UnsyncedUpdate": ".models",
    "WriteResult": ".models",
    "compact": ".compaction",
    "decode_value": ".codec",
    "do_sync": ".sync",
    "encode_value": ".codec",
    "open_shared_log": ".shared_log",
    "reconcile_sync_log": ".reconcile",
    "register_device": ".devices",
    "uuid7": ".keys",
    "write_snapshot": ".snapshot",
}

__all__ = [
    "SQLITE_UUID7_DEFAULT",
    "ColumnInfo",
    "ConfigurationError",
    "Conflict",
    "ContendedError",
    "ContinuousSync",
    "DamagedDatabaseError",
    "DeviceInfo",
    "DoubleCreateError",
    "EntryTooLargeError",
    "FilesystemSharedLog",
    "HybridLogicalClock",
    "InvalidEntryError",
    "JsonSerializer",
    "LastWriteWins",
    "LogEntry",
    "MemorySharedLog",
    "ObjectHistory",
    "Operation",
    "PermanentSharedLogError",
    "Reconciler",
    "Reconciliation",
    "RulesMismatchError",
    "SchemaChangedError",
    "Serializer",
    "SharedLogError",
    "SharedSyncLog",
    "StoredBatch",
    "SyncError",
    "SyncEvents",
    "SyncSummary",
    "SyncedDatabase",
    "TableInfo",
    "TableRules",
    "TransientSharedLogError",
    "UniqueConflict",
    "UnknownDeviceError",
    "UnsuitableTableError",
    "UnsyncedUpdate",
    "WriteResult",
    "compact",
    "decode_value",
    "do_sync",
    "encode_value",
    "open_shared_log",
    "reconcile_sync_log",
    "register_device",
    "uuid7",
    "write_snapshot",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups do not come here again
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
