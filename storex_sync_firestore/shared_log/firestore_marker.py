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

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import firestore_layout as layout


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
        return frozenset(p.doc_id for p in self.seen if p.doc_id is not None)

    def to_fields(self) -> dict[str, Any]:
        """The device-document fields that hold this marker."""
        return {
            layout.F_MARKER_TS: self.pos.ts if self.pos else None,
            layout.F_MARKER_ID: self.pos.doc_id if self.pos else None,
            layout.F_MARKER_SEEN: [{"t": p.ts, "id": p.doc_id} for p in self.seen],
        }

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Marker:
        ts = fields.get(layout.F_MARKER_TS)
        pos = Position(ts, fields.get(layout.F_MARKER_ID)) if ts is not None else None
        seen = tuple(Position(item["t"], item["id"]) for item in fields.get(layout.F_MARKER_SEEN) or ())
        return cls(pos, seen)


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
    return Marker(pos, tuple(sorted(set(tail), key=Position.key)))
