"""Writing raw batches into a shared log, and reading every entry back, for tests of what readers accept."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from storex_sync_firestore import HybridLogicalClock, StoredBatch, SyncedDatabase
from storex_sync_firestore.shared_log import format as fmt
from storex_sync_firestore.shared_log.base import SharedSyncLog
from storex_sync_firestore.signing import DeviceKey
from storex_sync_firestore.testing.conformance import drain


@dataclass
class Writer:
    """A device that uploads batches of entries it makes up itself (well formed or not)."""

    log: SharedSyncLog
    device_id: str
    key: DeviceKey
    user_id: str = "alice"
    clock: HybridLogicalClock = field(default_factory=HybridLogicalClock)

    @classmethod
    def register(cls, log: SharedSyncLog, user_id: str = "alice") -> Writer:
        key = DeviceKey.generate()
        device_id = log.create_device_id(user_id=user_id, public_key=key.public_key)
        return cls(log, device_id, key, user_id)

    @classmethod
    def of(cls, db: SyncedDatabase, log: SharedSyncLog) -> Writer:
        """Act as an existing device, with its own id and signing key."""
        state = db.state()
        return cls(log, state["device_id"], DeviceKey.from_hex(state["signing_key"]), state["user_id"])

    def batch(self, payloads: Sequence[Any], hlcs: Sequence[int] | None = None) -> StoredBatch:
        """A signed batch of ``payloads`` (a str is an entry's text as is, anything else is JSON-encoded)."""
        texts = [p if isinstance(p, str) else json.dumps(p, separators=(",", ":")) for p in payloads]
        clocks = list(hlcs) if hlcs is not None else [self.clock.stamp() for _ in texts]
        lines = [fmt.Line(h, t) for h, t in zip(clocks, texts, strict=True)]
        batch_id, fields = fmt.encode_batch(
            lines, user_id=self.user_id, device_id=self.device_id, key=self.key
        )
        return StoredBatch(batch_id, fields)

    def upload(self, payloads: Sequence[Any], hlcs: Sequence[int] | None = None) -> StoredBatch:
        batch = self.batch(payloads, hlcs)
        self.log.write_batches([batch], user_id=self.user_id, device_id=self.device_id)
        return batch


def observed(log: SharedSyncLog, user_id: str = "alice") -> list[tuple[str, int, str]]:
    """(device, clock, text) of every entry ever uploaded, read by a fresh observer device."""
    observer = log.create_device_id(user_id=user_id)
    out: list[tuple[str, int, str]] = []
    for batch in drain(log, observer, user_id=user_id):
        version = fmt.version_of(batch.fields)
        opened = (fmt.open_v2 if version == fmt.VERSION else fmt.open_v1)(batch.batch_id, batch.fields)
        out.extend((opened.device_id, line.hlc, line.text) for line in opened.lines)
    return out
