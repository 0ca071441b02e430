"""A database with sync enabled: its capture dialect, its synced tables and its sync state.

``SyncedDatabase`` is what the rest of the package holds: ``enable_sync`` installs capture on tables, and
the state table remembers the device id, user and shared log, so a CLI run or an application restart
picks up where the last sync ended.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text

from . import client_log, registry
from .capture import CaptureDialect, TableInfo, capture_for
from .capture.base import STATE_TABLE, SYNC_SCHEMA_VERSION
from .clock import HybridLogicalClock, wall_clock_ms
from .encryption import DataKey
from .errors import ConfigurationError
from .policy import OnConflict, TableRules, check_rules, rules_for
from .schema import TOKEN_KEY, adapt_table, replay
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

    def enable_sync(
        self,
        tables: Sequence[str],
        *,
        on_conflict: OnConflict | None = None,
        shared_as: Mapping[str, str] | None = None,
    ) -> list[TableInfo]:
        """Install capture on ``tables``. Idempotent; rows already present are logged as creates once.

        ``on_conflict`` says what happens to the later of two rows claiming the same unique value:
        ``"delete-later"`` (the default), ``"clear-later"`` (its unique columns become NULL) or an
        importable function (see ``policy.UniqueConflict``). It is stored with the table, declared in the
        shared log, and must be the same on every device of the log; omitted, the stored rules stay.
        ``shared_as`` maps a local table name to the name the other devices know it by (a table renamed
        before this database joined). A table registered before (its capture switched off, or changed
        since) is brought up to date: its history continues, nothing is logged twice. Entries set aside
        earlier because a table or column was missing here are tried again.

        Raises ``UnsuitableTableError`` (and changes nothing) if any table cannot be synced, for example
        because its key is an auto-incremented integer.
        """
        with self.transaction() as conn:
            return self.enable_sync_in(conn, tables, on_conflict=on_conflict, shared_as=shared_as)

    def enable_sync_in(
        self,
        conn: Connection,
        tables: Sequence[str],
        *,
        on_conflict: OnConflict | None = None,
        shared_as: Mapping[str, str] | None = None,
    ) -> list[TableInfo]:
        """``enable_sync`` inside the caller's write transaction, so that ``init`` can install capture and
        record the device registration in one commit: a failed ``init`` leaves nothing half set up."""
        names = dict(shared_as or {})
        self.dialect.create_sync_tables(conn)
        self.set_state(conn, "sync_schema", SYNC_SCHEMA_VERSION)
        known = registry.load(conn)
        by_local = {r.info.local_name: r for r in known.values()}
        device_id = self.get_state(conn, "device_id")
        now = wall_clock_ms()
        infos: list[TableInfo] = []
        for local in tables:
            entry = known.get(names.get(local, local)) or by_local.get(local)
            if entry is None:
                reflected = self.dialect.reflect_table(conn, local)
                info = TableInfo(
                    names.get(local, local), reflected.columns, reflected.pk,
                    reflected.foreign_keys, reflected.unique, local,
                )  # fmt: skip
                rules = rules_for(on_conflict or "delete-later")
                check_rules(info, rules)
                self.dialect.install_triggers(conn, info)
                self.dialect.capture_existing_rows(conn, info)
            else:
                info, _changes = adapt_table(conn, self.dialect, entry.info, device_id=device_id, now_ms=now)
                rules = entry.rules if on_conflict is None else rules_for(on_conflict)
                check_rules(info, rules)
                self.dialect.install_triggers(conn, info)
            registry.store(conn, registry.Registered(info, rules))
            infos.append(info)
        # Entries set aside because this database lacked a table or column may fit now: back they go.
        replay(conn, self.dialect, now)
        self.set_state(conn, TOKEN_KEY, self.dialect.schema_token(conn))
        self._tables = None
        return infos

    def check_tables(self, tables: Sequence[str]) -> None:
        """Raise ``UnsuitableTableError`` if any of ``tables`` cannot be synced; writes nothing.

        ``init`` asks this before it registers a device in the shared log, so that a table it would refuse
        does not leave a device record behind in the log.
        """
        with self.transaction(write=False) as conn:
            known = (
                {r.info.local_name for r in registry.load(conn).values()} if self.is_initialized() else set()
            )
            for name in tables:
                if name not in known:  # a registered table is brought up to date instead (enable_sync)
                    self.dialect.reflect_table(conn, name)

    def share_all_rows_again(self, conn: Connection) -> None:
        """Log every row of every synced table as a create once more (a database that moves to another
        user's log: what it shared in the old log is not in the new one)."""
        for info in registry.enabled(conn).values():
            self.dialect.capture_existing_rows(conn, info)

    def check_integrity(self) -> None:
        """Raise ``DamagedDatabaseError`` if the database reports its storage damaged (the dialect's
        ``check_storage``: SQLite's ``PRAGMA quick_check``, about a millisecond per megabyte; a server
        guards its own storage).

        Sync asks before it writes anything, and again after a failure (before recording it), so a damaged
        file is never written to by sync, not even with the record of its own failure.
        """
        self.dialect.check_storage()

    def disable_sync(self, tables: Sequence[str] | None = None) -> list[str]:
        """Switch capture off on ``tables`` (default: all); returns their names in the log.

        Nothing is lost: the tables and their data stay, changes captured so far are logged (and shared by
        the next sync), and the table stays registered, so that enabling it again continues its history.
        Received entries for it wait, set aside, until then. Writes made while capture is off are not
        captured: change a table's schema with :meth:`migrate` instead, which keeps capture on.
        """
        with self.transaction() as conn:
            known = registry.load(conn)
            by_local = {r.info.local_name: r for r in known.values()}
            chosen = list(known.values()) if tables is None else []
            for name in tables or ():
                entry = known.get(name) or by_local.get(name)
                if entry is None:
                    raise ConfigurationError(
                        f"table {name!r} is not synced here",
                        hint=f"synced tables: {', '.join(known) or 'none'}",
                    )
                chosen.append(entry)
            self._stamp(conn)
            for entry in chosen:
                self.dialect.drop_triggers(conn, entry.info)
                registry.store(conn, registry.Registered(entry.info, entry.rules, disabled=True))
            self.set_state(conn, TOKEN_KEY, self.dialect.schema_token(conn))
        self._tables = None
        return [entry.info.name for entry in chosen]

    @contextmanager
    def migrate(self, tables: Sequence[str] | None = None) -> Iterator[Connection]:
        """Change synced tables' schema without losing a change: ``with db.migrate() as conn:
        conn.exec_driver_sql("ALTER TABLE ...")``.

        One transaction: pending changes are logged, the capture triggers are lifted (SQLite refuses to
        drop a column they name), your statements run, and sync adapts as it would at the start of a sync
        (new columns captured and shared, renames followed) before capture is back, so that no write
        of any other session falls between. ``tables`` (default: all synced) are the ones you change.
        Rename a table with a plain ``ALTER TABLE ... RENAME`` instead: sync finds it by its triggers.
        """
        with self.transaction() as conn:
            known = {n: r for n, r in registry.load(conn).items() if not r.disabled}
            chosen = [
                r for r in known.values() if tables is None or {r.info.name, r.info.local_name} & set(tables)
            ]
            self._stamp(conn)
            for entry in chosen:
                self.dialect.drop_triggers(conn, entry.info)
            yield conn
            device_id = self.get_state(conn, "device_id")
            for entry in chosen:
                info, _changes = adapt_table(
                    conn, self.dialect, entry.info, device_id=device_id, now_ms=wall_clock_ms()
                )
                self.dialect.install_triggers(conn, info)
                registry.store(conn, entry.with_info(info))
            replay(conn, self.dialect, wall_clock_ms())
            self.set_state(conn, TOKEN_KEY, self.dialect.schema_token(conn))
        self._tables = None

    def _stamp(self, conn: Connection) -> None:
        """Log what capture holds before the triggers change (a device without an id has nothing yet)."""
        device_id = self.get_state(conn, "device_id")
        if device_id:
            clock = self.load_clock(conn, HybridLogicalClock())
            client_log.stamp_pending(conn, self.dialect, registry.enabled(conn), clock, str(device_id))
            self.save_clock(conn, clock)

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
        """The synced tables (capture on) by their name in the log, as the registry has them (cached).

        Inside a transaction, pass its ``conn``: a second connection could wait on the first's lock.
        """
        if self._tables is None:
            if conn is not None:
                self._tables = registry.enabled(conn)
            else:
                with self.transaction(write=False) as own:
                    self._tables = registry.enabled(own)
        return self._tables

    def forget_tables(self) -> None:
        """Drop the cached registry (after the schema check changed it)."""
        self._tables = None

    @staticmethod
    def table_rules(conn: Connection) -> dict[str, TableRules]:
        """The conflict rules of the synced tables."""
        return {name: r.rules for name, r in registry.load(conn).items() if not r.disabled}

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
