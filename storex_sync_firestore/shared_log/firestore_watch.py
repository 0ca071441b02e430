"""Be told when another device uploads to a Firestore shared log, instead of polling it.

A snapshot listener on the user's newest batch documents (``{root}/{userId}/batches`` ordered by
``sharedOn`` descending, ``limit(WINDOW)``) fires when a new batch lands. It is only a doorbell: the
callback gets no data and must not touch the database, because the client calls it on its own thread;
the sync that follows reads the log the usual way, through the read marker, so a missed or repeated ring
can cost a sync but never lose or duplicate an entry.

Why a limited query: a listener keeps every document of its result set in memory and bills a read for
each on (re)connect; the newest ``WINDOW`` documents bound both. A new batch displaces the oldest one, so
it still shows up as ``ADDED``. ``WINDOW`` is more than one so that a burst of our own uploads cannot hide
another device's batch inside one coalesced snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from . import firestore_layout as layout

log = logging.getLogger(__name__)
WINDOW = 20


def watch_uploads(
    shared_log: Any, *, user_id: str, device_id: str, callback: Callable[[], None]
) -> Callable[[], None]:
    """Call ``callback()`` whenever a device other than ``device_id`` adds a batch; return an unsubscribe.

    ``shared_log`` is a :class:`~.firestore.FirestoreSharedLog` (its ``client`` and ``root`` are used).
    The first snapshot (what is already there) rings once too, which is harmless.
    """
    from google.cloud import firestore

    batches = shared_log.client.collection(*layout.batches_path(shared_log.root, user_id))
    query = batches.order_by(layout.F_SHARED_ON, direction=firestore.Query.DESCENDING).limit(WINDOW)

    def on_snapshot(_docs: Any, changes: Any, _read_time: Any) -> None:
        try:
            added = [c.document for c in changes if c.type.name == "ADDED"]
            if any((d.to_dict() or {}).get(layout.F_DEVICE_ID) != device_id for d in added):
                callback()
        except Exception:  # an exception here would kill the listener thread silently
            log.exception("the shared-log listener callback failed")

    watch = query.on_snapshot(on_snapshot)
    return watch.unsubscribe  # type: ignore[no-any-return]


__all__ = ["WINDOW", "watch_uploads"]
