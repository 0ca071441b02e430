"""The ``SharedSyncLog`` protocol: the contract every shared-log backend fulfils.

A backend stores the log entries that devices of one user upload, and remembers for every device how far
it has read. Backends implement storage only; batching, byte limits, retries of whole syncs and
serialization live in ``sync`` so that every backend behaves the same. ``testing.conformance`` checks a
backend against this contract; run it for any backend you write.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from ..models import DeviceInfo, SharedEntry, UnsyncedUpdate, WriteResult


@runtime_checkable
class SharedSyncLog(Protocol):
    """Storage for the change log that all devices of a user share."""

    #: Largest total of serialized entry bytes that one ``write_entries`` call may carry (None: no limit).
    max_batch_bytes: int | None
    #: Largest serialized size of a single entry (None: no limit). Bigger entries are set aside by sync.
    max_entry_bytes: int | None

    def create_device_id(self, *, user_id: str, shared_until: datetime | None = None) -> str:
        """Register a new device and return its id, unique within the user.

        A device registered with ``shared_until`` is never given entries shared before that instant (for a
        device that already holds a copy of the data); without it the device reads the whole log.
        """
        ...

    def get_device_info(self, *, user_id: str, device_id: str) -> DeviceInfo | None:
        """Return the device's record, or ``None`` if the user has no such device."""
        ...

    def write_entries(self, entries: Sequence[SharedEntry], *, user_id: str, device_id: str) -> WriteResult:
        """Store ``entries`` (all written by ``device_id``, ascending ``hlc``) atomically.

        Idempotent: writing the same list again is a no-op (it returns ``documents_written == 0``), so a
        caller that crashed before recording the upload may simply repeat it. Writing an empty list does
        nothing. When this returns, the entries are durable and visible to readers.
        """
        ...

    def get_unsynced_entries(
        self, *, user_id: str, device_id: str, batch_size: int | None = None
    ) -> UnsyncedUpdate:
        """Return entries written by the user's *other* devices that ``device_id`` has not marked seen.

        Entries come in upload order, at most about ``batch_size`` of them (a backend that stores entries in
        packed documents returns whole documents, so it may return somewhat more), and with no entry of a
        batch left out. The same entries come back until ``mark_as_seen`` is called with this update.
        Batches uploaded concurrently with this call, or stamped with the same time as one returned, are
        returned by a later call, never skipped. Raises ``UnknownDeviceError`` for an unknown device.
        """
        ...

    def mark_as_seen(self, update: UnsyncedUpdate, *, user_id: str, device_id: str) -> WriteResult:
        """Move the device's read marker past ``update``. Call only once its entries are stored durably.

        Marks only what ``update`` returned: entries uploaded since are still delivered later. Marking the
        same update twice is harmless. Only ``device_id``'s own marker moves. Returns the documents written
        (a backend should write nothing when the marker does not move).
        """
        ...


def unpack_entries(device_id: object, hlcs: object, data: object, *, source: str) -> list[SharedEntry]:
    """Entries stored as two parallel lists, clocks and payloads (how the Firestore and folder logs keep
    a batch), written once for both.

    Something malformed (not written by this package) is not an error here: it comes back as one entry
    without a valid clock, holding ``source`` (what it was), which sync sets aside. One bad document must
    not stop every later batch from being read.
    """
    if not isinstance(hlcs, list) or not isinstance(data, list) or len(hlcs) != len(data):
        return [SharedEntry(str(device_id), 0, source)]
    return [
        SharedEntry(str(device_id), h if type(h) is int else 0, d if isinstance(d, str) else repr(d))
        for h, d in zip(hlcs, data, strict=True)
    ]
