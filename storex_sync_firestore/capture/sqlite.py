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

import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, event, text
from sqlalchemy.engine import Engine

from ..codec import JsonScalar, dumps
from ..errors import UnsuitableTableError
from .base import (
    CAPTURE_TABLE,
    Captured,
    CaptureDialect,
    ColumnInfo,
    TableInfo,
    ValueKind,
    literal,
    quote,
    sync_tables_ddl,
)

WALL_MS_SQL = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
_ARGS_PER_CALL = 60  # SQLite functions take at most 127 arguments
MAX_KEY_COLUMNS = 8
MASK_BITS = 62
_KEYS = [f"k{i}" for i in range(1, MAX_KEY_COLUMNS + 1)]

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


def value_kind(declared: str) -> ValueKind:
    """The codec kind for a column, from its declared type (SQLite's own affinity rules, extended)."""
    t = declared.upper()
    rules: list[tuple[str, ValueKind]] = [
        ("BOOL", "bool"),
        ("DATETIME", "datetime"),
        ("TIMESTAMP", "datetime"),
        ("DATE", "date"),
        ("DECIMAL", "decimal"),
        ("NUMERIC", "decimal"),
        ("UUID", "uuid"),
        ("JSON", "json"),
        ("BLOB", "bytes"),
    ]
    return next((kind for word, kind in rules if word in t), "any")


def value_sql(ref: str, kind: ValueKind) -> str:
    """SQL giving the wire encoding of the value ``ref`` (e.g. ``NEW."price"``) of a column of ``kind``."""
    whens = [f"WHEN 'blob' THEN json_object('$bytes', lower(hex({ref})))"]
    whens.append(
        # 17 significant digits: SQLite's own JSON writes 15 and would round 0.1 + 0.2 to 0.3.
        f"WHEN 'real' THEN CASE WHEN abs({ref}) <= 1.7976931348623157e308 THEN json(printf('%!.17g', {ref})) "
        f"ELSE json_object('$float', CASE WHEN {ref} > 0 THEN 'inf' ELSE '-inf' END) END"
    )
    tag = {"date": "$date", "datetime": "$datetime", "decimal": "$decimal", "uuid": "$uuid"}.get(kind)
    if tag:
        whens.append(f"WHEN 'text' THEN json_object('{tag}', {ref})")
    elif kind == "json":
        whens.append(
            f"WHEN 'text' THEN CASE WHEN json_valid({ref}) THEN json_object('$json', json({ref})) "
            f"ELSE {ref} END"
        )
    elif kind == "bool":
        whens.append(f"WHEN 'integer' THEN json(CASE WHEN {ref} THEN 'true' ELSE 'false' END)")
    return f"CASE typeof({ref}) {' '.join(whens)} ELSE {ref} END"


def _json_object_sql(pairs: Sequence[tuple[str, str]]) -> str:
    """``json_object`` over (key, value SQL) pairs; wide tables are joined from chunks of JSON text."""
    if len(pairs) <= _ARGS_PER_CALL:
        return "json_object(" + ", ".join(f"{literal(k)}, {v}" for k, v in pairs) + ")"
    chunks = [
        _inner(_json_object_sql(pairs[i : i + _ARGS_PER_CALL])) for i in range(0, len(pairs), _ARGS_PER_CALL)
    ]
    return "json('{' || " + " || ',' || ".join(chunks) + " || '}')"


def _inner(obj: str) -> str:
    """The text of a JSON object without its braces, to join objects as text."""
    return f"substr({obj}, 2, length({obj}) - 2)"


def row_object_sql(table: TableInfo, row: str) -> str:
    """JSON object of every non-key column of ``row`` (``NEW``, ``OLD`` or the table itself)."""
    return _json_object_sql(
        [(c.name, value_sql(f"{row}.{quote(c.name)}", c.kind)) for c in table.value_columns]
    )


def pk_sql(table: TableInfo, row: str) -> str:
    """JSON array of the key. UUID keys travel as plain text, as PostgreSQL's capture sends them, so a
    row keyed by a ``uuid`` column in PostgreSQL and by a TEXT column in SQLite is the same object."""
    return (
        "json_array("
        + ", ".join(value_sql(f"{row}.{quote(c.name)}", _key_kind(c.kind)) for c in table.pk_columns)
        + ")"
    )


def _key_kind(kind: ValueKind) -> ValueKind:
    return "any" if kind == "uuid" else kind


def trigger_names(table_name: str) -> list[str]:
    return [f"_sync_{table_name}_{op}" for op in ("insert", "update", "rekey", "delete")]


def trigger_sql(table: TableInfo) -> list[str]:
    """The ``CREATE TRIGGER`` statements that capture ``table``: insert, update, key change, delete."""
    t, name = quote(table.name), literal(table.name)
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


def _changed(which: int | str, i: int) -> bool:
    """Did the update change value column ``i``? (``which`` as the update trigger recorded it.)"""
    return bool(which >> i & 1) if isinstance(which, int) else which[i] == "1"


def read_values_sql(table: TableInfo) -> str:
    """Captured rows of ``table`` in a seq range, with the encoded key and the row's current values."""
    keys = [f"c.{k}" for k in _KEYS[: len(table.pk)]]
    key_json = (
        "json_array("
        + ", ".join(value_sql(ref, _key_kind(c.kind)) for ref, c in zip(keys, table.pk_columns, strict=True))
        + ")"
    )
    join = " AND ".join(f"t.{quote(c)} = {ref}" for c, ref in zip(table.pk, keys, strict=True))
    found = f"t.{quote(table.pk[0])} IS NOT NULL"
    return (
        f"SELECT c.seq, c.op, c.changed, c.wall_ms, {key_json}, {found}, {row_object_sql(table, 't')} "
        f"FROM {CAPTURE_TABLE} c LEFT JOIN {quote(table.name)} t ON {join} "
        "WHERE c.tbl = :tbl AND c.seq >= :lo AND c.seq <= :hi"
    )


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
        if not rows:
            raise UnsuitableTableError(
                f"there is no table {name!r} in this database", hint="create it first, or check the name"
            )
        columns = tuple(ColumnInfo(r[1], r[2] or "", value_kind(r[2] or ""), not r[3]) for r in rows)
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
        if len(pk) > MAX_KEY_COLUMNS:
            raise UnsuitableTableError(
                f"table {name!r} has a {len(pk)}-column primary key; sync supports up to {MAX_KEY_COLUMNS}",
                hint="give it a single globally unique key column",
            )
        return TableInfo(name, columns, pk)

    def install_triggers(self, conn: Connection, table: TableInfo) -> None:
        self.drop_triggers(conn, table.name)
        for statement in trigger_sql(table):
            conn.exec_driver_sql(statement)

    def drop_triggers(self, conn: Connection, table_name: str) -> None:
        for trigger in trigger_names(table_name):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote(trigger)}")

    def capture_existing_rows(self, conn: Connection, table: TableInfo) -> None:
        keys = ", ".join(_KEYS[: len(table.pk)])
        conn.exec_driver_sql(
            f"INSERT INTO {CAPTURE_TABLE} (tbl, op, {keys}, wall_ms) "
            f"SELECT {literal(table.name)}, 'create', {', '.join(quote(c) for c in table.pk)}, {WALL_MS_SQL} "
            f"FROM {quote(table.name)}"
        )

    def read_captured(
        self, conn: Connection, after: int, limit: int, tables: Mapping[str, TableInfo]
    ) -> tuple[list[int], list[Captured]]:
        rows = conn.exec_driver_sql(
            f"SELECT seq, tbl FROM {CAPTURE_TABLE} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).all()
        if not rows:
            return [], []
        lo, hi = rows[0][0], rows[-1][0]
        captured: list[Captured] = []
        for name in sorted({r[1] for r in rows}):
            table = tables.get(name)
            if table is None:
                continue  # sync was disabled for the table since: nothing to log
            names = [c.name for c in table.value_columns]
            for seq, op, changed, wall_ms, pk, found, full in conn.execute(
                text(read_values_sql(table)), {"tbl": name, "lo": lo, "hi": hi}
            ):
                if op == "delete":
                    captured.append(Captured(seq, name, pk, op, None, wall_ms))
                elif found and op == "create":
                    captured.append(Captured(seq, name, pk, op, dumps(json.loads(full)), wall_ms))
                elif found:
                    values = json.loads(full)
                    picked = {n: values[n] for i, n in enumerate(names) if _changed(changed, i)}
                    captured.append(Captured(seq, name, pk, op, dumps(picked), wall_ms))
                # A row gone by now was deleted or re-keyed by a later change, whose entry says so.
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

    def to_db(self, column: ColumnInfo, value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(f"SQLite cannot store NaN in column {column.name!r}")
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
        if isinstance(value, dict | list):
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        if isinstance(value, JsonScalar):
            return json.dumps(value.value, separators=(",", ":"), ensure_ascii=False)
        return value


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Wait for another writer (the application) instead of failing at once with "database is locked".
    dbapi_connection.execute("PRAGMA busy_timeout = 30000")
