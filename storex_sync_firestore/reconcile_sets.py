"""The default reconciler's set-based path: a whole chunk of the client log folded and written at once.

``reconcile.LastWriteWins`` is the reference, and stays the path for custom reconcilers. This module
computes the same writes for the same entries (a differential test holds them to it), but over the raw
log rows of a chunk of objects, without building an entry, a history or an operation object per change,
and it writes each object once, with one ``executemany`` per table and statement shape.

Which objects take it: those of tables that no constraint rule concerns, i.e. with no unique column set
besides the key and no foreign key to or from another synced table. The rules for those (follow the
parent, the later claim of a unique value loses) need the per-object pass of ``constraints``. A CHECK or
NOT NULL that a merged row breaks, a value a column cannot hold, or any other refusal makes the chunk's
writes fail as a whole: they are rolled back and the chunk goes through the per-object pass, which
applies the CHECK rule and sets aside exactly the objects that still fail. Names in SQL come from the
synced-table registry only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection

from .capture import dialect_of
from .capture.base import CaptureDialect, ColumnInfo, TableInfo
from .codec import decode_value
from .models import Json
from .validate import MAX_ENTRY_DEPTH

Row = Sequence[Any]
"""A client-log row as ``client_log.load_pending_rows`` reads it:
(seq, device_id, hlc, tbl, pk, op, value, needs_integration)."""
Key = tuple[int, str]
loads = orjson.loads
"""The log's own JSON text, written by ``codec.dumps`` (which refuses integers beyond 64 bits, so none is
rounded here): read without ``codec.loads``' scan for long integers."""
Register = tuple[Key, Json]


class UnfitError(Exception):
    """A value of the chunk that its column cannot hold: the chunk goes through the per-object pass."""


def plain_tables(tables: Mapping[str, TableInfo]) -> list[str]:
    """The synced tables whose objects may take the set-based path (see the module docstring)."""
    local = {t.local_name for t in tables.values()}
    referenced = {fk.parent for t in tables.values() for fk in t.foreign_keys}
    plain = []
    for name, table in tables.items():
        names = [table.local_name, *(c.name for c in table.columns)]
        if (
            table.unique
            or any(fk.parent in local for fk in table.foreign_keys)
            or table.local_name in referenced
            or any("?" in n or "%" in n for n in names)  # placeholders: keep such names on the other path
        ):
            continue
        plain.append(name)
    return sorted(plain)


@dataclass(slots=True)
class Writes:
    """What a chunk asks of the tables: per statement (kind, table, columns), the parameter rows."""

    groups: dict[tuple[str, str, tuple[str, ...]], list[tuple[Any, ...]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    objects: int = 0

    @property
    def count(self) -> int:
        return sum(len(rows) for rows in self.groups.values())


def group(rows: Iterable[Row]) -> dict[tuple[str, str], list[Row]]:
    """Rows by object, (table, key JSON) as the log stores it."""
    objects: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        objects[(row[3], row[4])].append(row)
    return objects


def plan(
    objects: Mapping[tuple[str, str], Sequence[Row]], tables: Mapping[str, TableInfo], dialect: CaptureDialect
) -> Writes:
    """The writes that take each object from its state before the new entries to its state after them,
    as ``LastWriteWins`` with merged double creates decides. Raises :class:`UnfitError` for a value its
    column cannot hold."""
    writes = Writes()
    known = {name: {c.name for c in t.value_columns} for name, t in tables.items()}
    for (tbl, pk_json), rows in objects.items():
        table = tables[tbl]
        try:
            kind, values = _diff(rows)
        except Exception as exc:  # a stored row that does not read back: the per-object path sets it aside
            raise UnfitError(f"{tbl} {pk_json}: {exc}") from exc
        if kind is None:
            continue
        if values:
            values = {c: v for c, v in values.items() if c in known[tbl]}  # dropped columns: not written
            if kind == "update" and not values:
                continue
        columns = tuple(c.name for c in table.value_columns if c.name in values)
        params = _params(table, dialect, kind, loads(pk_json), columns, values)
        writes.groups[(kind, tbl, columns)].append(params)
        writes.objects += 1
    return writes


def _diff(rows: Sequence[Row]) -> tuple[str | None, dict[str, Json]]:
    """(kind, values) of the one write this object needs: ``reconcile.fold`` and ``reconcile.diff`` over
    the old entries (integrated) and all of them, on tuples."""
    for row in rows:  # a row that may nest deeper than the codec reads it back: see client_log._entry
        if row[6] is not None and row[6].count("{") + row[6].count("[") > MAX_ENTRY_DEPTH:
            raise ValueError("the stored entry may nest deeper than the receive stage allows")
    if len(rows) == 1:  # the common case: one new change of an object this device never had
        _seq, _device, _hlc, _tbl, _pk, op, value, _pending = rows[0]
        return ("insert", loads(value)) if op == "create" else (None, {})
    old_existence: tuple[Key, str] | None = None
    new_existence: tuple[Key, str] | None = None
    old_fields: dict[str, Register] = {}
    new_fields: dict[str, Register] = {}
    for _seq, device, hlc, _tbl, _pk, op, value, pending in rows:
        key = (hlc, device)
        if op != "modify":
            if new_existence is None or key > new_existence[0]:
                new_existence = (key, op)
            if not pending and (old_existence is None or key > old_existence[0]):
                old_existence = (key, op)
        if op != "delete" and value is not None:
            for column, v in loads(value).items():
                current = new_fields.get(column)
                if current is None or key > current[0]:
                    new_fields[column] = (key, v)
                if not pending:
                    current = old_fields.get(column)
                    if current is None or key > current[0]:
                        old_fields[column] = (key, v)
    old_live = _live(old_existence, old_fields)
    new_live = _live(new_existence, new_fields)
    if new_live is None:
        return ("delete", {}) if old_live is not None else (None, {})
    if old_live is None:
        return "insert", {c: v for c, (_k, v) in new_live.items()}
    changed = {c: v for c, (k, v) in new_live.items() if c not in old_live or old_live[c][0] != k}
    changed.update({c: None for c in old_live if c not in new_live})
    return ("update", changed) if changed else (None, {})


def _live(existence: tuple[Key, str] | None, fields: Mapping[str, Register]) -> dict[str, Register] | None:
    """The registers written since the object was last created; None if it does not exist."""
    if existence is None or existence[1] != "create":
        return None
    floor = existence[0]
    return {c: r for c, r in fields.items() if r[0] >= floor}


def _params(
    table: TableInfo,
    dialect: CaptureDialect,
    kind: str,
    pk: Sequence[Json],
    columns: Sequence[str],
    values: Mapping[str, Json],
) -> tuple[Any, ...]:
    """The statement's parameters, decoded and converted for their columns: an update's values come
    before its key (``SET ... WHERE``), an insert's after it."""
    try:
        key = [_convert(dialect, c, v) for c, v in zip(table.pk_columns, pk, strict=True)]
        by_name = {c.name: c for c in table.value_columns}
        row = [_convert(dialect, by_name[c], values[c]) for c in columns]
    except Exception as exc:  # the per-object path reports it per object, with its reason
        raise UnfitError(f"{table.name}: {exc}") from exc
    return (*row, *key) if kind == "update" else (*key, *row)


_AS_IS = frozenset({str, float, type(None)})
"""JSON scalars SQLite binds as they are: ``decode_value`` and ``SQLiteCapture.to_db`` return them
unchanged (a float read from JSON is finite; an integer is checked for 64 bits below)."""


def _convert(dialect: CaptureDialect, column: ColumnInfo, raw: Json) -> Any:
    """``dialect.to_db(column, decode_value(raw))``, without the two calls where SQLite needs none."""
    if dialect.name == "sqlite" and (type(raw) in _AS_IS or (type(raw) is int and -(2**63) <= raw < 2**63)):
        return raw
    return dialect.to_db(column, decode_value(raw))


def apply(conn: Connection, tables: Mapping[str, TableInfo], writes: Writes) -> int:
    """Run the writes in the caller's transaction (capture silenced by the caller): deletes first, so a
    key freed by one object is free for another's insert. Returns the rows written."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    ordered = sorted(writes.groups.items(), key=lambda item: item[0][0] != "delete")
    dialect = dialect_of(conn)
    for (kind, tbl, columns), params in ordered:
        conn.exec_driver_sql(statement(dialect, tables[tbl], kind, columns, mark), params)
    return writes.count


def statement(
    dialect: type[CaptureDialect], table: TableInfo, kind: str, columns: Sequence[str], mark: str
) -> str:
    """The statement of one shape with positional placeholders ``mark``; the same writes as
    ``apply._Statements`` (an insert is an upsert: the row may exist, written while capture was off)."""
    key = " AND ".join(f"{dialect.quote(c)} = {mark}" for c in table.pk)
    if kind == "delete":
        return f"DELETE FROM {table.sql_name} WHERE {key}"
    if kind == "update":
        sets = ", ".join(f"{dialect.quote(c)} = {mark}" for c in columns)
        return f"UPDATE {table.sql_name} SET {sets} WHERE {key}"
    return dialect.upsert(table, columns, [mark] * (len(table.pk) + len(columns)))
