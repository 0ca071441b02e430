"""The read marker of the Firestore shared log: pure logic, no I/O.

Why not just "the last ``sharedOn`` read": ``sharedOn`` is a server timestamp with millisecond precision,
so batches collide on it (800 concurrent commits got 452 distinct values), and it is taken when the server
*processes* the commit, not when the commit becomes visible: on the emulator ``sharedOn`` lies 140-170 ms
before the commit time. So a batch that was not yet visible to our query can later show up with a
``sharedOn`` equal to, or even earlier than, the last batch we read, and with any document id.

The marker therefore has two parts:

* ``pos``: a *settled* position in (sharedOn, __name__) order. Every batch at or before it has been seen,
  and it is only ever moved to a batch whose ``sharedOn`` is at least ``settle_time`` older than the read
  time of the query that returned it (``horizon``). A commit that was invisible at that read time gets a
  ``sharedOn`` later than the horizon (it was processed after ``read_time - settle_time``), so nothing can
  ever appear at or before a settled position. ``Position(ts, None)`` means "after every batch at ts"
  (used for ``shared_until``).
* ``seen``: batches after ``pos`` that were already delivered (the unsettled tail). The next query starts
  at ``pos`` and drops these, so a late batch that sorts among them is still delivered and none of them is
  delivered twice. They move into ``pos`` once they settle; the set is bounded by the batches shared within
  the last ``settle_time``.

The one assumption, documented on ``FirestoreSharedLog``: a commit becomes visible within ``settle_time``
of the ``sharedOn`` the server gives it (true when ``settle_time`` exceeds the commit deadline).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import firestore_layout as layout
from . import format as fmt


@dataclass(frozen=True, slots=True)
class Position:
    """A place in (sharedOn, document id) order; ``doc_id=None`` sorts after every id at ``ts``."""

    ts: datetime
    doc_id: str | None = field(default=None)

    def key(self) -> tuple[datetime, int, str]:
        return (self.ts, 1 if self.doc_id is None else 0, self.doc_id or "")


def _after(a: Position, b: Position | None) -> bool:
    """True when ``a`` sorts strictly after ``b`` (everything is after ``None``, the log's start)."""
    return b is None or a.key() > b.key()


@dataclass(frozen=True, slots=True)
class Marker:
    """How far a device has read: a settled position and the already-seen batches after it."""

    pos: Position | None = None
    seen: tuple[Position, ...] = ()

    @property
    def seen_ids(self) -> frozenset[str]:
        """The seen batches' names (see :func:`seen_id`): test a document with ``seen_id(doc.id)``."""
        return frozenset(p.doc_id for p in self.seen if p.doc_id is not None)

    def to_fields(self) -> dict[str, Any]:
        """The device-document fields that hold this marker."""
        return {
            layout.F_MARKER_TS: self.pos.ts if self.pos else None,
            layout.F_MARKER_ID: self.pos.doc_id if self.pos else None,
            layout.F_MARKER_SEEN: [{"t": p.ts, "id": p.doc_id} for p in self.seen],
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> Marker:
        return cls.parse(fields)[0]

    @classmethod
    def parse(cls, fields: Mapping[str, Any], now: datetime | None = None) -> tuple[Marker, bool]:
        """The marker in a device document, and whether it had to be repaired.

        Anyone holding the user's credentials (or an admin key) can write these fields, so nothing is
        assumed: a settled time that is not a timestamp resets the marker to the device's start (its
        ``sharedUntil``, else the log's start) and the batches are read again, which receive makes
        harmless (a repeated entry changes nothing); a broken id reads every batch at that time again;
        a broken seen item is dropped (its batch is delivered again). A time after ``now`` (the server's
        time of the read) is broken too: no batch was read there yet, and the device would read nothing.
        Never an exception.
        """
        ts, doc_id, seen = (fields.get(f) for f in layout.MARKER_FIELDS)
        repaired = False
        if ts is None:
            pos = None
            repaired = doc_id is not None
        elif not isinstance(ts, datetime) or (now is not None and ts > now):
            start = fields.get(layout.F_SHARED_UNTIL)
            if not isinstance(start, datetime) or (now is not None and start > now):
                return cls(), True
            return cls(Position(start)), True
        elif doc_id is None or (isinstance(doc_id, str) and len(doc_id.encode()) <= MAX_DOC_ID_BYTES):
            pos = Position(ts, doc_id)
        else:
            pos, repaired = Position(ts, FROM_START_OF_TIME), True
        items: list[Position] = []
        if not isinstance(seen, list):
            repaired = repaired or seen is not None
            seen = []
        for item in seen:
            t, i = (item.get("t"), item.get("id")) if isinstance(item, dict) else (None, None)
            if isinstance(t, datetime) and _valid_id(i) and (now is None or t <= now):
                items.append(Position(t, i))
            else:
                repaired = True
        if len(items) > MAX_SEEN:
            items, repaired = items[:MAX_SEEN], True
        return cls(pos, tuple(sorted(set(items), key=Position.key))), repaired


FROM_START_OF_TIME = ""
"""A settled id before every id at its time: the whole time is read again (a broken id's repair)."""
MAX_SEEN = 2_000
"""Most seen batches a marker keeps: at ~200 bytes each, a device document stays far below 1 MiB."""
MAX_DOC_ID_BYTES = 1_500
"""Firestore's limit for a document id: the settled position keeps the real id (a cursor needs it)."""
MAX_SEEN_ID_BYTES = fmt.MAX_DEVICE_ID_BYTES + 34
"""The longest id a batch of this package has (``device-firstHlc-digest``); longer ones are kept digested."""


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and len(value.encode()) <= MAX_SEEN_ID_BYTES


def seen_id(doc_id: str) -> str:
    """How a seen batch is named in the marker: its id, or a digest of an id longer than any batch of
    this package has (such a batch is set aside by every reader, but must not make the marker grow)."""
    if len(doc_id.encode()) <= MAX_SEEN_ID_BYTES:
        return doc_id
    return "#" + hashlib.sha256(doc_id.encode()).hexdigest()[:40]


def advance(marker: Marker, consumed: Sequence[Position], *, cut: bool, horizon: datetime) -> Marker:
    """The marker after the caller stores every batch in ``consumed``.

    ``consumed`` is every document the query returned, in order, whether delivered or dropped as already
    seen; the query started right after ``marker.pos``. ``cut`` says the page stopped before the end of the
    log, so batches after the last consumed one are unknown. ``horizon`` is the query's read time minus
    the settle time.
    """
    pos = marker.pos
    for p in consumed:  # the prefix of consumed batches that has settled: all of them are seen now
        if p.ts > horizon:
            break
        pos = p
    tail = [p for p in consumed if _after(p, pos)]
    if cut and consumed:  # seen batches past the page end were not re-read: keep them
        last = consumed[-1]
        tail += [p for p in marker.seen if _after(p, last)]
    # Without a cut, a seen batch that the query did not return no longer exists: drop it.
    tail = sorted({Position(p.ts, seen_id(p.doc_id or "")) for p in tail}, key=Position.key)
    if len(tail) > MAX_SEEN:
        # A flood of batches within the settle time (no device writes that many): settle the oldest
        # ones early rather than let the device document outgrow Firestore's limit and stop every sync.
        pos, tail = tail[-MAX_SEEN - 1], tail[-MAX_SEEN:]
    return Marker(pos, tuple(tail))
