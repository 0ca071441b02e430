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

Two quirks of google-cloud-firestore's ``Watch`` are handled in :func:`_tame` (private API, kept to that
one function; ``tests/test_continuous.py`` checks it against the installed version): with the server
unreachable it re-opens its stream in a tight loop (most of a CPU core), and closing it then blocks for a
second joining a thread stuck in that stream before warning "Background thread did not exit.". Here
re-opening is throttled as the library's own ``throttle_reopen`` option would (it is not exposed), and
unsubscribing returns at once: the closing happens on a daemon thread, whose warning is dropped (the stuck
thread is a daemon that ends with its call or with the process).
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable
from typing import Any

from . import firestore_layout as layout

log = logging.getLogger(__name__)
WINDOW = 20
_CLOSER = "storex-sync-unsubscribe"


class _QuietCloser(logging.Filter):
    """Drops the bidi module's "Background thread did not exit." when our closing thread logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName == _CLOSER and "did not exit" in record.getMessage())


def _tame(watch: Any) -> Callable[[], None]:
    """Throttle the listener's reconnects and return an unsubscribe that does not block."""
    from google.api_core import bidi

    rpc = getattr(watch, "_rpc", None)
    if rpc is not None and hasattr(rpc, "_reopen_throttle"):
        window = datetime.timedelta(seconds=10)
        rpc._reopen_throttle = bidi._Throttle(access_limit=5, time_window=window)  # type: ignore[no-untyped-call]
    else:  # a newer client without these internals: it still works, only without the throttle
        log.debug("google-cloud-firestore's Watch has no _rpc._reopen_throttle; reconnects not throttled")
    bidi_log = logging.getLogger(bidi.__name__)
    if not any(isinstance(f, _QuietCloser) for f in bidi_log.filters):
        bidi_log.addFilter(_QuietCloser())

    def unsubscribe() -> None:
        threading.Thread(target=watch.unsubscribe, name=_CLOSER, daemon=True).start()

    return unsubscribe


def watch_uploads(
    shared_log: Any, *, user_id: str, device_id: str, callback: Callable[[], None]
) -> Callable[[], None]:
    """Call ``callback()`` whenever a device other than ``device_id`` adds a batch; return an unsubscribe
    (which returns at once, whatever the network does).

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

    return _tame(query.on_snapshot(on_snapshot))


__all__ = ["WINDOW", "watch_uploads"]
