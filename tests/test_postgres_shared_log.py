"""The PostgreSQL shared log beyond the contract: the server confines each user's data to that user's
role, watch wakes on LISTEN/NOTIFY, the CLI takes ``--log postgresql://`` and never stores a password."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storex_sync_firestore import SyncedDatabase, register_device
from storex_sync_firestore.continuous import ContinuousSync
from storex_sync_firestore.errors import PermanentSharedLogError, TransientSharedLogError, UnknownDeviceError
from storex_sync_firestore.retry import wait_until
from storex_sync_firestore.shared_log import open_shared_log
from storex_sync_firestore.shared_log.postgres import PostgresSharedLog, is_transient
from storex_sync_firestore.testing.conformance import drain, keys, make_batch, write
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

from .test_cli import cli

PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}


def as_role(admin_url: str, role: str, password: str | None = None) -> str:
    """The log's URL with ``role``'s credentials (libpq form, as a user would type it for --log)."""
    secret = PASSWORDS.get(role) if password is None else password
    return admin_url.replace("postgresql+psycopg://postgres@", f"postgresql://{role}:{secret}@")


@pytest.fixture
def log_url(postgres_urls: Callable[[], str]) -> Iterator[str]:
    """A database holding a shared log set up by the administrator, with login roles alice and bob."""
    url = postgres_urls()
    admin = open_shared_log(url)
    assert isinstance(admin, PostgresSharedLog)
    for user, password in PASSWORDS.items():
        admin.add_user(user, password)
    admin.close()
    yield url


def test_one_users_credentials_cannot_read_or_write_anothers(log_url: str) -> None:
    alice, bob = (open_shared_log(as_role(log_url, u)) for u in ("alice", "bob"))
    a = alice.create_device_id(user_id="alice", public_key=bytes(32))
    batch = make_batch(a, 1, 3, user_id="alice")
    write(alice, batch, user_id="alice")
    alice.put_key_record(user_id="alice", record={"v": 1, "kid": "k1", "wrapped": b"key"})
    b = bob.create_device_id(user_id="bob")

    # Through the log's API, naming alice: nothing to read, and every write refused or without effect.
    assert bob.get_device_info(user_id="alice", device_id=a) is None
    assert bob.list_devices(user_id="alice") == [] and bob.list_batches(user_id="alice") == []
    assert bob.get_key_record(user_id="alice") is None
    with pytest.raises(UnknownDeviceError):
        bob.get_unsynced_batches(user_id="alice", device_id=a)
    for attempt in (
        lambda: bob.write_batches([make_batch(b, 9, 1, user_id="alice")], user_id="alice", device_id=b),
        lambda: bob.create_device_id(user_id="alice"),
        lambda: bob.put_key_record(user_id="alice", record={"v": 1, "kid": "evil"}),
    ):
        with pytest.raises(PermanentSharedLogError, match="confines each user's data"):
            attempt()
    assert bob.delete_batches([batch.batch_id], user_id="alice").documents_written == 0
    assert not bob.put_key_record(user_id="alice", record={"v": 1, "kid": "evil"}, replaces="k1")

    # Whatever SQL bob's credentials send: the server shows and changes none of alice's rows.
    with psycopg.connect(as_role(log_url, "bob"), autocommit=True) as conn:
        for table in ("devices", "batches", "key_records", "heads"):
            assert conn.execute(
                f"SELECT count(*) FROM storex_sync.{table} WHERE user_id <> 'bob'"
            ).fetchone() == (0,)
        assert conn.execute("UPDATE storex_sync.devices SET marker = 0 WHERE user_id = 'alice'").rowcount == 0
        assert conn.execute("DELETE FROM storex_sync.batches").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO storex_sync.batches (user_id, seq, batch_id, entries, fields) "
                "VALUES ('alice', 99, 'forged', 1, '{}')"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE storex_sync.batches DISABLE ROW LEVEL SECURITY")
    with pytest.raises(PermanentSharedLogError, match="refused the connection"):
        open_shared_log(as_role(log_url, "bob", password="guessed"), retry=None).list_batches(user_id="alice")

    # Alice's data is intact, and hers to read.
    assert keys(drain(alice, a, user_id="alice")) == keys([batch])
    assert dict(alice.get_key_record(user_id="alice") or {})["kid"] == "k1"
    for log in (alice, bob):
        log.close()  # type: ignore[attr-defined]


def test_errors_are_judged_transient_or_permanent(log_url: str) -> None:
    closed = log_url.rsplit(":", 1)[0] + ":1/nowhere"  # nothing listens on port 1
    with pytest.raises(TransientSharedLogError):
        open_shared_log(closed.replace("+psycopg", ""), retry=None).list_batches(user_id="alice")
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(as_role(log_url, "alice", password="wrong"))
    assert not is_transient(refused.value)


def make_device(path: Path, log: Any, user: str) -> SyncedDatabase:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT)")
    conn.close()
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync(["notes"])
    register_device(db, log, user_id=user)
    return db


def test_watch_wakes_on_notify_not_by_polling(log_url: str, tmp_path: Path) -> None:
    log = open_shared_log(as_role(log_url, "alice"))
    db_a, db_b = (make_device(tmp_path / f"{n}.db", log, "alice") for n in "ab")
    rang = threading.Event()
    unsubscribe = log.subscribe(user_id="alice", device_id="listener", callback=rang.set)  # type: ignore[attr-defined]
    assert rang.wait(5)  # rings once on connecting: a write may have come before it listened
    rang.clear()
    runner = ContinuousSync(db_a, log, remote_poll_interval=600)  # polling would take ten minutes
    runner.start()
    try:
        assert runner._unsubscribe is not None, "watch uses the backend's subscribe"
        runner.sync_now(timeout=10)
        with sqlite3.connect(tmp_path / "b.db") as conn:
            conn.execute("INSERT INTO notes VALUES ('n1', 'written on b')")
        conn.close()
        from storex_sync_firestore import do_sync

        do_sync(db_b, log)
        assert rang.wait(5), "the listener heard b's write"

        def arrived() -> bool:
            with sqlite3.connect(tmp_path / "a.db") as conn:
                return conn.execute("SELECT title FROM notes").fetchall() == [("written on b",)]

        assert wait_until(arrived, timeout=10, interval=0.05), "a's watch applied it after the NOTIFY"
    finally:
        runner.stop()
        unsubscribe()
        log.close()  # type: ignore[attr-defined]


def test_the_cli_syncs_through_postgresql_and_never_stores_the_password(log_url: str, tmp_path: Path) -> None:
    dbs = [tmp_path / "laptop.db", tmp_path / "till.db"]
    for path in dbs:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT)")
        conn.close()
        cli(
            "init",
            "--db",
            f"sqlite:///{path}",
            "--tables",
            "notes",
            "--user",
            "alice",
            "--log",
            as_role(log_url, "alice"),
        )
    with sqlite3.connect(dbs[0]) as conn:
        conn.execute("INSERT INTO notes VALUES ('n1', 'through the shop server')")
    conn.close()
    status = cli("status", "--db", f"sqlite:///{dbs[0]}", "--json")
    assert "postgresql://alice@" in status.stdout and PASSWORDS["alice"] not in status.stdout
    for path in dbs:
        raw = path.read_bytes()
        assert PASSWORDS["alice"].encode() not in raw, "the password is not kept in the database"
    refused = cli("sync", "--db", f"sqlite:///{dbs[0]}", check=False)
    assert refused.returncode == 1 and "PGPASSWORD" in refused.stderr, refused.stderr
    password = {"PGPASSWORD": PASSWORDS["alice"]}
    for path in [*dbs, *dbs]:
        cli("sync", "--db", f"sqlite:///{path}", env={**os.environ, **password})
    with sqlite3.connect(dbs[1]) as conn:
        assert conn.execute("SELECT id, title FROM notes").fetchall() == [("n1", "through the shop server")]
    conn.close()


def test_the_demo_runs_through_postgresql(log_url: str) -> None:
    without_password = as_role(log_url, "bob").replace(f":{PASSWORDS['bob']}@", "@")
    proc = cli(
        "demo", "--log", without_password, "--user", "bob", env={**os.environ, "PGPASSWORD": PASSWORDS["bob"]}
    )
    assert "converged: both devices hold the same notes" in proc.stdout
    assert "Firestore" not in proc.stdout


def test_a_forged_row_in_the_server_is_set_aside_and_the_rest_syncs(log_url: str, tmp_path: Path) -> None:
    """Someone with write access to the tables (a superuser, a restored dump) stores rows that are not
    batches, or batches whose fields do not decode: the readers set them aside and go on."""
    from storex_sync_firestore import do_sync

    log = open_shared_log(as_role(log_url, "alice"))
    db_a, db_b = (make_device(tmp_path / f"{n}.db", log, "alice") for n in "ab")
    with sqlite3.connect(tmp_path / "a.db") as conn:
        conn.execute("INSERT INTO notes VALUES ('before', 'x')")
    conn.close()
    do_sync(db_a, log)
    admin = log_url.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        (last,) = conn.execute(
            "SELECT last_seq FROM storex_sync.heads WHERE user_id = 'alice'"
        ).fetchone() or (0,)
        for i, fields in enumerate(
            ['{"p": {"$b": "not hex"}, "v": 2}', '{"v": [1, {"$m": 5}], "count": -3}']
        ):
            conn.execute(
                "INSERT INTO storex_sync.batches (user_id, seq, batch_id, entries, fields) "
                "VALUES ('alice', %s, %s, 1, %s::jsonb)",
                [last + 1 + i, f"forged-{i}", fields],
            )
        conn.execute("UPDATE storex_sync.heads SET last_seq = %s WHERE user_id = 'alice'", [last + 2])
    with sqlite3.connect(tmp_path / "a.db") as conn:
        conn.execute("INSERT INTO notes VALUES ('after', 'y')")
    conn.close()
    do_sync(db_a, log)
    summary = do_sync(db_b, log)
    assert summary.set_aside == 2
    with sqlite3.connect(tmp_path / "b.db") as conn:
        assert sorted(conn.execute("SELECT id FROM notes")) == [("after",), ("before",)]
    conn.close()
    log.close()  # type: ignore[attr-defined]


def test_the_listener_reconnects_after_losing_its_connection(log_url: str) -> None:
    log = open_shared_log(as_role(log_url, "alice"))
    a = log.create_device_id(user_id="alice")
    rang = threading.Semaphore(0)
    unsubscribe = log.subscribe(user_id="alice", device_id="listener", callback=rang.release)  # type: ignore[attr-defined]
    try:
        assert rang.acquire(timeout=5)
        with psycopg.connect(log_url.replace("+psycopg", ""), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%'"
            ).fetchall()
        assert killed, "the listener's connection was found"
        assert rang.acquire(timeout=10), "it reconnected, and rang for what it may have missed"
        write(log, make_batch(a, 1, 1, user_id="alice"), user_id="alice")
        assert rang.acquire(timeout=5), "and hears writes again"
    finally:
        unsubscribe()
        log.close()  # type: ignore[attr-defined]
