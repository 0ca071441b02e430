"""Stage 2: the client log, one row per entry with the same fields as on the wire.

``_sync_log`` holds local entries (stamped from ``_sync_capture``) and received ones. States, as in the
original: a local entry is *unshared* (``shared_on = 0``), *planned* for an upload (``upload_batch`` set),
*shared* (``shared_on`` > 0) or *withheld* (``shared_on = -1``: dropped by ``pre_send`` or too large);
a received entry *needs integration* until the reconciler has applied it. ``(device_id, hlc)`` is unique,
so a duplicate delivery changes nothing. ``sqlite3 app.db 'select * from _sync_log'`` is the debugging tool.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from .capture.base import CAPTURE_TABLE, LOG_TABLE, QUARANTINE_TABLE, CaptureDialect, TableInfo
from .clock import HybridLogicalClock
from .codec import Serializer, dumps, entry_payload
from .models import LogEntry, SharedEntry
from .reconcile import ObjectHistory, retained_keys

WITHHELD = -1
STAMP_CHUNK = 20_000
ENTRY_OVERHEAD_BYTES = 48
"""Bytes a backend adds around each serialized entry (clock, separators): counted in upload byte limits."""

PreSend = Callable[[LogEntry], LogEntry | None]

_COLUMNS = "seq, device_id, hlc, tbl, pk, op, value, needs_integration"


def _entry(row: Sequence[object]) -> LogEntry:
    _seq, device_id, hlc, tbl, pk, op, value, pending = row
    return LogEntry(
        str(device_id),
        int(hlc),  # type: ignore[call-overload]
        str(tbl),
        tuple(json.loads(str(pk))),
        op,  # type: ignore[arg-type]
        None if value is None else json.loads(str(value)),
        bool(pending),
    )


def stamp_pending(
    conn: Connection,
    dialect: CaptureDialect,
    tables: Mapping[str, TableInfo],
    clock: HybridLogicalClock,
    device_id: str,
) -> int:
    """Move captured changes into the log, giving each its device id and clock timestamp, in capture order.

    Run at the start of a sync (before receiving, so edits made offline keep their place in time) and at
    the start of each reconcile transaction (so edits made during a sync are never overwritten by it).
    """
    moved, last = 0, 0
    while True:
        seqs, captured = dialect.read_captured(conn, last, STAMP_CHUNK, tables)
        if not seqs:
            return moved
        if captured:
            conn.execute(
                text(
                    f"INSERT INTO {LOG_TABLE} (device_id, hlc, tbl, pk, op, value) "
                    "VALUES (:d, :h, :t, :k, :o, :v)"
                ),
                [
                    {
                        "d": device_id,
                        "h": clock.stamp(c.wall_ms),
                        "t": c.table,
                        "k": dumps(json.loads(c.pk)),
                        "o": c.op,
                        "v": c.value,
                    }
                    for c in captured
                ],
            )
        # Delete exactly the rows read: on a server database another transaction may commit a lower seq
        # meanwhile, and a range delete would drop that change unlogged.
        conn.execute(text(f"DELETE FROM {CAPTURE_TABLE} WHERE seq = :s"), [{"s": s} for s in seqs])
        moved += len(captured)
        last = seqs[-1]


@dataclass(slots=True)
class PlannedUpload:
    """A batch of local entries recorded as planned before it is sent, so a retry sends the same list."""

    batch_id: str
    entries: list[SharedEntry] = field(default_factory=list)
    withheld: int = 0
    set_aside: int = 0
    objects: set[tuple[str, str]] = field(default_factory=set)
    """(table, pk JSON) of every entry in the batch, for cleanup afterwards."""


def plan_upload(
    conn: Connection,
    *,
    serializer: Serializer,
    pre_send: PreSend | None,
    max_entries: int | None,
    max_bytes: int | None,
    max_entry_bytes: int | None,
    now_ms: int,
) -> PlannedUpload | None:
    """The next batch to upload: a batch planned earlier and not yet shared, or a new one.

    A new batch takes unshared entries in clock order (flaw 3.13: never an unordered subset) up to
    ``max_entries`` and ``max_bytes`` of UTF-8 serialized text. An entry that ``pre_send`` drops is
    withheld; one that alone exceeds ``max_entry_bytes`` is set aside with a reason naming its table and
    key, and later entries go on (flaw 3.12: it no longer wedges sync).
    """
    planned = conn.execute(
        text(f"SELECT upload_batch FROM {LOG_TABLE} WHERE shared_on = 0 AND upload_batch IS NOT NULL LIMIT 1")
    ).scalar()
    if planned is not None:
        rows = conn.execute(
            text(
                f"SELECT {_COLUMNS} FROM {LOG_TABLE} WHERE upload_batch = :b AND shared_on = 0 ORDER BY hlc"
            ),
            {"b": planned},
        ).all()
        prepared = (_entry(r) if pre_send is None else pre_send(_entry(r)) for r in rows)
        entries = [_shared(e, serializer) for e in prepared if e is not None]
        return PlannedUpload(str(planned), entries, objects={(str(r[3]), str(r[4])) for r in rows})
    limit = "" if max_entries is None else f" LIMIT {int(max_entries)}"
    rows = conn.execute(
        text(f"SELECT {_COLUMNS} FROM {LOG_TABLE} WHERE shared_on = 0 ORDER BY hlc{limit}")
    ).all()
    if not rows:
        return None
    batch = PlannedUpload(batch_id=str(rows[0][2]))
    chosen: list[int] = []
    withheld: list[int] = []
    total = 0
    for row in rows:
        entry: LogEntry | None = _entry(row)
        if pre_send is not None:
            entry = pre_send(entry)  # type: ignore[arg-type]
        if entry is None:
            withheld.append(int(row[0]))
            batch.withheld += 1
            continue
        shared = _shared(entry, serializer)
        size = len(shared.data.encode("utf-8")) + ENTRY_OVERHEAD_BYTES
        if max_entry_bytes is not None and size > max_entry_bytes:
            quarantine(
                conn,
                [entry],
                f"entry for {entry.table} key {list(entry.pk)} is {size} bytes, over the shared log's limit "
                f"of {max_entry_bytes} bytes per entry: it was not sent; shrink the row or split the value",
                direction="outgoing",
                now_ms=now_ms,
            )
            withheld.append(int(row[0]))
            batch.set_aside += 1
            continue
        if max_bytes is not None and batch.entries and total + size > max_bytes:
            break
        total += size
        batch.entries.append(shared)
        batch.objects.add((entry.table, str(row[4])))
        chosen.append(int(row[0]))
    if withheld:
        conn.execute(
            text(f"UPDATE {LOG_TABLE} SET shared_on = {WITHHELD} WHERE seq = :s"),
            [{"s": s} for s in withheld],
        )
    if chosen:
        conn.execute(
            text(f"UPDATE {LOG_TABLE} SET upload_batch = :b WHERE seq = :s"),
            [{"b": batch.batch_id, "s": s} for s in chosen],
        )
    return batch


def _shared(entry: LogEntry, serializer: Serializer) -> SharedEntry:
    return SharedEntry(entry.device_id, entry.hlc, serializer.dumps(entry_payload(entry)))


def mark_shared(conn: Connection, batch_id: str, now_ms: int) -> None:
    """Record that the shared log durably holds the planned batch ``batch_id``."""
    conn.execute(
        text(f"UPDATE {LOG_TABLE} SET shared_on = :now WHERE upload_batch = :b AND shared_on = 0"),
        {"now": now_ms, "b": batch_id},
    )


def insert_received(conn: Connection, entries: Sequence[LogEntry], now_ms: int) -> None:
    """Store received entries as needing integration; an entry already present is left as it is."""
    if entries:
        conn.execute(
            text(
                f"INSERT INTO {LOG_TABLE} (device_id, hlc, tbl, pk, op, value, shared_on, needs_integration) "
                "VALUES (:d, :h, :t, :k, :o, :v, :now, 1) ON CONFLICT DO NOTHING"
            ),
            [
                {
                    "d": e.device_id,
                    "h": e.hlc,
                    "t": e.table,
                    "k": dumps(list(e.pk)),
                    "o": e.op,
                    "v": None if e.value is None else dumps(e.value),
                    "now": now_ms,
                }
                for e in entries
            ],
        )


def load_histories(conn: Connection, max_objects: int) -> list[ObjectHistory]:
    """Up to ``max_objects`` objects with entries to integrate, each with its whole retained history."""
    rows = conn.execute(
        text(
            f"SELECT {', '.join('l.' + c.strip() for c in _COLUMNS.split(','))} FROM {LOG_TABLE} l "
            f"JOIN (SELECT DISTINCT tbl, pk FROM {LOG_TABLE} WHERE needs_integration = 1 LIMIT :n) o "
            "ON l.tbl = o.tbl AND l.pk = o.pk"
        ),
        {"n": max_objects},
    ).all()
    return _group(_entry(r) for r in rows)


def load_objects(
    conn: Connection, objects: Sequence[tuple[str, str]], *, with_state: bool = False
) -> list[ObjectHistory]:
    """The retained history of the given objects, (table, pk JSON) pairs, in one query.

    ``with_state`` also records which entries are settled (shared or received, and integrated): only
    those may ever be pruned.
    """
    if not objects:
        return []
    values = ", ".join(f"(:t{i}, :k{i})" for i in range(len(objects)))
    params: dict[str, str] = {}
    for i, (t, k) in enumerate(objects):
        params[f"t{i}"], params[f"k{i}"] = t, k
    rows = conn.execute(
        text(f"SELECT {_COLUMNS}, shared_on FROM {LOG_TABLE} WHERE (tbl, pk) IN (VALUES {values})"), params
    ).all()
    histories = _group(_entry(r[:8]) for r in rows)
    if with_state:
        settled = {(int(r[2]), str(r[1])) for r in rows if r[8] != 0 and not r[7]}
        histories = [ObjectHistory(h.table, h.pk, h.entries, frozenset(settled)) for h in histories]
    return histories


def _group(entries: Iterable[LogEntry]) -> list[ObjectHistory]:
    groups: dict[tuple[str, str], list[LogEntry]] = defaultdict(list)
    for e in entries:
        groups[(e.table, dumps(list(e.pk)))].append(e)
    return [ObjectHistory(es[0].table, es[0].pk, tuple(es)) for es in groups.values()]


def mark_integrated(conn: Connection, entries: Iterable[LogEntry]) -> int:
    """Mark received entries as applied. Runs in the same transaction as the apply itself."""
    params = [{"d": e.device_id, "h": e.hlc} for e in entries if e.needs_integration]
    if params:
        conn.execute(
            text(f"UPDATE {LOG_TABLE} SET needs_integration = 0 WHERE device_id = :d AND hlc = :h"), params
        )
    return len(params)


def remove(conn: Connection, entries: Iterable[LogEntry]) -> None:
    params = [{"d": e.device_id, "h": e.hlc} for e in entries]
    if params:
        conn.execute(text(f"DELETE FROM {LOG_TABLE} WHERE device_id = :d AND hlc = :h"), params)


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
        {"d": shared.device_id, "h": shared.hlc, "p": shared.data, "r": reason, "now": now_ms},
    )


PRUNE_CHUNK = 2_000


def prune(conn: Connection, objects: Iterable[tuple[str, str]]) -> int:
    """Delete settled entries of ``objects`` ((table, pk JSON) pairs) that no future merge needs.

    Kept: every entry not yet shared or integrated, the latest create/delete of each object (its
    tombstone, flaw 3.9) and the latest writer of each live column. Under last-write-wins these decide
    every future merge, so a late or re-delivered old entry still loses to what it should lose to.
    Only the objects a sync touched are visited, so cleanup costs nothing when nothing changed.
    """
    todo = list(objects)
    removed = 0
    for i in range(0, len(todo), PRUNE_CHUNK):
        histories = load_objects(conn, todo[i : i + PRUNE_CHUNK], with_state=True)
        doomed: list[LogEntry] = []
        for history in histories:
            if len(history.entries) < 2:
                continue
            keep = retained_keys(history.entries)
            doomed.extend(e for e in history.entries if e.key not in keep and e.key in history.settled)
        remove(conn, doomed)
        removed += len(doomed)
    return removed


def counts(conn: Connection) -> dict[str, int]:
    """Entry counts by state, for ``status``."""
    row = conn.execute(
        text(
            f"SELECT "
            f"(SELECT count(*) FROM {CAPTURE_TABLE}) + "
            f"(SELECT count(*) FROM {LOG_TABLE} WHERE shared_on = 0), "
            f"(SELECT count(*) FROM {LOG_TABLE} WHERE needs_integration = 1), "
            f"(SELECT count(*) FROM {LOG_TABLE} WHERE shared_on = {WITHHELD}), "
            f"(SELECT count(*) FROM {QUARANTINE_TABLE}), "
            f"(SELECT count(*) FROM {LOG_TABLE})"
        )
    ).one()
    return dict(zip(("unshared", "unintegrated", "withheld", "set_aside", "log_entries"), row, strict=True))
