"""Stage 4: validation of entries received from the shared log, before anything is stored.

The shared log is not trusted: another device may run a different schema, a newer version, or be
hostile. An entry is accepted only if its table is synced, its key has that table's arity and fits the
key columns, its columns are that table's non-key columns, and every value decodes. Names from the log
never reach SQL unless they are synced ones: later stages take names from the synced-table registry, not
from entries.

Keys are made canonical here, the one place every received entry passes: the client log groups entries
into objects by the exact key text, so a key must read as the receiving database stores it. ``[777]``
and ``["777"]`` for a TEXT key column are one SQLite row, and become one object, ``["777"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from .capture.base import CaptureDialect, TableInfo
from .codec import decode_value, dumps
from .errors import InvalidEntryError
from .models import Json, LogEntry


def canonical_pk(table: TableInfo, pk: tuple[Json, ...], dialect: CaptureDialect) -> tuple[Json, ...]:
    """The key as this database's capture would write it for the row it names, or InvalidEntryError."""
    canonical: list[Json] = []
    for column, value in zip(table.pk_columns, pk, strict=True):
        if value is None:
            raise InvalidEntryError("a primary key value cannot be null")
        if isinstance(value, dict) and "$json" in value:
            raise InvalidEntryError("a primary key value cannot be JSON")
        try:
            canonical.append(dialect.canonical_key(column, value))
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise InvalidEntryError(
                f"key column {table.name}.{column.name} cannot hold {value!r}: {exc}"
            ) from exc
    return tuple(canonical)


def validate_entry(entry: LogEntry, tables: Mapping[str, TableInfo], dialect: CaptureDialect) -> LogEntry:
    """The entry with its key made canonical; raise ``InvalidEntryError`` with the reason if ``entry``
    may not be applied here."""
    table = tables.get(entry.table)
    if table is None:
        raise InvalidEntryError(f"table {entry.table!r} is not synced on this device")
    if len(entry.pk) != len(table.pk):
        raise InvalidEntryError(
            f"{entry.table} has a {len(table.pk)}-column key, the entry gives {len(entry.pk)} values"
        )
    pk = canonical_pk(table, entry.pk, dialect)
    if pk != entry.pk or any(type(a) is not type(b) for a, b in zip(pk, entry.pk, strict=True)):
        entry = replace(entry, pk=pk)
    if entry.value is None:
        return entry
    allowed = {c.name for c in table.value_columns}
    unknown = sorted(set(entry.value) - allowed)
    if unknown:
        raise InvalidEntryError(f"columns {unknown} are not synced columns of {entry.table}")
    for value in entry.value.values():
        decode_value(value)
    try:  # what the client log will store: the one encoder refuses what it cannot write exactly
        dumps([list(entry.pk), entry.value])
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidEntryError(f"the entry cannot be stored as JSON: {exc}") from exc
    return entry
