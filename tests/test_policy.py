"""Conflict rules as data: which declaration sets a table's rules in the log, what a declaration may hold,
and the rules a table cannot follow."""

from __future__ import annotations

from typing import Any

import pytest

from storex_sync_firestore import ColumnInfo, ConfigurationError, InvalidEntryError, LogEntry, TableInfo
from storex_sync_firestore.clock import HybridLogicalClock
from storex_sync_firestore.policy import (
    RULES_TABLE,
    check_rules,
    dropped_columns,
    log_rules,
    rules_for,
    validate_declaration,
)
from storex_sync_firestore.shared_log.base import SharedSyncLog

from .conftest import DeviceFactory
from .forge import Writer


def declared(device: str, hlc: int, op: str, rule: str, dropped: list[str] | None = None) -> LogEntry:
    value: dict[str, Any] = {"version": 1, "on_conflict": rule, "dropped": dropped or []}
    return LogEntry(device, hlc, RULES_TABLE, ("users",), op, value)  # type: ignore[arg-type]


def test_the_first_declaration_sets_the_rules_and_a_later_change_overrides_it() -> None:
    first, joiner = declared("a", 10, "create", "clear-later"), declared("b", 20, "create", "delete-later")
    assert log_rules([joiner, first]) is first  # a device joining later does not override the log
    change = declared("b", 30, "modify", "delete-later")
    assert log_rules([first, joiner, change]) is change  # re-running init with another rule does
    assert log_rules([]) is None


def test_dropped_columns_are_the_union_of_every_declaration() -> None:
    entries = [
        declared("a", 1, "create", "delete-later", ["body"]),
        declared("b", 2, "create", "delete-later"),
    ]
    assert dropped_columns(entries) == {"body"}


@pytest.mark.parametrize(
    "value",
    [
        {"version": 1},
        {"version": "1", "on_conflict": "delete-later"},
        {"version": 1, "on_conflict": "delete-later", "extra": 1},
        {"version": 1, "on_conflict": "delete-later", "dropped": "body"},
        {"version": 1, "on_conflict": "delete-later", "dropped": [1]},
    ],
)
def test_a_malformed_declaration_is_refused(value: dict[str, Any]) -> None:
    with pytest.raises(InvalidEntryError):
        validate_declaration(LogEntry("a", 1, RULES_TABLE, ("users",), "create", value))


def test_a_malformed_declaration_from_the_log_is_set_aside(
    make_devices: DeviceFactory, memory_log: SharedSyncLog
) -> None:
    (b,) = make_devices(1)
    bad = {"op": "create", "table": RULES_TABLE, "pk": ["notes"], "value": {"on_conflict": 5}}
    Writer.register(memory_log, "alice").upload([bad], hlcs=[HybridLogicalClock().stamp()])
    assert b.sync().set_aside == 1
    assert "malformed rules declaration" in b.query("SELECT reason FROM _sync_quarantine")[0][0]


def test_unknown_rules_and_unimportable_functions_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown on_conflict"):
        rules_for("keep-both")
    with pytest.raises(ConfigurationError, match="importable"):
        rules_for(lambda conflict: None)
    with pytest.raises(ConfigurationError, match="cannot be imported"):
        rules_for("no_such_module_here:decide")


def test_clear_later_needs_nullable_unique_columns() -> None:
    table = TableInfo(
        "items",
        (ColumnInfo("id", "TEXT"), ColumnInfo("sku", "TEXT", nullable=False)),
        ("id",),
        unique=(("sku",),),
    )
    with pytest.raises(ConfigurationError, match="NOT NULL"):
        check_rules(table, rules_for("clear-later"))
    check_rules(table, rules_for("delete-later"))
