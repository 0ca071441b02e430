"""What each ``storex-sync`` command does, as plain functions, so the CLI only parses and prints.

Applications can call these too: ``init_database`` is "make this database a device of that user's log",
``sync_database`` is one recorded sync round, ``database_status`` the facts ``status`` shows.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from . import client_log
from .capture.base import QUARANTINE_TABLE
from .continuous import sync_and_record
from .database import SyncedDatabase
from .devices import change_passphrase, create_log_key, register_device, use_encryption
from .encryption import DataKey, unwrap
from .errors import ConfigurationError
from .models import SyncSummary
from .shared_log import open_shared_log
from .shared_log.base import SharedSyncLog

NOT_INITIALIZED_HINT = "run 'storex-sync init --db URL --tables TABLE,... --log LOG' first"


def open_database(url: str, *, create: bool = False) -> SyncedDatabase:
    """Open ``url`` (a SQLAlchemy URL). Unless ``create``, a missing SQLite file is an error: SQLite would
    otherwise create an empty database, and the user would be told "not initialised" about a typo."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(
            f"{url!r} is not a database URL",
            hint="use e.g. sqlite:///notes.db or postgresql+psycopg://host/db",
        ) from exc
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:"):
        path = Path(database)
        if not create and not path.exists():
            raise ConfigurationError(f"no database file {path}", hint="check --db")
    return SyncedDatabase(url)


def open_log(url: str, *, timeout: float | None = None) -> SharedSyncLog:
    """The shared log at ``url``; ``timeout`` bounds how long unreachable Firestore is retried."""
    if timeout is None:
        return open_shared_log(url)
    from .retry import RetryPolicy

    return open_shared_log(url, retry=RetryPolicy(total_timeout=timeout, max_wait=min(10.0, timeout)))


def initialized_state(db: SyncedDatabase) -> dict[str, Any]:
    """The sync state; raises ConfigurationError when ``init`` has not run on this database."""
    state = db.state()
    if not state.get("device_id") or not state.get("log"):
        raise ConfigurationError("this database is not set up for sync", hint=NOT_INITIALIZED_HINT)
    return state


def init_database(
    db: SyncedDatabase,
    tables: Sequence[str] | None,
    *,
    user_id: str | None = None,
    log_url: str | None = None,
    new_device: bool = False,
    timeout: float | None = None,
    passphrase: Callable[[bool], str] | None = None,
) -> dict[str, Any]:
    """Enable capture on ``tables`` and register the database as a device in the log; idempotent.

    Running it again keeps the device id; omitted options keep their stored values. ``new_device``
    forgets the stored id first (for a copied database, or one whose log was reset). ``passphrase``
    turns on end-to-end encryption: it is called (with True when the log is new and the passphrase should
    be confirmed) and its answer unlocks the log's data key, or creates it on the log's first device.
    """
    state = db.state()
    user_id = user_id or state.get("user_id") or getpass.getuser()
    log_url = log_url or state.get("log")
    if not log_url:
        raise ConfigurationError("no shared log given", hint="pass --log firestore://PROJECT or --log FOLDER")
    if not tables and not (db.is_initialized() and db.synced_tables()):
        raise ConfigurationError("no tables given", hint="pass --tables TABLE[,TABLE...]")
    shared_log = open_log(log_url, timeout=timeout)
    key: DataKey | None = None
    if passphrase is not None:  # a wrong passphrase fails here, before anything is written
        record = shared_log.get_key_record(user_id=user_id)
        if record is not None:
            key = unwrap(record, passphrase(False), user_id=user_id)
        elif state.get("device_id") and not new_device:
            raise ConfigurationError(
                "this database already syncs through an unencrypted log; encryption starts with a new log",
                hint="choose a new --log (or a new root: firestore://PROJECT/ROOT) for the encrypted log",
            )
    if tables:
        db.enable_sync(list(tables))
    device_id = register_device(db, shared_log, user_id=user_id, log_url=log_url, new_device=new_device)
    if passphrase is not None:
        if key is None:
            key = create_log_key(db, shared_log, user_id=user_id, passphrase=passphrase(True))
        use_encryption(db, key)
    return {
        "device_id": device_id,
        "user_id": user_id,
        "log": log_url,
        "tables": sorted(db.synced_tables()),
        "encrypted": key is not None or db.state().get("data_key") is not None,
    }


def change_log_passphrase(db: SyncedDatabase, *, old: str, new: str, timeout: float | None = None) -> None:
    """Rewrap the data key of the encrypted log ``db`` syncs through."""
    state = initialized_state(db)
    change_passphrase(
        open_log(str(state["log"]), timeout=timeout), user_id=str(state["user_id"]), old=old, new=new
    )


def sync_database(db: SyncedDatabase, *, timeout: float | None = None, **options: Any) -> SyncSummary:
    """One full sync round through the log stored by ``init``; the outcome is recorded for ``status``."""
    state = initialized_state(db)
    return sync_and_record(db, open_log(str(state["log"]), timeout=timeout), **options)


def database_status(db: SyncedDatabase, *, set_aside_limit: int = 20) -> dict[str, Any]:
    """Device, user, log, entry counts, the newest set-aside entries and the last sync, as plain data."""
    state = initialized_state(db)
    with db.transaction(write=False) as conn:
        counts = client_log.counts(conn)
        rows = conn.execute(
            text(
                f"SELECT direction, device_id, hlc, tbl, pk, reason FROM {QUARANTINE_TABLE} "
                "ORDER BY id DESC LIMIT :n"
            ),
            {"n": set_aside_limit},
        ).all()
    names = ("direction", "device_id", "hlc", "table", "pk", "reason")
    return {
        "device_id": state.get("device_id"),
        "user_id": state.get("user_id"),
        "log": state.get("log"),
        "tables": sorted(db.synced_tables()),
        **counts,
        "set_aside_entries": [dict(zip(names, row, strict=True)) for row in rows],
        "last_sync": state.get("last_sync"),
    }


def pending_count(db: SyncedDatabase) -> int:
    """Local changes waiting to be shared (0 for a database without sync): the total of a progress bar."""
    if not db.is_initialized():
        return 0
    with db.transaction(write=False) as conn:
        return int(client_log.counts(conn)["unshared"])
