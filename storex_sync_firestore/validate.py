"""Stage 4: validation of entries received from the shared log, before anything is stored.

The shared log is not trusted: another device may run a different schema, a newer version, or be
hostile. An entry is accepted only if its table is synced, its key has that table's arity, its columns
are that table's non-key columns, and every value decodes. Names from the log never reach SQL unless
they are synced ones: later stages take names from the synced-table registry, not from entries. Rule
declarations (``policy``) are checked for their shape.
"""

from __future__ import annotations

from collections.abc import Mapping

from .capture.base import TableInfo
from .codec import decode_value, dumps
from .errors import InvalidEntryError
from .models import Json, LogEntry
from .policy import RULES_TABLE, validate_declaration


def _check_scalar(value: Json) -> None:
    decode_value(value)
    if isinstance(value, dict) and "$json" in value:
        raise InvalidEntryError("a primary key value cannot be JSON")


def validate_entry(entry: LogEntry, tables: Mapping[str, TableInfo]) -> None:
    """Raise ``InvalidEntryError`` with the reason if ``entry`` may not be applied here.

    Values for a column that some device dropped (``TableInfo.dropped``) are accepted and never written.
    """
    if entry.table == RULES_TABLE:
        validate_declaration(entry)
        return
    table = tables.get(entry.table)
    if table is None:
        raise InvalidEntryError(f"table {entry.table!r} is not synced on this device")
    if len(entry.pk) != len(table.pk):
        raise InvalidEntryError(
            f"{entry.table} has a {len(table.pk)}-column key, the entry gives {len(entry.pk)} values"
        )
    for value in entry.pk:
        if value is None:
            raise InvalidEntryError("a primary key value cannot be null")
        _check_scalar(value)
    if entry.value is None:
        return
    allowed = {c.name for c in table.value_columns}.union(table.dropped)
    unknown = sorted(set(entry.value) - allowed)
    if unknown:
        raise InvalidEntryError(
            f"columns {unknown} are not synced columns of {entry.table}",
            hint="if they are new, add them here and run 'storex-sync init --db URL' to replay the entry",
        )
    for value in entry.value.values():
        decode_value(value)
    try:  # what the client log will store: a custom serializer may have let NaN into a $json value
        dumps([list(entry.pk), entry.value])
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidEntryError(f"the entry cannot be stored as JSON: {exc}") from exc
