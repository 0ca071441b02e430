"""retry.py, the one place that tries again: policies on injected clock and sleep, the bounded race loop."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from storex_sync_firestore import sync
from storex_sync_firestore.errors import (
    ContendedError,
    PermanentSharedLogError,
    SchemaChangedError,
    TransientSharedLogError,
)
from storex_sync_firestore.retry import RetryPolicy, bounded_retries, classify, is_transient, patiently

from .conftest import DeviceFactory, assert_converged


class Time:
    """A clock and a sleep that moves it: nothing waits for real."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(times: int, error: BaseException) -> Any:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "done"

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def test_the_policy_retries_transient_errors_within_its_time_on_the_injected_clock() -> None:
    t = Time()
    fn = failing(3, TransientSharedLogError("busy"))
    assert RetryPolicy(initial_wait=1.0).call(fn, sleep=t.sleep, clock=t.clock) == "done"
    assert len(t.slept) == 3
    t = Time()
    fn = failing(100, TransientSharedLogError("busy"))
    with pytest.raises(TransientSharedLogError):
        RetryPolicy(initial_wait=5.0, max_wait=5.0, total_timeout=12.0).call(fn, sleep=t.sleep, clock=t.clock)
    assert t.now < 12.0 + 5.0 and len(fn.calls) < 12, "stopped by total_timeout on the injected clock"


def test_the_policy_does_not_retry_permanent_errors() -> None:
    t = Time()
    fn = failing(1, PermanentSharedLogError("denied"))
    with pytest.raises(PermanentSharedLogError):
        RetryPolicy().call(fn, sleep=t.sleep, clock=t.clock)
    assert len(fn.calls) == 1 and t.slept == []


def test_what_is_transient() -> None:
    assert is_transient(TransientSharedLogError("x")) and is_transient(ContendedError("x"))
    assert not is_transient(PermanentSharedLogError("x")) and not is_transient(SchemaChangedError("x"))
    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert is_transient(OperationalError("SELECT 1", {}, Exception("server closed the connection")))
    assert not is_transient(ValueError("a bug"))

    class Backend:
        def is_transient(self, exc: BaseException) -> bool:
            return isinstance(exc, KeyError)

    assert classify(KeyError("x"), Backend()) and not classify(KeyError("x"), object())


def test_patiently_waits_while_busy_then_gives_up_on_the_injected_clock() -> None:
    t = Time()
    busy = failing(3, BlockingIOError())
    assert patiently(busy, busy=lambda e: isinstance(e, BlockingIOError), patience=1.0, **vars_(t)) == "done"
    assert t.slept == [0.005, 0.01, 0.02]  # doubling
    t = Time()
    always = failing(1000, BlockingIOError())
    assert patiently(always, busy=lambda e: isinstance(e, BlockingIOError), patience=1.0, **vars_(t)) is None
    assert 1.0 <= t.now < 1.2 and max(t.slept) == 0.1
    with pytest.raises(ValueError):  # not busy: raised at once
        patiently(failing(1, ValueError()), busy=lambda e: isinstance(e, BlockingIOError), patience=1.0)


def vars_(t: Time) -> dict[str, Any]:
    return {"sleep": t.sleep, "clock": t.clock}


def test_bounded_retries_end_in_the_given_error() -> None:
    t = Time()
    fn = failing(1000, KeyError("lost"))
    with pytest.raises(ContendedError) as raised:
        bounded_retries(
            fn, lost=KeyError, attempts=5, give_up=lambda n: ContendedError(f"{n}"), sleep=t.sleep
        )
    assert len(fn.calls) == 5 and isinstance(raised.value.__cause__, KeyError)


def test_a_reconcile_pass_raced_every_time_ends_in_a_clear_error_and_loses_nothing(
    make_devices: DeviceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n1', 'from a', NULL, 1)")
    a.sync()
    # Fault injection: an application write races every pass (before: an endless loop).
    monkeypatch.setattr(sync, "_written_meanwhile", lambda *args: True)
    monkeypatch.setattr(sync, "RACE_ATTEMPTS", 3)
    with pytest.raises(ContendedError, match="during each of 3 attempts") as raised:
        b.sync()
    assert raised.value.transient
    assert b.rows("notes") == []  # every pass rolled back whole
    monkeypatch.undo()
    b.sync()
    assert assert_converged([a, b])["notes"] == [("n1", "from a", None, 1)]


def test_the_folder_log_names_its_transient_errors(tmp_path: Any) -> None:
    import errno

    from storex_sync_firestore.shared_log.filesystem import FilesystemSharedLog

    log = FilesystemSharedLog(tmp_path)
    assert classify(OSError(errno.ESTALE, "stale file handle"), log)
    assert classify(OSError(errno.EHOSTDOWN, "host is down"), log)
    assert not classify(PermissionError(errno.EACCES, "permission denied"), log)
    assert not classify(OSError(errno.ENOSPC, "no space left"), log)
