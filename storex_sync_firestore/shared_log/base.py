"""The ``SharedSyncLog`` protocol: the contract every shared-log backend fulfils.

A backend stores the batch documents that devices of one user upload, and remembers for every device how
far it has read. Backends implement storage only: they keep a batch's fields exactly as given and return
them untouched. Encoding, signing, verification, batching, byte limits and retries of whole syncs live
above them (``shared_log.format``, ``validate``, ``sync``), so that every backend behaves the same and a
hostile document is judged the same way whichever backend it came through. ``testing.conformance``
checks a backend against this contract; run it for any backend you write, and register it by URL scheme
(``shared_log.backends``). Two parts are optional: :class:`Subscribable` and :class:`JudgesErrors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ..models import DeviceInfo, StoredBatch, UnsyncedUpdate, WriteResult


@runtime_checkable
class SharedSyncLog(Protocol):
    """Storage for the change log that all devices of a user share."""

    #: Largest stored payload (the ``p`` field, compressed) one batch document may hold (None: no limit).
    max_batch_bytes: int | None

    def create_device_id(
        self, *, user_id: str, shared_until: datetime | None = None, public_key: bytes | None = None
    ) -> str:
        """Register a new device and return its id, unique within the user.

        ``public_key`` is the device's signing key; it is stored with the registration and never changes.
        A device registered with ``shared_until`` is never given batches shared before that instant (for a
        device that already holds a copy of the data); without it the device reads the whole log.
        """
        ...

    def get_device_info(self, *, user_id: str, device_id: str) -> DeviceInfo | None:
        """Return the device's record, or ``None`` if the user has no such device."""
        ...

    def write_batches(self, batches: Sequence[StoredBatch], *, user_id: str, device_id: str) -> WriteResult:
        """Store ``batches`` (documents of ``device_id``, in upload order) atomically.

        Idempotent by batch id: a batch whose id is already stored is not written again (and not counted in
        ``documents_written``), so a caller that crashed before recording the upload may simply repeat it.
        Writing an empty list does nothing. When this returns, the batches are durable and visible.
        """
        ...

    def get_unsynced_batches(
        self, *, user_id: str, device_id: str, batch_size: int | None = None
    ) -> UnsyncedUpdate:
        """Return the batches ``device_id`` has not marked seen, its own included, in upload order.

        A page holds whole batches of at most about ``batch_size`` entries (by their ``count`` field; at
        least one batch). The same batches come back until ``mark_as_seen`` is called with this update.
        Batches uploaded concurrently with this call, or stamped with the same time as one returned, are
        returned by a later call, never skipped. Raises ``UnknownDeviceError`` for an unknown device.
        The device's own batches are returned too: the caller verifies that they really are its own.
        """
        ...

    def mark_as_seen(self, update: UnsyncedUpdate, *, user_id: str, device_id: str) -> WriteResult:
        """Move the device's read marker past ``update``. Call only once its batches are stored durably.

        Marks only what ``update`` returned: batches uploaded since are still delivered later. Marking the
        same update twice is harmless. Only ``device_id``'s own marker moves. Returns the documents written
        (a backend should write nothing when the marker does not move).
        """
        ...

    def list_batches(self, *, user_id: str) -> Sequence[StoredBatch]:
        """Every batch document the log holds, in upload order (for compaction and ``status``)."""
        ...

    def delete_batches(self, batch_ids: Sequence[str], *, user_id: str) -> WriteResult:
        """Delete these batches (compaction). Idempotent: ids already gone are skipped and not counted.

        Read markers stay valid: a device reading past a deleted batch simply does not get it.
        """
        ...

    def touch_device(
        self,
        *,
        user_id: str,
        device_id: str,
        frontier: Mapping[str, int],
        compacted: Mapping[str, int] | None = None,
    ) -> WriteResult:
        """Record that ``device_id`` is alive now (``last_seen``), with its frontier (per origin device,
        the highest clock of the batches it has stored) and, from a compaction, how far it deleted.

        Each device writes only its own record; ``compacted`` left out keeps the stored one."""
        ...

    def list_devices(self, *, user_id: str) -> Sequence[DeviceInfo]:
        """Every device of the user, with liveness, frontier and compaction records."""
        ...

    def write_snapshot_chunks(
        self, snapshot_id: str, chunks: Sequence[StoredBatch], *, user_id: str, device_id: str
    ) -> WriteResult:
        """Store chunk documents of snapshot ``snapshot_id`` (create-only, idempotent by chunk id).

        Chunks are invisible to readers until the snapshot's manifest exists."""
        ...

    def write_snapshot_manifest(self, manifest: StoredBatch, *, user_id: str, device_id: str) -> WriteResult:
        """Store a snapshot's manifest (id ``manifest.batch_id``, the snapshot id), written after all its
        chunks: from then on the snapshot is complete. Create-only and idempotent."""
        ...

    def list_snapshots(self, *, user_id: str) -> Sequence[StoredBatch]:
        """The manifests (complete snapshots), with ``shared_on`` the time each was stored."""
        ...

    def get_snapshot_chunks(self, snapshot_id: str, *, user_id: str) -> Sequence[StoredBatch]:
        """The chunk documents stored for ``snapshot_id``, by id."""
        ...

    def delete_snapshot(self, snapshot_id: str, *, user_id: str) -> WriteResult:
        """Delete a snapshot: its manifest first (it is no longer complete), then its chunks. Idempotent;
        also removes the chunks of a snapshot whose manifest was never written."""
        ...

    def get_key_record(self, *, user_id: str) -> Mapping[str, Any] | None:
        """See :class:`KeyRecords`."""
        ...

    def put_key_record(self, *, user_id: str, record: Mapping[str, Any], replaces: str | None = None) -> bool:
        """See :class:`KeyRecords`."""
        ...


class KeyRecords(Protocol):
    """Where a log keeps its wrapped data key, for end-to-end encryption (part of ``SharedSyncLog``)."""

    def get_key_record(self, *, user_id: str) -> Mapping[str, Any] | None:
        """The log's key record (the data key wrapped by the passphrase), or None: not encrypted."""
        ...

    def put_key_record(self, *, user_id: str, record: Mapping[str, Any], replaces: str | None = None) -> bool:
        """Store the key record; its fields are kept untouched (str, int, bytes).

        With ``replaces=None``, create it if the log has none and return True; return False when another
        device created one first (then read that one). Otherwise replace the stored record if its key id
        (``kid``) is ``replaces`` (a passphrase change: the same key, rewrapped) and return True; False if
        the stored record is another key's.
        """
        ...


class Subscribable(Protocol):
    """Optional: push notification. ``watch`` (``ContinuousSync``) uses it when a backend has it, and
    otherwise asks the log every few seconds whether it holds anything new."""

    def subscribe(self, *, user_id: str, device_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (on any thread; it must return quickly and must not touch the database)
        soon after a device other than ``device_id`` writes a batch; return an unsubscribe function, which
        returns at once. A missed or repeated call may cost a sync, never an entry: the sync reads the log
        the usual way."""
        ...


class JudgesErrors(Protocol):
    """Optional: which of the backend's own exceptions are transient (trying again may succeed).

    ``retry.classify`` asks it after the package's own rules (``SyncError.transient``, connection errors
    and time-outs); a backend that translates its errors into ``TransientSharedLogError`` and
    ``PermanentSharedLogError`` at its edge needs none.
    """

    def is_transient(self, exc: BaseException) -> bool: ...


def entry_count(fields: Mapping[str, Any]) -> int:
    """A batch's entry count for paging, from its (untrusted) ``count`` field: at least 1."""
    count = fields.get("count")
    return count if type(count) is int and count > 0 else 1
