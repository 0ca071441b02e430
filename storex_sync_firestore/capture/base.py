"""The capture contract: what a database dialect provides so that changes are logged inside the database.

Capture lives in the database: triggers on every synced table write each insert, update and delete into
``_sync_capture`` in the same transaction as the change, whoever writes it. A dialect knows how to create
the sync tables, install and drop those triggers, silence them while remote changes are applied, open the
kind of transaction sync needs, and turn decoded values into what its columns hold. The rest of the
package speaks only to this interface, so SQLite and PostgreSQL sit side by side.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Connection, Engine, text

from ..codec import dumps, loads
from ..models import Json

ValueKind = Literal[
    "any",
    "bool",
    "int",
    "float",
    "text",
    "bytes",
    "date",
    "datetime",
    "datetime_tz",
    "decimal",
    "uuid",
    "json",
]

LOG_TABLE = "_sync_log"
CAPTURE_TABLE = "_sync_capture"
STATE_TABLE = "_sync_state"
TABLES_TABLE = "_sync_tables"
QUARANTINE_TABLE = "_sync_quarantine"
OUTBOX_TABLE = "_sync_outbox"
RESOLUTIONS_TABLE = "_sync_resolutions"
SYNC_TABLES = (
    LOG_TABLE, CAPTURE_TABLE, STATE_TABLE, TABLES_TABLE, QUARANTINE_TABLE, OUTBOX_TABLE, RESOLUTIONS_TABLE
)  # fmt: skip
SYNC_SCHEMA_VERSION = 3
"""Bumped when a sync table is added or changed; databases set up by older versions are brought up to
date (idempotently) at the start of the next sync."""


def sync_tables_ddl(*, serial: str, bigint: str, key_text: str, blob: str) -> list[str]:
    """The sync tables every dialect shares (the capture table is each dialect's own), as statements.

    ``serial`` is the auto-numbered primary key, ``bigint`` a 64-bit integer, ``key_text`` the type of the
    columns ``(tbl, pk)`` that cleanup and reconciliation group and compare by, ``blob`` a byte string.
    """
    return [
        f"""CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
            seq {serial},
            device_id TEXT NOT NULL,
            hlc {bigint} NOT NULL,
            tbl {key_text} NOT NULL,
            pk {key_text} NOT NULL,
            op TEXT NOT NULL,
            value TEXT,
            shared_on {bigint} NOT NULL DEFAULT 0,
            upload_batch TEXT,
            needs_integration INTEGER NOT NULL DEFAULT 0,
            UNIQUE (device_id, hlc)
        )""",
        f"CREATE INDEX IF NOT EXISTS {LOG_TABLE}_object ON {LOG_TABLE} (tbl, pk)",
        f"CREATE INDEX IF NOT EXISTS {LOG_TABLE}_pending ON {LOG_TABLE} (seq) WHERE needs_integration = 1",
        f"CREATE INDEX IF NOT EXISTS {LOG_TABLE}_unshared ON {LOG_TABLE} (hlc) WHERE shared_on = 0",
        f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (key TEXT PRIMARY KEY, value TEXT)",
        f"CREATE TABLE IF NOT EXISTS {TABLES_TABLE} (name TEXT PRIMARY KEY, info TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS {QUARANTINE_TABLE} (
            id {serial},
            direction TEXT NOT NULL,
            device_id TEXT,
            hlc {bigint},
            tbl TEXT,
            pk TEXT,
            payload TEXT,
            reason TEXT NOT NULL,
            created_ms {bigint} NOT NULL,
            replayable INTEGER NOT NULL DEFAULT 0
        )""",
        # Batches planned for upload, exactly as they will be sent (signed, compressed): a resumed upload
        # sends these bytes again, so it is the same document under the same id on every backend.
        f"""CREATE TABLE IF NOT EXISTS {OUTBOX_TABLE} (
            seq {serial},
            batch_id TEXT NOT NULL UNIQUE,
            first_hlc {bigint} NOT NULL,
            last_hlc {bigint} NOT NULL,
            header TEXT NOT NULL,
            payload {blob} NOT NULL
        )""",
        resolutions_ddl(serial=serial, bigint=bigint),
    ]


def resolutions_ddl(*, serial: str, bigint: str) -> str:
    """The record of constraint resolutions, for ``status``."""
    return f"""CREATE TABLE IF NOT EXISTS {RESOLUTIONS_TABLE} (
            id {serial},
            created_ms {bigint} NOT NULL,
            tbl TEXT NOT NULL,
            pk TEXT NOT NULL,
            rule TEXT NOT NULL,
            detail TEXT NOT NULL
        )"""


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """A synced column: its name, declared type and the value kind the codec uses for it."""

    name: str
    type: str
    kind: ValueKind = "any"
    nullable: bool = True


OnDelete = Literal["cascade", "set null", "set default", "restrict", "no action"]


@dataclass(frozen=True, slots=True)
class ForeignKey:
    """A foreign key of a synced table: its columns, the table they point to (its local name) and what
    the schema says happens to a child row when its parent is deleted."""

    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    on_delete: OnDelete = "no action"

    def as_json(self) -> list[Any]:
        return [list(self.columns), self.parent, list(self.parent_columns), self.on_delete]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> ForeignKey:
        columns, parent, parent_columns, on_delete = data
        return cls(tuple(columns), str(parent), tuple(parent_columns), on_delete)


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A synced table as reflected when sync was enabled. The only source of names that reach SQL.

    ``name`` is the table's name in the shared log, the same on every device; ``local_name`` is what this
    database calls it (they differ after a local ``ALTER TABLE ... RENAME``, which sync follows). Foreign
    keys and unique column sets are kept so that reconciliation can apply the constraint rules.
    """

    name: str
    columns: tuple[ColumnInfo, ...]
    pk: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()
    """Column sets the database keeps unique, besides the key (plain columns, no partial indexes)."""
    local_name: str = ""
    """The table's name in this database (empty: the same as ``name``)."""
    dropped: tuple[str, ...] = field(default=(), compare=False)
    """Columns this table no longer has (or never had) that a device dropped: their values in incoming
    entries are accepted and never written. Registry state, not reflected."""
    value_columns: tuple[ColumnInfo, ...] = field(init=False, repr=False, compare=False)
    """Columns outside the primary key: the ones a create or modify entry carries."""
    pk_columns: tuple[ColumnInfo, ...] = field(init=False, repr=False, compare=False)
    """The key's columns, in key order."""

    def __post_init__(self) -> None:
        # Computed once: the apply and validate stages ask for these for every entry.
        by_name = {c.name: c for c in self.columns}
        object.__setattr__(self, "value_columns", tuple(c for c in self.columns if c.name not in self.pk))
        object.__setattr__(self, "pk_columns", tuple(by_name[name] for name in self.pk))
        if not self.local_name:
            object.__setattr__(self, "local_name", self.name)

    @property
    def sql_name(self) -> str:
        """The quoted local name, for SQL."""
        return quote(self.local_name)

    def column(self, name: str) -> ColumnInfo | None:
        return next((c for c in self.columns if c.name == name), None)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "columns": [[c.name, c.type, c.kind, c.nullable] for c in self.columns],
            "pk": list(self.pk),
            "foreign_keys": [fk.as_json() for fk in self.foreign_keys],
            "unique": [list(u) for u in self.unique],
        }
        if self.local_name != self.name:
            data["local_name"] = self.local_name
        if self.dropped:
            data["dropped"] = list(self.dropped)
        return data

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> TableInfo:
        """Read a registry entry; entries written before constraints were kept simply have none."""
        columns = tuple(ColumnInfo(n, t, k, bool(nullable)) for n, t, k, nullable in data["columns"])
        return cls(
            name,
            columns,
            tuple(data["pk"]),
            tuple(ForeignKey.from_json(fk) for fk in data.get("foreign_keys", ())),
            tuple(tuple(u) for u in data.get("unique", ())),
            str(data.get("local_name") or name),
            tuple(data.get("dropped", ())),
        )

    def with_dropped(self, dropped: tuple[str, ...]) -> TableInfo:
        return TableInfo(
            self.name, self.columns, self.pk, self.foreign_keys, self.unique, self.local_name, dropped
        )


@dataclass(frozen=True, slots=True)
class Captured:
    """One captured change, read back for stamping: key and values already in wire encoding (JSON text)."""

    seq: int
    table: str
    pk: str
    op: str
    value: str | None
    wall_ms: int


def _canonical(text: str) -> str:
    """JSON text as the one encoder writes it: what is logged is the bytes every device will compare."""
    return dumps(loads(text))


def quote(identifier: str) -> str:
    """Quote an SQL identifier (both dialects use double quotes, doubled inside)."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """Quote an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


class CaptureDialect(ABC):
    """One database family's capture, silencing, transactions and value conversion."""

    name: str

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @abstractmethod
    def create_sync_tables(self, conn: Connection) -> None:
        """Create the ``_sync_*`` tables if missing (idempotent)."""

    @abstractmethod
    def reflect_table(self, conn: Connection, name: str) -> TableInfo:
        """Read a table's columns, key, foreign keys and unique columns; raise ``UnsuitableTableError``
        if it cannot be synced. ``name`` is the local name; the caller renames it for the log if needed."""

    @abstractmethod
    def install_triggers(self, conn: Connection, table: TableInfo) -> None:
        """Install (or replace) the capture triggers of ``table``."""

    @abstractmethod
    def drop_triggers(self, conn: Connection, table: TableInfo) -> None:
        """Remove the capture triggers of ``table``; the table and its data stay untouched."""

    @abstractmethod
    def table_exists(self, conn: Connection, local_name: str) -> bool:
        """Is there a table of that name (what ``reflect_table`` would find)?"""

    @abstractmethod
    def find_renamed(self, conn: Connection, table: TableInfo) -> str | None:
        """The local name of the table that now carries ``table``'s capture triggers, if it was renamed.

        Both databases keep a table's triggers through ``ALTER TABLE ... RENAME TO``, so this finds it.
        """

    @abstractmethod
    def schema_token(self, conn: Connection) -> str:
        """A cheap value that changes whenever the schema of this database may have changed."""

    def key_columns(self, table: TableInfo, alias: str) -> list[str]:
        """SQL expressions reading the key of row ``alias`` of ``table``, for :meth:`key_from_row`."""
        return [f"{alias}.{quote(c)}" for c in table.pk]

    @abstractmethod
    def key_from_row(self, table: TableInfo, values: Sequence[Any]) -> str:
        """The key as the client log stores it (wire-encoded JSON text, the way capture encodes it) of a
        row whose key was read with :meth:`key_columns`."""

    @abstractmethod
    def log_new_column_values(self, conn: Connection, table: TableInfo, columns: Sequence[str]) -> int:
        """Capture, as modifies, the values of newly added ``columns`` that differ from their default.

        Values written after ``ALTER TABLE ... ADD COLUMN`` and before sync noticed it were not captured
        (the triggers did not know the column); rows that only hold the default need no entry, since a
        device that adds the column the same way holds that default too. Returns rows captured.
        """

    @abstractmethod
    def capture_existing_rows(self, conn: Connection, table: TableInfo) -> None:
        """Log every row already in ``table`` as a create, so existing data reaches the other devices."""

    def read_captured(
        self, conn: Connection, after: int, limit: int, tables: Mapping[str, TableInfo]
    ) -> tuple[list[int], list[Captured]]:
        """Up to ``limit`` captured rows after seq ``after``, in capture order.

        Returns the seqs read (the caller deletes exactly those) and the changes to log, which may be fewer:
        a dialect may drop a row that needs no entry. A dialect whose triggers store values at capture time
        just reads them (this default); SQLite's triggers store only keys, and it reads values here, off
        the application's write path.
        """
        rows = conn.execute(
            text(
                f"SELECT seq, tbl, pk, op, value, wall_ms FROM {CAPTURE_TABLE} WHERE seq > :after "
                "ORDER BY seq LIMIT :limit"
            ),
            {"after": after, "limit": limit},
        ).all()
        # Keys are compared as text across devices and dialects: store them canonical.
        captured = [
            Captured(
                int(r[0]), r[1], _canonical(r[2]), r[3], None if r[4] is None else _canonical(r[4]), int(r[5])
            )
            for r in rows
        ]
        return [c.seq for c in captured], captured

    def forget_captured(self, conn: Connection, seqs: Sequence[int]) -> None:
        """Delete captured rows once they are logged.

        Exactly the rows read: on a server database another transaction may commit a lower seq meanwhile,
        and a range delete would drop that change unlogged.
        """
        conn.execute(text(f"DELETE FROM {CAPTURE_TABLE} WHERE seq = :s"), [{"s": s} for s in seqs])

    @abstractmethod
    def silence(self, conn: Connection) -> None:
        """Silence capture for the rest of the current transaction (remote changes are being applied)."""

    @abstractmethod
    def unsilence(self, conn: Connection) -> None:
        """Undo :meth:`silence` before the transaction commits."""

    @contextmanager
    @abstractmethod
    def transaction(self, *, write: bool = True) -> Iterator[Connection]:
        """A connection inside one transaction that commits on success and rolls back on error."""

    @abstractmethod
    def to_db(self, column: ColumnInfo, value: Any) -> Any:
        """Turn a decoded wire value into the parameter ``column`` should receive.

        Raise ``ValueError`` when the column cannot hold the value: the entry is set aside, never altered.
        """

    def check_storage(self) -> None:  # noqa: B027 - optional hook: a server guards its own storage
        """Raise ``DamagedDatabaseError`` if the database reports its storage damaged (default: nothing
        to check). Sync asks before it writes, so that it never writes to a damaged file."""

    def check_constraints_immediately(self, conn: Connection) -> None:  # noqa: B027 - optional hook
        """Make deferred constraints checked at each statement for the rest of the transaction, so that a
        row the schema refuses is refused while it can still be set aside (default: nothing to do)."""

    @abstractmethod
    def canonical_key(self, column: ColumnInfo, value: Json) -> Json:
        """A received key value in the wire form this database's own capture gives the row it names.

        Two entries for one row must be one object in the client log, whatever JSON type a key arrived
        in. Raise ``ValueError`` (or ``InvalidEntryError``) when ``column`` cannot hold the value.
        """

    def lock_rows(  # noqa: B027 - optional hook: most dialects have nothing to lock
        self, conn: Connection, table: TableInfo, pks: Sequence[Sequence[Any]]
    ) -> None:
        """Lock the rows about to be reconciled until the transaction ends (default: nothing to do).

        SQLite's sync transaction already holds the database's only write lock. A server database locks
        just these rows, so that a concurrent application write either commits (and is captured) before
        the reconciler reads its history, or waits until the sync transaction is done.
        """

    def upsert_sql(self, table: TableInfo, columns: Sequence[str]) -> str:
        """:meth:`upsert` with named parameters ``:p0, :p1, ...`` (key columns first)."""
        return self.upsert(table, columns, [f":p{i}" for i in range(len(table.pk) + len(columns))])

    # ---- SQL fragments that differ between databases (the defaults are what SQLite and PostgreSQL
    # both accept); the rest of the package writes no such SQL itself. Class methods, so that code
    # holding only a connection can ask :func:`~storex_sync_firestore.capture.dialect_of` for them. ----

    @classmethod
    def quote(cls, identifier: str) -> str:
        """An SQL identifier, quoted."""
        return quote(identifier)

    @classmethod
    def upsert(cls, table: TableInfo, columns: Sequence[str], marks: Sequence[str]) -> str:
        """Insert a row, or update ``columns`` of the row with its key (``marks``: the placeholders of
        the key columns, then of ``columns``): ``INSERT ... ON CONFLICT (pk) DO UPDATE``."""
        names = ", ".join(cls.quote(c) for c in (*table.pk, *columns))
        conflict = ", ".join(cls.quote(c) for c in table.pk)
        if columns:
            updates = ", ".join(f"{cls.quote(c)} = excluded.{cls.quote(c)}" for c in columns)
            action = f"DO UPDATE SET {updates}"
        else:
            action = "DO NOTHING"
        return (
            f"INSERT INTO {table.sql_name} ({names}) VALUES ({', '.join(marks)}) "
            f"ON CONFLICT ({conflict}) {action}"
        )

    @classmethod
    def insert_or_ignore(cls, table: str, columns: Sequence[str], marks: Sequence[str]) -> str:
        """Insert a row unless it breaks a unique key (then do nothing): ``ON CONFLICT DO NOTHING``.
        ``table`` is an SQL name as written (a sync table's)."""
        names = ", ".join(columns)
        return f"INSERT INTO {table} ({names}) VALUES ({', '.join(marks)}) ON CONFLICT DO NOTHING"

    @classmethod
    def in_values(cls, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
        """A condition true for the rows whose ``columns`` equal one of ``rows`` (each a list of
        placeholders): ``(a, b) IN (VALUES (:a0, :b0), ...)``."""
        values = ", ".join("(" + ", ".join(row) + ")" for row in rows)
        return f"({', '.join(columns)}) IN (VALUES {values})"


@contextmanager
def savepoint(conn: Connection, name: str = "sync_apply") -> Iterator[None]:
    """A savepoint inside the current transaction, in plain SQL so it works however it was begun."""
    conn.exec_driver_sql(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
        conn.exec_driver_sql(f"RELEASE SAVEPOINT {name}")
        raise
    conn.exec_driver_sql(f"RELEASE SAVEPOINT {name}")
