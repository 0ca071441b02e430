"""Plain data shared by every stage of a sync: log entries, operations, device info and summaries.

Everything here is immutable and free of I/O so that the reconciler and the shared-log backends can be
tested as pure functions over these values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias

Json: TypeAlias = Any
"""A value that :func:`json.dumps` can write: the wire encoding of a column value (see ``codec``)."""

OpName: TypeAlias = Literal["create", "modify", "delete"]
OPS: frozenset[str] = frozenset({"create", "modify", "delete"})


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One captured change, as it is kept in the client log and sent through the shared log.

    ``(device_id, hlc)`` identifies the entry everywhere: it is the client log's unique key, so a duplicate
    delivery is ignored, and it orders entries for last-write-wins (ties on ``hlc`` break by ``device_id``).
    ``pk`` is the list of primary-key values in wire encoding, ``value`` the changed columns (create: all
    non-key columns; modify: only those that changed; delete: ``None``).
    """

    device_id: str
    hlc: int
    table: str
    pk: tuple[Json, ...]
    op: OpName
    value: Mapping[str, Json] | None = None
    needs_integration: bool = False

    @property
    def key(self) -> tuple[int, str]:
        """Total order used by last-write-wins: clock first, device id as the tie-break."""
        return (self.hlc, self.device_id)


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """One document of the shared log as a backend keeps it: its id and its fields, untouched.

    Backends store and return ``fields`` exactly (str, int, bytes, lists of them); what the fields mean,
    and whether they can be trusted, is decided by one parser for every backend (``shared_log.format`` and
    ``validate``). ``shared_on`` is when the backend accepted the batch (Firestore: the server's clock).
    """

    batch_id: str
    fields: Mapping[str, Any]
    shared_on: datetime | None = None


@dataclass(frozen=True, slots=True)
class UnsyncedUpdate:
    """What :meth:`SharedSyncLog.get_unsynced_batches` returns.

    ``memo`` is opaque to callers: pass the whole update back to ``mark_as_seen`` once the batches are
    durably stored, and only then. ``documents_read`` counts backend documents read to produce it;
    ``has_more`` says that more unseen batches are waiting (the page was cut at ``batch_size``).
    """

    batches: Sequence[StoredBatch]
    memo: Any = None
    documents_read: int = 0
    has_more: bool = False


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a shared-log write did: documents written (0 when the batch was already there)."""

    documents_written: int = 0


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device as the shared log knows it."""

    user_id: str
    device_id: str
    shared_until: datetime | None = None
    created_at: datetime | None = None
    public_key: bytes | None = None
    """The device's Ed25519 key that its batches are signed with (None: registered by 0.1.x, unsigned)."""
    last_seen: datetime | None = None
    """When the device last reported itself (``touch_device``); None: never since it registered."""
    frontier: Mapping[str, int] = field(default_factory=dict)
    """Per origin device, the highest clock of the batches this device has stored (it reported)."""
    compacted: Mapping[str, int] = field(default_factory=dict)
    """Per origin device, the highest clock up to which this device's compactions may have deleted
    batches: a device whose frontier is below it bootstraps from a snapshot (see ``compaction``)."""


@dataclass(frozen=True, slots=True)
class Operation:
    """A write the reconciler asks the apply stage to make on one synced row.

    ``insert`` writes a whole row (``values`` holds every non-key column), ``update`` sets ``values`` on an
    existing row, ``delete`` removes it. Values are in wire encoding; the apply stage decodes them for the
    target column.
    """

    kind: Literal["insert", "update", "delete"]
    table: str
    pk: tuple[Json, ...]
    values: Mapping[str, Json] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Conflict:
    """An object the reconciler refused to merge (only with ``double_create="error"``)."""

    table: str
    pk: tuple[Json, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The reconciler's answer for one pass: operations to apply and objects it set aside."""

    operations: Sequence[Operation]
    conflicts: Sequence[Conflict] = ()


@dataclass(slots=True)
class SyncSummary:
    """What one :func:`do_sync` call did; returned to the caller and printed by the CLI."""

    finished: bool = True
    sent: int = 0
    received: int = 0
    applied: int = 0
    integrated: int = 0
    set_aside: int = 0
    resolved: int = 0
    """Objects changed by a constraint rule (see ``constraints``), each recorded for ``status``."""
    withheld: int = 0
    documents_read: int = 0
    documents_written: int = 0
    stages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for ``--json`` output and logging."""
        return {
            "finished": self.finished,
            "sent": self.sent,
            "received": self.received,
            "applied": self.applied,
            "integrated": self.integrated,
            "set_aside": self.set_aside,
            "resolved": self.resolved,
            "withheld": self.withheld,
            "documents_read": self.documents_read,
            "documents_written": self.documents_written,
            "stages": list(self.stages),
        }
