"""Compaction: delete the batches a snapshot covers and no device still needs; keep the log bounded.

A batch of device D (clocks up to ``lastHlc``) is deleted when all of these hold:

* it is wholly inside the latest snapshot: ``lastHlc <= frontier[D]`` of the latest complete manifest;
* every *active* device has stored it: its reported frontier (``liveness``) reaches ``lastHlc`` for D,
  or it skips that part of the history on purpose (``shared_until`` after the batch). A device is active
  when it was seen (or registered) within ``retention`` (default 30 days). A device that never reported
  has stored nothing and will bootstrap from the snapshot, so it holds nothing back;
* it was shared more than ``older_than`` ago (default 7 days): the window in which a device that is
  loading a snapshot, or paging through the log right now, still finds what it reads next.

Steps, each safe to crash after: (1) this device records, in its own liveness record, how far it is
about to delete (``compacted``, per origin device); (2) it deletes the batches; (3) it deletes snapshots
older than the latest once the latest has been complete for ``grace`` (default 1 day). A device whose
frontier is below some compaction record (it was away past its retention) bootstraps from the latest
snapshot on its next sync, merging its offline edits by the usual rules (``snapshot``). Two devices
compacting at once compute the same batches and delete each idempotently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from . import liveness
from .database import SyncedDatabase
from .errors import ConfigurationError
from .models import DeviceInfo, StoredBatch
from .shared_log import format as fmt
from .shared_log.base import SharedSyncLog
from .snapshot import batch_range, latest_verified, verifier_for

log = logging.getLogger(__name__)

DEFAULT_OLDER_THAN = timedelta(days=7)
DEFAULT_RETENTION = timedelta(days=30)
DEFAULT_GRACE = timedelta(days=1)


@dataclass(slots=True)
class Compacted:
    """What :func:`compact` did."""

    snapshot: str | None
    batches_deleted: int = 0
    entries_deleted: int = 0
    snapshots_deleted: int = 0
    batches_kept: int = 0
    inactive_devices: list[str] = field(default_factory=list)


def active_devices(devices: Sequence[DeviceInfo], now: datetime, retention: timedelta) -> list[DeviceInfo]:
    """Devices seen (or registered) within ``retention``."""
    cutoff = now - retention
    return [d for d in devices if (d.last_seen or d.created_at or now) >= cutoff]


def _needed_by(device: DeviceInfo, origin: str, last: int, shared_on: datetime | None) -> bool:
    if device.shared_until is not None and shared_on is not None and shared_on <= device.shared_until:
        return False  # it skips that part of the history on purpose
    if not device.frontier and device.shared_until is None:
        return False  # has stored nothing: it will bootstrap from the snapshot
    return device.frontier.get(origin, 0) < last


def compact(
    db: SyncedDatabase,
    shared_log: SharedSyncLog,
    *,
    older_than: timedelta = DEFAULT_OLDER_THAN,
    retention: timedelta = DEFAULT_RETENTION,
    grace: timedelta = DEFAULT_GRACE,
    now: datetime | None = None,
) -> Compacted:
    """Delete what the latest snapshot covers and no active device needs; see the module docstring."""
    now = now or datetime.now(UTC)
    verifier, user_id, device_id = verifier_for(db, shared_log)
    manifests = shared_log.list_snapshots(user_id=user_id)
    verified = latest_verified(verifier, manifests)  # the one bootstrap loads
    if verified is None:
        raise ConfigurationError(
            "the shared log has no (usable) snapshot, so nothing can be compacted",
            hint="write one first: storex-sync snapshot --db URL",
        )
    newest, frontier = verified[0], verified[1].frontier
    devices = shared_log.list_devices(user_id=user_id)
    active = active_devices(devices, now, retention)
    done = Compacted(newest.batch_id)
    done.inactive_devices = sorted({d.device_id for d in devices} - {d.device_id for d in active})
    doomed: list[StoredBatch] = []
    for batch in shared_log.list_batches(user_id=user_id):
        span = batch_range(batch)
        old_enough = batch.shared_on is not None and batch.shared_on <= now - older_than
        if (
            span is None
            or not old_enough
            or span[1] > frontier.get(span[0], 0)
            or any(_needed_by(d, span[0], span[1], batch.shared_on) for d in active)
        ):
            done.batches_kept += 1
            continue
        doomed.append(batch)
    if doomed:
        mine = next((d for d in devices if d.device_id == device_id), None)
        record = dict(mine.compacted) if mine is not None else {}
        for batch in doomed:
            origin, last = batch_range(batch) or ("", 0)
            record[origin] = max(last, record.get(origin, 0))
        liveness.report(  # first: a device left behind must learn that it was, even if we crash next
            db, shared_log, user_id=user_id, device_id=device_id,
            now_ms=int(now.timestamp() * 1000), compacted=record,
        )  # fmt: skip
        done.batches_deleted = shared_log.delete_batches(
            [b.batch_id for b in doomed], user_id=user_id
        ).documents_written
        done.entries_deleted = sum(c for b in doomed if type(c := b.fields.get(fmt.F_COUNT)) is int)
    if newest.shared_on is None or newest.shared_on <= now - grace:
        for manifest in manifests:
            if manifest.batch_id != newest.batch_id:
                shared_log.delete_snapshot(manifest.batch_id, user_id=user_id)
                done.snapshots_deleted += 1
    log.info(
        "compacted: %d batches deleted, %d kept, %d old snapshots deleted",
        done.batches_deleted, done.batches_kept, done.snapshots_deleted,
    )  # fmt: skip
    return done


COMPACT_EVERY = timedelta(days=1)
"""How often ``watch --compact`` compacts."""


def compact_if_due(
    db: SyncedDatabase,
    shared_log: SharedSyncLog,
    *,
    every: timedelta = COMPACT_EVERY,
    older_than: timedelta = DEFAULT_OLDER_THAN,
    retention: timedelta = DEFAULT_RETENTION,
) -> Compacted | None:
    """Compact if this device has not done so for ``every`` (state ``compacted_at``); for ``watch``.

    Without a snapshot in the log there is nothing to compact yet: None, and no error."""
    now = datetime.now(UTC)
    with db.transaction(write=False) as conn:
        last = float(db.get_state(conn, "compacted_at") or 0)
    if now.timestamp() - last < every.total_seconds():
        return None
    if not shared_log.list_snapshots(user_id=db.state().get("user_id") or ""):
        return None
    done = compact(db, shared_log, now=now, older_than=older_than, retention=retention)
    with db.transaction() as conn:
        db.set_state(conn, "compacted_at", now.timestamp())
    return done


__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_OLDER_THAN",
    "DEFAULT_RETENTION",
    "Compacted",
    "compact",
    "compact_if_due",
]
