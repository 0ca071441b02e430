"""Stage 6: apply the reconciler's operations to the synced tables, with capture silenced.

Operations are grouped by statement shape and run with ``executemany`` inside a savepoint: the fast
path. If that fails (a value the column cannot hold, a constraint), the savepoint is rolled back and the
operations are replayed one object at a time, each in its own savepoint, in rounds until no more land,
so one bad object is reported and the rest still land. The caller orders the operations (parents
before children, see ``constraints``) and decides what to do with the refused ones. Table and column
names come from the synced-table registry only.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from .capture.base import CaptureDialect, TableInfo, savepoint
from .codec import decode_value, dumps, preview
from .errors import InvalidEntryError
from .models import Json, Operation

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ApplyResult:
    """How many operations landed, and the objects that could not be applied, with the reason."""

    applied: int = 0
    failed: list[tuple[Operation, str]] = field(default_factory=list)
    unfit: set[tuple[str, str]] = field(default_factory=set)
    """(table, key JSON) of the failed objects holding a value their column cannot take (not a
    constraint: no rule can resolve it)."""


def _where(dialect: CaptureDialect, table: TableInfo, offset: int) -> str:
    return " AND ".join(f"{dialect.quote(c)} = :p{offset + i}" for i, c in enumerate(table.pk))


class _Statements:
    """Statements by shape (kind, table, columns), built once per apply and reused for every row."""

    def __init__(self, dialect: CaptureDialect) -> None:
        self.dialect = dialect
        self._built: dict[tuple[str, str, tuple[str, ...]], str] = {}

    def __call__(self, op: Operation, table: TableInfo) -> str:
        columns = tuple(c.name for c in table.value_columns if c.name in op.values)
        key = (op.kind, table.name, columns)
        sql = self._built.get(key)
        if sql is None:
            sql = self._built[key] = self._build(op.kind, table, columns)
        return sql

    def _build(self, kind: str, table: TableInfo, columns: tuple[str, ...]) -> str:
        if kind == "insert":
            return self.dialect.upsert_sql(table, columns)
        if kind == "delete":
            return f"DELETE FROM {table.sql_name} WHERE {_where(self.dialect, table, 0)}"
        sets = ", ".join(f"{self.dialect.quote(c)} = :p{len(table.pk) + i}" for i, c in enumerate(columns))
        return f"UPDATE {table.sql_name} SET {sets} WHERE {_where(self.dialect, table, 0)}"


def _params(op: Operation, table: TableInfo, dialect: CaptureDialect) -> dict[str, Any]:
    """Decoded, column-converted parameters: key columns first, then the op's columns in table order."""
    values: list[Any] = []
    pairs: list[tuple[Any, Json]] = list(zip(table.pk_columns, op.pk, strict=True))
    pairs += [(c, op.values[c.name]) for c in table.value_columns if c.name in op.values]
    for column, raw in pairs:
        try:
            values.append(dialect.to_db(column, decode_value(raw)))
        except (ValueError, TypeError, ArithmeticError, InvalidEntryError) as exc:
            raise _UnapplicableError(
                f"column {table.name}.{column.name} cannot hold {preview(raw)}: {exc}"
            ) from exc
    return {f"p{i}": v for i, v in enumerate(values)}


class _UnapplicableError(Exception):
    pass


def apply_operations(
    conn: Connection,
    dialect: CaptureDialect,
    tables: Mapping[str, TableInfo],
    operations: Sequence[Operation],
) -> ApplyResult:
    """Apply ``operations`` in the caller's transaction; the caller silences capture around this."""
    result = ApplyResult()
    if not operations:
        return result
    statement = _Statements(dialect)
    try:
        with savepoint(conn):
            groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
            # Deletes first: a key freed by one object's delete may be reused by another's insert.
            for op in sorted(operations, key=lambda o: o.kind != "delete"):
                table = tables[op.table]
                groups[statement(op, table)].append(_params(op, table, dialect))
            for sql, params in groups.items():
                conn.execute(text(sql), params)
        result.applied = len(operations)
        return result
    except Exception:
        pass
    pending = list(operations)
    while True:  # another round lets an object whose parent (or freed value) came later now succeed
        failed: list[tuple[Operation, str]] = []
        for op in pending:
            table = tables[op.table]
            try:
                with savepoint(conn):
                    conn.execute(text(statement(op, table)), _params(op, table, dialect))
                result.applied += 1
            except _UnapplicableError as exc:
                failed.append((op, str(exc)))
                result.unfit.add((op.table, dumps(list(op.pk))))
            except SQLAlchemyError as exc:
                failed.append((op, f"the database refused {op.kind} on {op.table}: {_first_line(exc)}"))
            except Exception as exc:  # e.g. a driver's OverflowError: set the object aside, do not wedge
                log.exception("applying %s on %s %s failed", op.kind, op.table, list(op.pk))
                failed.append((op, f"{op.kind} on {op.table} failed: {type(exc).__name__}: {exc}"))
        if len(failed) in (0, len(pending)):
            result.failed = failed
            break
        pending = [op for op, _ in failed]
        result.failed = failed
    return result


def _first_line(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).splitlines()[0]
