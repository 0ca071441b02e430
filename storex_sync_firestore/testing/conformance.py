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
from ..models import SharedEntry
from ..shared_log.base import SharedSyncLog

USER = "alice"


def make_entries(device_id: str, start: int, count: int, size: int = 40) -> list[SharedEntry]:
    """``count`` entries of ``device_id`` with clocks ``start..start+count-1`` and ~``size``-byte payloads."""
    pad = "x" * max(0, size - 30)
    return [
        SharedEntry(device_id, hlc, f'{{"n":{hlc},"d":"{device_id[:6]}","p":"{pad}"}}')
        for hlc in range(start, start + count)
    ]


def drain(
    log: SharedSyncLog, device_id: str, *, user_id: str = USER, batch_size: int | None = None
) -> list[SharedEntry]:
    """Read and mark everything unseen for ``device_id``, page by page, as ``do_sync`` does."""
    received: list[SharedEntry] = []
    for _ in range(10_000):
        update = log.get_unsynced_entries(user_id=user_id, device_id=device_id, batch_size=batch_size)
        received.extend(update.entries)
        log.mark_as_seen(update, user_id=user_id, device_id=device_id)
        if not update.has_more:
            return received
    raise AssertionError("get_unsynced_entries never reported the end of the log")


def keys(entries: Sequence[SharedEntry]) -> list[tuple[str, int]]:
    return [(e.device_id, e.hlc) for e in entries]


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
            shared_log.get_unsynced_entries(user_id=USER, device_id="no-such-device")

    def test_entries_of_other_devices_are_delivered_in_upload_order(self, shared_log: SharedSyncLog) -> None:
        a, b, c = (shared_log.create_device_id(user_id=USER) for _ in range(3))
        shared_log.write_entries(make_entries(a, 100, 3), user_id=USER, device_id=a)
        shared_log.write_entries(
            make_entries(b, 10, 2), user_id=USER, device_id=b
        )  # older clock, later upload
        shared_log.write_entries(make_entries(a, 200, 1), user_id=USER, device_id=a)
        assert keys(drain(shared_log, c)) == [(a, 100), (a, 101), (a, 102), (b, 10), (b, 11), (a, 200)]
        assert keys(drain(shared_log, a)) == [(b, 10), (b, 11)]

    def test_own_entries_are_never_returned(self, shared_log: SharedSyncLog) -> None:
        a = shared_log.create_device_id(user_id=USER)
        shared_log.write_entries(make_entries(a, 1, 5), user_id=USER, device_id=a)
        assert drain(shared_log, a) == []

    def test_same_entries_until_marked_seen(self, shared_log: SharedSyncLog) -> None:
        a, b = (shared_log.create_device_id(user_id=USER) for _ in range(2))
        shared_log.write_entries(make_entries(a, 1, 3), user_id=USER, device_id=a)
        first = shared_log.get_unsynced_entries(user_id=USER, device_id=b)
        again = shared_log.get_unsynced_entries(user_id=USER, device_id=b)
        assert keys(first.entries) == keys(again.entries) == [(a, 1), (a, 2), (a, 3)]
        shared_log.mark_as_seen(first, user_id=USER, device_id=b)
        shared_log.mark_as_seen(first, user_id=USER, device_id=b)  # twice is harmless
        assert drain(shared_log, b) == []

    def test_entries_written_between_fetch_and_mark_are_kept(self, shared_log: SharedSyncLog) -> None:
        a, b = (shared_log.create_device_id(user_id=USER) for _ in range(2))
        shared_log.write_entries(make_entries(a, 1, 2), user_id=USER, device_id=a)
        update = shared_log.get_unsynced_entries(user_id=USER, device_id=b)
        shared_log.write_entries(make_entries(a, 3, 2), user_id=USER, device_id=a)
        shared_log.mark_as_seen(update, user_id=USER, device_id=b)
        assert keys(drain(shared_log, b)) == [(a, 3), (a, 4)]

    def test_paging_delivers_everything_once_in_order(self, shared_log: SharedSyncLog) -> None:
        a, b, c = (shared_log.create_device_id(user_id=USER) for _ in range(3))
        expected = []
        for i in range(12):
            writer = a if i % 3 else b
            batch = make_entries(writer, 1000 + i * 10, 1 + i % 4)
            shared_log.write_entries(batch, user_id=USER, device_id=writer)
            expected.extend(keys(batch))
        pages: list[int] = []
        got: list[SharedEntry] = []
        for _ in range(100):
            update = shared_log.get_unsynced_entries(user_id=USER, device_id=c, batch_size=5)
            pages.append(len(update.entries))
            got.extend(update.entries)
            shared_log.mark_as_seen(update, user_id=USER, device_id=c)
            if not update.has_more:
                break
        assert keys(got) == expected
        assert len(pages) > 3, "batch_size must limit the page"

    def test_markers_are_per_device(self, shared_log: SharedSyncLog) -> None:
        a, b, c = (shared_log.create_device_id(user_id=USER) for _ in range(3))
        shared_log.write_entries(make_entries(a, 1, 2), user_id=USER, device_id=a)
        assert len(drain(shared_log, b)) == 2
        assert keys(drain(shared_log, c)) == [(a, 1), (a, 2)]

    def test_rewriting_the_same_batch_is_a_no_op(self, shared_log: SharedSyncLog) -> None:
        a, b = (shared_log.create_device_id(user_id=USER) for _ in range(2))
        batch = make_entries(a, 1, 4)
        first = shared_log.write_entries(batch, user_id=USER, device_id=a)
        second = shared_log.write_entries(batch, user_id=USER, device_id=a)
        assert first.documents_written >= 1
        assert second.documents_written == 0
        assert keys(drain(shared_log, b)) == keys(batch)

    def test_empty_write_does_nothing(self, shared_log: SharedSyncLog) -> None:
        a, b = (shared_log.create_device_id(user_id=USER) for _ in range(2))
        assert shared_log.write_entries([], user_id=USER, device_id=a).documents_written == 0
        assert drain(shared_log, b) == []

    def test_users_are_isolated(self, shared_log: SharedSyncLog) -> None:
        a = shared_log.create_device_id(user_id=USER)
        bob = shared_log.create_device_id(user_id="bob")
        shared_log.write_entries(make_entries(a, 1, 2), user_id=USER, device_id=a)
        assert drain(shared_log, bob, user_id="bob") == []
        assert shared_log.get_device_info(user_id="bob", device_id=a) is None

    def test_shared_until_skips_history(self, shared_log: SharedSyncLog) -> None:
        a = shared_log.create_device_id(user_id=USER)
        shared_log.write_entries(make_entries(a, 1, 2), user_id=USER, device_id=a)
        cutoff = datetime.now(UTC) + timedelta(milliseconds=5)
        late = shared_log.create_device_id(user_id=USER, shared_until=cutoff)
        info = shared_log.get_device_info(user_id=USER, device_id=late)
        assert info is not None and info.shared_until is not None
        assert abs((info.shared_until - cutoff).total_seconds()) < 0.002
        _wait_past(cutoff)
        shared_log.write_entries(make_entries(a, 10, 1), user_id=USER, device_id=a)
        assert keys(drain(shared_log, late)) == [(a, 10)]

    def test_concurrent_writers_are_never_skipped(self, shared_log: SharedSyncLog) -> None:
        writers = [shared_log.create_device_id(user_id=USER) for _ in range(3)]
        reader = shared_log.create_device_id(user_id=USER)
        expected: set[tuple[str, int]] = set()
        per_writer = 15

        def upload(device_id: str) -> None:
            for i in range(per_writer):
                shared_log.write_entries(make_entries(device_id, i * 3, 3), user_id=USER, device_id=device_id)

        for w in writers:
            expected.update((w, i * 3 + j) for i in range(per_writer) for j in range(3))
        threads = [threading.Thread(target=upload, args=(w,)) for w in writers]
        for t in threads:
            t.start()
        received: list[SharedEntry] = []
        while any(t.is_alive() for t in threads):
            received.extend(drain(shared_log, reader, batch_size=7))
        for t in threads:
            t.join()
        received.extend(drain(shared_log, reader, batch_size=7))
        got = keys(received)
        assert len(got) == len(set(got)), "an entry was delivered twice"
        assert set(got) == expected, "an entry was skipped"
        for w in writers:  # each writer's entries arrive in its own upload order
            mine = [hlc for dev, hlc in got if dev == w]
            assert mine == sorted(mine)


def _wait_past(instant: datetime) -> None:
    import time

    while datetime.now(UTC) <= instant:
        time.sleep(0.001)
