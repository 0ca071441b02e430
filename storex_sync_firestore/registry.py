"""The synced-table registry (``_sync_tables``): each table's reflected schema, its rules, and whether
capture is on, keyed by the table's name in the shared log.

A table whose capture is switched off (``storex-sync disable``) stays registered: turning capture on
again then continues the table's history instead of logging every row again as new.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from sqlalchemy import Connection, text

from .capture.base import TABLES_TABLE, TableInfo
from .policy import TableRules


@dataclass(frozen=True, slots=True)
class Registered:
    """One registry row."""

    info: TableInfo
    rules: TableRules = field(default_factory=TableRules)
    disabled: bool = False

    def with_info(self, info: TableInfo) -> Registered:
        return replace(self, info=info)


def load(conn: Connection) -> dict[str, Registered]:
    """Every registered table, enabled or not, by its name in the log."""
    rows = conn.execute(text(f"SELECT name, info FROM {TABLES_TABLE} ORDER BY name")).all()
    registered: dict[str, Registered] = {}
    for name, raw in rows:
        data = json.loads(raw)
        registered[name] = Registered(
            TableInfo.from_json(name, data),
            TableRules.from_json(data.get("rules")),
            bool(data.get("disabled")),
        )
    return registered


def enabled(conn: Connection) -> dict[str, TableInfo]:
    """The tables whose capture is on: the synced tables."""
    return {name: r.info for name, r in load(conn).items() if not r.disabled}


def store(conn: Connection, entry: Registered) -> None:
    data = {**entry.info.as_json(), "rules": entry.rules.as_json(), "disabled": entry.disabled}
    conn.execute(text(f"DELETE FROM {TABLES_TABLE} WHERE name = :n"), {"n": entry.info.name})
    conn.execute(
        text(f"INSERT INTO {TABLES_TABLE} (name, info) VALUES (:n, :i)"),
        {"n": entry.info.name, "i": json.dumps(data)},
    )
