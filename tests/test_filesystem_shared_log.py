"""The filesystem shared log: what only a folder can get wrong (the contract is in test_conformance.py)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

from storex_sync_firestore.shared_log.filesystem import FilesystemSharedLog
from storex_sync_firestore.testing.conformance import (
    USER,
    drain,
    keys,
    make_batch,
    write,
)


def _upload(folder: str, device_id: str, rounds: int) -> None:
    log = FilesystemSharedLog(folder)
    for i in range(rounds):
        write(log, make_batch(device_id, 1 + i * 2, 2))


def test_two_processes_appending_never_lose_or_skip_a_batch(tmp_path: Path) -> None:
    """Separate processes share nothing but the folder: the flock-assigned sequence must order them."""
    log = FilesystemSharedLog(tmp_path)
    writers = [log.create_device_id(user_id=USER) for _ in range(2)]
    reader = log.create_device_id(user_id=USER)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_upload, args=(str(tmp_path), w, 25)) for w in writers]
    for p in procs:
        p.start()
    got = []
    while any(p.is_alive() for p in procs):
        got.extend(drain(log, reader, batch_size=5))
    for p in procs:
        p.join()
        assert p.exitcode == 0
    got.extend(drain(log, reader, batch_size=5))
    assert sorted(keys(got)) == sorted((w, h) for w in writers for h in range(1, 51))
    assert len(keys(got)) == len(set(keys(got)))


def test_batches_are_whole_immutable_files_and_retries_write_nothing(tmp_path: Path) -> None:
    log = FilesystemSharedLog(tmp_path)
    a = log.create_device_id(user_id=USER)
    batch = make_batch(a, 7, 3)
    assert write(log, batch) == 1
    assert write(log, batch) == 0
    files = sorted(p.name for p in (tmp_path / USER / "batches").iterdir())
    assert files == [f"000000000001_{batch.batch_id}.batch"]
    assert not list(tmp_path.rglob(".tmp-*"))


def test_a_gap_in_the_sequence_ends_the_page(tmp_path: Path) -> None:
    """A listing that raced a rename may show seq 2 without seq 1: the reader must wait, not skip 1."""
    log = FilesystemSharedLog(tmp_path)
    a, b = log.create_device_id(user_id=USER), log.create_device_id(user_id=USER)
    write(log, make_batch(a, 1, 1))
    write(log, make_batch(a, 2, 1))
    batches = tmp_path / USER / "batches"
    first = next(batches.glob("000000000001_*"))
    hidden = first.rename(tmp_path / "hidden")
    update = log.get_unsynced_batches(user_id=USER, device_id=b)
    assert update.batches == [] and update.has_more
    log.mark_as_seen(update, user_id=USER, device_id=b)
    hidden.rename(first)
    assert keys(drain(log, b)) == [(a, 1), (a, 2)]


def test_ids_cannot_escape_the_folder(tmp_path: Path) -> None:
    log = FilesystemSharedLog(tmp_path / "log")
    a = log.create_device_id(user_id="../evil")
    assert log.get_device_info(user_id="../evil", device_id=a) is not None
    assert not (tmp_path / "evil").exists()


def test_malformed_batch_files_are_set_aside(make_devices: Any, tmp_path: Path) -> None:
    """A batch file this package did not write is set aside; later batches and local changes still flow."""
    log = FilesystemSharedLog(tmp_path / "log")
    a, b = make_devices(2, log=log)
    batches = tmp_path / "log" / "alice" / "batches"
    (batches / f"{1:012d}_{a.device_id}_0_0_1.json").write_text(
        json.dumps(
            {"device_id": a.device_id, "shared_at": "2024-01-01T00:00:00+00:00", "hlc": ["x"], "data": [1]}
        )
    )
    (batches / f"{2:012d}_{a.device_id}_1_1_1.json").write_text("{ not json")
    (batches / f"{3:012d}_{a.device_id}-0000000000000001-0000000000000000.batch").write_bytes(b"\x00\x01")
    a.sql("INSERT INTO notes VALUES ('later', 't', NULL, 1)")
    a.sync()
    b.sql("INSERT INTO notes VALUES ('local', 't', NULL, 2)")
    summary = b.sync()
    assert summary.set_aside == 3 and summary.sent == 1
    assert [r[0] for r in b.rows("notes")] == ["later", "local"]
