"""What each ``storex-sync`` command does, as plain functions, so the CLI only parses and prints.

Applications can call these too: ``init_database`` is "make this database a device of that user's log",
``sync_database`` is one recorded sync round, ``database_status`` the facts ``status`` shows.
"""

from __future__ import annotations

import getpass
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from . import client_log, registry, resolutions
from .capture.base import QUARANTINE_TABLE, RESOLUTIONS_TABLE
from .continuous import sync_and_record
from .database import SyncedDatabase
from .devices import change_passphrase, check_user, create_log_key, prepare_registration, remember_data_key
from .encryption import DataKey, unwrap
from .errors import ConfigurationError, SharedLogError
from .models import SyncSummary
from .shared_log import open_shared_log
from .shared_log.base import SharedSyncLog

NOT_INITIALIZED_HINT = "run 'storex-sync init --db URL --tables TABLE,... --log LOG' first"
POSTGRES_EXTRA = "pip install 'storex-sync-firestore[postgres]'"


def open_database(url: str) -> SyncedDatabase:
    """Open ``url`` (a SQLAlchemy URL) as it exists: a missing SQLite file is an error, not an empty
    database that SQLite would create (and leave behind) on a typo. A missing driver names its extra."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(
            f"{url!r} is not a database URL",
            hint="use e.g. sqlite:///notes.db or postgresql+psycopg://host/db",
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise ConfigurationError(
                f"{url!r} names an in-memory database, which is gone when the command ends",
                hint="name a file: sqlite:///notes.db",
            )
        if not Path(database).is_file():
            raise ConfigurationError(
                f"no database file {database}",
                hint="check --db; sync works on the tables of an existing database: create it and its "
                "tables with your application first",
            )
    elif backend == "postgresql":
        parsed = _postgres_driver(parsed)
    else:
        raise ConfigurationError(
            f"sync does not support {backend} databases",
            hint="use SQLite (sqlite:///FILE) or PostgreSQL (postgresql+psycopg://USER@HOST/DB)",
        )
    try:
        return SyncedDatabase(parsed.render_as_string(hide_password=False))
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"the database driver for {parsed.drivername}:// is not installed (no module {exc.name!r})",
            hint=f"{POSTGRES_EXTRA}, and use postgresql+psycopg:// URLs",
        ) from exc


def _postgres_driver(url: URL) -> URL:
    """``postgresql://`` means psycopg2 to SQLAlchemy; the ``postgres`` extra installs psycopg 3. Use that
    when it is there and psycopg2 is not, so the plain URL works after the documented install."""
    plain = url.drivername == "postgresql"
    if plain and importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg"):
        return url.set(drivername="postgresql+psycopg")
    return url


def open_log(url: str, *, timeout: float | None = None) -> SharedSyncLog:
    """The shared log at ``url``; ``timeout`` bounds how long unreachable Firestore is retried."""
    if timeout is None:
        return open_shared_log(url)
    from .retry import RetryPolicy

    return open_shared_log(url, retry=RetryPolicy(total_timeout=timeout, max_wait=min(10.0, timeout)))


def initialized_state(db: SyncedDatabase) -> dict[str, Any]:
    """The sync state; raises ConfigurationError, saying what is missing, when ``init`` has not run."""
    state = db.state()
    if state.get("device_id") and state.get("log"):
        return state
    if state.get("device_id"):  # registered from Python with a log that has no URL
        raise ConfigurationError(
            f"this database is device {state['device_id']} of user {state.get('user_id')!r}, but which "
            "shared log it syncs through is not recorded",
            hint="run 'storex-sync init --db URL --log LOG' once to record it",
        )
    if db.is_initialized() and db.synced_tables():
        raise ConfigurationError(
            f"sync is enabled on {', '.join(sorted(db.synced_tables()))}, but the database is not "
            "registered as a device of a shared log yet",
            hint="run 'storex-sync init --db URL --user USER --log LOG'",
        )
    raise ConfigurationError("this database is not set up for sync", hint=NOT_INITIALIZED_HINT)


def init_database(
    db: SyncedDatabase,
    tables: Sequence[str] | None,
    *,
    user_id: str | None = None,
    log_url: str | None = None,
    new_device: bool = False,
    switch_user: bool = False,
    timeout: float | None = None,
    passphrase: Callable[[bool], str] | None = None,
    on_conflict: str | None = None,
) -> dict[str, Any]:
    """Enable capture on ``tables`` and register the database as a device in the log; idempotent.

    All or nothing: the tables are checked and the device is registered in the log (the step that needs
    the network) before anything is written to the database; then capture and the registration are
    stored in one transaction. A failed ``init`` leaves the database as it was; run it again.

    Running it again keeps the device id; omitted options keep their stored values. ``new_device``
    forgets the stored id first (for a copied database, or one whose log was reset). A database
    registered for another user is refused unless ``switch_user`` (see ``register_device``).
    ``passphrase`` turns on end-to-end encryption: it is called (with True when the log is new and the
    passphrase should be confirmed) and its answer unlocks the log's data key, or creates it on the log's
    first device; a wrong passphrase fails before anything is written.

    ``tables`` may name ``LOCAL:NAME`` (a local table the other devices call NAME); ``on_conflict`` sets
    their unique-conflict rule. Without ``tables`` the synced tables are brought up to date with their
    schema, and entries set aside for a missing table or column are replayed.
    """
    db.check_integrity()
    state = db.state()
    user_id = user_id or state.get("user_id") or getpass.getuser()
    log_url = log_url or state.get("log")
    if not log_url:
        raise ConfigurationError("no shared log given", hint="pass --log firestore://PROJECT or --log FOLDER")
    names, shared_as = _table_names(tables or ())
    if not names and not (db.is_initialized() and db.synced_tables()):
        raise ConfigurationError("no tables given", hint="pass --tables TABLE[,TABLE...]")
    if not names:  # re-running init: bring the synced tables up to date and replay what waits
        if on_conflict is not None:
            raise ConfigurationError("--on-conflict needs --tables", hint="name the tables it is for")
        names = [t.local_name for t in db.synced_tables().values()]
    check_user(state, user_id, switch_user=switch_user)
    db.check_tables(names)
    shared_log = open_log(log_url, timeout=timeout)
    key: DataKey | None = None
    if passphrase is not None:
        record = shared_log.get_key_record(user_id=user_id)
        if record is not None:
            key = unwrap(record, passphrase(False), user_id=user_id)
        elif state.get("device_id") and not new_device and not switch_user:
            raise ConfigurationError(
                "this database already syncs through an unencrypted log; encryption starts with a new log",
                hint="choose a new --log (or a new root: firestore://PROJECT/ROOT) for the encrypted log",
            )
    try:
        registration = prepare_registration(
            db, shared_log, user_id=user_id, log_url=log_url, new_device=new_device, switch_user=switch_user
        )
        if passphrase is not None and key is None:
            key = create_log_key(
                shared_log, user_id=user_id, device_id=registration.device_id, passphrase=passphrase(True)
            )
    except SharedLogError as exc:
        if exc.transient:
            exc.hint = "check the network and run the same init again; nothing was changed in the database"
        raise
    with db.transaction() as conn:
        db.enable_sync_in(conn, names, on_conflict=on_conflict, shared_as=shared_as)
        registration.store(db, conn)
        if key is not None:
            remember_data_key(db, conn, key)
    return {
        "device_id": registration.device_id,
        "user_id": user_id,
        "log": registration.log_url,
        "tables": sorted(db.synced_tables()),
        "encrypted": db.state().get("data_key") is not None,
    }


def change_log_passphrase(db: SyncedDatabase, *, old: str, new: str, timeout: float | None = None) -> None:
    """Rewrap the data key of the encrypted log ``db`` syncs through."""
    state = initialized_state(db)
    change_passphrase(
        open_log(str(state["log"]), timeout=timeout), user_id=str(state["user_id"]), old=old, new=new
    )


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


def write_log_snapshot(db: SyncedDatabase, *, timeout: float | None = None) -> Any:
    """``storex-sync snapshot``: sync, then write a snapshot to the log stored by ``init``."""
    from .snapshot import write_snapshot

    state = initialized_state(db)
    return write_snapshot(db, open_log(str(state["log"]), timeout=timeout))


def compact_log(db: SyncedDatabase, *, timeout: float | None = None, **options: Any) -> Any:
    """``storex-sync compact``: delete what the latest snapshot covers (see ``compaction``)."""
    from .compaction import compact

    state = initialized_state(db)
    return compact(db, open_log(str(state["log"]), timeout=timeout), **options)


def shared_log_status(db: SyncedDatabase, *, timeout: float | None = None) -> dict[str, Any]:
    """The shared log's size, latest snapshot and devices for ``status``; ``error`` if unreachable."""
    from .errors import SyncError
    from .log_status import log_status

    state = initialized_state(db)
    try:
        return log_status(db, open_log(str(state["log"]), timeout=timeout))
    except SyncError as exc:  # unreachable, no credentials...: status still shows the database's side
        return {"error": str(exc)}


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


def explain_database_error(exc: Exception) -> str:
    """One line for a SQLAlchemy error: what the database said, and a hint that fits that database."""
    cause = getattr(exc, "orig", None) or exc
    said = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    module = type(cause).__module__.split(".")[0]
    if module == "sqlite3":
        lowered = said.lower()
        if "locked" in lowered or "busy" in lowered:
            hint = "another program kept a write lock on the file for 30 s; try again when it has finished"
        elif "readonly" in lowered or "read-only" in lowered:
            hint = "the file or its folder is read-only for this user; sync needs to write to both"
        elif "unable to open" in lowered:
            hint = "check that the file and its folder exist and that this user may read and write them"
        elif "not a database" in lowered or "malformed" in lowered:
            hint = "check --db: the file is not a SQLite database, or is damaged (restore it from a backup)"
        else:
            hint = "check --db: it must name a SQLite file that this user can read and write"
        return f"SQLite error: {said}; {hint}"
    if module in ("psycopg", "psycopg2"):
        hint = "check --db (host, port, user, database name) and that the PostgreSQL server is running"
        return f"PostgreSQL error: {said}; {hint}"
    return f"database error: {said}; check --db"
