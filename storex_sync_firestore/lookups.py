"""The reads the constraint rules make in the application's tables, keyed the way the log keys objects.

Rows come back as wire-encoded key JSON (built by the capture dialect's own key encoder), so a row found
here is the same object the log and the reconciler talk about. Names come from the synced-table registry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, text

from .capture.base import QUARANTINE_TABLE, CaptureDialect, ColumnInfo, TableInfo, quote
from .codec import decode_value
from .errors import InvalidEntryError
from .models import Json

CHUNK = 400


def _select(dialect: CaptureDialect, tables: Sequence[TableInfo]) -> tuple[str, list[int]]:
    """Select list reading the keys of ``tables`` (one alias ``t``), and where each key's columns end."""
    parts: list[str] = []
    ends: list[int] = []
    for table in tables:
        parts.extend(dialect.key_columns(table, "t"))
        ends.append(len(parts))
    return ", ".join(parts), ends


def _keys(
    dialect: CaptureDialect, tables: Sequence[TableInfo], ends: Sequence[int], row: Sequence[Any]
) -> list[str]:
    starts = [0, *ends[:-1]]
    return [dialect.key_from_row(t, row[a:b]) for t, a, b in zip(tables, starts, ends, strict=True)]


def _param(dialect: CaptureDialect, column: ColumnInfo, value: Json) -> Any:
    return dialect.to_db(column, decode_value(value))


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _matching(
    dialect: CaptureDialect, columns: Sequence[ColumnInfo], rows: Sequence[Sequence[Json]]
) -> tuple[str, dict[str, Any]]:
    """``(c1 = :m0_0 AND c2 = :m0_1) OR (...)`` for the wire-encoded value tuples ``rows``."""
    params: dict[str, Any] = {}
    ors: list[str] = []
    for i, row in enumerate(rows):
        try:
            values = [_param(dialect, c, v) for c, v in zip(columns, row, strict=True)]
        except (ValueError, TypeError, ArithmeticError, InvalidEntryError):
            continue  # a value this column cannot hold matches no row
        ands = []
        for j, (column, value) in enumerate(zip(columns, values, strict=True)):
            params[f"m{i}_{j}"] = value
            ands.append(f"t.{quote(column.name)} = :m{i}_{j}")
        ors.append("(" + " AND ".join(ands) + ")")
    return (" OR ".join(ors) or "1 = 0"), params


def existing_keys(
    conn: Connection, dialect: CaptureDialect, table: TableInfo, keys: Sequence[Sequence[Json]]
) -> set[str]:
    """Which of ``keys`` (wire-encoded) are rows of ``table`` now; returned as key JSON."""
    found: set[str] = set()
    for chunk in _chunks(keys):
        where, params = _matching(dialect, table.pk_columns, chunk)
        select, ends = _select(dialect, [table])
        sql = f"SELECT {select} FROM {table.sql_name} t WHERE {where}"
        found.update(_keys(dialect, [table], ends, row)[0] for row in conn.execute(text(sql), params))
    return found


def referencing(
    conn: Connection,
    dialect: CaptureDialect,
    child: TableInfo,
    columns: Sequence[str],
    values: Sequence[Sequence[Json]],
) -> list[tuple[str, str]]:
    """Rows of ``child`` whose ``columns`` hold one of ``values``: (child key JSON, the values as JSON).

    ``values`` are in key encoding (as a parent's key travels); so are the values returned.
    """
    by_name = {c.name: c for c in child.columns}
    cols = [by_name[c] for c in columns]
    as_key = TableInfo(child.name, child.columns, tuple(columns), local_name=child.local_name)
    found: list[tuple[str, str]] = []
    for chunk in _chunks(values):
        where, params = _matching(dialect, cols, chunk)
        select, ends = _select(dialect, [child, as_key])
        sql = f"SELECT {select} FROM {child.sql_name} t WHERE {where}"
        for row in conn.execute(text(sql), params):
            key, refers = _keys(dialect, [child, as_key], ends, row)
            found.append((key, refers))
    return found


def holders(
    conn: Connection,
    dialect: CaptureDialect,
    table: TableInfo,
    columns: Sequence[str],
    pk: Sequence[Json],
    values: Mapping[str, Json],
) -> list[str]:
    """Other rows of ``table`` holding the values the row ``pk`` would have in ``columns``.

    ``values`` are the row's new values; a column it does not set keeps its value in the table. A NULL
    in any column matches nothing, as in the database's own unique check.
    """
    where: list[str] = []
    params: dict[str, Any] = {}

    def same_key(alias: str) -> str:
        return " AND ".join(f"{alias}.{quote(c.name)} = :k{i}" for i, c in enumerate(table.pk_columns))

    try:
        keyed = enumerate(zip(table.pk_columns, pk, strict=True))
        params.update({f"k{i}": _param(dialect, c, v) for i, (c, v) in keyed})
        for j, name in enumerate(columns):
            column = table.column(name)
            if column is None:
                return []
            if name in values:
                if values[name] is None:
                    return []
                params[f"u{j}"] = _param(dialect, column, values[name])
                where.append(f"t.{quote(name)} = :u{j}")
            else:
                kept = f"(SELECT s.{quote(name)} FROM {table.sql_name} s WHERE {same_key('s')})"
                where.append(f"t.{quote(name)} = {kept}")
    except (ValueError, TypeError, ArithmeticError, InvalidEntryError):
        return []
    select, ends = _select(dialect, [table])
    sql = f"SELECT {select} FROM {table.sql_name} t WHERE {' AND '.join(where)} AND NOT ({same_key('t')})"
    return [_keys(dialect, [table], ends, row)[0] for row in conn.execute(text(sql), params)]


def set_aside_objects(conn: Connection, objects: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the (table, key JSON) objects have incoming entries set aside on this device."""
    found: set[tuple[str, str]] = set()
    for chunk in _chunks(objects):
        params: dict[str, str] = {}
        ors = []
        for i, (t, k) in enumerate(chunk):
            params[f"t{i}"], params[f"k{i}"] = t, k
            ors.append(f"(tbl = :t{i} AND pk = :k{i})")
        rows = conn.execute(
            text(
                f"SELECT DISTINCT tbl, pk FROM {QUARANTINE_TABLE} "
                f"WHERE direction = 'incoming' AND ({' OR '.join(ors)})"
            ),
            params,
        )
        found.update((str(t), str(k)) for t, k in rows)
    return found
