"""PostgreSQL capture: PL/pgSQL triggers log every change into ``_sync_capture`` in the writer's transaction.

Whoever writes (the application, ``psql``, a migration) is captured, in the same transaction, so a
rolled-back change is never logged and a committed one always is. Values are encoded in SQL into the
codec's wire form, exactly and whatever the writer's session settings, which is what lets a PostgreSQL
database and a SQLite file sync with each other.

Silencing is per transaction: the sync transaction sets ``storex_sync.applying`` with ``set_config(...,
true)`` (transaction-local), and the triggers skip while it is ``on``. Other sessions writing at the same
time do not see the setting and are captured as usual.

Concurrency (READ COMMITTED): sync write transactions take a transaction-level advisory lock, so two
syncs of one database never stamp the same captured rows twice; the application never takes that lock,
so it is never blocked by it. While reconciling, the rows about to be written are locked with
``FOR UPDATE`` (see :meth:`PostgresCapture.lock_rows`), briefly: one reconcile batch.
"""

from __future__ import annotations

import functools
import math
import re
import struct
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from .. import retry
from ..codec import DECIMAL_TEXT, JsonText, TimeText, decode_value, dumps, loads, parse_date, parse_datetime
from ..errors import InvalidEntryError, UnsuitableTableError
from ..models import Json
from . import postgres_sql as sql
from .base import (
    SYNC_TABLES,
    Captured,
    CaptureDialect,
    ColumnInfo,
    ForeignKey,
    OnDelete,
    TableInfo,
    quote,
    savepoint,
    sync_tables_ddl,
)

SYNC_LOCK_KEY = 0x5702E5_5C
"""Advisory lock key taken by every sync write transaction (an arbitrary constant, per database)."""
LOCK_CHUNK = 1_000
LOCK_PATIENCE_S = 2.0
LOCK_NOT_AVAILABLE = "55P03"

_INT_BITS = {"smallint": 16, "integer": 32, "bigint": 64}
_NUMERIC_TYPMOD = re.compile(r"numeric\((\d+)(?:,(-?\d+))?\)")
_OFFSET = re.compile(r"([+-]\d\d(:\d\d)*|Z)( BC)?$")
_NOT_SYNCABLE = re.compile(r"^(_sync_|pg_)")


class PostgresCapture(CaptureDialect):
    """Capture, silencing, row locking and value conversion for PostgreSQL databases (psycopg 3)."""

    name = "postgresql"

    def _schema(self, conn: Connection) -> str:
        return str(conn.execute(text("SELECT current_schema()")).scalar_one())

    def create_sync_tables(self, conn: Connection) -> None:
        conn.exec_driver_sql(sql.CAPTURE_DDL)
        for statement in sync_tables_ddl(
            serial="BIGSERIAL PRIMARY KEY", bigint="BIGINT", key_text=sql.KEY_TEXT, blob="BYTEA"
        ):
            conn.exec_driver_sql(statement)

    def reflect_table(self, conn: Connection, name: str) -> TableInfo:
        if _NOT_SYNCABLE.match(name) or name in SYNC_TABLES:
            raise UnsuitableTableError(f"table {name!r} belongs to sync or PostgreSQL and cannot be synced")
        oid = conn.execute(
            text("SELECT c.oid FROM pg_class c WHERE c.oid = to_regclass(:n) AND c.relkind IN ('r', 'p')"),
            {"n": quote(name)},
        ).scalar()
        if oid is None:
            raise UnsuitableTableError(
                f"there is no table {name!r} in this database (search_path)",
                hint="create it first, or check the name and the schema",
            )
        rows = conn.execute(text(sql.REFLECT_SQL), {"oid": oid}).all()
        columns: list[ColumnInfo] = []
        keyed: list[tuple[int, str]] = []
        for col, type_, base, notnull, identity, generated, default, in_pk, position in rows:
            if in_pk:
                keyed.append((int(position), col))
                _refuse_generated_key(name, col, str(type_), identity, default)
                _refuse_inexact_key(name, col, str(type_), str(base))
            if generated:
                continue  # computed by each database from the other columns; never written by sync
            columns.append(ColumnInfo(col, str(type_), sql.KINDS.get(str(base), "any"), not notnull))
        if not keyed:
            raise UnsuitableTableError(
                f"table {name!r} has no primary key, so its rows cannot be matched across devices",
                hint="add a uuid primary key with DEFAULT gen_random_uuid(), "
                "or a text key filled with storex_sync_firestore.uuid7()",
            )
        pk = tuple(c for _, c in sorted(keyed))
        foreign_keys = tuple(
            ForeignKey(tuple(cols), str(parent), tuple(parent_cols), _ON_DELETE.get(str(action), "no action"))
            for cols, parent, parent_cols, action in conn.execute(text(sql.FOREIGN_KEYS_SQL), {"oid": oid})
        )
        unique = tuple(
            tuple(cols)
            for (cols,) in conn.execute(text(sql.UNIQUE_SQL), {"oid": oid})
            if not set(pk) <= set(cols)  # a set holding the whole key is unique anyway
        )
        return TableInfo(name, tuple(columns), pk, foreign_keys, unique)

    def table_exists(self, conn: Connection, local_name: str) -> bool:
        found = conn.execute(
            text("SELECT 1 FROM pg_class WHERE oid = to_regclass(:n) AND relkind IN ('r', 'p')"),
            {"n": quote(local_name)},
        ).first()
        return found is not None

    def find_renamed(self, conn: Connection, table: TableInfo) -> str | None:
        # A trigger belongs to the table's oid, so it follows ALTER TABLE ... RENAME TO.
        owner = conn.execute(
            text(sql.TRIGGER_OWNER_SQL), {"trigger": sql.TRIGGER, "function": sql.function_name(table.name)}
        ).scalar()
        return None if owner is None or owner == table.local_name else str(owner)

    def schema_token(self, conn: Connection) -> str:
        return str(conn.execute(text(sql.SCHEMA_TOKEN_SQL)).scalar())

    def key_columns(self, table: TableInfo, alias: str) -> list[str]:
        return [sql.pk_sql(table, alias)]  # encoded in SQL, exactly as the trigger encodes it

    def key_from_row(self, table: TableInfo, values: Sequence[Any]) -> str:
        return dumps(loads(str(values[0])))

    def log_new_column_values(self, conn: Connection, table: TableInfo, columns: Sequence[str]) -> int:
        defaults: dict[str, str | None] = dict(
            conn.execute(text(sql.DEFAULTS_SQL), {"n": table.sql_name}).all()
        )
        statement = sql.new_column_values_sql(table, columns, self._schema(conn), defaults)
        return int(conn.exec_driver_sql(statement).rowcount or 0)

    def install_triggers(self, conn: Connection, table: TableInfo) -> None:
        schema = self._schema(conn)
        self.drop_triggers(conn, table)
        for statement in [*sql.function_sql(table, schema), *sql.trigger_sql(table, schema)]:
            conn.exec_driver_sql(statement)

    def drop_triggers(self, conn: Connection, table: TableInfo) -> None:
        schema = self._schema(conn)
        if self.table_exists(conn, table.local_name):
            for trigger in (sql.TRIGGER, sql.TRUNCATE_TRIGGER):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger} ON {table.sql_name}")
        for suffix in ("", "_truncate"):
            conn.exec_driver_sql(
                f"DROP FUNCTION IF EXISTS {quote(schema)}.{quote(sql.function_name(table.name, suffix))}() "
                "CASCADE"
            )

    def capture_existing_rows(self, conn: Connection, table: TableInfo) -> None:
        for name, value in sql.settings(table):  # as the trigger function pins them, for this transaction
            conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
        conn.exec_driver_sql(sql.existing_rows_sql(table, self._schema(conn)))

    def read_captured(
        self, conn: Connection, after: int, limit: int, tables: Mapping[str, TableInfo]
    ) -> tuple[list[int], list[Captured]]:
        """The first ``limit`` captured rows still in ``_sync_capture``, whatever ``after`` says.

        Under READ COMMITTED a transaction can commit a *lower* seq after higher ones were read: it was in
        flight during the read. Paging on with ``seq > after`` would then stamp that row's later changes
        (committed after it, by the same writer or by one that waited for its row lock) before the row's
        own change, which inverts their order in the log and makes the devices diverge. The caller
        deletes every row it stamps in this transaction, so reading from the start again is exact: each
        read sees, for every row, all of its earlier changes that are not yet stamped.
        """
        return super().read_captured(conn, 0, limit, tables)

    def check_constraints_immediately(self, conn: Connection) -> None:
        # DEFERRABLE constraints would otherwise fail at COMMIT, taking the whole pass with them.
        conn.exec_driver_sql("SET CONSTRAINTS ALL IMMEDIATE")

    def silence(self, conn: Connection) -> None:
        conn.execute(text(f"SELECT set_config('{sql.APPLYING}', 'on', true)"))

    def unsilence(self, conn: Connection) -> None:
        conn.execute(text(f"SELECT set_config('{sql.APPLYING}', 'off', true)"))

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Connection]:
        """A READ COMMITTED transaction; a writing one first takes the sync advisory lock.

        The lock makes sync transactions of one database take turns (as SQLite's BEGIN IMMEDIATE does),
        so two concurrent ``do_sync`` calls never stamp the same captured rows or the same clock values.
        Application transactions never ask for it.
        """
        with self.engine.begin() as conn:
            if write:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SYNC_LOCK_KEY})
            yield conn

    def lock_rows(self, conn: Connection, table: TableInfo, pks: Sequence[Sequence[Any]]) -> None:
        """Lock the existing rows among ``pks`` (wire-encoded keys) until the sync transaction ends.

        An application transaction that already changed one of them commits first (its change is then
        captured and stamped before the reconciler reads the history); a later one waits for the sync
        transaction, which lasts one reconcile batch. Locks are taken in key order with NOWAIT inside a
        savepoint: when a row is busy, the savepoint is rolled back, releasing every lock of this
        attempt, and the attempt is retried, so the sync never waits while holding rows that a
        multi-row application transaction might be waiting for (no deadlock with the application). After
        ``LOCK_PATIENCE_S`` it waits normally.
        """
        keys: list[tuple[Any, ...]] = []
        for pk in pks:
            try:
                keys.append(
                    tuple(self.to_db(c, decode_value(v)) for c, v in zip(table.pk_columns, pk, strict=True))
                )
            except (ValueError, TypeError, InvalidEntryError):
                continue  # a key this table cannot hold: apply sets the object aside, nothing to lock
        for chunk in sql.chunks(keys, LOCK_CHUNK):
            statement = sql.lock_sql(table, len(chunk))
            params = {f"p{i}": v for i, v in enumerate(v for key in chunk for v in key)}
            _lock_patiently(conn, statement, params)

    def to_db(self, column: ColumnInfo, value: Any) -> Any:
        if value is None:
            return None
        convert = _CONVERTERS.get(column.kind, _to_any)
        return convert(column, value)

    def canonical_key(self, column: ColumnInfo, value: Json) -> Json:
        """The key as the trigger encodes the stored row's key: by the column's type.

        A key the column would store differently (``"1.5"`` in a ``numeric(10,2)``: ``1.50``; an offset
        other than UTC) is rewritten to the stored form; one it cannot hold raises ``ValueError``.
        """
        converted = self.to_db(column, decode_value(value))
        if converted is None:
            raise ValueError("a primary key value cannot be null")
        return _KEY_FORMS[column.kind](column, converted)


_ON_DELETE: dict[str, OnDelete] = {"c": "cascade", "n": "set null", "d": "set default", "r": "restrict"}


def _refuse_generated_key(table: str, column: str, type_: str, identity: str, default: str | None) -> None:
    """Refuse keys numbered by a sequence: every database would hand out the same numbers."""
    if identity or (default and "nextval(" in default):
        how = "an identity column" if identity else f"numbered by a sequence ({default})"
        raise UnsuitableTableError(
            f"table {table!r} has a primary key {column!r} ({type_}) that is {how}: every shop's database "
            "counts 1, 2, 3 ... on its own, so two shops would create different rows under the same key "
            "and each sync would overwrite one with the other, silently corrupting data",
            hint="use a globally unique key: a uuid column with DEFAULT gen_random_uuid(), or a text/uuid "
            "key filled by storex_sync_firestore.uuid7() in the application",
        )


_EXACT_KEY_KINDS = frozenset(
    {"bool", "int", "float", "decimal", "text", "bytes", "date", "datetime", "datetime_tz", "uuid"}
)


def _refuse_inexact_key(table: str, column: str, type_: str, base: str) -> None:
    """Refuse key types whose equal values print differently, so one row would be several log objects."""
    why = None
    kind = sql.KINDS.get(base, "any")
    if kind not in _EXACT_KEY_KINDS:
        why = "its values have no single canonical text that every database agrees on"
    elif base == "citext":
        why = "'ABC' and 'abc' are one key to citext but two different values everywhere else"
    elif base == "float4":
        why = "a real rounds what it is given, so many different values name one row"
    elif base == "numeric" and not _NUMERIC_TYPMOD.fullmatch(type_):
        why = "an unconstrained numeric keeps each value's own scale, so 1.5 and 1.50 are one row"
    if why:
        raise UnsuitableTableError(
            f"table {table!r} has a primary key column {column!r} of type {type_}: {why}",
            hint="use a text, uuid, integer, numeric(p,s), double precision, date or timestamp key",
        )


def _lock_patiently(conn: Connection, statement: str, params: dict[str, Any]) -> None:
    """Take the row locks without waiting while an application transaction holds them (so a long one
    does not stall the sync's own transaction from the first row), then, after ``LOCK_PATIENCE_S``, wait
    for them blocking."""

    def attempt() -> bool:
        with savepoint(conn, "sync_lock_rows"):
            conn.execute(text(statement + " NOWAIT"), params)
        return True

    def busy(exc: BaseException) -> bool:
        return isinstance(exc, OperationalError) and getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE

    if retry.patiently(attempt, busy=busy, patience=LOCK_PATIENCE_S) is None:
        conn.execute(text(statement), params)


# --- decoded wire value -> parameter for a PostgreSQL column --------------------------------------------


def _refuse(column: ColumnInfo, value: Any, why: str) -> ValueError:
    return ValueError(f"column {column.name!r} ({column.type}) cannot hold {value!r}: {why}")


def _to_bool(column: ColumnInfo, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)  # SQLite's 0/1
    raise _refuse(column, value, "not a boolean")


def _to_int(column: ColumnInfo, value: Any) -> Any:
    if isinstance(value, float | Decimal) and math.isfinite(value) and value == int(value):
        value = int(value)
    if not isinstance(value, int):
        raise _refuse(column, value, "not an integer")
    bits = _INT_BITS.get(column.type, 64)
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise _refuse(column, value, f"out of range for a {bits}-bit integer")
    return int(value)


def _to_float(column: ColumnInfo, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise _refuse(column, value, "not a number")
    result = float(value)
    if isinstance(value, int) and int(result) != value:
        raise _refuse(column, value, "a float would round this integer")
    if column.type == "real" and math.isfinite(result) and math.isinf(_as_float4(result)):
        raise _refuse(column, value, "out of range for real")
    return result


def _as_float4(value: float) -> float:
    """The nearest float4, as PostgreSQL rounds a float8 into a real column (inf when it overflows)."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def _to_decimal(column: ColumnInfo, value: Any) -> Any:
    if isinstance(value, str) and DECIMAL_TEXT.fullmatch(value):
        value = Decimal(value)
    elif isinstance(value, float):
        value = Decimal(repr(value)) if math.isfinite(value) else Decimal(str(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise _refuse(column, value, "not a decimal number")
    typmod = _NUMERIC_TYPMOD.fullmatch(column.type)
    if typmod and value.is_finite():
        precision, scale = int(typmod[1]), int(typmod[2] or 0)
        try:
            exact = value == value.quantize(Decimal(1).scaleb(-scale))
        except InvalidOperation:
            exact = False
        if not exact:
            raise _refuse(column, value, f"more than {scale} decimal places would be rounded")
        if abs(value) >= Decimal(10) ** (precision - scale):
            raise _refuse(column, value, f"more than {precision - scale} digits before the point")
    return value


def _to_text(column: ColumnInfo, value: Any) -> Any:
    if not isinstance(value, str):
        raise _refuse(column, value, "not text")
    if "\x00" in value:
        raise _refuse(column, value, "PostgreSQL text cannot contain NUL characters")
    return value


def _to_bytes(column: ColumnInfo, value: Any) -> Any:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise _refuse(column, value, "not bytes")
    return bytes(value)


def _parse_time(column: ColumnInfo, value: Any, parse: Callable[[str], Any]) -> Any:
    if isinstance(value, str):
        try:
            return parse(value)
        except ValueError as exc:
            raise _refuse(column, value, f"not an ISO-8601 date/time ({exc})") from None
    return value


def _to_date(column: ColumnInfo, value: Any) -> Any:
    value = _parse_time(column, value, parse_date)
    if isinstance(value, TimeText) and value.tag == "$date":
        return value.text  # infinity, BC: PostgreSQL reads its own ISO text exactly
    if isinstance(value, datetime) or not isinstance(value, date):
        raise _refuse(column, value, "not a date")
    return value


def _to_timestamp(column: ColumnInfo, value: Any, *, aware: bool) -> Any:
    """A timestamp for a column with (``aware``) or without time zone; never shifted to fit."""
    value = _parse_time(column, value, parse_datetime)
    if isinstance(value, TimeText):
        offset = _OFFSET.search(value.text) is not None
        if value.text.lstrip("-") != "infinity" and offset != aware:
            raise _refuse(column, value.text, "its time zone does not match the column's")
        return value.text
    if not isinstance(value, datetime):
        raise _refuse(column, value, "not a timestamp")
    if aware and value.tzinfo is None:
        raise _refuse(column, value, "no UTC offset: the instant it means is unknown")
    if not aware and value.tzinfo is not None:
        raise _refuse(column, value, "a timestamp without time zone would drop its offset")
    return value


def _to_uuid(column: ColumnInfo, value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            raise _refuse(column, value, "not a UUID") from None
        if str(parsed) == value:
            return parsed
        raise _refuse(column, value, "not in canonical lowercase form (the key would change)")
    raise _refuse(column, value, "not a UUID")


def _verbatim(text: str) -> str:
    return text


def _to_json(column: ColumnInfo, value: Any) -> Any:
    """A document's text goes to PostgreSQL as it is (it parses and checks it): re-serializing a parsed
    value would round ``1.10`` to ``1.1``. A number or boolean from SQLite is that JSON scalar."""
    from psycopg.types.json import Json, Jsonb

    if isinstance(value, JsonText):
        document = value.text
    elif isinstance(value, str):
        document = value  # JSON text from a SQLite column
    elif isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(value)):
        document = dumps(value)
    else:
        raise _refuse(column, value, "not a JSON document")
    if "\x00" in document:
        raise _refuse(column, value, "PostgreSQL JSON cannot contain NUL characters")
    try:
        orjson.loads(document)  # checked here, so that the reason is clear and the same on every device
    except orjson.JSONDecodeError as exc:
        raise _refuse(column, value, f"not a JSON document ({exc})") from None
    return (Json if column.type == "json" else Jsonb)(document, dumps=_verbatim)


def _to_any(column: ColumnInfo, value: Any) -> Any:
    """Types without a codec kind (enums, arrays, intervals...) travel as text; PostgreSQL parses it."""
    if isinstance(value, str):
        return _to_text(column, value)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return str(value)
    raise _refuse(column, value, "expected its text form")


_CONVERTERS: dict[str, Callable[[ColumnInfo, Any], Any]] = {
    "bool": _to_bool,
    "int": _to_int,
    "float": _to_float,
    "decimal": _to_decimal,
    "text": _to_text,
    "bytes": _to_bytes,
    "date": _to_date,
    "datetime": functools.partial(_to_timestamp, aware=False),
    "datetime_tz": functools.partial(_to_timestamp, aware=True),
    "uuid": _to_uuid,
    "json": _to_json,
}


# --- a converted key -> the wire form the trigger writes for the stored row ---------------------------


def _pg_iso(value: datetime) -> str:
    """``to_json`` of a timestamp: ISO 8601, fraction without trailing zeros, UTC as +00:00."""
    text = value.replace(microsecond=0).isoformat()
    if not value.microsecond:
        return text
    return text[:19] + f".{value.microsecond:06d}".rstrip("0") + text[19:]


def _key_decimal(column: ColumnInfo, value: Any) -> Json:
    if value.is_finite():
        typmod = _NUMERIC_TYPMOD.fullmatch(column.type)
        assert typmod is not None, "unconstrained numeric keys are refused by reflect_table"
        value = value.quantize(Decimal(1).scaleb(-int(typmod[2] or 0)))
        if value.is_zero():
            value = abs(value)  # PostgreSQL's numeric has no negative zero
    return {"$decimal": format(value, "f")}


def _key_float(_column: ColumnInfo, value: Any) -> Json:
    return value + 0.0 if math.isfinite(value) else {"$float": str(value)}


def _key_time(tag: str, utc: bool) -> Callable[[ColumnInfo, Any], Json]:
    def form(_column: ColumnInfo, value: Any) -> Json:
        if isinstance(value, str):
            return {tag: value}  # PostgreSQL's own text (TimeText)
        if isinstance(value, datetime):
            return {tag: _pg_iso(value.astimezone(UTC) if utc else value)}
        return {tag: value.isoformat()}

    return form


_KEY_FORMS: dict[str, Callable[[ColumnInfo, Any], Json]] = {
    "bool": lambda _c, v: v,
    "int": lambda _c, v: v,
    "float": _key_float,
    "decimal": _key_decimal,
    "text": lambda c, v: v.rstrip(" ") if c.type.startswith("character(") else v,
    "bytes": lambda _c, v: {"$bytes": v.hex()},
    "date": _key_time("$date", False),
    "datetime": _key_time("$datetime", False),
    "datetime_tz": _key_time("$datetime", True),
    "uuid": lambda _c, v: str(v),
}
"""By kind: the stored key in wire form (kinds refused as keys by ``reflect_table`` are absent)."""
