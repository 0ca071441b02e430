"""The SQL of PostgreSQL capture: sync-table DDL, the column-kind mapping and the generated trigger functions.

Each synced table gets its own PL/pgSQL function, generated from the reflected columns, so the trigger
does no dynamic SQL and no catalog look-ups on the application's write path. The function builds the
entry's JSON text by concatenation, in the codec's wire encoding; stamping re-encodes it with the one
canonical encoder. The text must not depend on the writer's session: the function pins the settings that
change how values print (``TimeZone``, ``DateStyle``, ``IntervalStyle``, ``extra_float_digits``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from .base import (
    CAPTURE_TABLE,
    ColumnInfo,
    TableInfo,
    ValueKind,
    literal,
    quote,
)

APPLYING = "storex_sync.applying"
SILENCED = f"current_setting({literal(APPLYING)}, true) = 'on'"
WALL_MS_SQL = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
TRIGGER = "_sync_capture"
TRUNCATE_TRIGGER = "_sync_truncate"
MAX_IDENTIFIER = 63

# The log's tbl and pk compare as exact text, byte for byte like SQLite's: the "C" collation, whatever
# locale the database was created with.
KEY_TEXT = 'TEXT COLLATE "C"'
CAPTURE_DDL = f"""
CREATE TABLE IF NOT EXISTS {CAPTURE_TABLE} (
    seq BIGSERIAL PRIMARY KEY,
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    op TEXT NOT NULL,
    value TEXT,
    wall_ms BIGINT NOT NULL
);
"""

KINDS: dict[str, ValueKind] = {
    "bool": "bool",
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "float4": "float",
    "float8": "float",
    "numeric": "decimal",
    "text": "text",
    "varchar": "text",
    "bpchar": "text",
    "name": "text",
    "citext": "text",
    "bytea": "bytes",
    "date": "date",
    "timestamp": "datetime",
    "timestamptz": "datetime_tz",
    "uuid": "uuid",
    "json": "json",
    "jsonb": "json",
}
"""PostgreSQL base type -> codec kind. Anything else (enums, arrays, intervals...) travels as text."""

REFLECT_SQL = """
SELECT a.attname,
       format_type(COALESCE(bt.oid, t.oid), CASE WHEN bt.oid IS NULL THEN a.atttypmod ELSE t.typtypmod END),
       COALESCE(bt.typname, t.typname),
       a.attnotnull,
       a.attidentity,
       a.attgenerated,
       pg_get_expr(d.adbin, d.adrelid),
       a.attnum = ANY (COALESCE(i.indkey::int2[], '{}')),
       array_position(i.indkey::int2[], a.attnum)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


FOREIGN_KEYS_SQL = """
SELECT (SELECT array_agg(a.attname ORDER BY k.n) FROM unnest(c.conkey) WITH ORDINALITY k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum),
       p.relname,
       (SELECT array_agg(a.attname ORDER BY k.n) FROM unnest(c.confkey) WITH ORDINALITY k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum),
       c.confdeltype
FROM pg_constraint c JOIN pg_class p ON p.oid = c.confrelid
WHERE c.conrelid = :oid AND c.contype = 'f'
ORDER BY 1, 2
"""

UNIQUE_SQL = """
SELECT array_agg(a.attname ORDER BY k.n)
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = :oid AND i.indisunique AND NOT i.indisprimary
  AND i.indpred IS NULL AND i.indexprs IS NULL AND k.n <= i.indnkeyatts
GROUP BY i.indexrelid
ORDER BY 1
"""
"""Unique column sets besides the key: unique constraints and indexes on plain columns, not partial."""

TRIGGER_OWNER_SQL = """
SELECT c.relname FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_proc p ON p.oid = t.tgfoid
WHERE t.tgname = :trigger AND p.proname = :function AND c.relnamespace = current_schema()::regnamespace
"""

SCHEMA_TOKEN_SQL = """
SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
  SELECT concat_ws(':', 'a', c.oid, c.relname, a.attnum, a.attname, a.atttypid, a.atttypmod, a.attnotnull,
                   a.attisdropped, a.atthasdef) AS x
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
  WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND a.attnum > 0
  UNION ALL
  SELECT concat_ws(':', 'c', oid, conrelid, contype) FROM pg_constraint
  WHERE connamespace = current_schema()::regnamespace
  UNION ALL
  SELECT concat_ws(':', 'i', i.indexrelid, i.indrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
  WHERE c.relnamespace = current_schema()::regnamespace
  UNION ALL
  SELECT concat_ws(':', 't', t.oid, t.tgrelid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
  WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal
) s
"""
"""Changes with any column, constraint, index or trigger of the current schema (one cheap query)."""


def function_name(table_name: str, suffix: str = "") -> str:
    """The trigger function's name; long table names are shortened with a hash so two never collide."""
    name = f"_sync_capture_{table_name}{suffix}"
    if len(name.encode()) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha1(table_name.encode()).hexdigest()[:10]
    return f"_sync_capture_{table_name.encode()[:30].decode(errors='ignore')}_{digest}{suffix}"


def encode_sql(ref: str, column: ColumnInfo, *, key: bool = False) -> str:
    """SQL text: the wire-encoded JSON of ``ref`` (e.g. ``NEW."price"``); ``'null'`` for NULL, never NULL.

    Exact for every kind: floats in their shortest round-trip digits, always written as JSON floats
    (``1.0``, ``-0.0``), timestamps to the microsecond in UTC, numerics with their scale, JSON documents
    as their text. UUID keys travel as plain text (like SQLite TEXT keys), so an object's key is the
    same on both; a float key -0 is the key 0, as the primary key index sees it.
    """
    kind = "text" if key and column.kind == "uuid" else column.kind
    if kind == "bool":
        sql = f"CASE WHEN {ref} THEN 'true' ELSE 'false' END"
    elif kind == "int":
        sql = f"{ref}::text"
    elif kind == "float":
        number = f"({ref} + 0::float8)::text" if key else f"{ref}::text"
        sql = (
            f"CASE WHEN {ref} = 'NaN' THEN '{{\"$float\":\"nan\"}}' "
            f"WHEN {ref} = 'Infinity' THEN '{{\"$float\":\"inf\"}}' "
            f"WHEN {ref} = '-Infinity' THEN '{{\"$float\":\"-inf\"}}' "
            f"WHEN strpos({number}, '.') + strpos({number}, 'e') > 0 THEN {number} ELSE {number} || '.0' END"
        )
    elif kind == "text":
        sql = f"to_json({ref}::text)::text"
    elif kind == "bytes":
        sql = f"'{{\"$bytes\":\"' || encode({ref}, 'hex') || '\"}}'"
    elif kind in ("date", "datetime", "datetime_tz"):
        tag = "$date" if kind == "date" else "$datetime"
        sql = f"'{{\"{tag}\":' || to_json({ref})::text || '}}'"
    elif kind == "decimal":
        sql = f"'{{\"$decimal\":\"' || {ref}::text || '\"}}'"
    elif kind == "uuid":
        sql = f"'{{\"$uuid\":\"' || {ref}::text || '\"}}'"
    elif kind == "json":
        sql = f"'{{\"$json\":' || to_json({ref}::text)::text || '}}'"
    else:
        sql = f"to_json({ref}::text)::text"
    return f"(CASE WHEN {ref} IS NULL THEN 'null' ELSE {sql} END)"


def settings(table: TableInfo) -> list[tuple[str, str]]:
    """Settings under which ``table``'s values print the same in every session (the writer's may differ).

    Only those the table's kinds need: setting them costs each trigger call a little.
    """
    kinds = {c.kind for c in table.columns}
    pinned: list[tuple[str, str]] = []
    if kinds & {"float", "any"}:
        pinned.append(("extra_float_digits", "1"))  # shortest digits that read back to the same bits
    if kinds & {"datetime_tz", "any"}:
        pinned.append(("TimeZone", "UTC"))  # an instant prints with +00:00, whoever wrote it
    if "any" in kinds:
        pinned += [("DateStyle", "ISO, YMD"), ("IntervalStyle", "postgres")]
    return pinned


def _set_clauses(table: TableInfo) -> str:
    return "".join(f" SET {name} = {literal(value)}" for name, value in settings(table))


def _member(column: ColumnInfo) -> str:
    """The ``"name":`` prefix of a column inside a JSON object, as an SQL literal."""
    return literal(json.dumps(column.name, ensure_ascii=False) + ":")


def object_sql(table: TableInfo, row: str) -> str:
    """JSON text of every non-key column of ``row`` (``NEW``, ``OLD`` or the table's own alias)."""
    parts = [f"{_member(c)} || {encode_sql(f'{row}.{quote(c.name)}', c)}" for c in table.value_columns]
    return "'{' || " + " || ',' || ".join(parts) + " || '}'" if parts else "'{}'"


def pk_sql(table: TableInfo, row: str) -> str:
    """JSON array text of the key of ``row``."""
    parts = [encode_sql(f"{row}.{quote(c.name)}", c, key=True) for c in table.pk_columns]
    return "'[' || " + " || ',' || ".join(parts) + " || ']'"


def _differs(column: ColumnInfo) -> str:
    """OLD and NEW differ? Compared as text where equality is missing (json) or too lax (numeric scale,
    float -0 = 0)."""
    old, new = f"OLD.{quote(column.name)}", f"NEW.{quote(column.name)}"
    if column.kind in ("json", "decimal", "float", "any"):
        old, new = f"{old}::text", f"{new}::text"
    return f"{old} IS DISTINCT FROM {new}"


def changed_object_sql(table: TableInfo) -> str:
    """JSON text of the columns an UPDATE changed (``array_to_string`` drops the unchanged NULLs)."""
    parts = [
        f"CASE WHEN {_differs(c)} THEN {_member(c)} || {encode_sql(f'NEW.{quote(c.name)}', c)} END"
        for c in table.value_columns
    ]
    return "'{' || array_to_string(ARRAY[" + ", ".join(parts) + "]::text[], ',') || '}'"


def function_sql(table: TableInfo, schema: str) -> list[str]:
    """``CREATE OR REPLACE FUNCTION`` statements for the row trigger and the TRUNCATE trigger of ``table``."""
    capture = f"{quote(schema)}.{CAPTURE_TABLE}"
    into = f"INSERT INTO {capture} (tbl, pk, op, value, wall_ms) VALUES ({literal(table.name)}, "
    key_changed = " OR ".join(_differs(c) for c in table.pk_columns)
    modify = ""
    if table.value_columns:
        changed = " OR ".join(_differs(c) for c in table.value_columns)
        modify = (
            f"ELSIF {changed} THEN\n"
            f"    {into}{pk_sql(table, 'NEW')}, 'modify', {changed_object_sql(table)}, {WALL_MS_SQL});\n"
        )
    pinned = _set_clauses(table)
    row_fn = (
        f"CREATE OR REPLACE FUNCTION {quote(schema)}.{quote(function_name(table.name))}() "
        f"RETURNS trigger LANGUAGE plpgsql{pinned} AS $storex_sync$\n"
        f"BEGIN\n"
        f"  IF {SILENCED} THEN RETURN NULL; END IF;\n"
        f"  IF TG_OP = 'INSERT' THEN\n"
        f"    {into}{pk_sql(table, 'NEW')}, 'create', {object_sql(table, 'NEW')}, {WALL_MS_SQL});\n"
        f"  ELSIF TG_OP = 'DELETE' THEN\n"
        f"    {into}{pk_sql(table, 'OLD')}, 'delete', NULL, {WALL_MS_SQL});\n"
        f"  ELSIF {key_changed} THEN\n"
        f"    {into}{pk_sql(table, 'OLD')}, 'delete', NULL, {WALL_MS_SQL});\n"
        f"    {into}{pk_sql(table, 'NEW')}, 'create', {object_sql(table, 'NEW')}, {WALL_MS_SQL});\n"
        f"  {modify}"
        f"  END IF;\n"
        f"  RETURN NULL;\n"
        f"END\n$storex_sync$"
    )
    alias = "t"
    truncate_fn = (
        f"CREATE OR REPLACE FUNCTION {quote(schema)}.{quote(function_name(table.name, '_truncate'))}() "
        f"RETURNS trigger LANGUAGE plpgsql{pinned} AS $storex_sync$\n"
        f"BEGIN\n"
        f"  IF {SILENCED} THEN RETURN NULL; END IF;\n"
        f"  INSERT INTO {capture} (tbl, pk, op, value, wall_ms)\n"
        f"    SELECT {literal(table.name)}, {pk_sql(table, alias)}, 'delete', NULL, {WALL_MS_SQL}\n"
        f"    FROM {table.sql_name} {alias};\n"
        f"  RETURN NULL;\n"
        f"END\n$storex_sync$"
    )
    return [row_fn, truncate_fn]


def trigger_sql(table: TableInfo, schema: str) -> list[str]:
    """The trigger statements: a row trigger for writes and, since TRUNCATE fires no row trigger, a
    statement trigger that logs a delete for every row about to be truncated."""
    t = table.sql_name
    return [
        f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW "
        f"EXECUTE FUNCTION {quote(schema)}.{quote(function_name(table.name))}()",
        f"CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {t} FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {quote(schema)}.{quote(function_name(table.name, '_truncate'))}()",
    ]


def existing_rows_sql(table: TableInfo, schema: str) -> str:
    """One INSERT ... SELECT logging every row of ``table`` as a create."""
    alias = "t"
    return (
        f"INSERT INTO {quote(schema)}.{CAPTURE_TABLE} (tbl, pk, op, value, wall_ms) "
        f"SELECT {literal(table.name)}, {pk_sql(table, alias)}, 'create', {object_sql(table, alias)}, "
        f"{WALL_MS_SQL} FROM {table.sql_name} {alias}"
    )


def new_column_values_sql(
    table: TableInfo, columns: Sequence[str], schema: str, defaults: Mapping[str, str | None]
) -> str:
    """Log a modify of ``columns`` for every row where one of them differs from its column default
    (``defaults``: the default expressions, from this database's own catalog)."""
    alias = "t"
    picked = [c for c in table.value_columns if c.name in columns]
    parts = [f"{_member(c)} || {encode_sql(f'{alias}.{quote(c.name)}', c)}" for c in picked]
    values = "'{' || " + " || ',' || ".join(parts) + " || '}'"
    differs = " OR ".join(
        f"{alias}.{quote(c.name)} IS DISTINCT FROM ({defaults.get(c.name) or 'NULL'})" for c in picked
    )
    return (
        f"INSERT INTO {quote(schema)}.{CAPTURE_TABLE} (tbl, pk, op, value, wall_ms) "
        f"SELECT {literal(table.name)}, {pk_sql(table, alias)}, 'modify', {values}, {WALL_MS_SQL} "
        f"FROM {table.sql_name} {alias} WHERE {differs}"
    )


DEFAULTS_SQL = """
SELECT a.attname, pg_get_expr(d.adbin, d.adrelid)
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = to_regclass(:n) AND a.attnum > 0 AND NOT a.attisdropped
"""


def lock_sql(table: TableInfo, count: int) -> str:
    """``SELECT ... FOR UPDATE`` of ``count`` keys (params ``p0``...), in key order so that two lockers
    take rows in the same order."""
    width = len(table.pk)
    cols = ", ".join(quote(c) for c in table.pk)
    tuples = ", ".join(
        "(" + ", ".join(f":p{i * width + j}" for j in range(width)) + ")" for i in range(count)
    )
    return f"SELECT 1 FROM {table.sql_name} WHERE ({cols}) IN ({tuples}) ORDER BY {cols} FOR UPDATE"


def chunks(items: Sequence[tuple[object, ...]], size: int) -> list[Sequence[tuple[object, ...]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
