"""An in-process shared log: the reference implementation of the protocol, for tests and examples.

It keeps one append-only list of batches per user, numbered by a sequence that only this object assigns,
so ordering and read markers are exact. Several ``do_sync`` calls in one process (for example three
simulated devices in a test) share one instance.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..errors import UnknownDeviceError
from ..models import DeviceInfo, SharedEntry, UnsyncedUpdate, WriteResult


@dataclass(frozen=True, slots=True)
class _Batch:
    seq: int
    device_id: str
    shared_at: datetime
    entries: tuple[SharedEntry, ...]


@dataclass(slots=True)
class _User:
    batches: list[_Batch] = field(default_factory=list)
    batch_keys: set[tuple[str, int, int, int]] = field(default_factory=set)
    devices: dict[str, DeviceInfo] = field(default_factory=dict)
    markers: dict[str, int] = field(default_factory=dict)


class MemorySharedLog:
    """Shared log held in memory; thread-safe. ``now`` is injectable so tests control ``shared_until``."""

    max_batch_bytes: int | None = None
    max_entry_bytes: int | None = None
    #: ``memory://NAME`` when opened by ``open_shared_log`` (it reopens the same log in this process).
    url: str | None = None

    def __init__(self, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._users: dict[str, _User] = {}

    def _user(self, user_id: str) -> _User:
        return self._users.setdefault(user_id, _User())

    def create_device_id(self, *, user_id: str, shared_until: datetime | None = None) -> str:
        device_id = uuid.uuid4().hex
        with self._lock:
            user = self._user(user_id)
            user.devices[device_id] = DeviceInfo(user_id, device_id, shared_until, self._now())
            start = 0
            if shared_until is not None:
                start = max((b.seq for b in user.batches if b.shared_at <= shared_until), default=0)
            user.markers[device_id] = start
        return device_id

    def get_device_info(self, *, user_id: str, device_id: str) -> DeviceInfo | None:
        with self._lock:
            return self._user(user_id).devices.get(device_id)

    def write_entries(self, entries: Sequence[SharedEntry], *, user_id: str, device_id: str) -> WriteResult:
        if not entries:
            return WriteResult(0)
        key = (device_id, entries[0].hlc, entries[-1].hlc, len(entries))
        with self._lock:
            user = self._user(user_id)
            if key in user.batch_keys:
                return WriteResult(0)
            seq = len(user.batches) + 1
            user.batches.append(_Batch(seq, device_id, self._now(), tuple(entries)))
            user.batch_keys.add(key)
        return WriteResult(1)

    def get_unsynced_entries(
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
            entries: list[SharedEntry] = []
            last = marker
            for batch in user.batches[marker:]:
                if batch_size is not None and entries and len(entries) + len(batch.entries) > batch_size:
                    break
                last = batch.seq
                if batch.device_id != device_id:
                    entries.extend(batch.entries)
            has_more = last < len(user.batches)
            return UnsyncedUpdate(entries, memo=last, documents_read=last - marker, has_more=has_more)

    def mark_as_seen(self, update: UnsyncedUpdate, *, user_id: str, device_id: str) -> WriteResult:
        with self._lock:
            markers = self._user(user_id).markers
            if device_id not in markers:
                raise UnknownDeviceError(f"the shared log has no device {device_id!r} for user {user_id!r}")
            moved = int(update.memo or 0) > markers[device_id]
            markers[device_id] = max(markers[device_id], int(update.memo or 0))
        return WriteResult(int(moved))
