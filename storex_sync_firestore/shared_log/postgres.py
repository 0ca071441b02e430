"""The shared log in a PostgreSQL server: for organisations that run their own database server rather
than Firebase (a shop chain with a central server). ``--log postgresql://ROLE@HOST[:PORT]/DB``.

It is registered like any third-party backend, through the entry-point group
``storex_sync_firestore.shared_logs`` in this package's ``pyproject.toml``, and passes the same
conformance suite as the Firestore log. It needs ``psycopg`` (``pip install
'storex-sync-firestore[postgres]'``).

Confinement is the server's, not the client's: every table has row-level security (enabled and forced),
and its one policy lets a role see and write only the rows whose ``user_id`` is the role's own name. So a
sync user is a PostgreSQL login role of the same name, member of ``storex_sync_users``
(:meth:`PostgresSharedLog.add_user`), and one user's credentials can neither read nor write another's
data whatever SQL they send. A superuser (administration, tests) sees every user. Read markers and
liveness records are per device of one user; a user may move any of its own devices' markers, as it could
on any backend.

Layout (schema ``storex_sync``; ``?schema=NAME`` in the URL chooses another)::

    heads(user_id PK, last_seq)                   the user's last batch number: its row lock orders writers
    devices(user_id, device_id PK, marker, shared_until, created_at, public_key, last_seen, frontier,
            compacted)
    batches(user_id, seq PK, batch_id UNIQUE, entries, fields, shared_on)
    key_records(user_id PK, kid, record)
    snapshots(user_id, snapshot_id PK, fields, shared_on)          manifests: complete snapshots
    snapshot_chunks(user_id, snapshot_id, chunk_id PK, fields, shared_on)

Why ``heads``: a writer takes the user's ``heads`` row lock, numbers its batches ``last_seq + 1 ...`` and
commits, so batch numbers become visible strictly in order without gaps, and a reader whose marker is
``seq`` can never skip a batch that commits later with a smaller number (a plain sequence would allow
exactly that). Fields are kept exactly as given in ``jsonb``: bytes as ``{"$b": hex}``, and a string
PostgreSQL cannot hold (NUL) as ``{"$u": hex}``; a stored value that does not decode is returned as it is,
for ``validate`` to reject.

Push notification: a write ends with ``pg_notify`` on the user's channel (a hash of schema and user, so
the channel name carries no user id), delivered at commit; :meth:`PostgresSharedLog.subscribe` LISTENs on
it from a connection of its own.

Passwords are never stored in the synced database: :attr:`PostgresSharedLog.url` leaves the password out,
so ``sync`` and ``watch`` take it from libpq's usual places (``~/.pgpass``, ``PGPASSWORD``).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ..errors import ConfigurationError, PermanentSharedLogError, TransientSharedLogError, UnknownDeviceError
from ..models import DeviceInfo, StoredBatch, UnsyncedUpdate, WriteResult
from ..retry import DEFAULT_POLICY, NO_RETRY, TRANSIENT_ERRORS, Backoff, RetryPolicy, until_stopped
from .base import entry_count

T = TypeVar("T")
DEFAULT_SCHEMA = "storex_sync"
USERS_ROLE = "storex_sync_users"
MAX_BATCH_BYTES = 8 * 1024 * 1024
"""Stored bytes per batch document: well inside PostgreSQL's limits, and one row stays cheap to read."""

_AUTH_STATES = {"28000", "28P01", "3D000"}  # authorization, password, no such database: retrying cannot help
_REFUSALS = ("authentication", "password", "does not exist", "permission denied")
_NOTIFY_PREFIX = "storex_sync_"

_DEVICE_COLUMNS = "device_id, shared_until, created_at, public_key, last_seen, frontier, compacted"
_TABLES = ("heads", "devices", "batches", "key_records", "snapshots", "snapshot_chunks")
_DDL = """
CREATE SCHEMA {schema};
CREATE TABLE {schema}.heads (
    user_id text PRIMARY KEY, last_seq bigint NOT NULL DEFAULT 0);
CREATE TABLE {schema}.devices (
    user_id text NOT NULL, device_id text NOT NULL, marker bigint NOT NULL DEFAULT 0,
    shared_until timestamptz, created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    public_key bytea, last_seen timestamptz, frontier jsonb NOT NULL DEFAULT '{}',
    compacted jsonb NOT NULL DEFAULT '{}', PRIMARY KEY (user_id, device_id));
CREATE TABLE {schema}.batches (
    user_id text NOT NULL, seq bigint NOT NULL, batch_id text NOT NULL, entries integer NOT NULL,
    fields jsonb NOT NULL, shared_on timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (user_id, seq), UNIQUE (user_id, batch_id));
CREATE TABLE {schema}.key_records (
    user_id text PRIMARY KEY, kid text, record jsonb NOT NULL);
CREATE TABLE {schema}.snapshots (
    user_id text NOT NULL, snapshot_id text NOT NULL, fields jsonb NOT NULL,
    shared_on timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (user_id, snapshot_id));
CREATE TABLE {schema}.snapshot_chunks (
    user_id text NOT NULL, snapshot_id text NOT NULL, chunk_id text NOT NULL, fields jsonb NOT NULL,
    shared_on timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (user_id, snapshot_id, chunk_id));
"""
_GRANTS = {
    "heads": "SELECT, INSERT, UPDATE",
    "devices": "SELECT, INSERT, UPDATE",
    "batches": "SELECT, INSERT, DELETE",
    "key_records": "SELECT, INSERT, UPDATE",
    "snapshots": "SELECT, INSERT, DELETE",
    "snapshot_chunks": "SELECT, INSERT, DELETE",
}


# ---- fields <-> jsonb, exactly ----


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": bytes(value).hex()}
    if isinstance(value, str):
        return value if "\x00" not in value else {"$u": value.encode("utf-8", "surrogatepass").hex()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {"$m": {str(k): _encode(v) for k, v in value.items()}}
    return value  # int, bool, None, float


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        ((tag, inner),) = value.items()
        try:
            if tag == "$b" and isinstance(inner, str):
                return bytes.fromhex(inner)
            if tag == "$u" and isinstance(inner, str):
                return bytes.fromhex(inner).decode("utf-8", "surrogatepass")
            if tag == "$m" and isinstance(inner, dict):
                return {k: _decode(v) for k, v in inner.items()}
        except ValueError:
            return value  # not ours: handed on as it is, for validate to reject
    return value


def _fields_in(fields: Mapping[str, Any]) -> Jsonb:
    return Jsonb({str(k): _encode(v) for k, v in fields.items()})


def _fields_out(stored: Any) -> dict[str, Any]:
    return {str(k): _decode(v) for k, v in stored.items()} if isinstance(stored, dict) else {}


def _ints(stored: Any) -> dict[str, int]:
    return {str(k): v for k, v in stored.items() if type(v) is int} if isinstance(stored, dict) else {}


# ---- errors ----


def is_transient(exc: BaseException) -> bool:
    """Whether a PostgreSQL call that failed with ``exc`` may succeed if tried again: a lost or refused
    connection, a server shutting down, a serialization failure or deadlock, a lock or statement
    time-out; never a refused password, a missing database or a permission."""
    if isinstance(exc, (TransientSharedLogError, *TRANSIENT_ERRORS)):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if exc.sqlstate in _AUTH_STATES:
        return False
    message = str(exc).lower()  # connection errors carry no SQLSTATE: told apart by libpq's message
    return not any(word in message for word in _REFUSALS)


@contextmanager
def translate_errors(operation: str, user_id: str | None) -> Iterator[None]:
    """Turn psycopg errors into this package's, at this one edge, keeping them as ``__cause__``."""
    try:
        yield
    except (ConfigurationError, UnknownDeviceError, PermanentSharedLogError, TransientSharedLogError):
        raise
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PermanentSharedLogError(
            f"PostgreSQL denied {operation} for user {user_id!r}: {_first_line(exc)}",
            hint="the log confines each user's data to the PostgreSQL role of that name: connect as that "
            "role (postgresql://ROLE@HOST/DB, a member of storex_sync_users) or pass --user ROLE",
        ) from exc
    except psycopg.Error as exc:
        if is_transient(exc):
            raise TransientSharedLogError(
                f"PostgreSQL unavailable for {operation} ({_first_line(exc)}), gave up retrying",
                hint="check the server and the network; the next sync resumes where this one stopped",
            ) from exc
        if isinstance(exc, psycopg.OperationalError):
            raise PermanentSharedLogError(
                f"PostgreSQL refused the connection for {operation}: {_first_line(exc)}",
                hint="check the role, the database and the password (~/.pgpass or PGPASSWORD; the password "
                "is not stored with the database)",
            ) from exc
        raise PermanentSharedLogError(f"PostgreSQL failed {operation}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ---- the log ----


class PostgresSharedLog:
    """Shared log in a PostgreSQL database; see the module docstring for layout and confinement.

    ``conninfo`` is a libpq URL (``postgresql://ROLE[:PASSWORD]@HOST[:PORT]/DB[?libpq options]``).
    ``schema``: where the tables are. ``retry``: the policy for each call (None: one attempt).
    ``page_docs``: most batches read per call (bounds memory).
    ``setup``: create the tables when they are missing (needs the right to create a schema).
    """

    max_batch_bytes: int | None = MAX_BATCH_BYTES

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        retry: RetryPolicy | None = DEFAULT_POLICY,
        page_docs: int = 16,
        connect_timeout: int = 10,
        setup: bool = True,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.retry = retry or NO_RETRY
        self.page_docs = page_docs
        self.connect_timeout = connect_timeout
        self._sleep = sleep
        self._idle: list[psycopg.Connection[Any]] = []
        self._pool_lock = threading.Lock()
        self._s = sql.Identifier(schema)
        self._ready = not setup

    def __repr__(self) -> str:
        return f"PostgresSharedLog({self.url!r})"

    @property
    def url(self) -> str:
        """``postgresql://ROLE@HOST/DB[?schema=...]``, without the password: what ``init`` stores."""
        parts = urlsplit(self.conninfo)
        netloc = parts.netloc.rsplit("@", 1)
        if len(netloc) == 2:
            netloc[0] = netloc[0].split(":", 1)[0]
        query = parse_qsl(parts.query)
        if self.schema != DEFAULT_SCHEMA:
            query.append(("schema", self.schema))
        return urlunsplit((parts.scheme, "@".join(netloc), parts.path, urlencode(query), ""))

    # ---- plumbing ----

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo, autocommit=True, connect_timeout=self.connect_timeout)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = self._connect()
        try:
            yield conn
        except BaseException:
            conn.close()  # its state is unknown: never reused
            raise
        with self._pool_lock:
            self._idle.append(conn)

    def _call(self, operation: str, user_id: str | None, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``fn`` in one transaction under the retry policy, translating errors at this one edge."""

        def attempt() -> T:
            with self._connection() as conn:
                if not self._ready:
                    self._set_up(conn)
                with conn.transaction():
                    return fn(conn)

        kwargs: dict[str, Any] = {"transient": is_transient}
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        with translate_errors(operation, user_id):
            return self.retry.call(attempt, **kwargs)

    def is_transient(self, exc: BaseException) -> bool:
        """Which of this backend's errors are transient (the optional protocol part)."""
        return is_transient(exc)

    def close(self) -> None:
        """Close the pooled connections (the log stays usable: it reconnects when needed)."""
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _q(self, statement: str) -> sql.Composed:
        return sql.SQL(statement).format(s=self._s)

    # ---- setup and users ----

    def _set_up(self, conn: psycopg.Connection[Any]) -> None:
        """Create schema, tables, policies and grants if they are missing (once per process)."""
        if conn.execute("SELECT to_regclass(%s)", [f"{self.schema}.batches"]).fetchone() != (None,):
            self._ready = True
            return
        try:
            with conn.transaction():
                lock = f"setup:{self.schema}"
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [lock])
                if conn.execute("SELECT to_regclass(%s)", [f"{self.schema}.batches"]).fetchone() == (None,):
                    self._create(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigurationError(
                f"the PostgreSQL log has no tables in schema {self.schema!r} yet, and this role may not "
                f"create them: {_first_line(exc)}",
                hint="open the log once as the database's owner or a superuser (any storex-sync command "
                "with --log), then add users with PostgresSharedLog.add_user",
            ) from exc
        self._ready = True

    def _create(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(_DDL.replace("{schema}", self._s.as_string(conn)).encode())
        conn.execute(
            sql.SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {r}) THEN "
                "CREATE ROLE {i} NOLOGIN; END IF; END $$"
            ).format(r=sql.Literal(USERS_ROLE), i=sql.Identifier(USERS_ROLE))
        )
        conn.execute(self._q("GRANT USAGE ON SCHEMA {s} TO ") + sql.Identifier(USERS_ROLE))
        for table in _TABLES:
            t = sql.Identifier(self.schema, table)
            conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(t))
            conn.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(t))
            conn.execute(
                sql.SQL(
                    "CREATE POLICY own_rows ON {} USING (user_id = current_user::text) "
                    "WITH CHECK (user_id = current_user::text)"
                ).format(t)
            )
            conn.execute(
                sql.SQL("GRANT " + _GRANTS[table] + " ON {} TO {}").format(t, sql.Identifier(USERS_ROLE))
            )

    def add_user(self, user_id: str, password: str | None = None) -> None:
        """Create the login role of sync user ``user_id`` (needs CREATEROLE): it reads and writes that
        user's data only. Idempotent; with ``password``, sets it."""

        def create(conn: psycopg.Connection[Any]) -> None:
            role = sql.Identifier(user_id)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [user_id]).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(USERS_ROLE), role))
            if password is not None:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(password)))

        self._call("adding a user", None, create)

    # ---- devices ----

    def create_device_id(
        self, *, user_id: str, shared_until: datetime | None = None, public_key: bytes | None = None
    ) -> str:
        device_id = uuid.uuid4().hex

        def create(conn: psycopg.Connection[Any]) -> str:
            marker = 0
            if shared_until is not None:
                row = conn.execute(
                    self._q(
                        "SELECT coalesce(max(seq), 0) FROM {s}.batches WHERE user_id = %s AND shared_on <= %s"
                    ),
                    [user_id, shared_until],
                ).fetchone()
                marker = int(row[0]) if row else 0
            conn.execute(
                self._q(
                    "INSERT INTO {s}.devices (user_id, device_id, marker, shared_until, public_key) "
                    "VALUES (%s, %s, %s, %s, %s)"
                ),
                [user_id, device_id, marker, shared_until, public_key],
            )
            return device_id

        return self._call("registering a device", user_id, create)

    def _info(self, user_id: str, row: Sequence[Any]) -> DeviceInfo:
        return DeviceInfo(
            user_id,
            row[0],
            row[1],
            row[2],
            bytes(row[3]) if row[3] is not None else None,
            row[4],
            _ints(row[5]),
            _ints(row[6]),
        )

    def get_device_info(self, *, user_id: str, device_id: str) -> DeviceInfo | None:
        def read(conn: psycopg.Connection[Any]) -> DeviceInfo | None:
            row = conn.execute(
                self._q(f"SELECT {_DEVICE_COLUMNS} FROM {{s}}.devices WHERE user_id = %s AND device_id = %s"),
                [user_id, device_id],
            ).fetchone()
            return None if row is None else self._info(user_id, row)

        return self._call("reading a device", user_id, read)

    def list_devices(self, *, user_id: str) -> Sequence[DeviceInfo]:
        def read(conn: psycopg.Connection[Any]) -> list[DeviceInfo]:
            rows = conn.execute(
                self._q(f"SELECT {_DEVICE_COLUMNS} FROM {{s}}.devices WHERE user_id = %s ORDER BY device_id"),
                [user_id],
            ).fetchall()
            return [self._info(user_id, row) for row in rows]

        return self._call("listing devices", user_id, read)

    def touch_device(
        self,
        *,
        user_id: str,
        device_id: str,
        frontier: Mapping[str, int],
        compacted: Mapping[str, int] | None = None,
    ) -> WriteResult:
        def touch(conn: psycopg.Connection[Any]) -> WriteResult:
            done = conn.execute(
                self._q(
                    "UPDATE {s}.devices SET last_seen = clock_timestamp(), frontier = %s, "
                    "compacted = coalesce(%s, compacted) WHERE user_id = %s AND device_id = %s"
                ),
                [
                    Jsonb(dict(frontier)),
                    None if compacted is None else Jsonb(dict(compacted)),
                    user_id,
                    device_id,
                ],
            )
            if done.rowcount == 0:
                raise UnknownDeviceError(
                    f"the PostgreSQL log has no device {device_id!r} for user {user_id!r}",
                    hint="register the device again (storex-sync init)",
                )
            return WriteResult(1)

        return self._call("recording liveness", user_id, touch)

    # ---- batches ----

    def _channel(self, user_id: str) -> str:
        digest = hashlib.sha256(f"{self.schema}\0{user_id}".encode()).hexdigest()
        return _NOTIFY_PREFIX + digest[:40]

    def write_batches(self, batches: Sequence[StoredBatch], *, user_id: str, device_id: str) -> WriteResult:
        if not batches:
            return WriteResult(0)

        def write(conn: psycopg.Connection[Any]) -> WriteResult:
            conn.execute(
                self._q("INSERT INTO {s}.heads (user_id) VALUES (%s) ON CONFLICT DO NOTHING"), [user_id]
            )
            row = conn.execute(
                self._q("SELECT last_seq FROM {s}.heads WHERE user_id = %s FOR UPDATE"), [user_id]
            ).fetchone()
            seq = int(row[0]) if row else 0
            written = 0
            for batch in batches:
                inserted = conn.execute(
                    self._q(
                        "INSERT INTO {s}.batches (user_id, seq, batch_id, entries, fields) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id, batch_id) DO NOTHING RETURNING 1"
                    ),
                    [user_id, seq + 1, batch.batch_id, entry_count(batch.fields), _fields_in(batch.fields)],
                ).fetchone()
                if inserted is not None:
                    seq += 1
                    written += 1
            if written:
                conn.execute(self._q("UPDATE {s}.heads SET last_seq = %s WHERE user_id = %s"), [seq, user_id])
                conn.execute("SELECT pg_notify(%s, %s)", [self._channel(user_id), device_id])
            return WriteResult(written)

        return self._call("writing batches", user_id, write)

    def _marker(self, conn: psycopg.Connection[Any], user_id: str, device_id: str) -> int:
        row = conn.execute(
            self._q("SELECT marker FROM {s}.devices WHERE user_id = %s AND device_id = %s"),
            [user_id, device_id],
        ).fetchone()
        if row is None:
            raise UnknownDeviceError(
                f"the PostgreSQL log has no device {device_id!r} for user {user_id!r}",
                hint="check --log and --user, or register the device again (storex-sync init)",
            )
        return int(row[0])

    def get_unsynced_batches(
        self, *, user_id: str, device_id: str, batch_size: int | None = None
    ) -> UnsyncedUpdate:
        def read(conn: psycopg.Connection[Any]) -> UnsyncedUpdate:
            marker = self._marker(conn, user_id, device_id)
            rows = conn.execute(
                self._q(
                    "SELECT seq, batch_id, entries, fields, shared_on FROM {s}.batches "
                    "WHERE user_id = %s AND seq > %s ORDER BY seq LIMIT %s"
                ),
                [user_id, marker, self.page_docs + 1],
            ).fetchall()
            page: list[StoredBatch] = []
            entries, last = 0, marker
            for seq, batch_id, count, fields, shared_on in rows[: self.page_docs]:
                if batch_size is not None and page and entries + count > batch_size:
                    break
                page.append(StoredBatch(batch_id, _fields_out(fields), shared_on))
                entries, last = entries + count, seq
            has_more = len(rows) > len(page)
            return UnsyncedUpdate(page, memo=last, documents_read=len(page), has_more=has_more)

        return self._call("reading batches", user_id, read)

    def mark_as_seen(self, update: UnsyncedUpdate, *, user_id: str, device_id: str) -> WriteResult:
        seen = int(update.memo or 0)

        def mark(conn: psycopg.Connection[Any]) -> WriteResult:
            self._marker(conn, user_id, device_id)
            moved = conn.execute(
                self._q(
                    "UPDATE {s}.devices SET marker = %s WHERE user_id = %s AND device_id = %s AND marker < %s"
                ),
                [seen, user_id, device_id, seen],
            )
            return WriteResult(moved.rowcount)

        return self._call("moving the read marker", user_id, mark)

    def list_batches(self, *, user_id: str) -> Sequence[StoredBatch]:
        def read(conn: psycopg.Connection[Any]) -> list[StoredBatch]:
            rows = conn.execute(
                self._q(
                    "SELECT batch_id, fields, shared_on FROM {s}.batches WHERE user_id = %s ORDER BY seq"
                ),
                [user_id],
            ).fetchall()
            return [StoredBatch(b, _fields_out(f), on) for b, f, on in rows]

        return self._call("listing batches", user_id, read)

    def delete_batches(self, batch_ids: Sequence[str], *, user_id: str) -> WriteResult:
        def delete(conn: psycopg.Connection[Any]) -> WriteResult:
            done = conn.execute(
                self._q("DELETE FROM {s}.batches WHERE user_id = %s AND batch_id = ANY(%s)"),
                [user_id, list(batch_ids)],
            )
            return WriteResult(done.rowcount)

        return self._call("deleting batches", user_id, delete) if batch_ids else WriteResult(0)

    # ---- snapshots ----

    def write_snapshot_chunks(
        self, snapshot_id: str, chunks: Sequence[StoredBatch], *, user_id: str, device_id: str
    ) -> WriteResult:
        def write(conn: psycopg.Connection[Any]) -> WriteResult:
            written = 0
            for chunk in chunks:
                done = conn.execute(
                    self._q(
                        "INSERT INTO {s}.snapshot_chunks (user_id, snapshot_id, chunk_id, fields) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
                    ),
                    [user_id, snapshot_id, chunk.batch_id, _fields_in(chunk.fields)],
                )
                written += done.rowcount
            return WriteResult(written)

        return self._call("writing snapshot chunks", user_id, write)

    def write_snapshot_manifest(self, manifest: StoredBatch, *, user_id: str, device_id: str) -> WriteResult:
        def write(conn: psycopg.Connection[Any]) -> WriteResult:
            done = conn.execute(
                self._q(
                    "INSERT INTO {s}.snapshots (user_id, snapshot_id, fields) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING"
                ),
                [user_id, manifest.batch_id, _fields_in(manifest.fields)],
            )
            return WriteResult(done.rowcount)

        return self._call("writing a snapshot manifest", user_id, write)

    def list_snapshots(self, *, user_id: str) -> Sequence[StoredBatch]:
        def read(conn: psycopg.Connection[Any]) -> list[StoredBatch]:
            rows = conn.execute(
                self._q(
                    "SELECT snapshot_id, fields, shared_on FROM {s}.snapshots "
                    "WHERE user_id = %s ORDER BY shared_on, snapshot_id"
                ),
                [user_id],
            ).fetchall()
            return [StoredBatch(i, _fields_out(f), on) for i, f, on in rows]

        return self._call("listing snapshots", user_id, read)

    def get_snapshot_chunks(self, snapshot_id: str, *, user_id: str) -> Sequence[StoredBatch]:
        def read(conn: psycopg.Connection[Any]) -> list[StoredBatch]:
            rows = conn.execute(
                self._q(
                    "SELECT chunk_id, fields, shared_on FROM {s}.snapshot_chunks "
                    "WHERE user_id = %s AND snapshot_id = %s ORDER BY chunk_id"
                ),
                [user_id, snapshot_id],
            ).fetchall()
            return [StoredBatch(i, _fields_out(f), on) for i, f, on in rows]

        return self._call("reading snapshot chunks", user_id, read)

    def delete_snapshot(self, snapshot_id: str, *, user_id: str) -> WriteResult:
        def delete(conn: psycopg.Connection[Any]) -> WriteResult:
            params = [user_id, snapshot_id]
            manifest = conn.execute(
                self._q("DELETE FROM {s}.snapshots WHERE user_id = %s AND snapshot_id = %s"), params
            ).rowcount
            chunks = conn.execute(
                self._q("DELETE FROM {s}.snapshot_chunks WHERE user_id = %s AND snapshot_id = %s"), params
            ).rowcount
            return WriteResult(manifest + chunks)

        return self._call("deleting a snapshot", user_id, delete)

    # ---- key record ----

    def get_key_record(self, *, user_id: str) -> Mapping[str, Any] | None:
        def read(conn: psycopg.Connection[Any]) -> Mapping[str, Any] | None:
            row = conn.execute(
                self._q("SELECT record FROM {s}.key_records WHERE user_id = %s"), [user_id]
            ).fetchone()
            return None if row is None else _fields_out(row[0])

        return self._call("reading the key record", user_id, read)

    def put_key_record(self, *, user_id: str, record: Mapping[str, Any], replaces: str | None = None) -> bool:
        kid = record.get("kid")

        def put(conn: psycopg.Connection[Any]) -> bool:
            if replaces is None:
                done = conn.execute(
                    self._q(
                        "INSERT INTO {s}.key_records (user_id, kid, record) VALUES (%s, %s, %s) "
                        "ON CONFLICT DO NOTHING"
                    ),
                    [user_id, kid if isinstance(kid, str) else None, _fields_in(record)],
                )
            else:
                done = conn.execute(
                    self._q(
                        "UPDATE {s}.key_records SET kid = %s, record = %s WHERE user_id = %s AND kid = %s"
                    ),
                    [kid if isinstance(kid, str) else None, _fields_in(record), user_id, replaces],
                )
            return done.rowcount == 1

        return self._call("storing the key record", user_id, put)

    # ---- push notification ----

    def subscribe(self, *, user_id: str, device_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when a device other than ``device_id`` writes a batch (LISTEN on the user's
        channel, on a connection and thread of its own); return an unsubscribe that returns at once.

        After each (re)connection it rings once, since a write may have happened while it was not
        listening; a lost connection is reopened with back-off (``retry.until_stopped``).
        """
        stop = threading.Event()
        channel = self._channel(user_id)

        def listen() -> None:
            with self._connect() as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                callback()
                while not stop.is_set():
                    for note in conn.notifies(timeout=0.5):
                        if note.payload != device_id:
                            callback()

        def run() -> None:
            until_stopped(listen, stop=stop, backoff=Backoff(0.5, 30.0), transient=lambda e: True)

        threading.Thread(target=run, name="storex-sync-listen", daemon=True).start()
        return stop.set


def open_log(url: str, **options: Any) -> PostgresSharedLog:
    """The opener registered for ``postgresql://`` (and ``postgresql+psycopg://``): ``?schema=NAME``
    chooses the schema; other query parameters go to libpq."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = next((v for k, v in query if k == "schema"), DEFAULT_SCHEMA)
    libpq = [(k, v) for k, v in query if k != "schema"]
    scheme = parts.scheme.split("+", 1)[0]
    conninfo = urlunsplit((scheme, parts.netloc, parts.path, urlencode(libpq), ""))
    if not parts.path.strip("/"):
        raise ConfigurationError(
            f"{url!r} names no database", hint="use postgresql://ROLE@HOST[:PORT]/DATABASE"
        )
    kwargs = {k: v for k, v in options.items() if k == "retry"}
    return PostgresSharedLog(conninfo, schema=schema, **kwargs)


__all__ = ["PostgresSharedLog", "is_transient", "open_log"]
