"""Snapshots: the merged state written to the shared log, and a device bootstrapped from one.

**Writing** (:func:`write_snapshot`, ``storex-sync snapshot``). A device that is up to date (a sync
just finished) writes what later merges need: for each object the entries that decide it under
last-write-wins (its latest create or delete, its tombstone, and the latest writer of each live column;
``reconcile.retained_keys``), with their origin devices and clocks. Its own entries go in only once they
are shared, so the snapshot holds exactly what the log holds up to its *frontier*: per origin device,
the highest clock of the batches this device had stored (``_sync_state`` ``frontier``). Chunks first,
the manifest last (``shared_log.snapshot_format``): a crash leaves chunks without a manifest, which no
reader uses and the next snapshot of this device deletes (``snapshot_pending``). Two devices writing at
once write two complete snapshots; the one with the later clock is "the latest".

**Bootstrap** (:func:`bootstrap_if_needed`, at the start of every receive). A device loads the latest
snapshot when it is new (it has stored nothing yet and was not registered with ``shared_until``) or when
a compaction may have deleted batches it has not read (some device's compaction record is past its
frontier: it was away longer than the retention). The snapshot's entries are checked by the same
``Verifier`` as batches and stored as received entries, in one transaction with the new frontier; the
reconciler then merges them with what the device has by the usual rules, so its own rows and unshared
changes are kept and uploaded later, and an object deleted while it was away stays deleted. Batches the
snapshot covers are then skipped unread (``covered``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from . import client_log, quarantine
from .capture.base import LOG_TABLE
from .clock import HybridLogicalClock, wall_clock_ms
from .codec import dumps, entry_payload
from .database import SyncedDatabase
from .errors import ConfigurationError, InvalidEntryError, TransientSharedLogError
from .models import LogEntry, StoredBatch, SyncSummary
from .reconcile import retained_keys
from .shared_log import format as fmt
from .shared_log import snapshot_format as sf
from .shared_log.base import SharedSyncLog
from .validate import Verifier

log = logging.getLogger(__name__)

CHUNK_RAW_BYTES = 2 * 1024 * 1024
"""Uncompressed bytes per chunk before it is sealed (a chunk that still does not fit is split)."""
SNAPSHOT_FRONTIER = "snapshot_frontier"
"""State key: the union of the frontiers of the snapshots this device loaded (batches under it are
skipped unread: their entries came with the snapshot)."""
DEFAULT_SNAPSHOT_AFTER = 100_000
"""Entries received and shared since the latest snapshot after which sync writes one on its own."""


# ---- frontiers (in _sync_state) ---------------------------------------------------------------------------


def frontier(conn: Connection, key: str = "frontier") -> dict[str, int]:
    """Per origin device, the highest clock of the batches this database has stored."""
    return dict(SyncedDatabase.get_state(conn, key) or {})


def advance(conn: Connection, clocks: Mapping[str, int], key: str = "frontier") -> None:
    """Raise the stored frontier to ``clocks`` (a frontier only grows)."""
    if not clocks:
        return
    current = frontier(conn, key)
    merged = {**current, **{d: max(h, current.get(d, 0)) for d, h in clocks.items()}}
    if merged != current:
        SyncedDatabase.set_state(conn, key, merged)


def covers(clocks: Mapping[str, int], other: Mapping[str, int]) -> bool:
    """Does ``clocks`` include everything ``other`` does?"""
    return all(clocks.get(d, 0) >= h for d, h in other.items())


def batch_range(batch: StoredBatch) -> tuple[str, int] | None:
    """(claimed device, last clock) of a batch document, or None if its header does not say (untrusted:
    used only to skip or delete what a verified snapshot covers)."""
    fields = batch.fields if isinstance(batch.fields, Mapping) else {}
    device, last = fields.get(fmt.F_DEVICE_ID), fields.get(fmt.F_LAST_HLC)
    if type(last) is not int:
        clocks = fields.get(fmt.F_HLCS)  # v1: its clocks
        last = clocks[-1] if isinstance(clocks, list) and clocks and type(clocks[-1]) is int else None
    return (device, last) if isinstance(device, str) and type(last) is int and last > 0 else None


def covered(batch: StoredBatch, clocks: Mapping[str, int]) -> bool:
    """Is this batch wholly inside a snapshot this device loaded (so its entries are here already)?"""
    span = batch_range(batch)
    return span is not None and span[0] in clocks and span[1] <= clocks[span[0]]


# ---- the latest snapshot ----------------------------------------------------------------------------------


def _clock_of(manifest: StoredBatch) -> int:
    hlc = manifest.fields.get(sf.F_HLC) if isinstance(manifest.fields, Mapping) else None
    return hlc if type(hlc) is int else 0


def latest(manifests: Sequence[StoredBatch]) -> StoredBatch | None:
    """The manifest with the latest clock (ties: the greater id): every device picks the same one."""
    return max(manifests, key=lambda m: (_clock_of(m), m.batch_id), default=None)


def latest_verified(
    verifier: Verifier, manifests: Sequence[StoredBatch]
) -> tuple[StoredBatch, sf.Manifest] | None:
    """The latest snapshot whose manifest verifies, read: one written past the rules (forged, altered)
    is skipped by every device alike, for bootstrap and compaction both."""
    for candidate in sorted(manifests, key=lambda m: (_clock_of(m), m.batch_id), reverse=True):
        try:
            return candidate, verifier.manifest(candidate)
        except InvalidEntryError as exc:
            log.warning("snapshot %s cannot be used: %s", candidate.batch_id, exc)
    return None


@dataclass(slots=True)
class Bootstrap:
    """What :func:`bootstrap_if_needed` did (``snapshot`` None: nothing)."""

    snapshot: str | None = None
    entries: int = 0
    set_aside: int = 0
    documents_read: int = 0


def _needs_bootstrap(
    shared_log: SharedSyncLog,
    mine: Mapping[str, int],
    theirs: Mapping[str, int],
    *,
    user_id: str,
    device_id: str,
) -> tuple[bool, int]:
    """Should a device with frontier ``mine`` load a snapshot with frontier ``theirs``? (answer, reads)"""
    if covers(mine, theirs):
        return False, 0
    devices = shared_log.list_devices(user_id=user_id)
    me = next((d for d in devices if d.device_id == device_id), None)
    if not mine and me is not None and me.shared_until is None:
        return True, max(1, len(devices))  # new: start from the snapshot rather than the history
    # Behind the snapshot (or skipping history on purpose, with shared_until): only a compaction past
    # this frontier makes the log unable to catch it up.
    compacted: dict[str, int] = {}
    for d in devices:
        for origin, hlc in d.compacted.items():
            compacted[origin] = max(hlc, compacted.get(origin, 0))
    return not covers(mine, compacted), max(1, len(devices))


def bootstrap_if_needed(
    db: SyncedDatabase,
    shared_log: SharedSyncLog,
    verifier: Verifier,
    clock: HybridLogicalClock,
    *,
    now_ms: Callable[[], int] = wall_clock_ms,
) -> Bootstrap:
    """Load the latest snapshot if this device is new or fell behind what the log still holds."""
    done = Bootstrap()
    manifests = shared_log.list_snapshots(user_id=verifier.user_id)
    done.documents_read += len(manifests)
    newest = latest(manifests)
    if newest is None:
        return done
    with db.transaction(write=False) as conn:
        mine = frontier(conn)
        seen = db.get_state(conn, "latest_snapshot") or {}
    if seen.get("id") == newest.batch_id and covers(mine, seen.get("frontier", {})):
        return done  # checked before (a manifest never changes) and caught up: no more reads
    verified = latest_verified(verifier, manifests)
    if verified is None:
        return done
    newest, manifest = verified
    wanted, read = _needs_bootstrap(
        shared_log, mine, manifest.frontier, user_id=verifier.user_id, device_id=verifier.device_id
    )
    done.documents_read += read
    if seen.get("id") != newest.batch_id:
        with db.transaction() as conn:  # a newer snapshot: count the traffic since it from here
            db.set_state(conn, "latest_snapshot", {"id": newest.batch_id, "frontier": manifest.frontier})
            db.set_state(conn, "since_snapshot", 0)
    if not wanted:
        return done
    chunks = shared_log.get_snapshot_chunks(newest.batch_id, user_id=verifier.user_id)
    done.documents_read += max(1, len(chunks))
    if len(chunks) < len(manifest.digests):  # deleted while we read it (a newer one is complete)
        raise TransientSharedLogError(
            f"snapshot {newest.batch_id} was deleted while this device was loading it: nothing was stored",
            hint="sync again: the next sync loads the newer snapshot",
        )
    try:
        entries, set_aside = verifier.snapshot(manifest, chunks, newest.shared_on)
    except InvalidEntryError as exc:
        log.warning("snapshot %s cannot be used: %s", newest.batch_id, exc)
        return done
    now = now_ms()
    with db.transaction() as conn:
        db.load_clock(conn, clock)
        for entry in entries:
            clock.receive(entry.hlc)
        client_log.insert_received(conn, entries, now)
        quarantine.quarantine_received(conn, set_aside, now)
        advance(conn, manifest.frontier)
        advance(conn, manifest.frontier, key=SNAPSHOT_FRONTIER)
        db.save_clock(conn, clock)
    log.info("bootstrapped from snapshot %s: %d entries", newest.batch_id, len(entries))
    done.snapshot, done.entries, done.set_aside = newest.batch_id, len(entries), len(set_aside)
    return done


def due(db: SyncedDatabase, summary: SyncSummary, traffic: int, snapshot_after: int | None) -> bool:
    """Add this sync's ``traffic`` (entries received and shared) to the count since the latest
    snapshot; is it time for a new one? Only after a sync that finished."""
    if not summary.finished:
        return False
    with db.transaction() as conn:
        since = int(db.get_state(conn, "since_snapshot") or 0) + traffic
        db.set_state(conn, "since_snapshot", since)
    return snapshot_after is not None and since >= snapshot_after


def verifier_for(db: SyncedDatabase, shared_log: SharedSyncLog, **options: Any) -> tuple[Verifier, str, str]:
    """The verifier of this database's device (sync's, compaction's and status's: one judgement of what
    the log holds), with the user and device ids; ``options`` go to :class:`Verifier` (sync's hooks)."""
    with db.transaction(write=False) as conn:
        device_id = db.device_id(conn)
        user_id = db.get_state(conn, "user_id") or ""
        key, cipher = db.signing_key(conn), db.data_key(conn)
    verifier = Verifier(
        user_id,
        device_id,
        key,
        lambda other: shared_log.get_device_info(user_id=user_id, device_id=other),
        db.synced_tables(),
        db.dialect,
        cipher=cipher,
        **options,
    )
    return verifier, user_id, device_id


# ---- writing ----------------------------------------------------------------------------------------------


def state_entries(conn: Connection, device_id: str) -> list[LogEntry]:
    """What a snapshot of this database holds: per object, the shared entries that decide it."""
    rows = conn.execute(
        text(
            f"SELECT seq, device_id, hlc, tbl, pk, op, value, needs_integration FROM {LOG_TABLE} "
            "WHERE device_id <> :me OR shared_on > 0 ORDER BY tbl, pk"
        ),
        {"me": device_id},
    ).all()
    objects: dict[tuple[str, str], list[LogEntry]] = defaultdict(list)
    for row in rows:
        objects[(str(row[3]), str(row[4]))].append(client_log._entry(row))
    kept: list[LogEntry] = []
    for entries in objects.values():
        keep = retained_keys(entries)
        kept.extend(e for e in entries if e.key in keep)
    return kept


def _chunks(entries: Sequence[LogEntry]) -> list[list[sf.SnapshotLine]]:
    """Entries as snapshot lines, sorted by (origin, clock), cut into chunks of bounded size."""
    lines = sorted(
        (sf.SnapshotLine(e.device_id, e.hlc, dumps(entry_payload(e))) for e in entries),
        key=lambda x: (x.device_id, x.hlc),
    )
    chunks: list[list[sf.SnapshotLine]] = []
    current: list[sf.SnapshotLine] = []
    size = 0
    for line in lines:
        n = len(line.text.encode("utf-8")) + len(line.device_id) + 22
        if current and size + n > CHUNK_RAW_BYTES:
            chunks.append(current)
            current, size = [], 0
        current.append(line)
        size += n
    if current:
        chunks.append(current)
    return chunks


@dataclass(slots=True)
class Written:
    """What :func:`write_snapshot` wrote."""

    snapshot_id: str
    entries: int
    chunks: int
    frontier: dict[str, int]
    documents_written: int


def write_snapshot(
    db: SyncedDatabase,
    shared_log: SharedSyncLog,
    *,
    max_stored_bytes: int | None = None,
    sync: bool = True,
    **sync_options: Any,
) -> Written:
    """Sync, then write a snapshot of this database's merged state to the shared log.

    Raises ``ConfigurationError`` if the sync did not finish (a snapshot must be up to date).
    """
    from .sync import DEFAULT_MAX_BATCH_BYTES, do_sync

    if sync:
        summary = do_sync(db, shared_log, snapshot_after=None, **sync_options)
        if not summary.finished:
            raise ConfigurationError(
                "the sync before the snapshot did not finish: no snapshot written",
                hint="run 'storex-sync snapshot' again",
            )
    limit = min(
        [b for b in (max_stored_bytes, shared_log.max_batch_bytes) if b], default=DEFAULT_MAX_BATCH_BYTES
    )
    with db.transaction() as conn:
        device_id = db.device_id(conn)
        user_id = db.get_state(conn, "user_id") or ""
        key, cipher = db.signing_key(conn), db.data_key(conn)
        clock = db.load_clock(conn, HybridLogicalClock())
        entries = state_entries(conn, device_id)
        clocks = frontier(conn)
        hlc = clock.stamp()
        db.save_clock(conn, clock)
        pending = db.get_state(conn, "snapshot_pending")
    written = 0
    # Chunks of a snapshot this device crashed while writing are never to be completed: remove them.
    if pending and pending not in {m.batch_id for m in shared_log.list_snapshots(user_id=user_id)}:
        shared_log.delete_snapshot(pending, user_id=user_id)
    sid = sf.snapshot_id(device_id, hlc)
    with db.transaction() as conn:
        db.set_state(conn, "snapshot_pending", sid)
    documents: list[StoredBatch] = []
    digests: list[str] = []

    def seal(lines: list[sf.SnapshotLine]) -> None:
        cid, fields, digest = sf.encode_chunk(
            lines, snapshot=sid, index=len(documents), user_id=user_id, device_id=device_id,
            key=key, cipher=cipher,
        )  # fmt: skip
        if len(fields[fmt.F_PAYLOAD]) > limit and len(lines) > 1:
            seal(lines[: len(lines) // 2])
            seal(lines[len(lines) // 2 :])
            return
        documents.append(StoredBatch(cid, fields))
        digests.append(digest)

    for lines in _chunks(entries):
        seal(lines)
    for doc in documents:
        written += shared_log.write_snapshot_chunks(
            sid, [doc], user_id=user_id, device_id=device_id
        ).documents_written
    sid2, fields = sf.encode_manifest(
        hlc=hlc, count=len(entries), frontier=clocks, digests=digests, user_id=user_id,
        device_id=device_id, key=key, cipher=cipher,
    )  # fmt: skip
    written += shared_log.write_snapshot_manifest(
        StoredBatch(sid2, fields), user_id=user_id, device_id=device_id
    ).documents_written
    with db.transaction() as conn:
        db.set_state(conn, "snapshot_pending", None)
        db.set_state(conn, "since_snapshot", 0)
    log.info("wrote snapshot %s: %d entries in %d chunks", sid, len(entries), len(documents))
    return Written(sid, len(entries), len(documents), clocks, written)


__all__ = [
    "Bootstrap",
    "Written",
    "bootstrap_if_needed",
    "covered",
    "latest",
    "latest_verified",
    "verifier_for",
    "write_snapshot",
]
