"""An in-process shared log: the reference implementation of the protocol, for tests and examples.

It keeps one append-only list of batches per user; a device's read marker is an index into it, so
ordering and read markers are exact. Several ``do_sync`` calls in one process (for example three
simulated devices in a test) share one instance.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import UnknownDeviceError
from ..models import DeviceInfo, StoredBatch, UnsyncedUpdate, WriteResult
from .base import entry_count


@dataclass(slots=True)
class _User:
    batches: list[StoredBatch] = field(default_factory=list)
    batch_ids: set[str] = field(default_factory=set)
    devices: dict[str, DeviceInfo] = field(default_factory=dict)
    markers: dict[str, int] = field(default_factory=dict)
    key_record: dict[str, Any] | None = None


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
                start = sum(
                    1 for b in user.batches if b.shared_on is not None and b.shared_on <= shared_until
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
                user.batches.append(StoredBatch(batch.batch_id, dict(batch.fields), now))
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
            entries = 0
            for batch in user.batches[marker:]:
                if batch_size is not None and page and entries + entry_count(batch.fields) > batch_size:
                    break
                page.append(batch)
                entries += entry_count(batch.fields)
            last = marker + len(page)
            has_more = last < len(user.batches)
            return UnsyncedUpdate(page, memo=last, documents_read=len(page), has_more=has_more)

    def mark_as_seen(self, update: UnsyncedUpdate, *, user_id: str, device_id: str) -> WriteResult:
        with self._lock:
            markers = self._user(user_id).markers
            if device_id not in markers:
                raise UnknownDeviceError(f"the shared log has no device {device_id!r} for user {user_id!r}")
            moved = int(update.memo or 0) > markers[device_id]
            markers[device_id] = max(markers[device_id], int(update.memo or 0))
        return WriteResult(int(moved))

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
