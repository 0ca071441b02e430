"""What ``storex-sync status`` shows about the shared log: its size, the latest snapshot, each device.

One listing of the batches, the snapshots and the devices (documents read: about the log's size).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .database import SyncedDatabase
from .errors import InvalidEntryError
from .shared_log import format as fmt
from .shared_log.base import SharedSyncLog
from .snapshot import latest, verifier_for


def _bytes(fields: Mapping[str, Any]) -> int:
    return sum(len(v) if isinstance(v, bytes | str) else 8 for v in fields.values())


def log_status(
    db: SyncedDatabase, shared_log: SharedSyncLog, *, now: datetime | None = None
) -> dict[str, Any]:
    """Documents and bytes the log holds, the latest snapshot's age and frontier, each device's lag
    (entries of the log past its frontier) and last-seen time, as plain data."""
    now = now or datetime.now(UTC)
    verifier, user_id, _ = verifier_for(db, shared_log)
    batches = shared_log.list_batches(user_id=user_id)
    manifests = shared_log.list_snapshots(user_id=user_id)
    devices = shared_log.list_devices(user_id=user_id)
    newest = latest(manifests)
    snapshot: dict[str, Any] | None = None
    documents = len(batches) + len(manifests) + len(devices)
    size = sum(_bytes(b.fields) for b in batches) + sum(_bytes(m.fields) for m in manifests)
    if newest is not None:
        snapshot = {"id": newest.batch_id, "chunks": newest.fields.get("chunks")}
        documents += int(newest.fields.get("chunks") or 0)
        if newest.shared_on is not None:
            snapshot["age_s"] = round((now - newest.shared_on).total_seconds(), 1)
        try:
            manifest = verifier.manifest(newest)
            snapshot["entries"], snapshot["frontier"] = manifest.count, manifest.frontier
        except InvalidEntryError as exc:
            snapshot["error"] = str(exc)
    spans = []
    for b in batches:
        device, last, count = (
            b.fields.get(fmt.F_DEVICE_ID),
            b.fields.get(fmt.F_LAST_HLC),
            b.fields.get(fmt.F_COUNT),
        )
        if isinstance(device, str) and type(last) is int:
            spans.append((device, last, count if type(count) is int else 0))
    rows = []
    for d in devices:
        lag = sum(
            n for origin, last, n in spans if origin != d.device_id and last > d.frontier.get(origin, 0)
        )
        rows.append(
            {
                "device_id": d.device_id,
                "last_seen": d.last_seen.isoformat() if d.last_seen else None,
                "lag_entries": lag if d.frontier or d.last_seen else None,
            }
        )
    return {
        "documents": documents,
        "bytes": size,
        "batches": len(batches),
        "entries": sum(n for _, _, n in spans),
        "snapshot": snapshot,
        "devices": rows,
    }
