"""Offline-first sync between SQL databases through a shared change log in Google Cloud Firestore.

Typical use::

    from storex_sync_firestore import SyncedDatabase, MemorySharedLog, register_device, do_sync

    db = SyncedDatabase("sqlite:///notes.db")
    db.enable_sync(["notes"])
    register_device(db, shared_log, user_id="alice")
    summary = do_sync(db, shared_log)

``FirestoreSharedLog`` lives in ``storex_sync_firestore.shared_log.firestore`` (imported on demand, so that
memory and folder users never load the Google client); ``open_shared_log("firestore://PROJECT")`` finds it.
"""

from __future__ import annotations

from .capture.base import ColumnInfo, TableInfo
from .clock import HybridLogicalClock
from .codec import JsonSerializer, Serializer, decode_value, encode_value
from .continuous import ContinuousSync
from .database import SyncedDatabase
from .devices import register_device
from .errors import (
    ConfigurationError,
    DoubleCreateError,
    EntryTooLargeError,
    InvalidEntryError,
    PermanentSharedLogError,
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
from .reconcile import LastWriteWins, ObjectHistory, Reconciler, reconcile_sync_log
from .shared_log import FilesystemSharedLog, MemorySharedLog, open_shared_log
from .shared_log.base import SharedSyncLog
from .sync import do_sync

__all__ = [
    "SQLITE_UUID7_DEFAULT",
    "ColumnInfo",
    "ConfigurationError",
    "Conflict",
    "ContinuousSync",
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
    "Serializer",
    "SharedLogError",
    "SharedSyncLog",
    "StoredBatch",
    "SyncError",
    "SyncEvents",
    "SyncSummary",
    "SyncedDatabase",
    "TableInfo",
    "TransientSharedLogError",
    "UnknownDeviceError",
    "UnsuitableTableError",
    "UnsyncedUpdate",
    "WriteResult",
    "decode_value",
    "do_sync",
    "encode_value",
    "open_shared_log",
    "reconcile_sync_log",
    "register_device",
    "uuid7",
]
