"""Schema changes of synced tables, noticed at the start of every sync and at every ``init``.

Each synced table is compared with the registry (a cheap schema token makes this one query when nothing
changed). What sync can follow, it follows, and records for ``storex-sync status``:

* a column added: captured from then on; the values it already holds that differ from its default are
  shared (they were written before sync knew the column), and values other devices sent for it, kept
  in the log while this database lacked the column, are applied;
* a column dropped: no longer captured; other devices' values for it are accepted and not written, here
  and (once this device declared the drop in the log, see ``policy``) on devices that never had it;
* a type, a NOT NULL, a foreign key or a unique constraint changed: the registry follows;
* a table renamed (found by the capture triggers it kept): followed; the log keeps the table's name, so
  other devices need not rename theirs at the same time.

What it cannot follow stops the sync with an error saying what changed and what to do: a synced table
that is gone, or a primary key that changed (rows are matched across devices by their key).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sqlalchemy import Connection

from . import client_log, quarantine, registry, resolutions
from .capture.base import CaptureDialect, TableInfo
from .errors import SchemaChangedError

log = logging.getLogger(__name__)

TOKEN_KEY = "schema_token"


def adapt_table(
    conn: Connection, dialect: CaptureDialect, info: TableInfo, *, device_id: str | None, now_ms: int
) -> tuple[TableInfo, list[str]]:
    """Reflect ``info``'s table again and follow what changed: the new registry info and the changes.

    Capture is (re)installed when anything changed; the caller stores the returned info.
    """
    local = info.local_name
    if not dialect.table_exists(conn, local):
        renamed = dialect.find_renamed(conn, info)
        if renamed is None:
            raise SchemaChangedError(
                f"synced table {local!r} is no longer in this database (dropped, or renamed while its "
                "capture was off)",
                hint=f"create it again (or rename it back), or run 'storex-sync disable --db URL --tables "
                f"{info.name}' to stop syncing it",
            )
        local = renamed
    reflected = dialect.reflect_table(conn, local)
    present = {c.name for c in reflected.columns}
    removed = {c.name for c in info.columns} - present
    dropped = tuple(sorted((set(info.dropped) | removed) - present))
    now = TableInfo(
        info.name, reflected.columns, reflected.pk, reflected.foreign_keys, reflected.unique, local, dropped
    )
    if now == info:
        return info, []
    if now.pk != info.pk:
        raise SchemaChangedError(
            f"the primary key of synced table {info.name!r} changed from {list(info.pk)} to {list(now.pk)}; "
            "rows are matched across devices by their key, so sync cannot follow",
            hint=f"change the key back to {list(info.pk)} (a synced table keeps its key; to re-key it, "
            "create a new table, copy the rows and sync that one instead)",
        )
    changes = _describe(info, now)
    dialect.install_triggers(conn, now)
    added = [c.name for c in now.value_columns if info.column(c.name) is None]
    if added:
        shared = dialect.log_new_column_values(conn, now, added)
        changes.append(f"values of the new columns that differ from their default shared ({shared} rows)")
    readded = [c for c in added if c in info.dropped]
    if readded:  # other devices' values for it were kept while it was gone: apply them now
        client_log.reintegrate(conn, info.name, readded, device_id)
    record(conn, info.name, changes, now_ms)
    return now, changes


def _describe(info: TableInfo, now: TableInfo) -> list[str]:
    """What changed, in words, for the log and ``status``."""
    changes: list[str] = []
    if now.local_name != info.local_name:
        changes.append(
            f"table renamed here from {info.local_name!r} to {now.local_name!r} "
            f"(still {info.name!r} in the log)"
        )
    for column in now.value_columns:
        old = info.column(column.name)
        if old is None:
            changes.append(f"column {column.name!r} added: captured from now on")
        elif (old.type, old.kind, old.nullable) != (column.type, column.kind, column.nullable):
            changes.append(f"column {column.name!r} changed from {old.type} to {column.type}")
    changes += [
        f"column {c.name!r} dropped: no longer captured" for c in info.columns if now.column(c.name) is None
    ]
    if (info.foreign_keys, info.unique) != (now.foreign_keys, now.unique):
        changes.append("foreign keys or unique constraints changed")
    return changes


def record(conn: Connection, table: str, changes: Sequence[str], now_ms: int) -> None:
    for change in changes:
        log.warning("synced table %s: %s", table, change)
    resolutions.record(
        conn, [resolutions.Resolution(table, (), "schema change", {"change": c}) for c in changes], now_ms
    )


def check(
    conn: Connection,
    dialect: CaptureDialect,
    *,
    device_id: str | None,
    now_ms: int,
    force: bool = False,
) -> bool:
    """Follow schema changes of every enabled table; True if the registry changed.

    Skipped (one query) while the schema token is the one stored after the last check.
    """
    from .database import SyncedDatabase

    stored = SyncedDatabase.get_state(conn, TOKEN_KEY)
    if not force and stored is not None and stored == dialect.schema_token(conn):
        return False
    changed = False
    for entry in registry.load(conn).values():
        if entry.disabled:
            continue
        info, changes = adapt_table(conn, dialect, entry.info, device_id=device_id, now_ms=now_ms)
        if changes:
            registry.store(conn, entry.with_info(info))
            changed = True
    if changed:
        replay(conn, dialect, now_ms)
    SyncedDatabase.set_state(conn, TOKEN_KEY, dialect.schema_token(conn))
    return changed


def replay(conn: Connection, dialect: CaptureDialect, now_ms: int) -> int:
    """Put entries set aside for a missing table or column back into the log if they fit now."""
    ids, entries = quarantine.replayable(conn, registry.enabled(conn), dialect)
    client_log.insert_received(conn, entries, now_ms)
    quarantine.forget(conn, ids)
    return len(ids)


def adopt_dropped(
    conn: Connection, dialect: CaptureDialect, dropped: Mapping[str, set[str]], now_ms: int
) -> bool:
    """Accept values for columns other devices dropped and this table lacks (it joined after the drop,
    say): entries holding them, set aside meanwhile, are replayed. True if the registry changed."""
    changed = False
    for name, entry in registry.load(conn).items():
        info = entry.info
        new = dropped.get(name, set()) - {c.name for c in info.columns} - set(info.dropped)
        if new and not entry.disabled:
            registry.store(conn, entry.with_info(info.with_dropped(tuple(sorted({*info.dropped, *new})))))
            record(
                conn,
                name,
                [f"columns {sorted(new)} dropped by other devices: their values are ignored"],
                now_ms,
            )
            changed = True
    if changed:
        replay(conn, dialect, now_ms)
    return changed
