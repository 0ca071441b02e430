"""ContinuousSync: one run at a time, queued requests, quick reaction to changes, back-off."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from storex_sync_firestore import SyncedDatabase, do_sync, register_device
from storex_sync_firestore.continuous import ContinuousSync
from storex_sync_firestore.errors import PermanentSharedLogError, TransientSharedLogError
from storex_sync_firestore.retry import Backoff
from storex_sync_firestore.shared_log.base import SharedSyncLog
from storex_sync_firestore.shared_log.filesystem import FilesystemSharedLog

USER = "alice"


def make_db(path: Path, log: SharedSyncLog) -> SyncedDatabase:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT)")
    conn.commit()
    conn.close()
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync(["notes"])
    register_device(db, log, user_id=USER)
    return db


def write(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(sql)
    conn.close()


def titles(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT id, title FROM notes"))
    finally:
        conn.close()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def log(tmp_path: Path) -> FilesystemSharedLog:
    return FilesystemSharedLog(tmp_path / "log")


@pytest.fixture
def devices(tmp_path: Path, log: FilesystemSharedLog) -> tuple[Path, SyncedDatabase, Path, SyncedDatabase]:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    return a, make_db(a, log), b, make_db(b, log)


@pytest.fixture
def started() -> Iterator[list[ContinuousSync]]:
    """Collects runners and stops them even when a test fails."""
    runners: list[ContinuousSync] = []
    yield runners
    for runner in runners:
        runner.stop()


def recorder(runner: ContinuousSync) -> list[dict[str, Any]]:
    finished: list[dict[str, Any]] = []
    runner.events.on("sync_finished", lambda **kw: finished.append(kw))
    return finished


def test_a_local_change_is_shared_soon(devices: Any, log: FilesystemSharedLog, started: list[Any]) -> None:
    a, db_a, b, db_b = devices
    runner = ContinuousSync(db_a, log, remote_poll_interval=100)
    finished = recorder(runner)
    started.append(runner.start())
    wait_for(lambda: len(finished) >= 1)  # the first sync runs at start
    write(a, "INSERT INTO notes VALUES ('1', 'typed on a')")
    took = wait_for(lambda: any(f["summary"] and f["summary"].sent for f in finished), timeout=3)
    assert took < 1.0
    do_sync(db_b, log)
    assert titles(b) == {"1": "typed on a"}


def test_another_devices_upload_is_applied_soon(
    devices: Any, log: FilesystemSharedLog, started: list[Any]
) -> None:
    a, db_a, b, db_b = devices
    started.append(ContinuousSync(db_a, log, remote_poll_interval=0.2).start())
    write(b, "INSERT INTO notes VALUES ('2', 'typed on b')")
    do_sync(db_b, log)
    assert wait_for(lambda: titles(a) == {"2": "typed on b"}, timeout=3) < 1.5


def test_a_request_during_a_run_is_queued_once_not_dropped(
    devices: Any, log: Any, started: list[Any]
) -> None:
    _a, db_a, _b, _db_b = devices
    runner = ContinuousSync(db_a, log, remote_poll_interval=100)
    release = threading.Event()
    runs: list[float] = []

    def slow_start() -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            assert release.wait(5)

    runner.events.on("sync_started", slow_start)
    finished = recorder(runner)
    started.append(runner.start())
    wait_for(lambda: len(runs) == 1)
    for _ in range(3):
        runner.request_sync()  # the original dropped these while a sync ran
    release.set()
    wait_for(lambda: len(finished) == 2)
    time.sleep(0.5)
    assert len(runs) == 2, "three requests during a run make exactly one follow-up run"
    assert len(finished) == 2


def test_sync_now_runs_after_the_call_and_returns_its_summary(
    devices: Any, log: Any, started: list[Any]
) -> None:
    a, db_a, _b, _db_b = devices
    runner = ContinuousSync(db_a, log, remote_poll_interval=100, local_poll_interval=10)
    finished = recorder(runner)
    started.append(runner.start())
    wait_for(lambda: len(finished) == 1)
    write(a, "INSERT INTO notes VALUES ('3', 'x')")  # not noticed by polling: the poll interval is 10 s
    assert runner.sync_now(timeout=5).sent == 1


def test_listeners_survive_runs(devices: Any, log: Any, started: list[Any]) -> None:
    _a, db_a, _b, _db_b = devices
    runner = ContinuousSync(db_a, log, remote_poll_interval=100)
    seen: list[str] = []
    runner.events.on("reconciled_entries", lambda **_: seen.append("r"))
    runner.events.on("sync_started", lambda: seen.append("s"))
    started.append(runner.start())
    runner.sync_now(timeout=5)
    runner.sync_now(timeout=5)
    assert seen.count("s") >= 3  # start + two sync_now: the listener was not removed after a run


class FlakyLog:
    """Wraps a log; ``get_unsynced_batches`` raises ``error`` while ``failures`` is positive."""

    def __init__(
        self,
        inner: SharedSyncLog,
        failures: int,
        error: Callable[[], BaseException] = lambda: TransientSharedLogError(
            "the network is down", hint="wait"
        ),
    ) -> None:
        self.inner, self.failures, self.error = inner, failures, error
        self.max_batch_bytes = inner.max_batch_bytes
        self.calls = 0

    def get_unsynced_batches(self, **kw: Any) -> Any:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise self.error()
        return self.inner.get_unsynced_batches(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FakeClock:
    """A monotonic clock the test moves: the back-off waits on it, so the test never waits for real."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_back_off_exponentially_then_recover(devices: Any, log: Any, started: list[Any]) -> None:
    _a, db_a, _b, _db_b = devices
    flaky, clock = FlakyLog(log, failures=4), FakeClock()
    backoff = Backoff(minimum=1.0, maximum=4.0, jitter=lambda: 1.0)
    runner = ContinuousSync(
        db_a,
        flaky,
        remote_poll_interval=100,
        local_poll_interval=0.01,
        clock=clock,
        backoff=backoff,  # type: ignore[arg-type]
    )
    finished = recorder(runner)
    started.append(runner.start())
    for n, delay in enumerate([1.0, 2.0, 4.0, 4.0], start=1):  # doubling, capped at the maximum
        wait_for(lambda n=n: len(finished) == n)  # type: ignore[misc]
        assert isinstance(finished[-1]["error"], TransientSharedLogError)
        assert runner.next_retry_in == pytest.approx(delay)
        clock.now += delay * 0.9
        time.sleep(0.05)  # some polls of the loop, on a clock that has not reached the retry time
        assert flaky.calls == n, "retried before its back-off was over"
        clock.now += delay * 0.1
    wait_for(lambda: len(finished) == 5)
    assert finished[-1]["error"] is None
    assert runner.failures == 0 and runner.next_retry_in is None and runner.running
    assert db_a.state()["last_sync"]["ok"] is True


def test_the_backoff_jitters_between_half_and_all_of_the_wait() -> None:
    assert Backoff(1.0, 60.0, jitter=lambda: 0.0).delay(3) == 2.0
    assert Backoff(1.0, 60.0, jitter=lambda: 1.0).delay(3) == 4.0
    assert Backoff(1.0, 60.0, jitter=lambda: 1.0).delay(30) == 60.0


def test_a_permanent_failure_stops_the_loop_with_the_error(
    devices: Any, log: Any, started: list[Any]
) -> None:
    _a, db_a, _b, _db_b = devices
    denied = PermanentSharedLogError("the log denied reading", hint="check the credentials")
    flaky = FlakyLog(log, failures=100, error=lambda: denied)
    runner = ContinuousSync(db_a, flaky, remote_poll_interval=100, local_poll_interval=0.01, min_backoff=0.01)  # type: ignore[arg-type]
    finished = recorder(runner)
    started.append(runner.start())
    wait_for(lambda: not runner.running)
    assert runner.error is denied and flaky.calls == 1, "retrying cannot fix a permission error"
    assert [f["error"] for f in finished] == [denied]
    assert db_a.state()["last_sync"]["ok"] is False
    with pytest.raises(PermanentSharedLogError):
        runner.sync_now(timeout=1)  # says why it stopped


class OwnError(Exception):
    """A backend's own exception type, which only the backend knows to be transient."""


def test_a_backend_names_its_own_transient_errors(devices: Any, log: Any, started: list[Any]) -> None:
    _a, db_a, _b, _db_b = devices
    flaky = FlakyLog(log, failures=2, error=lambda: OwnError("busy"))
    flaky.is_transient = lambda exc: isinstance(exc, OwnError)  # type: ignore[attr-defined]
    backoff = Backoff(minimum=0.01, maximum=0.01)
    runner = ContinuousSync(db_a, flaky, remote_poll_interval=100, local_poll_interval=0.01, backoff=backoff)  # type: ignore[arg-type]
    finished = recorder(runner)
    started.append(runner.start())
    wait_for(lambda: any(f["error"] is None for f in finished))
    assert [type(f["error"]) for f in finished] == [OwnError, OwnError, type(None)]
    assert runner.running and runner.error is None


def test_sync_now_skips_the_back_off_and_raises_the_error(devices: Any, log: Any, started: list[Any]) -> None:
    _a, db_a, _b, _db_b = devices
    flaky = FlakyLog(log, failures=100)
    runner = ContinuousSync(db_a, flaky, remote_poll_interval=100, min_backoff=30)  # type: ignore[arg-type]
    finished = recorder(runner)
    started.append(runner.start())
    wait_for(lambda: len(finished) == 1)
    with pytest.raises(TransientSharedLogError):
        runner.sync_now(timeout=2)  # would otherwise wait 15-30 s
    assert db_a.state()["last_sync"]["ok"] is False


def test_stop_waits_for_the_running_sync_and_ends_the_thread(devices: Any, log: Any) -> None:
    _a, db_a, _b, _db_b = devices
    runner = ContinuousSync(db_a, log, remote_poll_interval=100)
    in_sync = threading.Event()
    runner.events.on("sync_started", lambda: (in_sync.set(), time.sleep(0.3)))
    finished = recorder(runner)
    runner.start()
    assert in_sync.wait(5)
    runner.stop()
    assert not runner.running
    assert len(finished) == 1  # the run in progress completed; nothing started after stop


def test_start_refuses_a_database_without_a_device(tmp_path: Path, log: Any) -> None:
    from storex_sync_firestore.errors import ConfigurationError

    path = tmp_path / "plain.db"
    write(path, "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT)")
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync(["notes"])
    with pytest.raises(ConfigurationError):
        ContinuousSync(db, log).start()


def test_firestore_listener_brings_remote_changes_without_polling(
    tmp_path: Path, firestore_client: Any, started: list[Any]
) -> None:
    from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog

    fs_log = FirestoreSharedLog(firestore_client)
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    db_a, db_b = make_db(a, fs_log), make_db(b, fs_log)
    runner = ContinuousSync(
        db_b, fs_log, remote_poll_interval=100
    )  # only the listener can explain a quick sync
    finished = recorder(runner)
    started.append(runner.start())
    wait_for(lambda: len(finished) >= 1, timeout=10)
    write(a, "INSERT INTO notes VALUES ('f', 'through the listener')")
    do_sync(db_a, fs_log)
    took = wait_for(lambda: titles(b) == {"f": "through the listener"}, timeout=5)
    print(f"remote change applied {took:.3f} s after the upload")
    assert took < 2.0


def test_an_idle_watch_on_a_folder_log_runs_no_sync(
    devices: Any, log: FilesystemSharedLog, started: list[Any]
) -> None:
    """Each poll asks the log whether it holds anything new, and syncs only if so (a full idle sync per
    poll cost CPU in proportion to the database, and wrote the database every poll)."""
    a, db_a, b, db_b = devices
    runner = ContinuousSync(db_a, log, remote_poll_interval=0.05)
    runs: list[float] = []
    runner.events.on("sync_started", lambda: runs.append(time.monotonic()))
    started.append(runner.start())
    wait_for(lambda: len(runs) == 1)
    time.sleep(1.0)  # some twenty polls
    assert len(runs) == 1, f"{len(runs)} syncs while nothing changed"
    write(b, "INSERT INTO notes VALUES ('3', 'typed on b')")
    do_sync(db_b, log)
    wait_for(lambda: titles(a) == {"3": "typed on b"}, timeout=3)  # the probe saw it
    assert len(runs) == 2


def test_the_firestore_listener_is_throttled_offline_and_unsubscribes_at_once(
    firestore_client: Any, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the private google-cloud-firestore API used by ``firestore_watch._tame``: offline, ``Watch``
    re-opened its stream in a tight loop, and closing it blocked for a second, then warned."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    from storex_sync_firestore.shared_log import firestore_watch
    from storex_sync_firestore.testing.emulator import free_port

    live = firestore_client.collection("c").limit(1).on_snapshot(lambda *_: None)
    unsubscribe = firestore_watch._tame(live)
    assert live._rpc._reopen_throttle is not None  # the attribute this version of the client has
    unsubscribe()

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing answers there
    dead = firestore.Client(project="demo-offline", credentials=AnonymousCredentials())
    watch = dead.collection("c").limit(1).on_snapshot(lambda *_: None)
    unsubscribe = firestore_watch._tame(watch)
    time.sleep(0.5)
    start = time.monotonic()
    unsubscribe()
    assert time.monotonic() - start < 0.1
    time.sleep(1.5)  # the closing thread's join times out meanwhile
    assert "did not exit" not in capfd.readouterr().err  # google's loggers may not propagate: read fd 2
    dead.close()


def test_watch_stops_with_an_error_that_retrying_cannot_fix(devices: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    a, _db_a, _b, _db_b = devices
    for registration in (tmp_path / "log" / USER / "devices").iterdir():
        registration.unlink()  # the log forgot this device: UnknownDeviceError, a permanent failure
    proc = subprocess.run(
        [sys.executable, "-m", "storex_sync_firestore", "watch", "--db", f"sqlite:///{a}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "has no device" in proc.stderr and "stopped, retrying cannot fix this" in proc.stderr
    assert proc.stderr.count("has no device") == 1, proc.stderr  # reported once, not retried
