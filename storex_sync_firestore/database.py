"""A database with sync enabled: its capture dialect, its synced tables and its sync state.

``SyncedDatabase`` is what the rest of the package holds: ``enable_sync`` installs capture on tables, and
the state table remembers the device id, user and shared log, so a CLI run or an application restart
picks up where the last sync ended.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from . import client_log, quarantine
from .capture import CaptureDialect, TableInfo, capture_for
from .capture.base import STATE_TABLE, SYNC_SCHEMA_VERSION, TABLES_TABLE
from .clock import HybridLogicalClock, wall_clock_ms
from .encryption import DataKey
from .errors import ConfigurationError, DamagedDatabaseError
from .signing import DeviceKey


class SyncedDatabase:
    """An application database (SQLAlchemy URL or Engine) whose tables are kept in sync."""

    def __init__(self, db: str | Engine) -> None:
        self.engine = create_engine(db) if isinstance(db, str) else db
        self.dialect: CaptureDialect = capture_for(self.engine)
        self._tables: dict[str, TableInfo] | None = None

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Connection]:
        """One transaction on the database (SQLite: ``BEGIN IMMEDIATE`` when writing)."""
        with self.dialect.transaction(write=write) as conn:
            yield conn

    def enable_sync(self, tables: Sequence[str]) -> list[TableInfo]:
        """Install capture on ``tables``. Idempotent; rows already present are logged as creates once.

        Entries set aside earlier because a table or column was not synced here are tried again.

        Raises ``UnsuitableTableError`` (and changes nothing) if any table cannot be synced, for example
        because its key is an auto-incremented integer.
        """
        with self.transaction() as conn:
            return self.enable_sync_in(conn, tables)

    def enable_sync_in(self, conn: Connection, tables: Sequence[str]) -> list[TableInfo]:
        """``enable_sync`` inside the caller's write transaction, so that ``init`` can install capture and
        record the device registration in one commit: a failed ``init`` leaves nothing half set up."""
        self.dialect.create_sync_tables(conn)
        self.set_state(conn, "sync_schema", SYNC_SCHEMA_VERSION)
        known = self._load_tables(conn)
        infos = [self.dialect.reflect_table(conn, name) for name in tables]
        for info in infos:
            self.dialect.install_triggers(conn, info)
            if info.name not in known:
                self.dialect.capture_existing_rows(conn, info)
            conn.execute(text(f"DELETE FROM {TABLES_TABLE} WHERE name = :n"), {"n": info.name})
            conn.execute(
                text(f"INSERT INTO {TABLES_TABLE} (name, info) VALUES (:n, :i)"),
                {"n": info.name, "i": json.dumps(info.as_json())},
            )
        # Entries set aside because this database lacked a table or column may fit now: back they go.
        ids, entries = quarantine.replayable(conn, self._load_tables(conn), self.dialect)
        client_log.insert_received(conn, entries, wall_clock_ms())
        quarantine.forget(conn, ids)
        self._tables = None
        return infos

    def check_tables(self, tables: Sequence[str]) -> None:
        """Raise ``UnsuitableTableError`` if any of ``tables`` cannot be synced; writes nothing.

        ``init`` asks this before it registers a device in the shared log, so that a table it would refuse
        does not leave a device record behind in the log.
        """
        with self.transaction(write=False) as conn:
            for name in tables:
                self.dialect.reflect_table(conn, name)

    def share_all_rows_again(self, conn: Connection) -> None:
        """Log every row of every synced table as a create once more (a database that moves to another
        user's log: what it shared in the old log is not in the new one)."""
        for info in self._load_tables(conn).values():
            self.dialect.capture_existing_rows(conn, info)

    def check_integrity(self) -> None:
        """Raise ``DamagedDatabaseError`` if SQLite reports the file damaged (``PRAGMA quick_check``, about
        a millisecond per megabyte); other databases guard their own storage.

        Sync asks before it writes anything, and again after a failure (before recording it), so a damaged
        file is never written to by sync, not even with the record of its own failure.
        """
        if self.engine.dialect.name != "sqlite":
            return
        where = self.engine.url.database or "the database"
        try:
            with self.engine.connect() as conn:
                problems = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check(5)")]
        except DBAPIError as exc:
            if "file is not a database" not in str(exc) and "malformed" not in str(exc):
                raise
            problems = [str(exc.orig)]
        if problems != ["ok"]:
            raise DamagedDatabaseError(
                f"{where} is damaged or not a SQLite database: {'; '.join(problems)}",
                hint=f"sync wrote nothing to it; restore it from a backup, or rescue what is readable with "
                f"sqlite3 {where} .recover | sqlite3 repaired.db",
            )

    def disable_sync(self, tables: Sequence[str] | None = None) -> None:
        """Remove capture from ``tables`` (default: all). The tables and their data stay as they are."""
        with self.transaction() as conn:
            names = list(self._load_tables(conn)) if tables is None else list(tables)
            for name in names:
                self.dialect.drop_triggers(conn, name)
                conn.execute(text(f"DELETE FROM {TABLES_TABLE} WHERE name = :n"), {"n": name})
        self._tables = None

    def upgrade(self) -> None:
        """Bring the sync tables of a database set up by an older version up to date (cheap when current)."""
        with self.transaction() as conn:
            if int(self.get_state(conn, "sync_schema") or 0) < SYNC_SCHEMA_VERSION:
                self.dialect.create_sync_tables(conn)
                self.set_state(conn, "sync_schema", SYNC_SCHEMA_VERSION)

    def is_initialized(self) -> bool:
        """True once ``enable_sync`` has run on this database."""
        from sqlalchemy import inspect

        return inspect(self.engine).has_table(STATE_TABLE)

    def synced_tables(self, conn: Connection | None = None) -> dict[str, TableInfo]:
        """The synced tables by name, as reflected when sync was enabled (cached).

        Inside a transaction, pass its ``conn``: a second connection could wait on the first's lock.
        """
        if self._tables is None:
            if conn is not None:
                self._tables = self._load_tables(conn)
            else:
                with self.transaction(write=False) as own:
                    self._tables = self._load_tables(own)
        return self._tables

    @staticmethod
    def _load_tables(conn: Connection) -> dict[str, TableInfo]:
        rows = conn.execute(text(f"SELECT name, info FROM {TABLES_TABLE} ORDER BY name")).all()
        return {name: TableInfo.from_json(name, json.loads(info)) for name, info in rows}

    # --- sync state: device id, user, log, clock ---------------------------------------------------

    @staticmethod
    def get_state(conn: Connection, key: str) -> Any:
        raw = conn.execute(text(f"SELECT value FROM {STATE_TABLE} WHERE key = :k"), {"k": key}).scalar()
        return None if raw is None else json.loads(raw)

    @staticmethod
    def set_state(conn: Connection, key: str, value: Any) -> None:
        conn.execute(text(f"DELETE FROM {STATE_TABLE} WHERE key = :k"), {"k": key})
        conn.execute(
            text(f"INSERT INTO {STATE_TABLE} (key, value) VALUES (:k, :v)"),
            {"k": key, "v": json.dumps(value)},
        )

    def state(self) -> dict[str, Any]:
        """All sync state as a dict (device_id, user_id, log, clock, last_sync ...)."""
        if not self.is_initialized():
            return {}
        with self.transaction(write=False) as conn:
            rows = conn.execute(text(f"SELECT key, value FROM {STATE_TABLE}")).all()
        return {k: json.loads(v) for k, v in rows}

    def update_state(self, **values: Any) -> None:
        with self.transaction() as conn:
            for key, value in values.items():
                self.set_state(conn, key, value)

    def device_id(self, conn: Connection) -> str:
        """This database's device id; raises with a hint when ``init`` has not registered one."""
        device_id = self.get_state(conn, "device_id")
        if not device_id:
            raise ConfigurationError(
                "this database has no sync device id yet",
                hint="run 'storex-sync init' (or register_device()) first",
            )
        return str(device_id)

    def signing_key(self, conn: Connection) -> DeviceKey:
        """This device's signing key; raises with a hint when the device was registered without one."""
        seed = self.get_state(conn, "signing_key")
        if not seed:
            raise ConfigurationError(
                "this database has no signing key: it was registered by an older storex-sync",
                hint="run 'storex-sync init --db URL' (or register_device()) once to re-register it",
            )
        return DeviceKey.from_hex(str(seed))

    def data_key(self, conn: Connection) -> DataKey | None:
        """The encrypted log's data key this device holds, or None when its log is not encrypted."""
        hexed = self.get_state(conn, "data_key")
        return DataKey.from_hex(str(hexed)) if hexed else None

    def load_clock(self, conn: Connection, clock: HybridLogicalClock) -> HybridLogicalClock:
        """Restore the persisted clock position into ``clock`` (which carries the time source)."""
        clock.last = max(clock.last, int(self.get_state(conn, "clock") or 0))
        return clock

    def save_clock(self, conn: Connection, clock: HybridLogicalClock) -> None:
        self.set_state(conn, "clock", clock.last)
