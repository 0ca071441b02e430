"""Continuous sync: keep a database in sync while an application (or ``storex-sync watch``) runs.

The original ``ContinuousSync`` polled every few minutes through ``RecurringTask``, which scheduled the
next run at the *start* of a run (so runs overlapped), silently dropped a sync requested while another
ran, and removed every ``reconciledEntries`` listener after each run (flaw 3.21). Here:

* one background thread runs every sync, so two never run at once; a request made during a run is kept
  and causes exactly one follow-up run;
* a local change is noticed within ``local_poll_interval`` by a cheap query (are there rows in
  ``_sync_capture``? the capture triggers write there, and a sync's own writes are silenced, so a sync
  never triggers the next one);
* another device's upload is noticed by the backend's push notification when it has one (the optional
  ``subscribe`` of the protocol: a Firestore listener, PostgreSQL's LISTEN), whose callback only rings a
  bell, because it runs on the backend's thread and must not touch the database; other logs are asked
  every ``remote_poll_interval`` whether they hold anything new for this device (``get_unsynced_batches``
  with ``batch_size=1``, not marked seen: a directory listing for a folder log), and a sync runs only if
  they do, so an idle watch costs next to nothing;
* a failure that may pass (``retry.classify``: the network, a busy service, a lock) backs off
  exponentially up to ``max_backoff`` (``retry.Backoff``, with jitter, so devices that failed together do
  not retry together); ``sync_now`` skips the wait. A failure that retrying cannot fix (permission denied,
  a damaged database, a configuration error) stops the loop: ``error`` holds it and ``running`` is False;
* listeners are never removed behind the caller's back.

Events on ``events``: ``sync_started()`` and ``sync_finished(summary=..., error=..., has_changes=...)``,
besides those of ``do_sync``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from .capture.base import CAPTURE_TABLE
from .database import SyncedDatabase
from .errors import ConfigurationError, DamagedDatabaseError, SyncError
from .events import SyncEvents
from .models import SyncSummary
from .retry import Backoff, classify
from .shared_log.base import SharedSyncLog
from .sync import do_sync

log = logging.getLogger(__name__)
Unsubscribe = Callable[[], None]


def sync_and_record(
    db: SyncedDatabase, shared_log: SharedSyncLog, *, check_first: bool = True, **options: Any
) -> SyncSummary:
    """``do_sync`` and remember when it ran and how it ended in the database, for ``storex-sync status``.

    A damaged SQLite file is never written: with ``check_first`` it is checked before the sync, and it is
    always checked after a failure, before the failure is recorded (``DamagedDatabaseError``).
    """
    if check_first:
        db.check_integrity()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        summary = do_sync(db, shared_log, **options)
    except Exception as exc:
        _refuse_if_damaged(db)
        try:
            db.update_state(last_sync={"at": started, "ok": False, "error": str(exc).splitlines()[0]})
        except Exception:  # the database itself may be what failed; the original error matters more
            log.debug("could not record the failed sync", exc_info=True)
        raise
    db.update_state(last_sync={"at": started, "ok": True, "summary": summary.as_dict()})
    return summary


def _refuse_if_damaged(db: SyncedDatabase) -> None:
    """After a failed sync: raise ``DamagedDatabaseError`` (the failure as its context) if the file is
    damaged, so that not even the failure is written to it. Any other trouble checking is left to the
    failure itself to explain."""
    try:
        db.check_integrity()
    except DamagedDatabaseError:
        raise
    except Exception:
        log.debug("could not check the database after a failed sync", exc_info=True)


def has_local_changes(db: SyncedDatabase) -> bool:
    """True when the application changed synced rows since the last sync took them: one indexed probe."""
    with db.engine.connect() as conn:
        return conn.execute(text(f"SELECT 1 FROM {CAPTURE_TABLE} LIMIT 1")).first() is not None


class ContinuousSync:
    """Syncs ``db`` through ``shared_log`` in a background thread until :meth:`stop`.

    ``sync_options`` go to :func:`do_sync` unchanged (batch sizes, hooks, progress ...). Use it as a
    context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        db: SyncedDatabase,
        shared_log: SharedSyncLog,
        *,
        events: SyncEvents | None = None,
        local_poll_interval: float = 0.15,
        remote_poll_interval: float | None = None,
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
        listen: bool = True,
        sync_options: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
    ) -> None:
        self.db = db
        self.shared_log = shared_log
        self.events = events or SyncEvents()
        self.local_poll_interval = local_poll_interval
        self.remote_poll_interval = remote_poll_interval
        self.backoff = backoff or Backoff(min_backoff, max_backoff)
        self.listen = listen
        self.sync_options = dict(sync_options or {})
        self.clock = clock
        self.failures = 0
        self.last_summary: SyncSummary | None = None
        self.last_error: BaseException | None = None
        self.error: BaseException | None = None
        """The permanent failure that stopped the loop, if one did."""
        self._bell = threading.Event()
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._requested = 0  # requests made so far
        self._covered = 0  # requests covered by the last finished run
        self._urgent = False
        self._outcome: tuple[SyncSummary | None, BaseException | None] = (None, None)
        self._retry_at: float | None = None
        self._thread: threading.Thread | None = None
        self._unsubscribe: Unsubscribe | None = None
        self._identity: tuple[str, str] = ("", "")  # (user_id, device_id), for probing the log
        self._probe_remote = False
        self._next_poll = 0.0
        self._check_first = True  # check the file before the first sync, and after each failure

    # ---- lifecycle ----

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> ContinuousSync:
        """Start the sync thread (and the remote listener); the first sync runs at once. Idempotent."""
        if self.running:
            return self
        state = self.db.state()
        if not state.get("device_id"):
            raise ConfigurationError(
                "this database has no sync device id yet", hint="run 'storex-sync init' first"
            )
        self._stopping.clear()
        self.error = None
        self._identity = (str(state.get("user_id") or ""), str(state["device_id"]))
        if self.listen:
            self._unsubscribe = self._subscribe(*self._identity)
        if self.remote_poll_interval is None:  # a listener makes polling a safety net only
            self.remote_poll_interval = 60.0 if self._unsubscribe else 2.0
        # A backend that pushes may keep paging state between reads (Firestore does): its poll, a safety
        # net, is a full sync, never a probe.
        self._probe_remote = not callable(getattr(self.shared_log, "subscribe", None))
        self._thread = threading.Thread(target=self._loop, name="storex-sync", daemon=True)
        self.request_sync()
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Stop listening and let a running sync finish (it commits or rolls back as a whole); False if it
        was still running after ``timeout`` seconds (it is then left to finish, or to die with the
        process, which loses nothing: an interrupted sync is resumed by the next one)."""
        self._stopping.set()
        self._bell.set()
        if self._unsubscribe is not None:
            try:
                self._unsubscribe()
            except Exception:
                log.debug("unsubscribing the remote listener failed", exc_info=True)
            self._unsubscribe = None
        finished = True
        if self._thread is not None:
            self._thread.join(timeout)
            finished = not self._thread.is_alive()
            self._thread = None
        with self._cond:
            self._cond.notify_all()
        return finished

    def __enter__(self) -> ContinuousSync:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def next_retry_in(self) -> float | None:
        """Seconds until the next attempt after a failure (None when not backing off)."""
        return None if self._retry_at is None else max(0.0, self._retry_at - self.clock())

    # ---- requests ----

    def request_sync(self) -> int:
        """Ask for a sync soon; never blocks. During a run, it queues one follow-up run (not dropped)."""
        with self._cond:
            self._requested += 1
            ticket = self._requested
        self._bell.set()
        return ticket

    def sync_now(self, timeout: float | None = None) -> SyncSummary:
        """Run a sync that starts after this call (skipping any back-off wait) and return its summary;
        raise its error. Raises ``TimeoutError`` if none finished within ``timeout`` seconds."""
        if not self.running:
            if self.error is not None:  # stopped by a failure that retrying cannot fix
                raise self.error
            raise RuntimeError("ContinuousSync is not running; call start() first")
        with self._cond:
            self._urgent = True
        ticket = self.request_sync()
        with self._cond:
            done = self._cond.wait_for(lambda: self._covered >= ticket or not self.running, timeout)
            summary, error = self._outcome
        if not done or self._covered < ticket:
            raise TimeoutError(f"no sync finished within {timeout} s")
        if error is not None:
            raise error
        assert summary is not None
        return summary

    # ---- the loop ----

    def _subscribe(self, user_id: str, device_id: str) -> Unsubscribe | None:
        subscribe = getattr(self.shared_log, "subscribe", None)
        if callable(subscribe):
            return subscribe(user_id=user_id, device_id=device_id, callback=self._on_remote)  # type: ignore[no-any-return]
        return None

    def _on_remote(self) -> None:
        """Called on the listener's thread: only note the request; the sync thread does the work."""
        log.debug("another device uploaded; requesting a sync")
        self.request_sync()

    def _remote_has_news(self) -> bool:
        """Whether the shared log holds entries this device has not seen: asked instead of syncing."""
        if not self._probe_remote:
            return True
        user_id, device_id = self._identity
        try:
            update = self.shared_log.get_unsynced_batches(user_id=user_id, device_id=device_id, batch_size=1)
        except Exception:
            log.debug("probing the shared log failed; syncing to find out why", exc_info=True)
            return True
        # Its own batches come back too until a sync marks them seen: one sync after each upload.
        return bool(update.batches) or update.has_more

    def _due(self, now: float, interval: float) -> bool:
        with self._cond:
            if self._requested > self._covered:
                return True
        if self._retry_at is not None:
            return now >= self._retry_at
        if now >= self._next_poll:
            self._next_poll = now + interval
            if self._remote_has_news():
                return True
        try:
            return has_local_changes(self.db)
        except Exception:
            log.debug("probing for local changes failed", exc_info=True)
            return False

    def _loop(self) -> None:
        interval = self.remote_poll_interval or 2.0
        self._next_poll = self.clock() + interval
        while not self._stopping.is_set():
            self._bell.wait(self.local_poll_interval)
            self._bell.clear()
            if self._stopping.is_set():
                break
            now = self.clock()
            if not self._due(now, interval):
                continue
            with self._cond:
                urgent = self._urgent
            if self._retry_at is not None and now < self._retry_at and not urgent:
                continue  # backing off; the request stays pending
            self._run_once()
            self._next_poll = self.clock() + interval
        with self._cond:
            self._cond.notify_all()

    def _run_once(self) -> None:
        with self._cond:
            ticket, self._urgent = self._requested, False
        self.events.emit("sync_started")
        summary: SyncSummary | None = None
        error: BaseException | None = None
        try:
            summary = sync_and_record(
                self.db,
                self.shared_log,
                check_first=self._check_first,
                events=self.events,
                **self.sync_options,
            )
        except Exception as exc:
            error = exc
        self._check_first = error is not None
        if error is None:
            self.failures, self._retry_at = 0, None
        elif classify(error, self.shared_log):
            self.failures += 1
            wait = self.backoff.delay(self.failures)
            self._retry_at = self.clock() + wait
            log.warning("sync failed:%s%s; retrying in %.1f s", _kind(error), error, wait)
        else:  # retrying cannot help: stop, and let the caller report it
            self.failures += 1
            self.error, self._retry_at = error, None
            self._stopping.set()
            log.warning("sync failed:%s%s; stopped, retrying cannot fix this", _kind(error), error)
        self.last_summary, self.last_error = summary, error
        has_changes = summary is not None and (summary.applied > 0 or summary.received > 0)
        with self._cond:
            self._covered, self._outcome = ticket, (summary, error)
            self._cond.notify_all()
        self.events.emit("sync_finished", summary=summary, error=error, has_changes=has_changes)


def _kind(error: BaseException) -> str:
    return " " if isinstance(error, SyncError) else f" ({type(error).__name__}) "
