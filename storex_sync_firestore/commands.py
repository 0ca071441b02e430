"""What each ``storex-sync`` command does, as plain functions, so the CLI only parses and prints.

Applications can call these too: ``init_database`` is "make this database a device of that user's log",
``sync_database`` is one recorded sync round, ``database_status`` the facts ``status`` shows.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from . import client_log, registry, resolutions
from .capture.base import QUARANTINE_TABLE, RESOLUTIONS_TABLE
from .continuous import sync_and_record
from .database import SyncedDatabase
from .devices import register_device
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
    on_conflict: str | None = None,
) -> dict[str, Any]:
    """Enable capture on ``tables`` and register the database as a device in the log; idempotent.

    Running it again keeps the device id; omitted options keep their stored values. Without ``tables``
    the synced tables are brought up to date with their schema, and entries set aside for a missing
    table or column are replayed. ``new_device`` forgets the stored id first (for a copied database, or
    one whose log was reset). ``on_conflict`` sets the unique-conflict rule of ``tables``.
    """
    state = db.state()
    user_id = user_id or state.get("user_id") or getpass.getuser()
    log_url = log_url or state.get("log")
    if not log_url:
        raise ConfigurationError("no shared log given", hint="pass --log firestore://PROJECT or --log FOLDER")
    if not tables and not (db.is_initialized() and db.synced_tables()):
        raise ConfigurationError("no tables given", hint="pass --tables TABLE[,TABLE...]")
    shared_log = open_log(log_url, timeout=timeout)
    if tables:
        names, shared_as = _table_names(tables)
        db.enable_sync(names, on_conflict=on_conflict, shared_as=shared_as)
    else:
        if on_conflict is not None:
            raise ConfigurationError("--on-conflict needs --tables", hint="name the tables it is for")
        db.enable_sync([t.local_name for t in db.synced_tables().values()])
    device_id = register_device(db, shared_log, user_id=user_id, log_url=log_url, new_device=new_device)
    return {"device_id": device_id, "user_id": user_id, "log": log_url, "tables": sorted(db.synced_tables())}


def _table_names(tables: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``LOCAL`` or ``LOCAL:NAME`` (a table the other devices know as NAME): local names and the mapping."""
    names: list[str] = []
    shared_as: dict[str, str] = {}
    for item in tables:
        local, _, shared = item.partition(":")
        names.append(local)
        if shared:
            shared_as[local] = shared
    return names, shared_as


def disable_tables(db: SyncedDatabase, tables: Sequence[str]) -> list[str]:
    """Switch capture off on ``tables``; ``init --tables`` switches it on again."""
    initialized_state(db)
    return db.disable_sync(list(tables))


def sync_database(db: SyncedDatabase, *, timeout: float | None = None, **options: Any) -> SyncSummary:
    """One full sync round through the log stored by ``init``; the outcome is recorded for ``status``."""
    state = initialized_state(db)
    return sync_and_record(db, open_log(str(state["log"]), timeout=timeout), **options)


def database_status(
    db: SyncedDatabase, *, set_aside_limit: int = 20, resolutions_limit: int = 10
) -> dict[str, Any]:
    """Device, user, log, entry counts, the newest set-aside entries and constraint resolutions, tables
    whose capture is off, and the last sync, as plain data."""
    state = initialized_state(db)
    with db.transaction(write=False) as conn:
        counts = client_log.counts(conn)
        known = registry.load(conn)
        has_record = db.dialect.table_exists(conn, RESOLUTIONS_TABLE)
        resolved = resolutions.count(conn) if has_record else 0
        recent = resolutions.recent(conn, resolutions_limit) if has_record else []
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
        "disabled_tables": sorted(n for n, r in known.items() if r.disabled),
        "resolved": resolved,
        "resolutions": recent,
        "last_sync": state.get("last_sync"),
    }


def pending_count(db: SyncedDatabase) -> int:
    """Local changes waiting to be shared (0 for a database without sync): the total of a progress bar."""
    if not db.is_initialized():
        return 0
    with db.transaction(write=False) as conn:
        return int(client_log.counts(conn)["unshared"])
