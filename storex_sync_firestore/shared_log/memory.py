"""An in-process shared log: the reference implementation of the protocol, for tests and examples.

It keeps one list of batches per user, each with a sequence number that is never reused; a device's read
marker is the last number it has seen, so ordering and read markers are exact, and deleting a batch
(compaction) moves no marker. Several ``do_sync`` calls in one process (for example three
simulated devices in a test) share one instance.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ..errors import UnknownDeviceError
from ..models import DeviceInfo, StoredBatch, UnsyncedUpdate, WriteResult
from .base import entry_count


@dataclass(slots=True)
class _User:
    batches: list[tuple[int, StoredBatch]] = field(default_factory=list)
    batch_ids: set[str] = field(default_factory=set)
    seq: int = 0
    devices: dict[str, DeviceInfo] = field(default_factory=dict)
    markers: dict[str, int] = field(default_factory=dict)
    key_record: dict[str, Any] | None = None
    manifests: dict[str, StoredBatch] = field(default_factory=dict)
    chunks: dict[str, dict[str, StoredBatch]] = field(default_factory=dict)


class MemorySharedLog:
    """Shared log held in memory; thread-safe. ``now`` is injectable so tests control ``shared_until``."""

    max_batch_bytes: int | None = None
    #: ``memory://NAME`` when opened by ``open_shared_log`` (it reopens the same log in this process).
    url: str | None = None

    def __init__(self, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._users: dict[str, _User] = {}

    def _user(self, user_id: str) -> _User:
        return self._users.setdefault(user_id, _User())

    def create_device_id(
        self, *, user_id: str, shared_until: datetime | None = None, public_key: bytes | None = None
    ) -> str:
        device_id = uuid.uuid4().hex
        with self._lock:
            user = self._user(user_id)
            info = DeviceInfo(user_id, device_id, shared_until, self._now(), public_key)
            user.devices[device_id] = info
            start = 0
            if shared_until is not None:
                start = max(
                    (n for n, b in user.batches if b.shared_on is not None and b.shared_on <= shared_until),
                    default=0,
                )
            user.markers[device_id] = start
        return device_id

    def get_device_info(self, *, user_id: str, device_id: str) -> DeviceInfo | None:
        with self._lock:
            return self._user(user_id).devices.get(device_id)

    def write_batches(self, batches: Sequence[StoredBatch], *, user_id: str, device_id: str) -> WriteResult:
        written = 0
        with self._lock:
            user = self._user(user_id)
            now = self._now()
            for batch in batches:
                if batch.batch_id in user.batch_ids:
                    continue
                user.seq += 1
                user.batches.append((user.seq, StoredBatch(batch.batch_id, dict(batch.fields), now)))
                user.batch_ids.add(batch.batch_id)
                written += 1
        return WriteResult(written)

    def get_unsynced_batches(
        self, *, user_id: str, device_id: str, batch_size: int | None = None
    ) -> UnsyncedUpdate:
        with self._lock:
            user = self._user(user_id)
            if device_id not in user.devices:
                raise UnknownDeviceError(
                    f"the shared log has no device {device_id!r} for user {user_id!r}",
                    hint="register the device again (storex-sync init)",
                )
            marker = user.markers[device_id]
            page: list[StoredBatch] = []
            entries, last, has_more = 0, marker, False
            for seq, batch in user.batches:
                if seq <= marker:
                    continue
                if batch_size is not None and page and entries + entry_count(batch.fields) > batch_size:
                    has_more = True
                    break
                page.append(batch)
                entries += entry_count(batch.fields)
                last = seq
            return UnsyncedUpdate(page, memo=last, documents_read=len(page), has_more=has_more)

    def mark_as_seen(self, update: UnsyncedUpdate, *, user_id: str, device_id: str) -> WriteResult:
        with self._lock:
            markers = self._user(user_id).markers
            if device_id not in markers:
                raise UnknownDeviceError(f"the shared log has no device {device_id!r} for user {user_id!r}")
            moved = int(update.memo or 0) > markers[device_id]
            markers[device_id] = max(markers[device_id], int(update.memo or 0))
        return WriteResult(int(moved))

    def list_batches(self, *, user_id: str) -> Sequence[StoredBatch]:
        with self._lock:
            return [b for _, b in self._user(user_id).batches]

    def delete_batches(self, batch_ids: Sequence[str], *, user_id: str) -> WriteResult:
        gone = set(batch_ids)
        with self._lock:
            user = self._user(user_id)
            kept = [(n, b) for n, b in user.batches if b.batch_id not in gone]
            deleted = len(user.batches) - len(kept)
            user.batches = kept
            user.batch_ids -= gone
        return WriteResult(deleted)

    def touch_device(
        self,
        *,
        user_id: str,
        device_id: str,
        frontier: Mapping[str, int],
        compacted: Mapping[str, int] | None = None,
    ) -> WriteResult:
        with self._lock:
            user = self._user(user_id)
            info = user.devices.get(device_id)
            if info is None:
                raise UnknownDeviceError(f"the shared log has no device {device_id!r} for user {user_id!r}")
            done = dict(info.compacted if compacted is None else compacted)
            user.devices[device_id] = replace(
                info, last_seen=self._now(), frontier=dict(frontier), compacted=done
            )
        return WriteResult(1)

    def list_devices(self, *, user_id: str) -> Sequence[DeviceInfo]:
        with self._lock:
            return list(self._user(user_id).devices.values())

    def write_snapshot_chunks(
        self, snapshot_id: str, chunks: Sequence[StoredBatch], *, user_id: str, device_id: str
    ) -> WriteResult:
        written = 0
        with self._lock:
            stored = self._user(user_id).chunks.setdefault(snapshot_id, {})
            for chunk in chunks:
                if chunk.batch_id not in stored:
                    stored[chunk.batch_id] = StoredBatch(chunk.batch_id, dict(chunk.fields), self._now())
                    written += 1
        return WriteResult(written)

    def write_snapshot_manifest(self, manifest: StoredBatch, *, user_id: str, device_id: str) -> WriteResult:
        with self._lock:
            manifests = self._user(user_id).manifests
            if manifest.batch_id in manifests:
                return WriteResult(0)
            manifests[manifest.batch_id] = StoredBatch(manifest.batch_id, dict(manifest.fields), self._now())
        return WriteResult(1)

    def list_snapshots(self, *, user_id: str) -> Sequence[StoredBatch]:
        with self._lock:
            return list(self._user(user_id).manifests.values())

    def get_snapshot_chunks(self, snapshot_id: str, *, user_id: str) -> Sequence[StoredBatch]:
        with self._lock:
            stored = self._user(user_id).chunks.get(snapshot_id, {})
            return [stored[k] for k in sorted(stored)]

    def delete_snapshot(self, snapshot_id: str, *, user_id: str) -> WriteResult:
        with self._lock:
            user = self._user(user_id)
            deleted = int(user.manifests.pop(snapshot_id, None) is not None)
            deleted += len(user.chunks.pop(snapshot_id, {}))
        return WriteResult(deleted)

    def get_key_record(self, *, user_id: str) -> Mapping[str, Any] | None:
        with self._lock:
            record = self._user(user_id).key_record
            return None if record is None else dict(record)

    def put_key_record(self, *, user_id: str, record: Mapping[str, Any], replaces: str | None = None) -> bool:
        with self._lock:
            user = self._user(user_id)
            current = user.key_record
            if (current is None) != (replaces is None) or (
                current is not None and current.get("kid") != replaces
            ):
                return False
            user.key_record = dict(record)
            return True
