"""``do_sync``: receive, share, reconcile. The only module that knows every stage.

Durability rule: nothing is marked shared, seen or integrated before the other side durably has it.

* receive: batches are verified and their entries validated (``validate``) and committed to the client
  log (bad ones set aside) *before* the read marker moves, so a crash in between re-delivers, and the
  unique (device, clock) key ignores repeats;
* share: the batch is encoded, signed and put in the outbox before it is sent, and marked shared only
  after the shared log accepted it, so a crash in between resends the very same bytes under the same id,
  which the log treats as a no-op;
* reconcile: the writes, the resolutions the schema's rules called for (see ``constraints``) and the
  marking of their entries as integrated commit in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection
from sqlalchemy.exc import InterfaceError, OperationalError

from . import (
    client_log,
    constraints,
    liveness,
    policy,
    quarantine,
    reconcile_sets,
    resolutions,
    retry,
    schema,
    snapshot,
)
from .apply import ApplyResult
from .capture.base import TableInfo, savepoint
from .clock import HybridLogicalClock, wall_clock_ms
from .codec import JsonSerializer, Serializer, dumps
from .database import SyncedDatabase
from .encryption import DataKey
from .errors import ConfigurationError, ContendedError, PermanentSharedLogError
from .events import SyncEvents
from .models import LogEntry, Operation, SyncSummary, WriteResult
from .reconcile import LastWriteWins, ObjectHistory, Reconciler, reconcile_sync_log, retained_keys
from .resolutions import Resolution
from .shared_log import format as fmt
from .shared_log.base import SharedSyncLog
from .validate import PostReceive, Verifier

log = logging.getLogger(__name__)

STAGES = ("receive", "share", "reconcile")
DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
"""Stored bytes per batch for backends without a document limit (memory, folder): bounds memory use."""
SET_PASS_OBJECTS = 20_000
"""Objects per reconcile transaction on the set-based path, unless ``reconcile_batch_size`` says."""
OBJECT_PASS_OBJECTS = 2_000
"""Objects per reconcile transaction on the per-object path, unless ``reconcile_batch_size`` says."""
ContinueSync = Callable[[str], bool]
Progress = Callable[[str, int], None]


@dataclass(slots=True)
class _Run:
    db: SyncedDatabase
    shared_log: SharedSyncLog
    user_id: str
    device_id: str
    clock: HybridLogicalClock
    summary: SyncSummary
    events: SyncEvents
    single_batch: bool
    continue_sync: ContinueSync | None
    now_ms: Callable[[], int]
    progress: Progress | None

    def go_on(self, stage: str) -> bool:
        """After a batch: keep going? ``single_batch`` stops each stage after one batch (others still run);
        ``continue_sync`` returning False stops the whole sync."""
        if self.continue_sync is not None and not self.continue_sync(stage):
            self.summary.finished = False
            return False
        return True

    def report(self, stage: str, count: int) -> None:
        if self.progress is not None and count:
            self.progress(stage, count)


def do_sync(
    db: SyncedDatabase,
    shared_log: SharedSyncLog,
    *,
    user_id: str | None = None,
    device_id: str | None = None,
    stages: Collection[str] = STAGES,
    upload_batch_size: int | None = 10_000,
    upload_batch_byte_limit: int | None = None,
    download_batch_size: int | None = 20_000,
    reconcile_batch_size: int | None = None,
    single_batch: bool = False,
    continue_sync: ContinueSync | None = None,
    pre_send: client_log.PreSend | None = None,
    post_receive: PostReceive | None = None,
    serializer: Serializer | None = None,
    reconciler: Reconciler = reconcile_sync_log,
    reconciliation_processor: Callable[[Sequence[Operation]], Sequence[Operation]] | None = None,
    events: SyncEvents | None = None,
    cleanup_after_reconcile: bool = True,
    clock: HybridLogicalClock | None = None,
    now_ms: Callable[[], int] = wall_clock_ms,
    progress: Progress | None = None,
    snapshot_after: int | None = snapshot.DEFAULT_SNAPSHOT_AFTER,
) -> SyncSummary:
    """One sync round of ``db`` through ``shared_log``; returns what it did.

    ``user_id`` and ``device_id`` default to what ``init``/``register_device`` stored in the database.
    ``upload_batch_byte_limit`` caps the stored (compressed) bytes of one batch document and defaults to
    the shared log's ``max_batch_bytes``. ``single_batch`` makes each stage handle one batch;
    ``continue_sync(stage)`` is asked after every batch and stops the sync when it returns False.
    ``pre_send``/``post_receive`` may transform an entry or return None: a dropped outgoing entry is
    withheld (never sent, counted), a dropped incoming one is set aside (kept, never lost).
    ``download_batch_size`` is the entries read per page of the shared log (20,000: two full batches,
    so a backlog costs few page queries). ``reconcile_batch_size`` is the objects per reconcile
    transaction (default: 20,000 on the set-based path of the default reconciler, 2,000 object by
    object). ``cleanup_after_reconcile`` prunes log entries that no future merge needs, keeping
    tombstones.
    A new device, or one that a compaction left behind, first loads the latest snapshot (``snapshot``);
    after ``snapshot_after`` entries received and shared since the latest snapshot, a complete sync
    writes one (None: never).
    """
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown sync stages {sorted(unknown)}; choose from {STAGES}")
    db.upgrade()
    with db.transaction() as conn:
        device_id = device_id or db.device_id(conn)
        user_id = user_id or db.get_state(conn, "user_id") or ""
        key = db.signing_key(conn)
        cipher = db.data_key(conn)
        run = _Run(
            db, shared_log, user_id, device_id,
            db.load_clock(conn, clock or HybridLogicalClock()),
            SyncSummary(), events or SyncEvents(), single_batch, continue_sync, now_ms, progress,
        )  # fmt: skip
        # The tables may have changed since the last sync (here, or by 'init' in another process):
        # follow (or stop) before reading a value, and read the registry afresh.
        schema.check(conn, db.dialect, device_id=device_id, now_ms=now_ms())
        db.forget_tables()
        client_log.stamp_pending(conn, db.dialect, db.synced_tables(conn), run.clock, device_id)
        _declare_rules(conn, db, run)
        db.save_clock(conn, run.clock)
    check_encryption(shared_log, user_id, cipher)
    loaded = 0
    serializer = serializer or JsonSerializer()
    if "receive" in stages:
        run.summary.stages.append("receive")
        verifier, _, _ = snapshot.verifier_for(
            db, shared_log, serializer=serializer, post_receive=post_receive, now_ms=now_ms
        )
        boot = snapshot.bootstrap_if_needed(db, shared_log, verifier, run.clock, now_ms=now_ms)
        loaded = boot.entries
        run.summary.documents_read += boot.documents_read
        run.summary.received += boot.entries
        run.summary.set_aside += boot.set_aside
        if not _receive(run, verifier, download_batch_size):
            return run.summary
    if "share" in stages:
        run.summary.stages.append("share")
        limits = [b for b in (upload_batch_byte_limit, shared_log.max_batch_bytes) if b]
        max_stored = min(limits, default=DEFAULT_MAX_BATCH_BYTES)
        signer = client_log.Signer(user_id, device_id, key, cipher)
        if not _share(run, signer, serializer, pre_send, upload_batch_size, max_stored):
            return run.summary
    if "reconcile" in stages:
        run.summary.stages.append("reconcile")
        if not _reconcile(run, reconciler, reconciliation_processor, reconcile_batch_size):
            return run.summary
        if run.summary.resolved and "share" in stages:  # resolutions are writes: the others need them
            limits = [b for b in (upload_batch_byte_limit, shared_log.max_batch_bytes) if b]
            max_stored = min(limits, default=DEFAULT_MAX_BATCH_BYTES)
            signer = client_log.Signer(user_id, device_id, key, cipher)
            if not _share(run, signer, serializer, pre_send, upload_batch_size, max_stored):
                return run.summary
    if cleanup_after_reconcile:
        with db.transaction() as conn:
            client_log.prune(conn, int(db.get_state(conn, "pruned_upto") or 0), retained_keys)
            db.set_state(conn, "pruned_upto", client_log.prune_mark(conn))
    if "receive" in stages:
        run.summary.documents_written += liveness.report(
            db, shared_log, user_id=user_id, device_id=device_id, now_ms=now_ms()
        )
    traffic = run.summary.received + run.summary.sent - loaded  # what a snapshot loaded is no news
    if snapshot.due(db, run.summary, traffic, snapshot_after) and len(set(stages)) == len(STAGES):
        written = snapshot.write_snapshot(db, shared_log, sync=False)
        run.summary.documents_written += written.documents_written
    return run.summary


def _declare_rules(conn: Connection, db: SyncedDatabase, run: _Run) -> None:
    """Log this device's conflict rules where they are new or changed, to be shared with the others."""
    declared: dict[str, str] = db.get_state(conn, "declared") or {}
    entries = policy.declarations(
        db.table_rules(conn), db.synced_tables(conn), declared, run.clock, run.device_id
    )
    if entries:
        client_log.insert_local(conn, entries)
        db.set_state(conn, "declared", {**declared, **{str(e.pk[0]): dumps(e.value) for e in entries}})


def check_encryption(shared_log: SharedSyncLog, user_id: str, cipher: DataKey | None) -> None:
    """Refuse to mix: an encrypted log takes only sealed batches, and a plain one only plain batches.

    One read per sync: another device may have turned encryption on since this one last synced.
    """
    record = shared_log.get_key_record(user_id=user_id)
    if record is not None and cipher is None:
        raise ConfigurationError(
            "the shared log is encrypted and this database has no key for it: nothing was read or written",
            hint="run 'storex-sync init --encrypt --db URL' with the log's passphrase",
        )
    if record is None and cipher is not None:
        raise ConfigurationError(
            "this database encrypts, but its shared log has no key record: nothing was read or written",
            hint="check --log (the log may have been reset); restore the key record or start a new log",
        )
    if record is not None and cipher is not None and record.get("kid") != cipher.key_id:
        raise ConfigurationError(
            "the shared log is encrypted with another key than this database holds",
            hint="a database belongs to one log; re-register it ('storex-sync init --new-device --encrypt')",
        )


MAX_STALLED_PAGES = 50
"""Pages in a row that bring no batch not seen before in this receive, while the log says there is more:
then its read marker is not moving (a backend bug, or a marker others damaged) and receive stops."""


def _receive(run: _Run, verifier: Verifier, batch_size: int | None) -> bool:
    seen: set[str] = set()
    stalled = 0
    with run.db.transaction(write=False) as conn:  # set by bootstrap, before receive; unchanged by it
        loaded = snapshot.frontier(conn, snapshot.SNAPSHOT_FRONTIER)
    while True:
        update = run.shared_log.get_unsynced_batches(
            user_id=run.user_id, device_id=run.device_id, batch_size=batch_size
        )
        run.summary.documents_read += update.documents_read
        ids = {b.batch_id for b in update.batches}
        stalled = 0 if ids - seen else stalled + 1
        seen |= ids
        if stalled > MAX_STALLED_PAGES:
            raise PermanentSharedLogError(
                f"the shared log returned {stalled} pages in a row with no new batch after they were marked "
                "seen: this device's read marker does not move",
                hint="nothing was lost; this is a fault of the shared-log backend or its stored marker: "
                "report it with the output of 'storex-sync status --json'",
            )
        # Batches inside a snapshot this device loaded: their entries are here already.
        checked = verifier.check([b for b in update.batches if not snapshot.covered(b, loaded)])
        now = run.now_ms()
        with run.db.transaction() as conn:
            snapshot.advance(conn, checked.frontier)
            run.db.load_clock(conn, run.clock)
            for entry in checked.entries:
                run.clock.receive(entry.hlc)
            client_log.insert_received(conn, checked.entries, now)
            quarantine.quarantine_received(conn, checked.set_aside, now)
            run.db.save_clock(conn, run.clock)
        for bad in checked.set_aside:
            log.warning("set aside %s@%s from the shared log: %s", bad.device_id, bad.hlc, bad.reason)
        result = run.shared_log.mark_as_seen(update, user_id=run.user_id, device_id=run.device_id)
        run.summary.documents_written += result.documents_written
        run.summary.received += len(checked.entries)
        run.summary.set_aside += len(checked.set_aside)
        run.report("receive", len(checked.entries) + len(checked.set_aside))
        if checked.entries:
            run.events.emit("received_shared_entries", entries=checked.entries, device_id=run.device_id)
        if not update.has_more or run.single_batch:
            return True
        if not run.go_on("receive"):
            return False


def _share(
    run: _Run,
    signer: client_log.Signer,
    serializer: Serializer,
    pre_send: client_log.PreSend | None,
    batch_size: int | None,
    max_stored_bytes: int,
) -> bool:
    """Upload unshared entries. Batches planned before a crash go first, exactly as planned; new batches
    are pipelined: the next one is planned (local work) while the previous one uploads (network)."""

    def plan() -> client_log.PlannedUpload | None:
        with run.db.transaction() as conn:
            batch = client_log.plan_upload(
                conn,
                signer=signer,
                serializer=serializer,
                pre_send=pre_send,
                max_entries=batch_size,
                max_stored_bytes=max_stored_bytes,
                now_ms=run.now_ms(),
            )
        if batch is not None:
            run.summary.withheld += batch.withheld
            run.summary.set_aside += batch.set_aside
            if batch.batch is not None and run.events.wants("sending_shared_entries"):
                with run.db.transaction(write=False) as conn:
                    entries = client_log.planned_entries(conn, batch)
                run.events.emit("sending_shared_entries", entries=entries, device_id=run.device_id)
        return batch

    def send(batch: client_log.PlannedUpload) -> WriteResult:
        if batch.batch is None:
            return WriteResult(0)
        return run.shared_log.write_batches([batch.batch], user_id=run.user_id, device_id=run.device_id)

    def settle(batch: client_log.PlannedUpload, result: WriteResult) -> bool:
        """Mark the batch shared now that the log has it; say whether to go on."""
        with run.db.transaction() as conn:
            client_log.mark_shared(conn, batch, run.now_ms())
            if batch.batch is not None:
                snapshot.advance(conn, {run.device_id: batch.batch.fields[fmt.F_LAST_HLC]})
        run.summary.documents_written += result.documents_written
        run.summary.sent += batch.entries
        run.report("share", batch.entries)
        return not run.single_batch and run.go_on("share")

    while True:
        with run.db.transaction(write=False) as conn:
            leftover = client_log.planned(conn)
        if leftover is None:
            break
        if not settle(leftover, send(leftover)):
            return run.summary.finished
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="storex-upload") as uploader:
        in_flight: tuple[client_log.PlannedUpload, Future[WriteResult]] | None = None
        while True:
            batch = plan()
            if in_flight is not None:
                previous, upload = in_flight
                in_flight = None
                if not settle(previous, upload.result()):
                    return run.summary.finished  # a batch planned meanwhile stays planned for next time
            if batch is None:
                return True
            in_flight = (batch, uploader.submit(send, batch))


def _reconcile(
    run: _Run,
    reconciler: Reconciler,
    processor: Callable[[Sequence[Operation]], Sequence[Operation]] | None,
    batch_size: int | None,
) -> bool:
    with run.db.transaction() as conn:
        tables = run.db.synced_tables(conn)
        declared = policy.read_declarations(conn, list(tables))
        policy.check_agreement(declared, run.db.table_rules(conn), run.device_id)  # or they would diverge
        dropped = {t: policy.dropped_columns(entries) for t, entries in declared.items()}
        if schema.adopt_dropped(conn, run.db.dialect, dropped, run.now_ms()):
            run.db.forget_tables()
    # The default reconciler, unobserved, takes the set-based path for the tables it may (reconcile_sets);
    # what is left (other tables, rule declarations) then goes through the per-object passes.
    by_sets = (
        type(reconciler) is LastWriteWins
        and reconciler.double_create == "merge"
        and processor is None
        and not run.events.wants("reconciling_entries")
        and not run.events.wants("reconciled_entries")
    )
    while True:

        def attempt() -> _Passed | None:
            nonlocal by_sets
            if by_sets:
                passed = _set_pass(run, reconciler, batch_size or SET_PASS_OBJECTS)
                if passed is not None:
                    return passed
                by_sets = False  # the tables it may take are done: the rest goes object by object
            return _reconcile_pass(run, reconciler, processor, batch_size or OBJECT_PASS_OBJECTS)

        # An application write that races a pass rolls it back; the next attempt sees it. Bounded, so a
        # row the application rewrites without pause ends the sync with a (transient) error.
        passed = retry.bounded_retries(attempt, lost=_RaceError, attempts=RACE_ATTEMPTS, give_up=_contended)
        if passed is None:
            return True
        run.summary.applied += passed.result.applied
        run.summary.integrated += passed.integrated
        run.summary.set_aside += passed.set_aside
        run.summary.resolved += len(passed.resolutions)
        run.report("reconcile", passed.integrated)
        run.events.emit(
            "reconciled_entries",
            histories=passed.histories,
            operations=passed.operations,
            device_id=run.device_id,
        )
        if run.single_batch:
            return True
        if not run.go_on("reconcile"):
            return False


class _RaceError(Exception):
    """An application write to a row being reconciled committed during the apply."""


RACE_ATTEMPTS = 20
"""Reconcile passes tried in a row while application writes keep racing them."""


def _contended(attempts: int) -> ContendedError:
    return ContendedError(
        f"the application wrote rows being reconciled during each of {attempts} attempts; nothing was "
        "lost (every pass rolled back whole) and what was received waits to be applied",
        hint="sync again when the application writes less; 'watch' retries on its own",
    )


@dataclass(slots=True)
class _Passed:
    histories: list[ObjectHistory]
    operations: list[Operation]
    result: ApplyResult
    resolutions: list[Resolution]
    integrated: int = 0
    set_aside: int = 0


def _reconcile_pass(
    run: _Run,
    reconciler: Reconciler,
    processor: Callable[[Sequence[Operation]], Sequence[Operation]] | None,
    max_objects: int,
) -> _Passed | None:
    """One transaction: lock, stamp, reconcile under the schema's rules, apply, mark integrated.

    None when nothing is left.
    """
    with run.db.transaction() as conn:
        histories = client_log.load_histories(conn, max_objects)
        if not histories:
            return None
        return _objects_pass(conn, run, reconciler, processor, histories)


def _set_pass(run: _Run, reconciler: Reconciler, max_objects: int) -> _Passed | None:
    """One transaction of the set-based path (``reconcile_sets``) over up to ``max_objects`` objects of
    the tables it may take; None when none of them has entries left to integrate.

    If the chunk's writes fail (a CHECK or NOT NULL a merged row breaks, a value a column cannot hold),
    they are rolled back and the same objects go through the per-object pass in the same transaction,
    which resolves or sets aside exactly the failing ones.
    """
    db = run.db
    with db.transaction() as conn:
        tables = db.synced_tables(conn)
        plain = reconcile_sets.plain_tables(tables)
        rows = client_log.load_pending_rows(conn, max_objects, plain)
        if not rows:
            return None
        objects = reconcile_sets.group(rows)
        for table, pks in _keys_by_table(objects).items():
            db.dialect.lock_rows(conn, tables[table], pks)
        db.load_clock(conn, run.clock)
        if client_log.stamp_pending(conn, db.dialect, tables, run.clock, run.device_id):
            rows = client_log.load_pending_rows(conn, max_objects, plain)  # see the local edits too
            objects = reconcile_sets.group(rows)
        applied: int | None = None
        try:
            writes = reconcile_sets.plan(objects, tables, db.dialect)
            db.dialect.silence(conn)
            try:
                with savepoint(conn, "sync_sets"):
                    applied = reconcile_sets.apply(conn, tables, writes)
            finally:
                db.dialect.unsilence(conn)
        except reconcile_sets.UnfitError:
            pass
        except _NOT_A_CHUNKS_FAULT:
            raise  # a lost connection or a lock: the sync fails, as in the per-object path
        except Exception as exc:  # refused by the database (or its driver): each object gets its own try
            log.info("set-based apply refused (%s): this chunk goes object by object", _first_line(exc))
        if applied is None:
            passed = _objects_pass(conn, run, reconciler, None, client_log.histories_of(conn, rows))
            db.save_clock(conn, run.clock)
            return passed
        if _written_meanwhile(conn, run, tables, objects):
            raise _RaceError  # rolls back the whole pass, apply included
        integrated = client_log.mark_integrated_rows(conn, [int(r[0]) for r in rows if r[7]])
        db.save_clock(conn, run.clock)
    return _Passed([], [], ApplyResult(applied), [], integrated)


_NOT_A_CHUNKS_FAULT = (OperationalError, InterfaceError, MemoryError)
"""Errors of the database itself, not of what a chunk writes (as ``constraints`` tells them apart)."""


def _keys_by_table(objects: Mapping[tuple[str, str], object]) -> dict[str, list[list[object]]]:
    grouped: dict[str, list[list[object]]] = {}
    for table, pk_json in objects:
        grouped.setdefault(table, []).append(orjson.loads(pk_json))
    return grouped


def _first_line(exc: Exception) -> str:
    return str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__


def _objects_pass(
    conn: Connection,
    run: _Run,
    reconciler: Reconciler,
    processor: Callable[[Sequence[Operation]], Sequence[Operation]] | None,
    histories: Sequence[ObjectHistory],
) -> _Passed:
    """The per-object pass over ``histories`` in the caller's transaction (see ``_reconcile_pass``)."""
    db = run.db
    tables = db.synced_tables(conn)
    now = run.now_ms()
    histories, skipped, waiting = _applicable(conn, histories, tables, now)
    if not histories:
        return _Passed([], [], ApplyResult(), [], skipped, waiting)
    for table, pks in _by_table(histories).items():
        db.dialect.lock_rows(conn, tables[table], pks)
    # Changes the application committed before the locks are now captured: stamp them and read
    # the histories again, so the reconciler never overwrites a local edit it has not seen.
    db.load_clock(conn, run.clock)
    if client_log.stamp_pending(conn, db.dialect, tables, run.clock, run.device_id):
        histories = client_log.load_objects(conn, [h.object_key for h in histories])
    run.events.emit("reconciling_entries", histories=histories, device_id=run.device_id)

    def stamp() -> bool:
        return bool(client_log.stamp_pending(conn, db.dialect, tables, run.clock, run.device_id))

    rules = db.table_rules(conn)
    context = constraints.PassContext(
        conn, db.dialect, tables, rules, run.clock, run.device_id, reconciler, processor, stamp
    )
    db.dialect.silence(conn)
    outcome = constraints.reconcile_pass(context, histories)
    db.dialect.unsilence(conn)
    if _written_meanwhile(conn, run, tables, [h.object_key for h in outcome.histories]):
        raise _RaceError  # rolls back the whole pass, apply included
    client_log.insert_local(conn, outcome.entries)  # resolutions are writes of this device: shared
    resolutions.record(conn, outcome.resolutions, now)
    integrated = _settle(conn, outcome.histories, outcome.refused, now)
    db.save_clock(conn, run.clock)
    refused = [h for h in outcome.histories if h.object_key in outcome.refused]
    set_aside = sum(1 for h in refused for e in h.entries if e.needs_integration)
    passed = _Passed(outcome.histories, outcome.operations, outcome.result, outcome.resolutions)
    passed.integrated, passed.set_aside = integrated + skipped, set_aside + waiting
    return passed


def _applicable(
    conn: Connection, histories: Sequence[ObjectHistory], tables: Mapping[str, TableInfo], now: int
) -> tuple[list[ObjectHistory], int, int]:
    """The histories to reconcile: rule declarations are only kept (compared by ``policy``), and entries
    for a table whose capture is off wait set aside until it is on again. Returns those, and how many
    entries were integrated and set aside so."""
    keep: list[ObjectHistory] = []
    declared: list[LogEntry] = []
    parked = 0
    for h in histories:
        if h.table == policy.RULES_TABLE:
            declared.extend(h.entries)
        elif h.table not in tables:
            waiting = [e for e in h.entries if e.needs_integration]
            reason = f"table {h.table!r} is not synced on this device (capture is off)"
            quarantine.quarantine(conn, waiting, reason, now_ms=now, replayable=True)
            client_log.remove(conn, waiting)
            parked += len(waiting)
        else:
            keep.append(h)
    return keep, client_log.mark_integrated(conn, declared), parked


def _written_meanwhile(
    conn: Connection, run: _Run, tables: Mapping[str, TableInfo], objects: Collection[tuple[str, str]]
) -> bool:
    """Did the application write one of these rows while the pass applied?

    Row locks cannot cover a row another transaction is inserting right now: on a server database the
    apply's upsert waits for that insert and would overwrite it. Its capture is committed by then, so
    stamping again shows it. (On SQLite, the only writer, this finds nothing.)
    """
    before = client_log.last_seq(conn)
    if not client_log.stamp_pending(conn, run.db.dialect, tables, run.clock, run.device_id):
        return False
    ours = objects if isinstance(objects, set | dict) else set(objects)
    return any(key in ours for key in client_log.objects_after(conn, before))


def _by_table(histories: Sequence[ObjectHistory]) -> dict[str, list[tuple[object, ...]]]:
    grouped: dict[str, list[tuple[object, ...]]] = {}
    for h in histories:
        grouped.setdefault(h.table, []).append(h.pk)
    return grouped


def _settle(
    conn: Connection,
    histories: Sequence[ObjectHistory],
    reasons: Mapping[tuple[str, str], tuple[str, bool]],
    now: int,
) -> int:
    """Mark applied entries integrated; set aside the new entries of objects that could not be applied.

    ``reasons`` maps an object to why it was refused and whether replaying it later may succeed.
    """
    integrated: list[LogEntry] = []
    for h in histories:
        new = [e for e in h.entries if e.needs_integration]
        refused = reasons.get(h.object_key)
        if refused is None:
            integrated.extend(new)
            continue
        reason, replayable = refused
        log.warning("set aside %d entries for %s %s: %s", len(new), h.table, list(h.pk), reason)
        quarantine.quarantine(conn, new, reason, now_ms=now, replayable=replayable)
        client_log.remove(conn, new)
    return client_log.mark_integrated(conn, integrated)
