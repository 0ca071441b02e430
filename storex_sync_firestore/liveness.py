"""Device liveness: each device tells the shared log, now and then, that it is alive and how far it read.

Compaction (``compaction``) needs both: a device seen within the retention period holds back the batches
it has not stored yet (its frontier), and a device not seen for longer stops holding the log back. The
record is written at the end of a sync when the frontier moved, or at least every ``TOUCH_EVERY_MS``
(so an idle device costs one write an hour, not one per sync).
"""

from __future__ import annotations

from collections.abc import Mapping

from .database import SyncedDatabase
from .shared_log.base import SharedSyncLog
from .snapshot import frontier

TOUCH_EVERY_MS = 60 * 60 * 1000


def report(
    db: SyncedDatabase,
    shared_log: SharedSyncLog,
    *,
    user_id: str,
    device_id: str,
    now_ms: int,
    compacted: Mapping[str, int] | None = None,
    force: bool = False,
) -> int:
    """Record this device as alive with its frontier (and a compaction record); returns writes made."""
    with db.transaction(write=False) as conn:
        clocks = frontier(conn)
        last = db.get_state(conn, "touched") or {}
    if (
        not force
        and compacted is None
        and last.get("frontier") == clocks
        and now_ms - last.get("ms", 0) < TOUCH_EVERY_MS
    ):
        return 0
    written = shared_log.touch_device(
        user_id=user_id, device_id=device_id, frontier=clocks, compacted=compacted
    ).documents_written
    with db.transaction() as conn:
        db.set_state(conn, "touched", {"ms": now_ms, "frontier": clocks})
    return written
