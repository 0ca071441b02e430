"""Entries set aside: kept with the reason in ``_sync_quarantine``, never applied half-way.

Incoming entries land here when they are malformed, name unsynced tables or columns, hold values a column
cannot take, or carry a clock far in the future; outgoing ones when they are too large for the shared log.
``storex-sync status`` lists them; the payload is kept as it was, for inspection and replay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Connection, text

from .capture.base import QUARANTINE_TABLE, CaptureDialect, TableInfo
from .codec import dumps, entry_payload
from .errors import InvalidEntryError
from .models import LogEntry
from .validate import SetAside, replay_entry


def quarantine(
    conn: Connection,
    entries: Sequence[LogEntry],
    reason: str,
    *,
    direction: str = "incoming",
    now_ms: int,
    replayable: bool = False,
) -> None:
    """Set entries aside with the reason: kept for inspection and replay, never applied half-way.

    ``replayable`` entries are tried again by :func:`requeue` when the synced tables change (the
    database lacked a column, or refused a value, that a migration may now provide).
    """
    conn.execute(
        text(
            f"INSERT INTO {QUARANTINE_TABLE} "
            "(direction, device_id, hlc, tbl, pk, payload, reason, created_ms, replayable) "
            "VALUES (:dir, :d, :h, :t, :k, :p, :r, :now, :again)"
        ),
        [
            {
                "dir": direction,
                "d": e.device_id,
                "h": e.hlc,
                "t": e.table,
                "k": dumps(list(e.pk)),
                "p": dumps(entry_payload(e)),
                "r": reason,
                "now": now_ms,
                "again": int(replayable),
            }
            for e in entries
        ],
    )


def quarantine_received(conn: Connection, items: Sequence[SetAside], now_ms: int) -> None:
    """Set aside what the receive stage refused, keeping its text as it arrived (it may not even parse).

    Something already set aside is not added again: a repaired read marker reads the log again.
    """
    if not items:
        return
    devices = sorted({item.device_id for item in items})
    names = ", ".join(f":d{i}" for i in range(len(devices)))
    rows = conn.execute(
        text(
            f"SELECT device_id, hlc, reason FROM {QUARANTINE_TABLE} "
            f"WHERE direction = 'incoming' AND device_id IN ({names})"
        ),
        {f"d{i}": d for i, d in enumerate(devices)},
    )
    known = {(str(d), None if h is None else int(h), str(r)) for d, h, r in rows}
    items = [item for item in items if (item.device_id, item.hlc, item.reason) not in known]
    if not items:
        return
    conn.execute(
        text(
            f"INSERT INTO {QUARANTINE_TABLE} "
            "(direction, device_id, hlc, payload, reason, created_ms, replayable) "
            "VALUES ('incoming', :d, :h, :p, :r, :now, :again)"
        ),
        [
            {
                "d": item.device_id,
                "h": item.hlc,
                "p": item.text,
                "r": item.reason,
                "now": now_ms,
                "again": int(item.replayable),
            }
            for item in items
        ],
    )


def quarantine_captured(conn: Connection, table: str, key: str, reason: str, now_ms: int) -> None:
    """Set aside a local change that cannot travel, before it is stamped (so it has no clock yet)."""
    conn.execute(
        text(
            f"INSERT INTO {QUARANTINE_TABLE} (direction, tbl, pk, reason, created_ms) "
            "VALUES ('outgoing', :t, :k, :r, :now)"
        ),
        {"t": table, "k": key, "r": reason, "now": now_ms},
    )


def replayable(
    conn: Connection, tables: Mapping[str, TableInfo], dialect: CaptureDialect
) -> tuple[list[int], list[LogEntry]]:
    """Set-aside incoming entries that the synced tables accept now: their ids and the entries.

    Only default-serialized (JSON) payloads can be read back; others stay set aside.
    """
    rows = conn.execute(
        text(
            f"SELECT id, device_id, hlc, payload FROM {QUARANTINE_TABLE} "
            "WHERE direction = 'incoming' AND replayable = 1 AND hlc IS NOT NULL"
        )
    ).all()
    ids: list[int] = []
    entries: list[LogEntry] = []
    for row_id, device_id, hlc, payload in rows:
        try:
            entry = replay_entry(str(payload), tables, dialect, device_id=str(device_id), hlc=int(hlc))
        except InvalidEntryError:
            continue
        ids.append(int(row_id))
        entries.append(entry)
    return ids, entries


def forget(conn: Connection, ids: Sequence[int]) -> None:
    """Drop set-aside rows once their entries are back in the client log."""
    if ids:
        conn.execute(text(f"DELETE FROM {QUARANTINE_TABLE} WHERE id = :i"), [{"i": i} for i in ids])
