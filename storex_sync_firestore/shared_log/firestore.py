"""The shared log on Cloud Firestore: device registry, packed batch documents, per-device read markers.

Layout and packing are in ``firestore_layout``, the read-marker algorithm in ``firestore_marker`` (both
pure); this module does the I/O. Every Firestore call goes through :meth:`FirestoreSharedLog._call`, which
applies the retry policy (the client's own retry is off: ``retry=None``) and translates foreign exceptions
in one place, :func:`translate_errors`.

Cost, in billed document operations (counted in ``stats`` and in the returned values):

* ``write_batches``: one write per batch document (thousands of small entries per document);
* ``get_unsynced_batches``: the device document, plus one per batch document returned (an empty query is
  billed as one read);
* ``mark_as_seen``: one write, and none when the marker did not move;
* ``touch_device``: one write; ``list_devices``, ``list_snapshots``, ``list_batches``: one read per
  document (at least one); ``get_snapshot_chunks``: one per chunk; ``delete_batches``: one read and one
  write per batch still there; ``delete_snapshot``: one read, and one read and one write per document.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from ..errors import PermanentSharedLogError, SharedLogError, TransientSharedLogError, UnknownDeviceError
from ..models import DeviceInfo, StoredBatch, UnsyncedUpdate, WriteResult
from ..retry import DEFAULT_POLICY, NO_RETRY, TRANSIENT_ERRORS, RetryPolicy
from . import firestore_layout as layout
from .base import SharedSyncLog, entry_count
from .firestore_marker import FROM_START_OF_TIME, Marker, Position, advance, seen_id

T = TypeVar("T")

#: google.api_core errors for UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED and INTERNAL. Our
#: writes are idempotent (deterministic ids, create-only), so DEADLINE_EXCEEDED and ABORTED on commit are
#: retried too, which the client deliberately does not.
GOOGLE_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.Aborted,
    gexc.ResourceExhausted,
    gexc.InternalServerError,
    gexc.RetryError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether a Firestore call that failed with ``exc`` may succeed if tried again."""
    if isinstance(exc, SharedLogError):
        return exc.transient
    return isinstance(exc, GOOGLE_TRANSIENT_ERRORS + TRANSIENT_ERRORS)


_PERMANENT: tuple[tuple[type[gexc.GoogleAPICallError], str, str], ...] = (
    (
        gexc.PermissionDenied,
        "Firestore denied {op}",
        "deploy firestore.rules and sign in as the log's user (request.auth.uid == userId)",
    ),
    (
        gexc.Unauthenticated,
        "Firestore could not authenticate {op}",
        "refresh the ID token or check the service-account credentials",
    ),
    (
        gexc.InvalidArgument,
        "Firestore rejected {op} as invalid",
        "a document or request over Firestore's limits is a bug in packing; please report it",
    ),
    (
        gexc.FailedPrecondition,
        "Firestore refused {op}",
        "if it names a missing index: firebase deploy --only firestore (firestore.indexes.json)",
    ),
)
"""Errors retrying cannot fix: what happened, and what to do about it."""

_INVALID_ARGUMENT: tuple[tuple[str, str, str], ...] = (
    (
        "invalid jwt",
        "Firestore rejected the ID token sent with {op}",
        "pass a Firebase Auth ID token (a JWT) to end_user_client; on the emulator, emulator_id_token(uid)",
    ),
    (
        "error compiling rules",
        "the security rules do not compile, so Firestore refused {op}",
        "fix firestore.rules at the line:column named, then restart the emulator (or set_rules) or redeploy",
    ),
)
"""INVALID_ARGUMENT says several unrelated things; these are told apart by their message."""


@contextlib.contextmanager
def translate_errors(operation: str) -> Iterator[None]:
    """Turn google.api_core / grpc / OS errors into this package's errors, keeping them as ``__cause__``."""
    try:
        yield
    except SharedLogError:
        raise
    except Exception as exc:
        if isinstance(exc, gexc.InvalidArgument):
            for needle, what, hint in _INVALID_ARGUMENT:
                if needle in str(exc.message).lower():
                    raise PermanentSharedLogError(
                        f"{what.format(op=operation)}: {exc.message}", hint=hint
                    ) from exc
        for kind, what, hint in _PERMANENT:
            if isinstance(exc, kind):
                message = f"{what.format(op=operation)}: {exc.message}"
                raise PermanentSharedLogError(message, hint=hint) from exc
        if is_transient(exc):
            raise TransientSharedLogError(
                f"Firestore unavailable for {operation} ({type(exc).__name__}: {exc}), gave up retrying",
                hint="check the network; the next sync resumes where this one stopped",
            ) from exc
        if isinstance(exc, gexc.GoogleAPICallError):
            raise PermanentSharedLogError(f"Firestore failed {operation}: {exc.message}") from exc
        raise


@dataclass
class FirestoreStats:
    """Running totals of billed document operations and of retries, for cost checks and monitoring."""

    documents_read: int = 0
    documents_written: int = 0
    commits: int = 0
    queries: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


@dataclass(frozen=True, slots=True)
class _Memo:
    """What ``mark_as_seen`` needs: the marker as read, the marker to store, and the doc's update time."""

    old: Marker
    new: Marker
    device_update_time: datetime | None
    resume_at: Position | None = None
    """Where the next page of the same paging session starts (set when this page was cut)."""
    horizon: datetime | None = None
    """The session's settle horizon: its first query's read time minus the settle time."""
    repaired: bool = False
    """The stored marker was broken (see ``Marker.parse``): store ``new`` even if it equals ``old``."""


class FirestoreSharedLog(SharedSyncLog):
    """Shared log in Firestore under ``{root}/{userId}/...``; see ``firestore_layout`` for the layout.

    ``retry``: a :class:`RetryPolicy` (by default :data:`DEFAULT_POLICY`), or ``None`` for one attempt.
    ``timeout``: seconds per Firestore call. ``settle_time``: how long after its ``sharedOn`` a commit is
    assumed to be visible (see ``firestore_marker``); keep it above the commit deadline (``timeout``).
    ``page_docs``: most batch documents read per ``get_unsynced_batches`` call (bounds memory).
    """

    max_batch_bytes: int | None = layout.MAX_BATCH_BYTES

    def __init__(
        self,
        client: firestore.Client,
        *,
        root: str = layout.DEFAULT_ROOT,
        retry: RetryPolicy | None = DEFAULT_POLICY,
        timeout: float | None = 20.0,
        settle_time: timedelta = timedelta(seconds=30),
        page_docs: int = 32,
        sleep: Callable[[float], None] | None = None,
        expire_after: timedelta | None = None,
    ) -> None:
        self.client = client
        self.root = layout.validate_id("root collection", root)
        self.retry = retry or NO_RETRY
        self.timeout = timeout
        self.settle_time = settle_time
        self.page_docs = page_docs
        self.expire_after = expire_after
        self.stats = FirestoreStats()
        self._sleep = sleep
        # Paging sessions: (user, device) -> (marker as last written, position to continue after). While a
        # device pages through a backlog, each page starts after the previous one instead of re-reading
        # every not-yet-settled batch from the settled position again (which made a backlog quadratic).
        self._sessions: dict[tuple[str, str], tuple[Marker, Position, datetime]] = {}
        self._sessions_lock = threading.Lock()

    # ---- plumbing ----

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        """Run one Firestore call under the retry policy, translating errors at this single edge."""
        kwargs: dict[str, Any] = {
            "on_retry": lambda _state: self.stats.add(retries=1),
            "transient": is_transient,
        }
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        with translate_errors(operation):
            return self.retry.call(fn, **kwargs)

    def is_transient(self, exc: BaseException) -> bool:
        """Which of this backend's errors are transient (the optional protocol part ``retry.classify``
        asks): Google's UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED and INTERNAL."""
        return is_transient(exc)

    def subscribe(self, *, user_id: str, device_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Push notification (the optional protocol part ``watch`` uses): a snapshot listener that calls
        ``callback()`` when another device uploads; see :mod:`.firestore_watch`."""
        from .firestore_watch import watch_uploads

        return watch_uploads(self, user_id=user_id, device_id=device_id, callback=callback)

    def _device_ref(self, user_id: str, device_id: str) -> Any:
        return self.client.document(*layout.device_path(self.root, user_id, device_id))

    def _batches(self, user_id: str) -> Any:
        return self.client.collection(*layout.batches_path(self.root, user_id))

    def _rpc(self) -> dict[str, Any]:
        return {"retry": None, "timeout": self.timeout}

    @property
    def url(self) -> str:
        """``firestore://PROJECT[/ROOT]``: how ``open_shared_log`` reopens this log (``init`` keeps it)."""
        root = "" if self.root == layout.DEFAULT_ROOT else f"/{self.root}"
        return f"firestore://{self.client.project}{root}"

    # ---- devices ----

    def create_device_id(
        self, *, user_id: str, shared_until: datetime | None = None, public_key: bytes | None = None
    ) -> str:
        device_id = uuid.uuid4().hex
        ref = self._device_ref(user_id, device_id)
        start = Marker(Position(shared_until) if shared_until is not None else None)
        body = {
            layout.F_DEVICE_ID: device_id,
            layout.F_CREATED_AT: firestore.SERVER_TIMESTAMP,
            layout.F_SHARED_UNTIL: shared_until,
            **start.to_fields(),
        }
        if public_key is not None:
            body[layout.F_PUBLIC_KEY] = public_key

        def create() -> None:
            # AlreadyExists can only be our own earlier attempt that landed: the id is a fresh uuid.
            with contextlib.suppress(gexc.AlreadyExists):
                ref.create(body, **self._rpc())

        self._call(f"registering a device for user {user_id!r}", create)
        self.stats.add(documents_written=1, commits=1)
        return device_id

    def _get_device(self, user_id: str, device_id: str) -> Any:
        ref = self._device_ref(user_id, device_id)
        snap = self._call(f"reading device {device_id!r}", lambda: ref.get(**self._rpc()))
        self.stats.add(documents_read=1)
        return snap

    def get_device_info(self, *, user_id: str, device_id: str) -> DeviceInfo | None:
        if not _valid_id(device_id):
            return None
        snap = self._get_device(user_id, device_id)
        if not snap.exists:
            return None
        return _device_info(user_id, device_id, snap.to_dict() or {})

    def touch_device(
        self,
        *,
        user_id: str,
        device_id: str,
        frontier: Mapping[str, int],
        compacted: Mapping[str, int] | None = None,
    ) -> WriteResult:
        ref = self._device_ref(user_id, device_id)
        body: dict[str, Any] = {
            layout.F_LAST_SEEN: firestore.SERVER_TIMESTAMP,
            layout.F_FRONTIER: dict(frontier),
        }
        if compacted is not None:
            body[layout.F_COMPACTED] = dict(compacted)

        def update() -> None:
            try:
                ref.update(body, **self._rpc())
            except gexc.NotFound as exc:
                raise UnknownDeviceError(
                    f"the shared log has no device {device_id!r} for user {user_id!r}"
                ) from exc

        self._call(f"recording that device {device_id!r} is alive", update)
        self.stats.add(documents_written=1, commits=1)
        return WriteResult(1)

    def list_devices(self, *, user_id: str) -> Sequence[DeviceInfo]:
        collection = self.client.collection(*layout.devices_path(self.root, user_id))
        docs = self._call(
            f"listing the devices of user {user_id!r}", lambda: list(collection.stream(**self._rpc()))
        )
        self.stats.add(documents_read=max(1, len(docs)), queries=1)
        return [_device_info(user_id, d.id, d.to_dict() or {}) for d in docs]

    # ---- compaction and snapshots ----

    def list_batches(self, *, user_id: str) -> Sequence[StoredBatch]:
        query = self._batches(user_id).order_by(layout.F_SHARED_ON).order_by(FieldPath.document_id())
        docs = self._call(f"listing the log of user {user_id!r}", lambda: list(query.stream(**self._rpc())))
        self.stats.add(documents_read=max(1, len(docs)), queries=1)
        return [_stored(d) for d in docs]

    def _delete(self, what: str, refs: Sequence[Any]) -> int:
        """Delete documents, 500 per commit (Firestore's limit); deleting a missing one is a no-op."""
        for start in range(0, len(refs), 500):
            part = refs[start : start + 500]

            def commit(part: Sequence[Any] = part) -> None:
                wb = self.client.batch()
                for ref in part:
                    wb.delete(ref)
                wb.commit(**self._rpc())

            self._call(what, commit)
            self.stats.add(documents_written=len(part), commits=1)
        return len(refs)

    def delete_batches(self, batch_ids: Sequence[str], *, user_id: str) -> WriteResult:
        if not batch_ids:
            return WriteResult(0)
        collection = self._batches(user_id)
        refs = [collection.document(layout.validate_id("batch id", b)) for b in batch_ids]
        what = f"deleting {len(refs)} batches of user {user_id!r}"
        snaps = self._call(
            what, lambda: list(self.client.get_all(refs, field_paths=[layout.F_SHARED_ON], **self._rpc()))
        )
        self.stats.add(documents_read=len(refs))
        present = {s.id for s in snaps if s.exists}
        return WriteResult(self._delete(what, [r for r in refs if r.id in present]))

    def _chunks(self, user_id: str, snapshot_id: str) -> Any:
        return self.client.collection(*layout.chunks_path(self.root, user_id, snapshot_id))

    def _create_all(self, what: str, refs: Sequence[Any], docs: Sequence[StoredBatch]) -> int:
        """Create documents, one commit each (a chunk may be near 1 MiB); existing ones are kept."""
        written = 0
        for ref, doc in zip(refs, docs, strict=True):

            def create(ref: Any = ref, doc: StoredBatch = doc) -> bool:
                try:
                    ref.create({**doc.fields, layout.F_SHARED_ON: firestore.SERVER_TIMESTAMP}, **self._rpc())
                except gexc.AlreadyExists:
                    return False
                return True

            if self._call(what, create):
                written += 1
                self.stats.add(documents_written=1, commits=1)
        return written

    def write_snapshot_chunks(
        self, snapshot_id: str, chunks: Sequence[StoredBatch], *, user_id: str, device_id: str
    ) -> WriteResult:
        layout.check_commit_size(chunks[:1])
        collection = self._chunks(user_id, snapshot_id)
        refs = [collection.document(layout.validate_id("chunk id", c.batch_id)) for c in chunks]
        return WriteResult(self._create_all(f"writing snapshot {snapshot_id!r}", refs, chunks))

    def write_snapshot_manifest(self, manifest: StoredBatch, *, user_id: str, device_id: str) -> WriteResult:
        ref = self.client.collection(*layout.snapshots_path(self.root, user_id)).document(
            layout.validate_id("snapshot id", manifest.batch_id)
        )
        return WriteResult(self._create_all(f"writing snapshot {manifest.batch_id!r}", [ref], [manifest]))

    def list_snapshots(self, *, user_id: str) -> Sequence[StoredBatch]:
        collection = self.client.collection(*layout.snapshots_path(self.root, user_id))
        docs = self._call(
            f"listing the snapshots of user {user_id!r}", lambda: list(collection.stream(**self._rpc()))
        )
        self.stats.add(documents_read=max(1, len(docs)), queries=1)
        return [_stored(d) for d in docs]

    def get_snapshot_chunks(self, snapshot_id: str, *, user_id: str) -> Sequence[StoredBatch]:
        query = self._chunks(user_id, snapshot_id).order_by(FieldPath.document_id())
        docs = self._call(f"reading snapshot {snapshot_id!r}", lambda: list(query.stream(**self._rpc())))
        self.stats.add(documents_read=max(1, len(docs)), queries=1)
        return [_stored(d) for d in docs]

    def delete_snapshot(self, snapshot_id: str, *, user_id: str) -> WriteResult:
        manifest = self.client.collection(*layout.snapshots_path(self.root, user_id)).document(
            layout.validate_id("snapshot id", snapshot_id)
        )
        what = f"deleting snapshot {snapshot_id!r}"
        snap = self._call(what, lambda: manifest.get(field_paths=[layout.F_SHARED_ON], **self._rpc()))
        self.stats.add(documents_read=1)
        deleted = self._delete(what, [manifest] if snap.exists else [])  # first: no longer complete
        chunks = self._chunks(user_id, snapshot_id)
        query = chunks.select([layout.F_SHARED_ON])  # ids only (list_documents needs admin rights)
        refs = self._call(what, lambda: [d.reference for d in query.stream(**self._rpc())])
        self.stats.add(documents_read=max(1, len(refs)), queries=1)
        return WriteResult(deleted + self._delete(what, refs))

    # ---- writing ----

    def write_batches(self, batches: Sequence[StoredBatch], *, user_id: str, device_id: str) -> WriteResult:
        if not batches:
            return WriteResult(0)
        layout.check_commit_size(batches)
        collection = self._batches(user_id)
        refs = [collection.document(layout.validate_id("batch id", b.batch_id)) for b in batches]
        what = f"writing {len(batches)} batches of device {device_id!r}"

        def commit(todo: list[int]) -> bool:
            wb = self.client.batch()
            extra: dict[str, Any] = {layout.F_SHARED_ON: firestore.SERVER_TIMESTAMP}
            if self.expire_after is not None:  # the optional TTL safety net (docs/compaction.md)
                extra[layout.F_EXPIRES] = datetime.now(UTC) + self.expire_after
            for i in todo:
                wb.create(refs[i], {**batches[i].fields, **extra})
            try:
                wb.commit(**self._rpc())
            except gexc.AlreadyExists:
                return False
            return True

        todo = list(range(len(batches)))
        if not self._call(what, lambda: commit(todo)):
            # An earlier call (or an attempt whose answer was lost) landed: ids are content digests, so
            # what exists is what we meant to write. Write any that are missing.
            snaps = self._call(what, lambda: list(self.client.get_all(refs, **self._rpc())))
            self.stats.add(documents_read=len(refs))
            existing = {s.id for s in snaps if s.exists}
            todo = [i for i, b in enumerate(batches) if b.batch_id not in existing]
            if not todo:
                return WriteResult(0)
            if not self._call(what, lambda: commit(todo)):
                raise PermanentSharedLogError(
                    f"{what}: batch documents appeared concurrently",
                    hint="another process shares this device id",
                )
        self.stats.add(documents_written=len(todo), commits=1)
        return WriteResult(len(todo))

    # ---- reading ----

    def get_unsynced_batches(
        self, *, user_id: str, device_id: str, batch_size: int | None = None
    ) -> UnsyncedUpdate:
        snap = self._get_device(user_id, device_id) if _valid_id(device_id) else None
        if snap is None or not snap.exists:
            raise UnknownDeviceError(
                f"the shared log has no device {device_id!r} for user {user_id!r}",
                hint="register the device again (storex-sync init)",
            )
        marker, repaired = Marker.parse(snap.to_dict() or {}, now=snap.read_time)
        with self._sessions_lock:
            session = self._sessions.get((user_id, device_id))
        resume, horizon = (
            (session[1], session[2]) if session is not None and session[0] == marker else (None, None)
        )
        # A full query passes the seen batches again, so its page must be longer by that many.
        limit = self.page_docs + (len(marker.seen) if resume is None else 0)
        query = self._unseen_query(user_id, marker if resume is None else Marker(resume)).limit(limit)
        skip = marker.seen_ids

        read_at: list[datetime] = []  # the server's read time of the query (the clock settling is judged by)

        def run() -> tuple[list[tuple[Position, dict[str, Any] | None]], bool]:
            docs: list[tuple[Position, dict[str, Any] | None]] = []
            count = 0
            read_at.clear()
            for doc in query.stream(**self._rpc()):
                read_at[:] = read_at or [doc.read_time]
                if seen_id(doc.id) in skip:  # delivered before: only its place matters, not its data
                    docs.append((Position(doc.get(layout.F_SHARED_ON), doc.id), None))
                    continue
                data = doc.to_dict() or {}
                shared_on = data.get(layout.F_SHARED_ON)
                if not isinstance(shared_on, datetime) or shared_on > doc.read_time:
                    # Not a timestamp (the queries' filter returns none), or dated after this very read:
                    # the server stamps sharedOn at the commit, so only a write past the rules can do
                    # that. It is not delivered, and never enters the marker (it would never settle,
                    # and hold the marker's tail, or its position, in the future).
                    continue
                docs.append((Position(shared_on, doc.id), data))
                count += entry_count(data)
                if batch_size is not None and count >= batch_size:
                    return docs, True  # stop reading: the rest of the page is not billed
            return docs, len(docs) >= limit

        docs, cut = self._call(f"reading the log of user {user_id!r}", run)
        self.stats.add(documents_read=max(1, len(docs)), queries=1)
        batches = [
            StoredBatch(pos.doc_id or "", {k: v for k, v in data.items() if k not in _STORED}, pos.ts)
            for pos, data in docs
            if data is not None
        ]
        consumed = [pos for pos, _data in docs]
        if resume is not None and horizon is not None:
            # Mid-session: the pages so far and this one cover everything after pos without gaps, so the
            # seen tail plus this page settle together, judged by the session's *first* read time: a batch
            # that was invisible to any page of the session has a sharedOn after that horizon.
            new = advance(Marker(marker.pos), sorted(set(marker.seen) | set(consumed), key=Position.key),
                          cut=cut, horizon=horizon)  # fmt: skip
            if new == marker:  # nothing new: end the session here (mark_as_seen will not be writing)
                self._end_session(user_id, device_id)
        elif docs:
            horizon = read_at[0] - self.settle_time
            new = advance(marker, consumed, cut=cut, horizon=horizon)
        else:
            new = marker
        memo = _Memo(
            marker, new, snap.update_time, consumed[-1] if cut and consumed else None, horizon, repaired
        )
        # A session that resumed ends with one full query from the settled position: it picks up batches
        # that became visible behind the pages already read, in this sync rather than the next.
        more = cut or resume is not None
        return UnsyncedUpdate(batches, memo=memo, documents_read=1 + max(1, len(docs)), has_more=more)

    def _unseen_query(self, user_id: str, marker: Marker) -> Any:
        """Batches after the marker's settled position, in (sharedOn, __name__) order (layout.QUERIES).

        Every query filters on ``sharedOn`` being a timestamp at all: a document whose ``sharedOn`` is a
        string or a number (written past the rules) sorts among no timestamps, and no device reads it.
        """
        batches = self._batches(user_id)
        query = batches.order_by(layout.F_SHARED_ON).order_by(FieldPath.document_id())
        pos = marker.pos
        if pos is None:  # layout.UNSEEN_FROM_START
            return query.where(filter=firestore.FieldFilter(layout.F_SHARED_ON, ">=", layout.EARLIEST))
        if pos.doc_id is None:  # layout.UNSEEN_AFTER_TIME
            return query.where(filter=firestore.FieldFilter(layout.F_SHARED_ON, ">", pos.ts))
        since = query.where(filter=firestore.FieldFilter(layout.F_SHARED_ON, ">=", pos.ts))
        if pos.doc_id == FROM_START_OF_TIME:
            return since  # layout.UNSEEN_AFTER_CURSOR, without the cursor: every batch at pos.ts again
        cursor = {layout.F_SHARED_ON: pos.ts, FieldPath.document_id(): batches.document(pos.doc_id)}
        return since.start_after(cursor)  # layout.UNSEEN_AFTER_CURSOR

    def mark_as_seen(self, update: UnsyncedUpdate, *, user_id: str, device_id: str) -> WriteResult:
        memo = update.memo
        if not isinstance(memo, _Memo) or (memo.new == memo.old and not memo.repaired):
            return WriteResult(0)  # nothing moved: no write
        ref = self._device_ref(user_id, device_id)
        # Only if the marker is still the one this update was computed from: marking an update twice, or an
        # older update after a newer one, must not move the marker back.
        option = self.client.write_option(last_update_time=memo.device_update_time)

        def update_marker() -> bool:
            try:
                ref.update(memo.new.to_fields(), option=option, **self._rpc())
            except gexc.FailedPrecondition:
                return False  # already moved by this update (or a later one)
            except gexc.NotFound as exc:
                raise UnknownDeviceError(
                    f"the shared log has no device {device_id!r} for user {user_id!r}"
                ) from exc
            return True

        try:
            moved = self._call(f"moving the read marker of device {device_id!r}", update_marker)
        except BaseException:
            self._end_session(user_id, device_id)
            raise
        if not moved or memo.resume_at is None or memo.horizon is None:
            self._end_session(user_id, device_id)  # the backlog is read (or the marker moved elsewhere)
        else:
            with self._sessions_lock:
                self._sessions[(user_id, device_id)] = (memo.new, memo.resume_at, memo.horizon)
        if not moved:
            return WriteResult(0)
        self.stats.add(documents_written=1, commits=1)
        return WriteResult(1)

    def _end_session(self, user_id: str, device_id: str) -> None:
        with self._sessions_lock:
            self._sessions.pop((user_id, device_id), None)

    # ---- the wrapped data key of an encrypted log ----

    def get_key_record(self, *, user_id: str) -> Mapping[str, Any] | None:
        ref = self.client.document(*layout.key_path(self.root, user_id))
        snap = self._call(f"reading the key record of user {user_id!r}", lambda: ref.get(**self._rpc()))
        self.stats.add(documents_read=1)
        return (snap.to_dict() or {}) if snap.exists else None

    def put_key_record(self, *, user_id: str, record: Mapping[str, Any], replaces: str | None = None) -> bool:
        ref = self.client.document(*layout.key_path(self.root, user_id))
        what = f"storing the key record of user {user_id!r}"

        def create() -> bool:
            try:
                ref.create(dict(record), **self._rpc())
            except gexc.AlreadyExists:
                return False  # another device (or a lost answer to our own attempt) was first: read it
            return True

        def replace() -> bool:
            snap = ref.get(**self._rpc())
            if not snap.exists or (snap.to_dict() or {}).get("kid") != replaces:
                return False
            option = self.client.write_option(last_update_time=snap.update_time)
            try:
                ref.update(dict(record), option=option, **self._rpc())
            except gexc.FailedPrecondition:
                return False  # changed meanwhile: the caller reads it again
            return True

        done = self._call(what, create if replaces is None else replace)
        self.stats.add(documents_written=int(done), commits=1)
        return done

    def with_options(self, **changes: Any) -> FirestoreSharedLog:
        """A copy with other options (same client), e.g. ``log.with_options(retry=None)`` in tests."""
        clone = FirestoreSharedLog(
            self.client,
            root=self.root,
            retry=self.retry,
            timeout=self.timeout,
            settle_time=self.settle_time,
            page_docs=self.page_docs,
            sleep=self._sleep,
            expire_after=self.expire_after,
        )
        for name, value in changes.items():
            if name == "retry":
                value = value or NO_RETRY
            setattr(clone, name, value)
        return clone


_STORED = (layout.F_SHARED_ON, layout.F_EXPIRES)
"""Fields the backend adds to a document: not part of the batch (its reader would refuse them)."""


def _device_info(user_id: str, device_id: str, data: Mapping[str, Any]) -> DeviceInfo:
    key = data.get(layout.F_PUBLIC_KEY)
    return DeviceInfo(
        user_id,
        device_id,
        data.get(layout.F_SHARED_UNTIL),
        data.get(layout.F_CREATED_AT),
        key if isinstance(key, bytes) else None,
        data.get(layout.F_LAST_SEEN),
        _clocks(data.get(layout.F_FRONTIER)),
        _clocks(data.get(layout.F_COMPACTED)),
    )


def _clocks(value: object) -> dict[str, int]:
    """A stored clock map (device -> clock); anything malformed reads as nothing."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if type(v) is int}


def _stored(doc: Any) -> StoredBatch:
    """A document as the protocol returns it: its fields without ``sharedOn``, which becomes shared_on."""
    data = doc.to_dict() or {}
    shared_on = data.pop(layout.F_SHARED_ON, None)
    data.pop(layout.F_EXPIRES, None)
    return StoredBatch(doc.id, data, shared_on if isinstance(shared_on, datetime) else None)


def _valid_id(value: str) -> bool:
    try:
        layout.validate_id("id", value)
    except PermanentSharedLogError:
        return False
    return True


__all__ = ["FirestoreSharedLog", "FirestoreStats", "translate_errors"]
