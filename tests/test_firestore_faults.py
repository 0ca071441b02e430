"""Faults on a real emulator: transient errors, lost answers, crashes after commit, an emulator restart.

pytest-mock only injects the fault (a commit that raises, or lands and then raises); Firestore is real.
Nothing may be lost and nothing duplicated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1.batch import WriteBatch
from pytest_mock import MockerFixture

from storex_sync_firestore.errors import PermanentSharedLogError, TransientSharedLogError
from storex_sync_firestore.models import StoredBatch
from storex_sync_firestore.retry import RetryPolicy
from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog
from storex_sync_firestore.testing.conformance import drain, keys, make_batch
from storex_sync_firestore.testing.emulator import FirestoreEmulator

FAST = RetryPolicy(initial_wait=0.01, max_wait=0.05, total_timeout=5.0)


@pytest.fixture
def log(firestore_client: Any) -> FirestoreSharedLog:
    return FirestoreSharedLog(firestore_client, retry=FAST)


def test_a_transient_commit_error_is_retried(log: FirestoreSharedLog, mocker: MockerFixture) -> None:
    a, b = log.create_device_id(user_id="u"), log.create_device_id(user_id="u")
    real = WriteBatch.commit
    failures = [gexc.ServiceUnavailable("blip")]

    def fail_once(self: WriteBatch, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(self, *args, **kwargs)

    mocker.patch.object(WriteBatch, "commit", fail_once)
    batch = make_batch(a, 1, 3, user_id="u")
    assert log.write_batches([batch], user_id="u", device_id=a).documents_written == 1
    assert log.stats.retries == 1
    mocker.stopall()
    assert keys(drain(log, b, user_id="u")) == keys([batch])


def test_a_lost_commit_answer_is_a_no_op_retry(log: FirestoreSharedLog, mocker: MockerFixture) -> None:
    """The commit lands, then its answer is lost (DEADLINE_EXCEEDED): the retry finds it, writes nothing."""
    a, b = log.create_device_id(user_id="u"), log.create_device_id(user_id="u")
    real = WriteBatch.commit
    calls = {"n": 0}

    def land_then_fail(self: WriteBatch, *args: Any, **kwargs: Any) -> Any:
        result = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise gexc.DeadlineExceeded("answer lost")
        return result

    mocker.patch.object(WriteBatch, "commit", land_then_fail)
    batch = make_batch(a, 1, 5, user_id="u")
    assert log.write_batches([batch], user_id="u", device_id=a).documents_written == 0
    mocker.stopall()
    assert keys(drain(log, b, user_id="u")) == keys([batch])


def test_a_crash_after_commit_then_repeating_the_upload_duplicates_nothing(log: FirestoreSharedLog) -> None:
    """The caller crashed before recording the upload and repeats it with the same list (its upload plan)."""
    a, b = log.create_device_id(user_id="u"), log.create_device_id(user_id="u")
    plan = [make_batch(a, 1, 4, user_id="u"), make_batch(a, 5, 2, user_id="u")]
    assert log.write_batches(plan[:1], user_id="u", device_id=a).documents_written == 1
    # -- crash here: the caller did not record plan[0] as shared; after restart it repeats the whole plan --
    restarted = FirestoreSharedLog(log.client, retry=FAST)
    assert restarted.write_batches(plan, user_id="u", device_id=a).documents_written == 1
    assert keys(drain(restarted, b, user_id="u")) == keys(plan)


def test_retries_stop_within_the_total_time(log: FirestoreSharedLog, mocker: MockerFixture) -> None:
    a = log.create_device_id(user_id="u")
    mocker.patch.object(WriteBatch, "commit", side_effect=gexc.ResourceExhausted("quota"))
    slow = log.with_options(retry=RetryPolicy(initial_wait=0.05, max_wait=0.2, total_timeout=1.0))
    started = time.monotonic()
    with pytest.raises(TransientSharedLogError, match="ResourceExhausted") as info:
        slow.write_batches([make_batch(a, 1, 1, user_id="u")], user_id="u", device_id=a)
    assert time.monotonic() - started < 2.0
    assert isinstance(info.value.__cause__, gexc.ResourceExhausted)
    assert slow.stats.retries >= 2


def test_an_oversized_commit_fails_fast_instead_of_hanging(log: FirestoreSharedLog) -> None:
    a = log.create_device_id(user_id="u")
    full = make_batch(a, 1, 1, user_id="u")
    big = [StoredBatch(f"{full.batch_id}{i}", {**full.fields, "p": bytes(1_000_000)}) for i in range(5)]
    started = time.monotonic()
    with pytest.raises(PermanentSharedLogError, match="one atomic write"):
        log.write_batches(big, user_id="u", device_id=a)
    assert time.monotonic() - started < 10


def test_permanent_errors_are_not_retried(log: FirestoreSharedLog, mocker: MockerFixture) -> None:
    a = log.create_device_id(user_id="u")
    commit = mocker.patch.object(WriteBatch, "commit", side_effect=gexc.InvalidArgument("too big"))
    with pytest.raises(PermanentSharedLogError, match="invalid") as info:
        log.write_batches([make_batch(a, 1, 1, user_id="u")], user_id="u", device_id=a)
    assert commit.call_count == 1 and info.value.hint


@pytest.fixture
def private_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FirestoreEmulator]:
    """A second emulator on its own free port, so stopping it leaves the session emulator alone."""
    emulator = FirestoreEmulator()
    emulator.start()
    yield emulator
    emulator.stop()


def test_emulator_stopped_mid_upload_and_restarted(
    private_emulator: FirestoreEmulator,
    firestore_emulator: FirestoreEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mocker: MockerFixture,
) -> None:
    """Three writers upload while the emulator goes down (data exported) and comes back; a fourth reads."""
    project = "demo-restart"
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", private_emulator.host_port)
    client = firestore.Client(project=project, credentials=AnonymousCredentials())
    patient = RetryPolicy(initial_wait=0.1, max_wait=1.0, total_timeout=90.0, max_attempts=200)
    log = FirestoreSharedLog(client, retry=patient, timeout=5.0, settle_time=timedelta(seconds=1))
    writers = [log.create_device_id(user_id="u") for _ in range(3)]
    reader = log.create_device_id(user_id="u")
    per_writer, commits = 12, {"n": 0}
    paused, resume = threading.Event(), threading.Event()
    real = WriteBatch.commit
    lock = threading.Lock()

    def commit(self: WriteBatch, *args: Any, **kwargs: Any) -> Any:
        with lock:
            commits["n"] += 1
            if commits["n"] == 10:  # hold one upload while the emulator is taken down
                paused.set()
        if commits["n"] == 10:
            resume.wait(30)
        return real(self, *args, **kwargs)

    mocker.patch.object(WriteBatch, "commit", commit)

    def upload(device: str) -> None:
        for i in range(per_writer):
            log.write_batches([make_batch(device, 1 + i * 3, 3, user_id="u")], user_id="u", device_id=device)

    threads = [threading.Thread(target=upload, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    received = drain(log, reader, user_id="u", batch_size=5)
    assert paused.wait(30)
    seed = private_emulator.export(project, tmp_path / "export")
    private_emulator.stop()
    resume.set()  # the held commit (and the others) now fail with UNAVAILABLE and retry
    time.sleep(2.0)
    restarted = FirestoreEmulator(port=private_emulator.port, seed_from_export=seed)
    restarted.start()
    try:
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        received += drain(log, reader, user_id="u", batch_size=5)
        time.sleep(1.1)  # past the settle time, then once more: nothing new may appear
        received += drain(log, reader, user_id="u", batch_size=5)
    finally:
        restarted.stop()
    got = keys(received)
    expected = {(w, 1 + i) for w in writers for i in range(per_writer * 3)}
    assert len(got) == len(set(got)), "an entry was delivered twice"
    assert set(got) == expected, "an entry was lost"
    assert log.stats.retries > 0
    assert firestore_emulator.is_ready(), "the session emulator must survive"
