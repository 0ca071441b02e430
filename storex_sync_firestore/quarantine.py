"""Entries set aside: kept with the reason in ``_sync_quarantine``, never applied half-way.

Incoming entries land here when they are malformed, name unsynced tables or columns, hold values a column
cannot take, or carry a clock far in the future; outgoing ones when they are too large for the shared log.
``storex-sync status`` lists them; the payload is kept as it was, for inspection and replay.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, text

from .capture.base import QUARANTINE_TABLE
from .codec import dumps, entry_payload
from .models import LogEntry, SharedEntry


def quarantine(
    conn: Connection,
    entries: Sequence[LogEntry],
    reason: str,
    *,
    direction: str = "incoming",
    now_ms: int,
    raw: Sequence[str | None] | None = None,
) -> None:
    """Set entries aside with the reason: kept for inspection and replay, never applied half-way."""
    conn.execute(
        text(
            f"INSERT INTO {QUARANTINE_TABLE} "
            "(direction, device_id, hlc, tbl, pk, payload, reason, created_ms) "
            "VALUES (:dir, :d, :h, :t, :k, :p, :r, :now)"
        ),
        [
            {
                "dir": direction,
                "d": e.device_id,
                "h": e.hlc,
                "t": e.table,
                "k": dumps(list(e.pk)),
                "p": (raw[i] if raw is not None else dumps(entry_payload(e))),
                "r": reason,
                "now": now_ms,
            }
            for i, e in enumerate(entries)
        ],
    )


def quarantine_raw(conn: Connection, shared: SharedEntry, reason: str, now_ms: int) -> None:
    """Set aside an entry that could not even be parsed, keeping its text as received."""
    conn.execute(
        text(
            f"INSERT INTO {QUARANTINE_TABLE} (direction, device_id, hlc, payload, reason, created_ms) "
            "VALUES ('incoming', :d, :h, :p, :r, :now)"
        ),
        {
            "d": str(shared.device_id),
            # Whatever arrived is kept as text in the payload; only a well-formed clock goes in its column.
            "h": shared.hlc if type(shared.hlc) is int and 0 < shared.hlc < 2**63 else None,
            "p": str(shared.data),
            "r": reason,
            "now": now_ms,
        },
    )
