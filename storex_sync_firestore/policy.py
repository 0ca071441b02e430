"""Per-table conflict rules, and how the devices of one log make sure they all use the same ones.

The one rule users choose is what happens to the later of two rows that claim the same value of a
UNIQUE column (``on_conflict`` at :meth:`SyncedDatabase.enable_sync`): ``"delete-later"`` (the default)
deletes it, ``"clear-later"`` sets its unique columns to NULL, and an importable function decides
itself (see :class:`UniqueConflict`). The foreign-key and CHECK rules follow from the schema and are
the same for everyone.

The rules live in the synced-table registry, and every device declares them in the shared log as
ordinary entries of the reserved table ``_sync_rules`` (key: the table's name in the log). The log's
rules for a table are those of the first declaration, unless a device changed its rules afterwards
(``init`` again with another ``on_conflict``): the latest such change wins. A device whose own rules
differ from the log's is stopped before it reconciles, with an error naming both and the command that
makes it agree, because devices resolving conflicts by different rules would not end in the same state
as the documented rule says. The same declaration lists the columns the device dropped, so that a
device that never had them (created after the drop) accepts old entries holding them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection

from .capture.base import TableInfo
from .clock import HybridLogicalClock
from .codec import dumps
from .errors import ConfigurationError, InvalidEntryError, RulesMismatchError
from .models import Json, LogEntry, OpName

RULES_TABLE = "_sync_rules"
"""Reserved table name of rule declarations in the log; never a table of the application."""
RULES_VERSION = 1
"""Bumped when the constraint rules themselves change, so devices running different rules notice."""

NamedPolicy = Literal["delete-later", "clear-later"]
NAMED_POLICIES: tuple[NamedPolicy, ...] = ("delete-later", "clear-later")


@dataclass(frozen=True, slots=True)
class UniqueConflict:
    """Two rows claim the same value of a unique column set; ``loser`` claimed it later (by the clock).

    A custom ``on_conflict`` function receives this and returns the values to write on the loser
    (wire-encoded, at least one unique column changed), or None to delete the loser. It must be a pure
    function of its argument: every device calls it and must get the same answer.
    """

    table: str
    columns: tuple[str, ...]
    winner: tuple[Json, ...]
    loser: tuple[Json, ...]
    loser_values: Mapping[str, Json]
    winner_values: Mapping[str, Json]


ConflictHandler = Callable[[UniqueConflict], Mapping[str, Json] | None]
OnConflict = NamedPolicy | str | ConflictHandler
"""A named rule, "module:function" of an importable function, or the function itself."""


@dataclass(frozen=True, slots=True)
class TableRules:
    """A synced table's conflict rules as the registry stores them."""

    on_conflict: str = "delete-later"
    """``delete-later``, ``clear-later`` or ``module:qualified.name`` of a function."""

    def as_json(self) -> dict[str, Any]:
        return {"version": RULES_VERSION, "on_conflict": self.on_conflict}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> TableRules:
        return cls(str((data or {}).get("on_conflict") or "delete-later"))

    def fingerprint(self) -> str:
        """What devices compare: the rules and their version, as canonical JSON."""
        return dumps(self.as_json())

    def handler(self) -> ConflictHandler | None:
        """The custom function, imported by name (so the CLI finds it too); None for a named policy."""
        if self.on_conflict in NAMED_POLICIES:
            return None
        module, _, qualname = self.on_conflict.partition(":")
        try:
            found: Any = importlib.import_module(module)
            for part in qualname.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(
                f"the on_conflict function {self.on_conflict!r} cannot be imported here: {exc}",
                hint="install the module that defines it in this environment (it must be importable by "
                "name on every device)",
            ) from exc
        if not callable(found):
            raise ConfigurationError(f"on_conflict {self.on_conflict!r} is not a function")
        return found  # type: ignore[no-any-return]


def rules_for(on_conflict: OnConflict) -> TableRules:
    """Registry rules for an ``on_conflict`` argument; a function is stored by its import name."""
    if isinstance(on_conflict, str):
        if on_conflict in NAMED_POLICIES:
            return TableRules(on_conflict)
        if ":" in on_conflict:  # a function given by name (the CLI's --on-conflict module:function)
            rules = TableRules(on_conflict)
            rules.handler()
            return rules
        raise ConfigurationError(
            f"unknown on_conflict rule {on_conflict!r}",
            hint=f"use one of {', '.join(NAMED_POLICIES)}, or module:function of an importable function",
        )
    module, qualname = getattr(on_conflict, "__module__", None), getattr(on_conflict, "__qualname__", "")
    if not module or "<" in qualname:
        raise ConfigurationError(
            f"the on_conflict function {on_conflict!r} has no importable name",
            hint="define it at module level, so every device (and the CLI) can import it by name",
        )
    return TableRules(f"{module}:{qualname}")


def check_rules(table: TableInfo, rules: TableRules) -> None:
    """Refuse, at enable time, rules the table cannot follow."""
    if rules.on_conflict != "clear-later":
        return
    for columns in table.unique:
        strict = [c for c in columns if not (info := table.column(c)) or not info.nullable]
        if strict:
            raise ConfigurationError(
                f"on_conflict='clear-later' cannot clear {table.name}.{', '.join(strict)}: NOT NULL",
                hint="use on_conflict='delete-later', a function, or allow NULL in the unique column",
            )


# --- declarations in the log ------------------------------------------------------------------------


def declaration(rules: TableRules, table: TableInfo) -> dict[str, Any]:
    """What this device declares for a table: its rules, and the columns it dropped."""
    return {**rules.as_json(), "dropped": list(table.dropped)}


def declarations(
    rules: Mapping[str, TableRules],
    tables: Mapping[str, TableInfo],
    declared: Mapping[str, str],
    clock: HybridLogicalClock,
    device_id: str,
) -> list[LogEntry]:
    """Entries declaring what this device has not declared yet (a create the first time, a modify when
    it changed since), to be logged and shared like any other entry.

    Only tables with unique column sets or dropped columns are declared: elsewhere nothing needs agreeing.
    """
    entries: list[LogEntry] = []
    for name, table in sorted(tables.items()):
        value = declaration(rules.get(name, TableRules()), table)
        if not (table.unique or table.dropped) or declared.get(name) == dumps(value):
            continue
        op: OpName = "modify" if name in declared else "create"
        entries.append(LogEntry(device_id, clock.stamp(), RULES_TABLE, (name,), op, value))
    return entries


def read_declarations(conn: Connection, tables: Sequence[str]) -> dict[str, list[LogEntry]]:
    """Every device's declarations for ``tables`` in the client log (own and received)."""
    from . import client_log  # the client log validates received declarations with this module

    keys = [(RULES_TABLE, dumps([t])) for t in sorted(tables)]
    return {str(h.pk[0]): list(h.entries) for h in client_log.load_objects(conn, keys)}


def log_rules(entries: Sequence[LogEntry]) -> LogEntry | None:
    """The declaration that sets a table's rules in the log: the latest change after the first
    declaration, else the first declaration (a device joining later does not override the log)."""
    creates = sorted((e for e in entries if e.op == "create"), key=lambda e: e.key)
    if not creates:
        return None
    first = creates[0]
    changes = [e for e in entries if e.op == "modify" and e.key > first.key]
    return max(changes, key=lambda e: e.key) if changes else first


def dropped_columns(entries: Sequence[LogEntry]) -> set[str]:
    """Columns any device declared dropped: a device that lacks one ignores its values."""
    return {str(c) for e in entries for c in (e.value or {}).get("dropped", ())}


def check_agreement(
    declared: Mapping[str, Sequence[LogEntry]], rules: Mapping[str, TableRules], device_id: str
) -> None:
    """Raise ``RulesMismatchError`` if the log sets other rules for one of ``rules``' tables."""
    for table, entries in sorted(declared.items()):
        winner = log_rules(entries)
        if winner is None or winner.value is None or table not in rules:
            continue
        theirs = TableRules.from_json(winner.value)
        ours = rules[table]
        if theirs.fingerprint() != ours.fingerprint() and winner.device_id != device_id:
            raise RulesMismatchError(
                f"table {table}: this device resolves unique conflicts by {ours.on_conflict!r}, the log's "
                f"devices by {theirs.on_conflict!r} (declared by device {winner.device_id}); devices with "
                "different rules would resolve the same conflict differently",
                hint=f"run 'storex-sync init --db URL --tables {table} --on-conflict {theirs.on_conflict}' "
                "to use the log's rules (nothing was reconciled meanwhile)",
            )


def validate_declaration(entry: LogEntry) -> None:
    """A declaration from the log must have the shape this module writes."""
    if entry.op == "delete" or len(entry.pk) != 1 or not isinstance(entry.pk[0], str):
        raise InvalidEntryError("a rules declaration names one table and is a create or a modify")
    value = entry.value or {}
    dropped = value.get("dropped", [])
    well_formed = (
        set(value) <= {"version", "on_conflict", "dropped"}
        and isinstance(value.get("version"), int)
        and isinstance(value.get("on_conflict"), str)
        and len(value["on_conflict"]) <= 500
        and isinstance(dropped, list)
        and len(dropped) <= 1000
        and all(isinstance(c, str) and len(c) <= 500 for c in dropped)
    )
    if not well_formed:
        raise InvalidEntryError(f"malformed rules declaration {dict(value)!r}")
