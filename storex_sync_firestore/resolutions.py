"""The record of constraint resolutions: what sync changed to keep the schema's rules, and why.

A resolution is also an ordinary entry in the log (shared, so every device applies it); this table is the
device's own account of the ones it made, listed by ``storex-sync status``. Schema changes that sync
followed on its own (a new column, a renamed table) are recorded here too: nothing happens silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from .capture.base import RESOLUTIONS_TABLE
from .codec import dumps
from .models import Json


@dataclass(frozen=True, slots=True)
class Resolution:
    """One object changed by a rule: the table (log name), key, rule and what happened."""

    table: str
    pk: tuple[Json, ...]
    rule: str
    detail: Mapping[str, Any] = field(default_factory=dict)


def record(conn: Connection, resolutions: Sequence[Resolution], now_ms: int) -> None:
    if resolutions:
        conn.execute(
            text(
                f"INSERT INTO {RESOLUTIONS_TABLE} (created_ms, tbl, pk, rule, detail) "
                "VALUES (:now, :t, :k, :r, :d)"
            ),
            [
                {"now": now_ms, "t": r.table, "k": dumps(list(r.pk)), "r": r.rule, "d": dumps(dict(r.detail))}
                for r in resolutions
            ],
        )


def recent(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """The newest resolutions first, as plain data for ``status``."""
    rows = conn.execute(
        text(f"SELECT created_ms, tbl, pk, rule, detail FROM {RESOLUTIONS_TABLE} ORDER BY id DESC LIMIT :n"),
        {"n": limit},
    ).all()
    return [
        {"at_ms": int(at), "table": t, "pk": json.loads(k), "rule": rule, "detail": json.loads(detail)}
        for at, t, k, rule, detail in rows
    ]


def count(conn: Connection) -> int:
    return int(conn.execute(text(f"SELECT count(*) FROM {RESOLUTIONS_TABLE}")).scalar() or 0)
