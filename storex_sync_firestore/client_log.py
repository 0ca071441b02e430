"""Stage 2: the client log, one row per entry with the same fields as on the wire.

``_sync_log`` holds local entries (stamped from ``_sync_capture``) and received ones. States, as in the
original: a local entry is *unshared* (``shared_on = 0``), *planned* for an upload (``upload_batch`` set),
*shared* (``shared_on`` > 0) or *withheld* (``shared_on = -1``: dropped by ``pre_send`` or too large);
a received entry *needs integration* until the reconciler has applied it. A planned batch sits in
``_sync_outbox``, exactly as it will be sent, until the shared log has it. ``(device_id, hlc)`` is unique,
so a duplicate delivery changes nothing. ``sqlite3 app.db 'select * from _sync_log'`` is the debugging tool.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from .capture import dialect_of
from .capture.base import CAPTURE_TABLE, LOG_TABLE, OUTBOX_TABLE, QUARANTINE_TABLE, CaptureDialect, TableInfo
from .clock import HybridLogicalClock, wall_clock_ms
from .codec import JsonSerializer, Serializer, dumps, entry_payload, loads
from .encryption import DataKey
from .errors import InvalidEntryError
from .history import ObjectHistory
from .models import LogEntry, StoredBatch
from .quarantine import quarantine, quarantine_received
from .shared_log import format as fmt
from .signing import DeviceKey
from .validate import MAX_ENTRY_DEPTH, SetAside, brackets, json_depth

log = logging.getLogger(__name__)

WITHHELD = -1
STAMP_CHUNK = 20_000
LOAD_CHUNK = 5_000

PreSend = Callable[[LogEntry], LogEntry | None]
Row = Sequence[Any]
"""A raw log row: seq, device_id, hlc, tbl, pk, op, value, needs_integration."""

_COLUMNS = "seq, device_id, hlc, tbl, pk, op, value, needs_integration"


def _many(conn: Connection, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    """``executemany`` straight through the driver: the hot paths move tens of thousands of rows.

    ``sql`` uses ``?`` placeholders, rewritten for drivers that want ``%s``.
    """
    if rows:
        if conn.dialect.paramstyle != "qmark":
            sql = sql.replace("?", "%s")
        conn.exec_driver_sql(sql, list(rows))


def _entry(row: Sequence[object]) -> LogEntry:
    """A stored row as an entry, read with the codec that wrote it (the receive stage's depth limits).

    Raises ``InvalidEntryError`` for a row that does not read back (one an older version stored).
    """
    _seq, device_id, hlc, tbl, pk, op, value, pending = row
    try:
        key = loads(str(pk))
        values = None if value is None else loads(str(value))
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidEntryError(f"the stored entry does not read back: {exc}") from exc
    if not isinstance(key, list) or not key or not (values is None or isinstance(values, dict)):
        raise InvalidEntryError("the stored entry's key or values have the wrong shape")
    for raw, parsed in ((pk, key), (value, values)):  # str.count first: a full walk only when it may nest
        if (
            parsed is not None
            and brackets(str(raw)) > MAX_ENTRY_DEPTH
            and json_depth(parsed) > MAX_ENTRY_DEPTH
        ):
            raise InvalidEntryError("the stored entry nests deeper than the receive stage allows")
    return LogEntry(
        str(device_id),
        int(hlc),  # type: ignore[call-overload]
        str(tbl),
        tuple(key),
        op,  # type: ignore[arg-type]
        values,
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
    moved = 0
    while True:
        # Always from the start: on a server database a lower seq can become visible after higher ones
        # were read (transactions commit in another order than they took their seqs), and stamping it
        # later would put it after changes that followed it. What was read is deleted below.
        seqs, captured = dialect.read_captured(conn, 0, STAMP_CHUNK, tables)
        if not seqs:
            return moved
        _many(
            conn,
            f"INSERT INTO {LOG_TABLE} (device_id, hlc, tbl, pk, op, value) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (device_id, hlc, c.table, c.pk, c.op, c.value)
                for c, hlc in zip(captured, clock.stamp_many([c.wall_ms for c in captured]), strict=True)
            ],
        )
        dialect.forget_captured(conn, seqs)
        moved += len(captured)
        if len(seqs) < STAMP_CHUNK:
            return moved  # caught up: an application writing on does not keep this loop (and its locks)


@dataclass(slots=True)
class PlannedUpload:
    """A batch recorded in the outbox before it is sent: a retry sends these very bytes."""

    batch: StoredBatch | None
    """None when every entry read was withheld or set aside: nothing to send this time."""
    clocks: tuple[int, int] = (0, 0)
    """First and last clock of the log rows planned into this batch."""
    entries: int = 0
    withheld: int = 0
    set_aside: int = 0


@dataclass(frozen=True, slots=True)
class Signer:
    """Who signs planned batches: the user's log, the device and its key."""

    user_id: str
    device_id: str
    key: DeviceKey
    cipher: DataKey | None = None
    """The encrypted log's data key: batches are sealed with it (None: the log is not encrypted)."""


def planned(conn: Connection) -> PlannedUpload | None:
    """The oldest batch planned but not yet confirmed shared (after a crash or a failed send)."""
    row = conn.execute(
        text(
            f"SELECT batch_id, first_hlc, last_hlc, header, payload FROM {OUTBOX_TABLE} ORDER BY seq LIMIT 1"
        )
    ).first()
    if row is None:
        return None
    batch_id, first, last, header, payload = row
    fields = fmt.from_header_json(loads(header), bytes(payload))
    return PlannedUpload(
        StoredBatch(str(batch_id), fields), (int(first), int(last)), int(fields[fmt.F_COUNT])
    )


def plan_upload(
    conn: Connection,
    *,
    signer: Signer,
    serializer: Serializer,
    pre_send: PreSend | None,
    max_entries: int | None,
    max_stored_bytes: int,
    now_ms: int,
) -> PlannedUpload | None:
    """Plan the next batch: unshared entries in clock order, encoded, signed and put in the outbox.

    Takes up to ``max_entries`` entries (flaw 3.13: in clock order, never an unordered subset) and cuts the
    batch so that its stored (compressed) payload fits ``max_stored_bytes``. An entry that ``pre_send``
    drops is withheld; one that alone does not fit is set aside with a reason naming its table and key,
    and later entries go on (flaw 3.12: it does not wedge sync). None when nothing is left to plan.
    """
    limit = "" if max_entries is None else f" LIMIT {int(max_entries)}"
    if pre_send is None and type(serializer) is JsonSerializer:
        planned = _plain_lines(conn, limit)
    else:
        planned = _hooked_lines(conn, limit, serializer, pre_send)
    if planned is None:
        return None
    seqs, hlcs, texts, withheld = planned
    set_aside = 0
    batch: tuple[str, dict[str, Any]] | None = None
    while texts:
        batch = _fitting(texts, hlcs, signer, max_stored_bytes)
        if batch is not None:
            break
        # The first entry alone does not fit a document: set it aside, go on with the rest.
        entry = _entry(_row(conn, seqs[0]))
        quarantine(
            conn,
            [entry],
            f"entry for {entry.table} key {list(entry.pk)} does not fit one shared-log document even "
            f"compressed ({len(texts[0].encode()):,} bytes): it was not sent; "
            "shrink the row or split the value",
            direction="outgoing",
            now_ms=now_ms,
        )
        withheld.append(seqs.pop(0))
        hlcs.pop(0)
        texts.pop(0)
        set_aside += 1
    _many(conn, f"UPDATE {LOG_TABLE} SET shared_on = {WITHHELD} WHERE seq = ?", [(s,) for s in withheld])
    if batch is None:
        return PlannedUpload(None, withheld=len(withheld) - set_aside, set_aside=set_aside)
    batch_id, fields = batch
    count = fields[fmt.F_COUNT]
    clocks = (hlcs[0], hlcs[count - 1])
    _put_in_outbox(conn, batch_id, fields, clocks)
    return PlannedUpload(StoredBatch(batch_id, fields), clocks, count, len(withheld) - set_aside, set_aside)


def _put_in_outbox(
    conn: Connection, batch_id: str, fields: Mapping[str, Any], clocks: tuple[int, int]
) -> None:
    """Store the sealed batch in the outbox and mark its entries planned, so a resume sends these bytes."""
    conn.execute(
        text(
            f"INSERT INTO {OUTBOX_TABLE} (batch_id, first_hlc, last_hlc, header, payload) "
            "VALUES (:b, :first, :last, :h, :p)"
        ),
        {
            "b": batch_id,
            "first": clocks[0],
            "last": clocks[1],
            "h": dumps(fmt.header_json(fields)),
            "p": fields[fmt.F_PAYLOAD],
        },
    )
    # One range update: every unshared, unplanned entry in the clock range was read above and is either
    # in the batch or (just) withheld, and only the sync itself writes to the log.
    conn.execute(
        text(
            f"UPDATE {LOG_TABLE} SET upload_batch = :b "
            "WHERE shared_on = 0 AND upload_batch IS NULL AND hlc BETWEEN :first AND :last"
        ),
        {"b": batch_id, "first": clocks[0], "last": clocks[1]},
    )


Planned = tuple[list[int], list[int], list[str], list[int]]
"""Seqs, clocks and payload lines (``<hlc>\t<entry JSON>\n``) of the entries to send, and the seqs of
those withheld."""

_UNSHARED = f"FROM {LOG_TABLE} WHERE shared_on = 0 AND upload_batch IS NULL ORDER BY hlc"


def _plain_lines(conn: Connection, limit: str) -> Planned | None:
    """The payload lines of the default serializer, assembled by the database from the stored JSON: key
    and values are the canonical text the log holds, so the bytes are those ``JsonSerializer`` writes
    (keys in the same order), and no entry passes through Python one by one."""
    names = conn.execute(text(f"SELECT DISTINCT tbl FROM (SELECT tbl {_UNSHARED}{limit}) AS unshared")).all()
    if not names:
        return None
    cases = " ".join("WHEN ? THEN ?" for _ in names)
    params: list[object] = ["\t"]
    for (name,) in names:
        params += [str(name), _json_name(str(name))]
    params.append("\n")
    line = (
        'CAST(hlc AS TEXT) || ? || \'{"op":"\' || op || \'","table":\' || '
        f"CASE tbl {cases} END || ',\"pk\":' || pk || "
        "COALESCE(',\"value\":' || value, '') || '}' || ?"
    )
    sql = f"SELECT seq, hlc, {line} {_UNSHARED}{limit}"
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")  # the statement holds no other '?' or '%': names are parameters
    rows = conn.exec_driver_sql(sql, tuple(params)).fetchall()
    return [int(r[0]) for r in rows], [int(r[1]) for r in rows], [str(r[2]) for r in rows], []


def _hooked_lines(
    conn: Connection, limit: str, serializer: Serializer, pre_send: PreSend | None
) -> Planned | None:
    """The payload lines through ``pre_send`` and a custom serializer, one entry at a time."""
    rows = conn.execute(text(f"SELECT {_COLUMNS} {_UNSHARED}{limit}")).all()
    if not rows:
        return None
    seqs, hlcs, texts, withheld = [], [], [], []
    for row in rows:
        line = _hooked_line(row, serializer, pre_send)
        if line is None:
            withheld.append(int(row[0]))
            continue
        seqs.append(int(row[0]))
        hlcs.append(line.hlc)
        texts.append(f"{line.hlc}\t{line.text}\n")
    return seqs, hlcs, texts, withheld


def _row(conn: Connection, seq: int) -> Sequence[Any]:
    return conn.execute(text(f"SELECT {_COLUMNS} FROM {LOG_TABLE} WHERE seq = :s"), {"s": seq}).one()


def planned_entries(conn: Connection, batch: PlannedUpload) -> list[LogEntry]:
    """The log entries a planned batch carries (as logged, before any ``pre_send``), for events."""
    if batch.batch is None:
        return []
    rows = conn.execute(
        text(f"SELECT {_COLUMNS} FROM {LOG_TABLE} WHERE upload_batch = :b AND shared_on = 0 ORDER BY hlc"),
        {"b": batch.batch.batch_id},
    ).all()
    return [_entry(r) for r in rows]


def _fitting(
    texts: list[str], hlcs: list[int], signer: Signer, budget: int
) -> tuple[str, dict[str, Any]] | None:
    """The longest prefix of the payload lines whose compressed payload fits ``budget``, encoded; None if
    not even the first line fits. Each cut aims just under the budget by the ratio the last attempt showed."""
    n = len(texts)
    while n:
        batch_id, fields = fmt.seal_span(
            "".join(texts[:n]).encode("utf-8"),
            (hlcs[0], hlcs[n - 1], n),
            user_id=signer.user_id,
            device_id=signer.device_id,
            key=signer.key,
            cipher=signer.cipher,
        )
        stored = len(fields[fmt.F_PAYLOAD])
        if stored <= budget:
            return batch_id, fields
        n = 0 if n == 1 else max(1, min(n - 1, int(n * budget / stored * 0.9)))
    return None


def _hooked_line(row: Sequence[Any], serializer: Serializer, pre_send: PreSend | None) -> fmt.Line | None:
    entry = _entry(row)
    if pre_send is not None:
        sent = pre_send(entry)
        if sent is None:
            return None
        entry = sent
    body = serializer.dumps(entry_payload(entry))
    if "\n" in body:
        raise ValueError("a serializer's output must not contain line breaks (one entry per line)")
    return fmt.Line(entry.hlc, body)


@functools.lru_cache(maxsize=256)
def _json_name(name: str) -> str:
    return dumps(name)


def mark_shared(conn: Connection, batch: PlannedUpload, now_ms: int) -> None:
    """Record that the shared log durably holds the planned ``batch``, and drop it from the outbox.

    The batch's clock range bounds the update, so it touches the batch's rows, not every unshared one.
    """
    if batch.batch is None:
        return
    conn.execute(
        text(
            f"UPDATE {LOG_TABLE} SET shared_on = :now "
            "WHERE shared_on = 0 AND hlc BETWEEN :first AND :last AND upload_batch = :b"
        ),
        {"now": now_ms, "b": batch.batch.batch_id, "first": batch.clocks[0], "last": batch.clocks[1]},
    )
    conn.execute(text(f"DELETE FROM {OUTBOX_TABLE} WHERE batch_id = :b"), {"b": batch.batch.batch_id})


def insert_received(conn: Connection, entries: Sequence[LogEntry], now_ms: int) -> None:
    """Store received entries as needing integration; an entry already present is left as it is."""
    columns = ("device_id", "hlc", "tbl", "pk", "op", "value", "shared_on", "needs_integration")
    _many(
        conn,
        dialect_of(conn).insert_or_ignore(LOG_TABLE, columns, ["?"] * 7 + ["1"]),
        [
            (
                e.device_id,
                e.hlc,
                e.table,
                dumps(list(e.pk)),
                e.op,
                None if e.value is None else dumps(e.value),
                now_ms,
            )
            for e in entries
        ],
    )


def insert_local(conn: Connection, entries: Sequence[LogEntry]) -> None:
    """Log entries this device made itself without capture (constraint resolutions, rule declarations):
    unshared, so the next upload sends them like any captured change."""
    _many(
        conn,
        f"INSERT INTO {LOG_TABLE} (device_id, hlc, tbl, pk, op, value) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                e.device_id,
                e.hlc,
                e.table,
                dumps(list(e.pk)),
                e.op,
                None if e.value is None else dumps(e.value),
            )
            for e in entries
        ],
    )


def reintegrate(conn: Connection, table: str, columns: Sequence[str], device_id: str | None) -> int:
    """Mark received entries holding values for ``columns`` as needing integration again.

    A database that lacked a column kept other devices' values for it in the log; once the column is
    added, the reconciler applies them (an entry also holding other columns writes them again, unchanged).
    """
    marked = 0
    for column in columns:
        pattern = "%" + dumps(column).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":%"
        result = conn.execute(
            text(
                f"UPDATE {LOG_TABLE} SET needs_integration = 1 WHERE tbl = :t AND device_id <> :me "
                "AND needs_integration = 0 AND value LIKE :p ESCAPE '\\'"
            ),
            {"t": table, "me": device_id or "", "p": pattern},
        )
        marked += int(result.rowcount or 0)
    return marked


def load_histories(conn: Connection, max_objects: int) -> list[ObjectHistory]:
    """Up to ``max_objects`` objects with entries to integrate, each with its whole retained history.

    Objects come in the order their entries arrived, which is the order they were made: a parent row
    created before its children is applied in the same or an earlier pass, so foreign keys hold.
    Rows that do not read back are set aside (see ``_group``), and the next objects are read instead.
    """
    while True:
        rows = conn.execute(
            text(
                f"SELECT {', '.join('l.' + c.strip() for c in _COLUMNS.split(','))} FROM {LOG_TABLE} l "
                f"JOIN (SELECT DISTINCT tbl, pk FROM (SELECT tbl, pk FROM {LOG_TABLE} "
                "WHERE needs_integration = 1 ORDER BY seq LIMIT :n) AS pending) o "
                "ON l.tbl = o.tbl AND l.pk = o.pk"
            ),
            {"n": max_objects},
        ).all()
        histories = _group(conn, rows)
        if histories or not rows:
            return histories


def load_pending_rows(conn: Connection, max_objects: int, tables: Sequence[str]) -> list[Row]:
    """The raw rows of up to ``max_objects`` objects of ``tables`` with entries to integrate, each with
    its whole retained history: ``load_histories`` for the set-based path (``reconcile_sets``)."""
    if not tables:
        return []
    names = ", ".join(f":t{i}" for i in range(len(tables)))
    params: dict[str, Any] = {f"t{i}": t for i, t in enumerate(tables)}
    params["n"] = max_objects
    rows = conn.execute(
        text(
            f"SELECT {', '.join('l.' + c.strip() for c in _COLUMNS.split(','))} FROM {LOG_TABLE} l "
            f"JOIN (SELECT DISTINCT tbl, pk FROM (SELECT tbl, pk FROM {LOG_TABLE} "
            f"WHERE needs_integration = 1 AND tbl IN ({names}) ORDER BY seq LIMIT :n) AS pending) o "
            "ON l.tbl = o.tbl AND l.pk = o.pk"
        ),
        params,
    ).all()
    return list(rows)


def mark_integrated_rows(conn: Connection, seqs: Sequence[int]) -> int:
    """Mark the received entries of these log rows as applied (in the apply's transaction)."""
    _many(conn, f"UPDATE {LOG_TABLE} SET needs_integration = 0 WHERE seq = ?", [(s,) for s in seqs])
    return len(seqs)


def histories_of(conn: Connection, rows: Iterable[Sequence[Any]]) -> list[ObjectHistory]:
    """The histories of raw log rows (as ``load_pending_rows`` reads them), for the per-object path."""
    return _group(conn, rows)


def load_objects(
    conn: Connection, objects: Sequence[tuple[str, str]], *, with_state: bool = False
) -> list[ObjectHistory]:
    """The retained history of the given objects, (table, pk JSON) pairs, in one query.

    ``with_state`` also records which entries are settled (shared or received, and integrated): only
    those may ever be pruned.
    """
    rows: list[Sequence[Any]] = []
    for start in range(0, len(objects), LOAD_CHUNK):  # two parameters each: under SQLite's 32,766
        chunk = objects[start : start + LOAD_CHUNK]
        where = dialect_of(conn).in_values(("tbl", "pk"), [(f":t{i}", f":k{i}") for i in range(len(chunk))])
        params: dict[str, str] = {}
        for i, (t, k) in enumerate(chunk):
            params[f"t{i}"], params[f"k{i}"] = t, k
        rows += conn.execute(
            text(f"SELECT {_COLUMNS}, shared_on FROM {LOG_TABLE} WHERE {where}"),
            params,
        ).all()
    histories = _group(conn, rows)
    if with_state:
        settled = {(int(r[2]), str(r[1])) for r in rows if r[8] != 0 and not r[7]}
        histories = [
            ObjectHistory(h.table, h.pk, h.entries, frozenset(settled), h.pk_json) for h in histories
        ]
    return histories


def _group(conn: Connection, rows: Iterable[Sequence[Any]]) -> list[ObjectHistory]:
    """Group log rows by object, keyed by the stored (canonical) key text.

    A row that does not read back (stored by an older version with laxer checks: a value nesting
    deeper than the codec reads) is set aside and removed from the log, as the receive stage sets such
    an entry aside today: every device, old or new, reconciles the object without it, and nothing
    stored can stop the other objects from syncing.
    """
    groups: dict[tuple[str, str], list[LogEntry]] = defaultdict(list)
    unreadable: list[tuple[Sequence[Any], str]] = []
    for r in rows:
        try:
            entry = _entry(r[:8])
        except InvalidEntryError as exc:
            unreadable.append((r, str(exc)))
            continue
        groups[(str(r[3]), str(r[4]))].append(entry)
    if unreadable:
        _set_aside_unreadable(conn, unreadable)
    return [ObjectHistory(t, es[0].pk, tuple(es), pk_json=k) for (t, k), es in groups.items()]


def _set_aside_unreadable(conn: Connection, rows: Sequence[tuple[Sequence[Any], str]]) -> None:
    """Move stored rows that do not read back to the quarantine, their text kept as it was."""
    items = []
    for r, reason in rows:
        log.warning("set aside stored entry %s@%s of %s: %s", r[1], r[2], r[3], reason)
        value = "null" if r[6] is None else r[6]
        body = f'{{"op":{dumps(str(r[5]))},"table":{dumps(str(r[3]))},"pk":{r[4]},"value":{value}}}'
        items.append(SetAside(str(r[1]), int(r[2]), body, reason[:1_000]))
    quarantine_received(conn, items, wall_clock_ms())
    _many(conn, f"DELETE FROM {LOG_TABLE} WHERE seq = ?", [(int(r[0]),) for r, _ in rows])


def mark_integrated(conn: Connection, entries: Iterable[LogEntry]) -> int:
    """Mark received entries as applied. Runs in the same transaction as the apply itself."""
    params = [(e.device_id, e.hlc) for e in entries if e.needs_integration]
    _many(conn, f"UPDATE {LOG_TABLE} SET needs_integration = 0 WHERE device_id = ? AND hlc = ?", params)
    return len(params)


def remove(conn: Connection, entries: Iterable[LogEntry]) -> None:
    _many(
        conn,
        f"DELETE FROM {LOG_TABLE} WHERE device_id = ? AND hlc = ?",
        [(e.device_id, e.hlc) for e in entries],
    )


PRUNE_CHUNK = 2_000
Retained = Callable[[Sequence[LogEntry]], set[tuple[int, str]]]


def prune(conn: Connection, after_seq: int, retained: Retained) -> int:
    """Delete settled entries that no future merge needs, for objects with entries past ``after_seq``;
    ``retained(entries)`` (the reconciler's ``retained_keys``) names the entries that decide an object.

    Kept: every entry not yet shared or integrated, the latest create/delete of each object (its
    tombstone, flaw 3.9) and the latest writer of each live column. Under last-write-wins these decide
    every future merge, so a late or re-delivered old entry still loses to what it should lose to.
    Only objects with more than one entry and a recent one are visited, found by the database itself,
    so cleanup costs almost nothing when nothing changed. Returns how many entries it removed.
    """
    candidates = conn.execute(
        text(
            f"SELECT DISTINCT r.tbl, r.pk FROM {LOG_TABLE} r WHERE r.seq > :after AND EXISTS "
            f"(SELECT 1 FROM {LOG_TABLE} o WHERE o.tbl = r.tbl AND o.pk = r.pk AND o.seq <> r.seq)"
        ),
        {"after": after_seq},
    ).all()
    removed = 0
    for i in range(0, len(candidates), PRUNE_CHUNK):
        chunk = [(str(t), str(k)) for t, k in candidates[i : i + PRUNE_CHUNK]]
        doomed: list[LogEntry] = []
        for history in load_objects(conn, chunk, with_state=True):
            keep = retained(history.entries)
            doomed.extend(e for e in history.entries if e.key not in keep and e.key in history.settled)
        remove(conn, doomed)
        removed += len(doomed)
    return removed


def prune_mark(conn: Connection) -> int:
    """Where the next prune may start: before the first unsettled entry, else after the last entry."""
    first_unsettled, last = conn.execute(
        text(
            f"SELECT (SELECT min(seq) FROM {LOG_TABLE} WHERE shared_on = 0 OR needs_integration = 1), "
            f"(SELECT max(seq) FROM {LOG_TABLE})"
        )
    ).one()
    return int(first_unsettled) - 1 if first_unsettled is not None else int(last or 0)


def adopt_unshared(conn: Connection, *, old: str, new: str) -> int:
    """Move entries logged under ``old`` but never shared to device ``new`` (after re-registering).

    A batch planned but unconfirmed is planned afresh: under the new id it is a different upload.
    """
    conn.execute(text(f"DELETE FROM {OUTBOX_TABLE}"))
    result = conn.execute(
        text(
            f"UPDATE {LOG_TABLE} SET device_id = :new, upload_batch = NULL "
            "WHERE device_id = :old AND shared_on = 0"
        ),
        {"new": new, "old": old},
    )
    return int(result.rowcount or 0)


def last_seq(conn: Connection) -> int:
    return int(conn.execute(text(f"SELECT coalesce(max(seq), 0) FROM {LOG_TABLE}")).scalar() or 0)


def objects_after(conn: Connection, seq: int) -> set[tuple[str, str]]:
    """(table, key JSON) of the objects with entries logged after ``seq``."""
    rows = conn.execute(text(f"SELECT DISTINCT tbl, pk FROM {LOG_TABLE} WHERE seq > :s"), {"s": seq}).all()
    return {(str(t), str(k)) for t, k in rows}


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
