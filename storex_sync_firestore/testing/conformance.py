"""The ``SharedSyncLog`` contract as a test suite that every backend runs.

Subclass :class:`SharedSyncLogConformance` in a test module and provide a ``shared_log`` fixture that
yields a fresh, empty backend; pytest collects every ``test_*`` method for it::

    class TestMyLog(SharedSyncLogConformance):
        @pytest.fixture
        def shared_log(self):
            yield MyLog(...)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from ..errors import UnknownDeviceError
from ..models import StoredBatch
from ..shared_log import format as fmt
from ..shared_log.base import SharedSyncLog
from ..signing import DeviceKey

USER = "alice"


_KEY = DeviceKey(bytes(32))  # the backend stores batches; it never checks who signed them


def make_batch(device_id: str, start: int, count: int, size: int = 40, *, user_id: str = USER) -> StoredBatch:
    """A real v2 batch of ``count`` entries of ``device_id`` with clocks ``start..start+count-1``."""
    pad = "x" * max(0, size - 30)
    lines = [
        fmt.Line(hlc, f'{{"n":{hlc},"d":"{device_id[:6]}","p":"{pad}"}}')
        for hlc in range(start, start + count)
    ]
    batch_id, fields = fmt.encode_batch(lines, user_id=user_id, device_id=device_id, key=_KEY)
    return StoredBatch(batch_id, fields)


def drain(
    log: SharedSyncLog, device_id: str, *, user_id: str = USER, batch_size: int | None = None
) -> list[StoredBatch]:
    """Read and mark everything unseen for ``device_id``, page by page, as ``do_sync`` does."""
    received: list[StoredBatch] = []
    for _ in range(10_000):
        update = log.get_unsynced_batches(user_id=user_id, device_id=device_id, batch_size=batch_size)
        received.extend(update.batches)
        log.mark_as_seen(update, user_id=user_id, device_id=device_id)
        if not update.has_more:
            return received
    raise AssertionError("get_unsynced_batches never reported the end of the log")


def keys(batches: Sequence[StoredBatch], *, besides: str | None = None) -> list[tuple[str, int]]:
    """(device, clock) of every entry in ``batches``, in order; ``besides`` leaves that device's out."""
    out: list[tuple[str, int]] = []
    for batch in batches:
        opened = fmt.open_v2(batch.batch_id, batch.fields)
        if opened.device_id != besides:
            out.extend((opened.device_id, line.hlc) for line in opened.lines)
    return out


def write(log: SharedSyncLog, batch: StoredBatch, *, user_id: str = USER) -> int:
    return log.write_batches(
        [batch], user_id=user_id, device_id=batch.fields[fmt.F_DEVICE_ID]
    ).documents_written


class SharedSyncLogConformance:
    """The behaviour every backend owes ``do_sync``. Needs a ``shared_log`` fixture."""

    def test_device_ids_are_unique_and_known(self, shared_log: SharedSyncLog) -> None:
        ids = {shared_log.create_device_id(user_id=USER) for _ in range(5)}
        assert len(ids) == 5
        for device_id in ids:
            info = shared_log.get_device_info(user_id=USER, device_id=device_id)
            assert info is not None and info.device_id == device_id and info.user_id == USER
        assert shared_log.get_device_info(user_id=USER, device_id="no-such-device") is None

    def test_unknown_device_cannot_read(self, shared_log: SharedSyncLog) -> None:
        with pytest.raises(UnknownDeviceError):
            shared_log.get_unsynced_batches(user_id=USER, device_id="no-such-device")

    def test_entries_of_other_devices_are_delivered_in_upload_order(self, shared_log: SharedSyncLog) -> None:
        a, b, c = (shared_log.create_device_id(user_id=USER) for _ in range(3))
        write(shared_log, make_batch(a, 100, 3))
        write(shared_log, make_batch(b, 10, 2))  # older clock, later upload
        write(shared_log, make_batch(a, 200, 1))
        assert keys(drain(shared_log, c)) == [(a, 100), (a, 101), (a, 102), (b, 10), (b, 11), (a, 200)]
        assert keys(drain(shared_log, a), besides=a) == [(b, 10), (b, 11)]

    def test_own_batches_are_returned_too(self, shared_log: SharedSyncLog) -> None:
        # The reader checks that a batch claiming to be its own really is (its signature): it must see it.
        a = shared_log.create_device_id(user_id=USER)
        write(shared_log, make_batch(a, 1, 5))
        assert keys(drain(shared_log, a)) == [(a, i) for i in range(1, 6)]

    def test_fields_come_back_exactly_as_written(self, shared_log: SharedSyncLog) -> None:
        a, b = (shared_log.create_device_id(user_id=USER, public_key=bytes([i]) * 32) for i in (1, 2))
        batch = make_batch(a, 2**63 - 3, 3, size=500)
        odd = StoredBatch(
            f"{a}-odd", {**batch.fields, "deviceId": a + "-ünï", "firstHlc": -(2**63), "p": bytes(range(256))}
        )
        for stored in (batch, odd):
            write(shared_log, stored)
        got = drain(shared_log, b)
        assert [(g.batch_id, dict(g.fields)) for g in got] == [
            (s.batch_id, dict(s.fields)) for s in (batch, odd)
        ]
        assert all(g.shared_on is not None for g in got), "the backend says when it accepted each batch"
        info = shared_log.get_device_info(user_id=USER, device_id=a)
        assert info is not None and info.public_key == bytes([1]) * 32

    def test_same_entries_until_marked_seen(self, shared_log: SharedSyncLog) -> None:
        a, b = (shared_log.create_device_id(user_id=USER) for _ in range(2))
        write(shared_log, make_batch(a, 1, 3))
        first = shared_log.get_unsynced_batches(user_id=USER, device_id=b)
        again = shared_log.get_unsynced_batches(user_id=USER, device_id=b)
        assert keys(first.batches) == keys(again.batches) == [(a, 1), (a, 2), (a, 3)]
        shared_log.mark_as_seen(first, user_id=USER, device_id=b)
        shared_log.mark_as_seen(first, user_id=USER, device_id=b)  # twice is harmless
        assert drain(shared_log, b) == []

    def test_entries_written_between_fetch_and_mark_are_kept(self, shared_log: SharedSyncLog) -> None:
        a, b = (shared_log.create_device_id(user_id=USER) for _ in range(2))
        write(shared_log, make_batch(a, 1, 2))
        update = shared_log.get_unsynced_batches(user_id=USER, device_id=b)
        write(shared_log, make_batch(a, 3, 2))
        shared_log.mark_as_seen(update, user_id=USER, device_id=b)
        assert keys(drain(shared_log, b)) == [(a, 3), (a, 4)]

    def test_paging_delivers_everything_once_in_order(self, shared_log: SharedSyncLog) -> None:
        a, b, c = (shared_log.create_device_id(user_id=USER) for _ in range(3))
        expected = []
        for i in range(12):
            writer = a if i % 3 else b
            batch = make_batch(writer, 1000 + i * 10, 1 + i % 4)
            write(shared_log, batch)
            expected.extend(keys([batch]))
        pages: list[int] = []
        got: list[StoredBatch] = []
        for _ in range(100):
            update = shared_log.get_unsynced_batches(user_id=USER, device_id=c, batch_size=5)
            pages.append(len(update.batches))
            got.extend(update.batches)
            shared_log.mark_as_seen(update, user_id=USER, device_id=c)
            if not update.has_more:
                break
        assert keys(got) == expected
        assert len(pages) > 3, "batch_size must limit the page"

    def test_markers_are_per_device(self, shared_log: SharedSyncLog) -> None:
        a, b, c = (shared_log.create_device_id(user_id=USER) for _ in range(3))
        write(shared_log, make_batch(a, 1, 2))
        assert len(keys(drain(shared_log, b))) == 2
        assert keys(drain(shared_log, c)) == [(a, 1), (a, 2)]

    def test_rewriting_the_same_batch_is_a_no_op(self, shared_log: SharedSyncLog) -> None:
        a, b = (shared_log.create_device_id(user_id=USER) for _ in range(2))
        batch = make_batch(a, 1, 4)
        assert write(shared_log, batch) == 1
        assert write(shared_log, batch) == 0
        assert keys(drain(shared_log, b)) == keys([batch])

    def test_empty_write_does_nothing(self, shared_log: SharedSyncLog) -> None:
        a, b = (shared_log.create_device_id(user_id=USER) for _ in range(2))
        assert shared_log.write_batches([], user_id=USER, device_id=a).documents_written == 0
        assert drain(shared_log, b) == []

    def test_users_are_isolated(self, shared_log: SharedSyncLog) -> None:
        a = shared_log.create_device_id(user_id=USER)
        bob = shared_log.create_device_id(user_id="bob")
        write(shared_log, make_batch(a, 1, 2))
        assert drain(shared_log, bob, user_id="bob") == []
        assert shared_log.get_device_info(user_id="bob", device_id=a) is None

    def test_shared_until_skips_history(self, shared_log: SharedSyncLog) -> None:
        a = shared_log.create_device_id(user_id=USER)
        write(shared_log, make_batch(a, 1, 2))
        cutoff = datetime.now(UTC) + timedelta(milliseconds=5)
        late = shared_log.create_device_id(user_id=USER, shared_until=cutoff)
        info = shared_log.get_device_info(user_id=USER, device_id=late)
        assert info is not None and info.shared_until is not None
        assert abs((info.shared_until - cutoff).total_seconds()) < 0.002
        _wait_past(cutoff)
        write(shared_log, make_batch(a, 10, 1))
        assert keys(drain(shared_log, late)) == [(a, 10)]

    def test_concurrent_writers_are_never_skipped(self, shared_log: SharedSyncLog) -> None:
        writers = [shared_log.create_device_id(user_id=USER) for _ in range(3)]
        reader = shared_log.create_device_id(user_id=USER)
        expected: set[tuple[str, int]] = set()
        per_writer = 15

        def upload(device_id: str) -> None:
            for i in range(per_writer):
                write(shared_log, make_batch(device_id, 1 + i * 3, 3))

        for w in writers:
            expected.update((w, 1 + i * 3 + j) for i in range(per_writer) for j in range(3))
        threads = [threading.Thread(target=upload, args=(w,)) for w in writers]
        for t in threads:
            t.start()
        received: list[StoredBatch] = []
        while any(t.is_alive() for t in threads):
            received.extend(drain(shared_log, reader, batch_size=7))
        for t in threads:
            t.join()
        received.extend(drain(shared_log, reader, batch_size=7))
        got = keys(received, besides=reader)
        assert len(got) == len(set(got)), "an entry was delivered twice"
        assert set(got) == expected, "an entry was skipped"
        for w in writers:  # each writer's entries arrive in its own upload order
            mine = [hlc for dev, hlc in got if dev == w]
            assert mine == sorted(mine)

    def test_the_key_record_is_created_once_and_replaced_only_by_its_own_key(
        self, shared_log: SharedSyncLog
    ) -> None:
        assert shared_log.get_key_record(user_id=USER) is None
        record = {"v": 1, "kid": "k1", "salt": bytes(16), "wrapped": bytes(range(40)), "ops": 3}
        assert shared_log.put_key_record(user_id=USER, record=record)
        assert not shared_log.put_key_record(user_id=USER, record={**record, "kid": "k2"})  # one per log
        assert dict(shared_log.get_key_record(user_id=USER) or {}) == record
        rewrapped = {**record, "salt": bytes([1]) * 16}
        assert not shared_log.put_key_record(user_id=USER, record=rewrapped, replaces="k2")
        assert shared_log.put_key_record(user_id=USER, record=rewrapped, replaces="k1")
        assert dict(shared_log.get_key_record(user_id=USER) or {}) == rewrapped
        assert shared_log.get_key_record(user_id="bob") is None
        assert not shared_log.put_key_record(user_id="bob", record=record, replaces="k1")

    # ---- compaction, liveness and snapshots ----

    def test_deleted_batches_are_gone_and_markers_stay_valid(self, shared_log: SharedSyncLog) -> None:
        a, b, c = (shared_log.create_device_id(user_id=USER) for _ in range(3))
        first, second, third = make_batch(a, 1, 2), make_batch(a, 10, 1), make_batch(a, 20, 1)
        for batch in (first, second):
            write(shared_log, batch)
        assert keys(drain(shared_log, b)) == [(a, 1), (a, 2), (a, 10)]
        assert [x.batch_id for x in shared_log.list_batches(user_id=USER)] == [
            first.batch_id,
            second.batch_id,
        ]
        assert (
            shared_log.delete_batches([first.batch_id, second.batch_id], user_id=USER).documents_written == 2
        )
        assert shared_log.delete_batches([first.batch_id], user_id=USER).documents_written == 0
        assert shared_log.list_batches(user_id=USER) == []
        write(shared_log, third)
        assert keys(drain(shared_log, b)) == [(a, 20)], "a marker past deleted batches still works"
        assert keys(drain(shared_log, c)) == [(a, 20)], "a marker before them skips what is gone"
        assert write(shared_log, first) == 1  # a deleted id may be written again (a crashed resend)

    def test_devices_report_liveness(self, shared_log: SharedSyncLog) -> None:
        a, b = (shared_log.create_device_id(user_id=USER) for _ in range(2))
        before = {d.device_id: d for d in shared_log.list_devices(user_id=USER)}
        assert set(before) == {a, b} and before[a].last_seen is None and before[a].frontier == {}
        shared_log.touch_device(user_id=USER, device_id=a, frontier={a: 5, b: 2**62}, compacted={b: 7})
        shared_log.touch_device(user_id=USER, device_id=a, frontier={a: 6, b: 2**62})
        after = {d.device_id: d for d in shared_log.list_devices(user_id=USER)}
        assert after[a].last_seen is not None
        assert dict(after[a].frontier) == {a: 6, b: 2**62}
        assert dict(after[a].compacted) == {b: 7}, "left out, the compaction record is kept"
        assert after[b].last_seen is None
        assert shared_log.list_devices(user_id="bob") == []
        with pytest.raises(UnknownDeviceError):
            shared_log.touch_device(user_id=USER, device_id="no-such-device", frontier={})

    def test_snapshots_are_complete_once_their_manifest_is_written(self, shared_log: SharedSyncLog) -> None:
        a = shared_log.create_device_id(user_id=USER)
        sid = f"{a}-{1:016x}"
        chunks = [StoredBatch(f"{i:06d}", {"v": 2, "index": i, "p": bytes([i]) * 10}) for i in range(3)]
        assert (
            shared_log.write_snapshot_chunks(sid, chunks[:2], user_id=USER, device_id=a).documents_written
            == 2
        )
        assert shared_log.write_snapshot_chunks(sid, chunks, user_id=USER, device_id=a).documents_written == 1
        assert shared_log.list_snapshots(user_id=USER) == [], "no manifest: not a snapshot yet"
        manifest = StoredBatch(sid, {"v": 2, "deviceId": a, "p": b"frontier"})
        assert shared_log.write_snapshot_manifest(manifest, user_id=USER, device_id=a).documents_written == 1
        assert shared_log.write_snapshot_manifest(manifest, user_id=USER, device_id=a).documents_written == 0
        listed = shared_log.list_snapshots(user_id=USER)
        assert [(m.batch_id, dict(m.fields)) for m in listed] == [(sid, dict(manifest.fields))]
        assert listed[0].shared_on is not None
        got = shared_log.get_snapshot_chunks(sid, user_id=USER)
        assert [(c.batch_id, dict(c.fields)) for c in got] == [(c.batch_id, dict(c.fields)) for c in chunks]
        assert shared_log.list_snapshots(user_id="bob") == []
        assert shared_log.delete_snapshot(sid, user_id=USER).documents_written == 4
        assert shared_log.delete_snapshot(sid, user_id=USER).documents_written == 0
        assert shared_log.list_snapshots(user_id=USER) == []
        assert shared_log.get_snapshot_chunks(sid, user_id=USER) == []

    def test_chunks_of_an_unfinished_snapshot_can_be_deleted(self, shared_log: SharedSyncLog) -> None:
        a = shared_log.create_device_id(user_id=USER)
        sid = f"{a}-{2:016x}"
        chunk = StoredBatch("000000", {"v": 2, "p": b"x"})
        shared_log.write_snapshot_chunks(sid, [chunk], user_id=USER, device_id=a)
        assert shared_log.delete_snapshot(sid, user_id=USER).documents_written == 1
        assert shared_log.get_snapshot_chunks(sid, user_id=USER) == []


def _wait_past(instant: datetime) -> None:
    from ..retry import wait_until

    assert wait_until(lambda: datetime.now(UTC) > instant, timeout=5.0, interval=0.001)
