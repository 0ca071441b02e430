"""SQLite capture: triggers that log every change into ``_sync_capture`` inside the writer's transaction.

The triggers are plain SQL, so every writer is captured: ``sqlite3``, SQLAlchemy, Django, the ``sqlite3``
shell. They do as little as possible on the application's write path: one row into a table with no
secondary index, holding the operation, the raw key and, for an update, which columns changed. Values are
read and encoded when sync runs (``read_captured``), together with the clock stamp. Reading them late is
safe: a value newer than the change that logged it was written by a later change, which has its own,
later entry carrying the same value.

Silencing costs the application nothing: the triggers have no ``WHEN`` guard. The sync transaction that
applies remote changes notes where ``_sync_capture`` ends, applies, and deletes what its own writes
captured before it commits. SQLite has one writer at a time, so every row captured inside that
transaction came from the sync itself, and nobody ever sees those rows committed.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from ..clock import wall_clock_ms
from ..codec import JsonText, TimeText, decode_value, dumps
from ..errors import DamagedDatabaseError, UnsuitableTableError
from ..models import Json
from ..quarantine import quarantine_captured
from .base import (
    CAPTURE_TABLE,
    Captured,
    CaptureDialect,
    ColumnInfo,
    ForeignKey,
    OnDelete,
    TableInfo,
    literal,
    quote,
    sync_tables_ddl,
)

log = logging.getLogger(__name__)

WALL_MS_SQL = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
MAX_KEY_COLUMNS = 8
MASK_BITS = 62
_KEYS = [f"k{i}" for i in range(1, MAX_KEY_COLUMNS + 1)]
_INF = math.inf

CAPTURE_DDL = f"""
CREATE TABLE IF NOT EXISTS {CAPTURE_TABLE} (
    seq INTEGER PRIMARY KEY,
    tbl TEXT NOT NULL,
    op TEXT NOT NULL,
    {", ".join(_KEYS)},
    changed,  -- no declared type: an integer bit mask, or a text of 0/1 for wide tables, kept as written
    wall_ms INTEGER NOT NULL
);
"""


Affinity = Literal["INTEGER", "TEXT", "BLOB", "REAL", "NUMERIC"]


@functools.lru_cache(maxsize=1024)
def affinity(declared: str) -> Affinity:
    """The column affinity SQLite derives from a declared type (its own rules, in its own order)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


class _AffinityProbe:
    """SQLite itself, answering "what would a column of this affinity store for this value?".

    Text becomes a number in a NUMERIC column only if SQLite's own parser says it is one ('1e2' yes,
    '0x10' no), and a real becomes text in a TEXT column in SQLite's own digits: rules best not
    re-implemented. An in-memory database in this process uses the same SQLite library as the device.
    """

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._conn.execute("CREATE TABLE probe (t TEXT, n NUMERIC, i INTEGER, r REAL)")
        self._column = {"TEXT": "t", "NUMERIC": "n", "INTEGER": "i", "REAL": "r"}
        self._lock = threading.Lock()

    def stored(self, column_affinity: Affinity, value: Any) -> Any:
        column = self._column[column_affinity]
        with self._lock:
            self._conn.execute(f"REPLACE INTO probe (rowid, {column}) VALUES (1, ?)", (value,))
            return self._conn.execute(f"SELECT {column} FROM probe").fetchone()[0]


_PROBE = _AffinityProbe()


def stored_value(column_affinity: Affinity, value: Any) -> Any:
    """The value a column of ``column_affinity`` holds after ``value`` is written into it."""
    kind = type(value)
    if value is None or kind is bytes or column_affinity == "BLOB":
        return value  # blobs and NULL are never converted; no affinity converts nothing
    if column_affinity == "TEXT":
        if kind is str:
            return value
        if kind is int:
            return str(value)
    elif column_affinity == "REAL":
        if kind is float:
            return value
    elif kind is int:
        return value  # INTEGER and NUMERIC keep integers
    return _PROBE.stored(column_affinity, value)


def key_json(value: Any) -> Json:
    """A stored key value in wire form, as capture encodes it (-0.0 is the same key as 0.0)."""
    if type(value) is float:
        return value + 0.0 if math.isfinite(value) else {"$float": str(value)}
    if type(value) is bytes:
        return {"$bytes": value.hex()}
    return value


def _tag_bytes(value: Any) -> Any:
    """orjson's hook for the one storage class JSON lacks: called only for blobs, so text, numbers and
    NULL cost no Python call at all."""
    if type(value) is bytes:
        return {"$bytes": value.hex()}
    raise TypeError(f"cannot encode a {type(value).__name__}")


def _tag_infinities(values: Sequence[Any]) -> list[Any]:
    """orjson writes infinities as null: tag them first (SQLite has no NaN, it stores NULL instead)."""
    return [
        {"$float": "inf" if v > 0 else "-inf"} if v in (_INF, -_INF) and type(v) is float else v
        for v in values
    ]


def trigger_names(table_name: str) -> list[str]:
    return [f"_sync_{table_name}_{op}" for op in ("insert", "update", "rekey", "delete")]


def trigger_sql(table: TableInfo) -> list[str]:
    """The ``CREATE TRIGGER`` statements that capture ``table``: insert, update, key change, delete."""
    t, name = table.sql_name, literal(table.name)
    ins, upd, rekey, dele = (quote(n) for n in trigger_names(table.name))
    keys = ", ".join(_KEYS[: len(table.pk)])
    into = f"INSERT INTO {CAPTURE_TABLE} (tbl, op, {keys}, changed, wall_ms)"

    def key(row: str) -> str:
        return ", ".join(f"{row}.{quote(c)}" for c in table.pk)

    same_key = " AND ".join(f"OLD.{quote(c)} IS NEW.{quote(c)}" for c in table.pk)
    statements = [
        f"CREATE TRIGGER {ins} AFTER INSERT ON {t} BEGIN "
        f"{into} VALUES ({name}, 'create', {key('NEW')}, NULL, {WALL_MS_SQL}); END",
        f"CREATE TRIGGER {rekey} AFTER UPDATE ON {t} WHEN NOT ({same_key}) BEGIN "
        f"{into} VALUES ({name}, 'delete', {key('OLD')}, NULL, {WALL_MS_SQL}); "
        f"{into} VALUES ({name}, 'create', {key('NEW')}, NULL, {WALL_MS_SQL}); END",
        f"CREATE TRIGGER {dele} AFTER DELETE ON {t} BEGIN "
        f"{into} VALUES ({name}, 'delete', {key('OLD')}, NULL, {WALL_MS_SQL}); END",
    ]
    cols = table.value_columns
    if cols:
        changed = [f"(OLD.{quote(c.name)} IS NOT NEW.{quote(c.name)})" for c in cols]
        if len(cols) <= MASK_BITS:  # which columns changed: a bit mask, or a string of 0/1 for wide tables
            which = " | ".join(f"({flag} << {i})" for i, flag in enumerate(changed))
        else:
            which = " || ".join(changed)
        statements.append(
            f"CREATE TRIGGER {upd} AFTER UPDATE ON {t} WHEN ({same_key}) AND ({' OR '.join(changed)}) BEGIN "
            f"{into} VALUES ({name}, 'modify', {key('NEW')}, {which}, {WALL_MS_SQL}); END"
        )
    return statements


def read_values_sql(table: TableInfo) -> str:
    """Captured rows of ``table`` in a seq range: op, changed mask, wall time, the key as captured (reals
    normalized so -0.0 reads as 0.0), whether the row still exists, and its current raw column values."""
    keys = [f"c.{k}" for k in _KEYS[: len(table.pk)]]
    key_values = ", ".join(f"CASE WHEN typeof({k}) = 'real' THEN {k} + 0.0 ELSE {k} END" for k in keys)
    join = " AND ".join(f"t.{quote(c)} = {ref}" for c, ref in zip(table.pk, keys, strict=True))
    found = f"t.{quote(table.pk[0])} IS NOT NULL"
    values = "".join(f", t.{quote(c.name)}" for c in table.value_columns)
    return (
        f"SELECT c.seq, c.op, c.changed, c.wall_ms, {found}, {key_values}{values} "
        f"FROM {CAPTURE_TABLE} c LEFT JOIN {table.sql_name} t ON {join} "
        "WHERE c.tbl = ? AND c.seq >= ? AND c.seq <= ?"
    )


def _fetch(dbapi: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """All rows of ``sql``. TEXT that is not UTF-8 (SQLite stores what it is given) cannot become a
    Python str: then read again with such text kept as surrogate escapes, which the encoder refuses, so
    exactly the changes that carry it are set aside (see ``read_captured``)."""
    try:
        return dbapi.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "UTF-8" not in str(exc):
            raise
    dbapi.text_factory = _lenient_text
    try:
        return dbapi.execute(sql, params).fetchall()
    finally:
        dbapi.text_factory = str


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _encode_rows(
    table: TableInfo, rows: Sequence[Sequence[Any]], refused: list[tuple[int, str, str]]
) -> list[Captured]:
    """Captured changes with key and values in wire form, encoded by storage class.

    integer -> JSON integer, real -> JSON float (shortest text that reads back to the same bits;
    infinities tagged), text -> JSON string, blob -> ``{"$bytes": hex}``, NULL -> null. One C call per
    change in the common case. Changes that cannot be encoded go to ``refused`` (seq, key, reason).
    """
    names = [c.name for c in table.value_columns]
    width = len(table.pk)
    wide = len(names) > MASK_BITS
    captured: list[Captured] = []
    for row in rows:
        seq, op, changed, wall_ms, found = row[:5]
        key = row[5 : 5 + width]
        if None in key:
            refused.append((seq, repr(list(key)), "a NULL key cannot name the row on other devices"))
            continue
        if op != "delete" and not found:
            continue  # the row was deleted or re-keyed by a later change, whose entry says so
        values = row[5 + width :]
        try:
            if _INF in key or -_INF in key:
                key = _tag_infinities(key)
            pk = orjson.dumps(key, default=_tag_bytes).decode()
            if op == "delete":
                captured.append(Captured(seq, table.name, pk, op, None, wall_ms))
                continue
            if _INF in values or -_INF in values:
                values = _tag_infinities(values)
            if op == "create":
                obj = dict(zip(names, values, strict=True))
            elif wide:
                obj = {n: v for n, v, flag in zip(names, values, changed, strict=False) if flag == "1"}
            else:
                obj = {n: v for i, (n, v) in enumerate(zip(names, values, strict=True)) if changed >> i & 1}
            captured.append(
                Captured(seq, table.name, pk, op, orjson.dumps(obj, default=_tag_bytes).decode(), wall_ms)
            )
        except orjson.JSONEncodeError:
            refused.append((seq, repr(list(key)), _not_utf8(table, key, names, values)))
    return captured


def _not_utf8(table: TableInfo, key: Sequence[Any], names: Sequence[str], values: Sequence[Any]) -> str:
    bad = [n for n, v in zip([*table.pk, *names], [*key, *values], strict=True) if _is_bad_text(v)]
    columns = ", ".join(f"{table.name}.{n}" for n in bad)
    return (
        f"column(s) {columns} hold TEXT that is not valid UTF-8, which no "
        "other database can read as text: the change was not sent. Store such bytes as a BLOB "
        "(CAST(x AS BLOB)) or fix the text, then write the row again"
    )


def _is_bad_text(value: Any) -> bool:
    if type(value) is not str:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_NOT_SYNCABLE = re.compile(r"^(_sync_|sqlite_)")


class SQLiteCapture(CaptureDialect):
    """Capture, silencing and value conversion for SQLite files."""

    name = "sqlite"

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        event.listen(engine, "connect", _on_connect)

    def create_sync_tables(self, conn: Connection) -> None:
        conn.exec_driver_sql(CAPTURE_DDL)
        for statement in sync_tables_ddl(
            serial="INTEGER PRIMARY KEY", bigint="INTEGER", key_text="TEXT", blob="BLOB"
        ):
            conn.exec_driver_sql(statement)

    def reflect_table(self, conn: Connection, name: str) -> TableInfo:
        if _NOT_SYNCABLE.match(name):
            raise UnsuitableTableError(
                f"table {name!r} belongs to sync or SQLite itself and cannot be synced"
            )
        rows = conn.exec_driver_sql(f"PRAGMA table_info({quote(name)})").all()
        if not rows or not self.table_exists(conn, name):
            raise UnsuitableTableError(
                f"there is no table {name!r} in this database", hint="create it first, or check the name"
            )
        # Values are encoded by storage class, whatever the declared type: the codec kind says nothing.
        columns = tuple(ColumnInfo(r[1], r[2] or "", "any", not r[3]) for r in rows)
        pk = tuple(r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5]))
        if not pk:
            raise UnsuitableTableError(
                f"table {name!r} has no primary key, so its rows cannot be matched across devices",
                hint="give it a TEXT primary key filled with storex_sync_firestore.uuid7() "
                "or the column default storex_sync_firestore.SQLITE_UUID7_DEFAULT",
            )
        without_rowid = conn.exec_driver_sql(
            "SELECT sql LIKE '%WITHOUT ROWID%' FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).scalar()
        key_type = next(c.type for c in columns if c.name == pk[0])
        if len(pk) == 1 and key_type.upper() == "INTEGER" and not without_rowid:
            raise UnsuitableTableError(
                f"table {name!r} has an auto-incremented integer primary key ({pk[0]!r}): two devices would "
                "both number their new rows 1, 2, 3 ... and overwrite each other's rows when they sync",
                hint="use a globally unique TEXT key, filled by storex_sync_firestore.uuid7() or by "
                "the column default storex_sync_firestore.SQLITE_UUID7_DEFAULT",
            )
        untyped = [c.name for c in columns if c.name in pk and affinity(c.type) == "BLOB"]
        if untyped:
            raise UnsuitableTableError(
                f"table {name!r} has key column(s) {untyped} without a type affinity (declared BLOB or "
                "nothing): such a column keeps 1 and 1.0 as one key, but they travel as different values, "
                "so devices could disagree about which row an entry means",
                hint="declare the key column TEXT (filled by storex_sync_firestore.uuid7() or the default "
                "storex_sync_firestore.SQLITE_UUID7_DEFAULT), or INTEGER/REAL/NUMERIC for numbers",
            )
        if len(pk) > MAX_KEY_COLUMNS:
            raise UnsuitableTableError(
                f"table {name!r} has a {len(pk)}-column primary key; sync supports up to {MAX_KEY_COLUMNS}",
                hint="give it a single globally unique key column",
            )
        return TableInfo(name, columns, pk, _foreign_keys(conn, name), _unique(conn, name, pk))

    def table_exists(self, conn: Connection, local_name: str) -> bool:
        found = conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (local_name,)
        ).first()
        return found is not None

    def find_renamed(self, conn: Connection, table: TableInfo) -> str | None:
        # SQLite rewrites a trigger's table when the table is renamed; the trigger keeps its name.
        owner = conn.exec_driver_sql(
            "SELECT tbl_name FROM sqlite_master WHERE type = 'trigger' AND name = ?",
            (trigger_names(table.name)[0],),
        ).scalar()
        return None if owner is None or owner == table.local_name else str(owner)

    def schema_token(self, conn: Connection) -> str:
        return str(conn.exec_driver_sql("PRAGMA schema_version").scalar())

    def key_from_row(self, table: TableInfo, values: Sequence[Any]) -> str:
        return dumps([key_json(v) for v in values])

    def install_triggers(self, conn: Connection, table: TableInfo) -> None:
        self.drop_triggers(conn, table)
        for statement in trigger_sql(table):
            conn.exec_driver_sql(statement)

    def drop_triggers(self, conn: Connection, table: TableInfo) -> None:
        for trigger in trigger_names(table.name):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote(trigger)}")

    def capture_existing_rows(self, conn: Connection, table: TableInfo) -> None:
        keys = ", ".join(_KEYS[: len(table.pk)])
        conn.exec_driver_sql(
            f"INSERT INTO {CAPTURE_TABLE} (tbl, op, {keys}, wall_ms) "
            f"SELECT {literal(table.name)}, 'create', {', '.join(quote(c) for c in table.pk)}, {WALL_MS_SQL} "
            f"FROM {table.sql_name}"
        )

    def log_new_column_values(self, conn: Connection, table: TableInfo, columns: Sequence[str]) -> int:
        defaults = {r[1]: r[4] for r in conn.exec_driver_sql(f"PRAGMA table_info({table.sql_name})")}
        names = [c.name for c in table.value_columns]
        bits = [names.index(c) for c in columns]
        if len(names) <= MASK_BITS:
            changed = str(sum(1 << i for i in bits))
        else:
            changed = literal("".join("1" if i in bits else "0" for i in range(len(names))))
        differs = " OR ".join(f"{quote(c)} IS NOT ({defaults.get(c) or 'NULL'})" for c in columns)
        keys = ", ".join(_KEYS[: len(table.pk)])
        result = conn.exec_driver_sql(
            f"INSERT INTO {CAPTURE_TABLE} (tbl, op, {keys}, changed, wall_ms) "
            f"SELECT {literal(table.name)}, 'modify', {', '.join(quote(c) for c in table.pk)}, {changed}, "
            f"{WALL_MS_SQL} FROM {table.sql_name} WHERE {differs}"
        )
        return int(result.rowcount or 0)

    def read_captured(
        self, conn: Connection, after: int, limit: int, tables: Mapping[str, TableInfo]
    ) -> tuple[list[int], list[Captured]]:
        """Captured changes with the rows' current values, encoded by storage class (``_encode_rows``).

        A change that cannot travel (a NULL key, TEXT that is not UTF-8) is set aside as outgoing, with
        the reason, here on the sending device: ``status`` counts it, and nothing else is held up.
        """
        dbapi: sqlite3.Connection = conn.connection.dbapi_connection  # type: ignore[assignment]
        rows = dbapi.execute(
            f"SELECT seq, tbl FROM {CAPTURE_TABLE} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()
        if not rows:
            return [], []
        lo, hi = rows[0][0], rows[-1][0]
        captured: list[Captured] = []
        for name in sorted({r[1] for r in rows}):
            table = tables.get(name)
            if table is None:
                continue  # sync was disabled for the table since: nothing to log
            refused: list[tuple[int, str, str]] = []
            captured += _encode_rows(table, _fetch(dbapi, read_values_sql(table), (name, lo, hi)), refused)
            for seq, key, reason in refused:
                log.warning("set aside captured change %s of %s %s: %s", seq, name, key, reason)
                quarantine_captured(conn, name, key, reason, wall_clock_ms())
        captured.sort(key=lambda c: c.seq)
        return [r[0] for r in rows], captured

    def forget_captured(self, conn: Connection, seqs: Sequence[int]) -> None:
        # One writer at a time: everything up to the last seq read was read, so a range delete is exact.
        conn.exec_driver_sql(f"DELETE FROM {CAPTURE_TABLE} WHERE seq <= ?", (max(seqs),))

    def silence(self, conn: Connection) -> None:
        conn.info["sync_capture_mark"] = conn.exec_driver_sql(
            f"SELECT coalesce(max(seq), 0) FROM {CAPTURE_TABLE}"
        ).scalar()

    def unsilence(self, conn: Connection) -> None:
        mark = conn.info.pop("sync_capture_mark")
        conn.exec_driver_sql(f"DELETE FROM {CAPTURE_TABLE} WHERE seq > ?", (mark,))

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Connection]:
        # pysqlite's implicit transactions are switched off (AUTOCOMMIT) so that we choose BEGIN IMMEDIATE:
        # a sync transaction takes the write lock up front instead of failing to upgrade a read lock.
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    def check_storage(self) -> None:
        """``PRAGMA quick_check``; a file that is not a database, or is malformed, is damaged too."""
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

    def to_db(self, column: ColumnInfo, value: Any) -> Any:
        """Decoded wire values are bound as they are; the column's affinity then does what it does for
        any writer. Tagged PostgreSQL values become the text SQLite applications write for them."""
        if type(value) in _PLAIN:
            return value
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(f"SQLite cannot store NaN in column {column.name!r} (it would store NULL)")
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, datetime):
            return value.isoformat(sep=" ")
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, Decimal):
            return format(value, "f")  # positional, as PostgreSQL writes it: '0.000001', not '1E-6'
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, JsonText | TimeText):
            return value.text
        return value

    def canonical_key(self, column: ColumnInfo, value: Json) -> Json:
        """The key as this database stores it, in wire form: what capture reads back from the row.

        ``[777]`` and ``["777"]`` name one row of a TEXT key column: both become ``["777"]``.
        """
        return key_json(stored_value(affinity(column.type), self.to_db(column, decode_value(value))))


_PLAIN = frozenset({int, str, bytes, type(None)})


_ON_DELETE: dict[str, OnDelete] = {
    "CASCADE": "cascade",
    "SET NULL": "set null",
    "SET DEFAULT": "set default",
    "RESTRICT": "restrict",
}


def _foreign_keys(conn: Connection, name: str) -> tuple[ForeignKey, ...]:
    rows = conn.exec_driver_sql(f"PRAGMA foreign_key_list({quote(name)})").all()
    by_id: dict[int, list[Any]] = {}
    for row in sorted(rows, key=lambda r: (r[0], r[1])):
        by_id.setdefault(int(row[0]), []).append(row)
    keys: list[ForeignKey] = []
    for parts in by_id.values():
        parent = str(parts[0][2])
        targets = [p[4] for p in parts]
        if any(t is None for t in targets):  # REFERENCES parent: the parent's primary key
            info = conn.exec_driver_sql(f"PRAGMA table_info({quote(parent)})").all()
            targets = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        on_delete = _ON_DELETE.get(str(parts[0][6]).upper(), "no action")
        keys.append(ForeignKey(tuple(str(p[3]) for p in parts), parent, tuple(targets), on_delete))
    return tuple(sorted(keys, key=lambda k: (k.columns, k.parent)))


def _unique(conn: Connection, name: str, pk: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Unique column sets besides the key: UNIQUE constraints and unique indexes on plain columns."""
    found: set[tuple[str, ...]] = set()
    for _seq, index, unique, origin, partial in conn.exec_driver_sql(f"PRAGMA index_list({quote(name)})"):
        if not unique or partial or origin == "pk":
            continue
        parts = conn.exec_driver_sql(f"PRAGMA index_info({quote(index)})").all()
        if any(p[1] < 0 for p in parts):
            continue  # an index on an expression: the database alone knows what it compares
        columns = tuple(str(p[2]) for p in sorted(parts))
        if not set(pk) <= set(columns):  # a set holding the whole key is unique anyway
            found.add(columns)
    return tuple(sorted(found))


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Wait for another writer (the application) instead of failing at once with "database is locked".
    dbapi_connection.execute("PRAGMA busy_timeout = 30000")
    # Sync keeps the declared foreign keys itself; with enforcement on, SQLite checks its work too.
    dbapi_connection.execute("PRAGMA foreign_keys = ON")
