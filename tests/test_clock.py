"""Hybrid logical clock: unique, monotonic, moved past received timestamps, no busy-waiting."""

from __future__ import annotations

from typing import Any

from storex_sync_firestore import HybridLogicalClock
from storex_sync_firestore.clock import wall_clock_ms, wall_ms_of
from storex_sync_firestore.validate import MAX_AHEAD_MS

from .conftest import DeviceFactory

HOUR_MS = 3_600_000


class FakeWall:
    """A settable wall clock in milliseconds."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_timestamps_are_unique_without_waiting_for_the_clock() -> None:
    wall = FakeWall(1_000)
    clock = HybridLogicalClock(now_ms=wall)
    stamps = [clock.stamp() for _ in range(10_000)]  # the wall clock never moves (flaw 3.20: no busy-wait)
    assert len(set(stamps)) == 10_000
    assert stamps == sorted(stamps)


def test_clock_never_goes_backwards_when_the_wall_clock_does() -> None:
    wall = FakeWall(50_000)
    clock = HybridLogicalClock(now_ms=wall)
    before = clock.stamp()
    wall.ms -= 10_000  # NTP step back (flaw 3.10: entries were overwritten)
    after = clock.stamp()
    assert after > before


def test_receive_moves_past_remote_timestamps() -> None:
    clock = HybridLogicalClock(now_ms=FakeWall(1_000))
    remote = HybridLogicalClock(now_ms=FakeWall(1_000 + HOUR_MS)).stamp()
    clock.receive(remote)
    assert clock.stamp() > remote


def test_capture_time_later_than_now_is_capped() -> None:
    clock = HybridLogicalClock(now_ms=FakeWall(1_000))
    assert wall_ms_of(clock.stamp(wall_ms=5_000_000)) == 1_000


def test_edit_after_receiving_wins_even_with_a_clock_an_hour_behind(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2)
    now = FakeWall(wall_clock_ms())  # the shared log's clock is the real one
    a_clock = HybridLogicalClock(now_ms=now)
    b_clock = HybridLogicalClock(now_ms=lambda: now() - HOUR_MS)  # b's wall clock is an hour behind

    def sync(device: Any, clock: HybridLogicalClock) -> None:
        device.sync(clock=clock, now_ms=clock.now_ms)

    a.sql("INSERT INTO notes VALUES ('n', 'from a', NULL, 1)")
    sync(a, a_clock)
    sync(b, b_clock)
    assert b.rows("notes") == [("n", "from a", None, 1)]
    now.ms += 1_000
    b.sql("UPDATE notes SET title = 'b, after seeing a' WHERE id = 'n'")
    sync(b, b_clock)
    sync(a, a_clock)
    assert a.rows("notes") == b.rows("notes") == [("n", "b, after seeing a", None, 1)]


def test_far_future_entry_is_set_aside_not_applied(make_devices: DeviceFactory) -> None:
    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n', 'from the future', NULL, 1)")
    a.sync(clock=HybridLogicalClock(last=4_000_000_000_000 << 16))  # a's clock says year 2096
    summary = b.sync()
    assert summary.set_aside == 1 and summary.received == 0
    assert b.rows("notes") == []
    [(reason,)] = b.query("SELECT reason FROM _sync_quarantine")
    assert "ahead of the time the shared log accepted it" in reason
    assert wall_ms_of(b.query("SELECT max(hlc) FROM _sync_log")[0][0] or 0) < 4_000_000_000_000


def test_an_entry_just_inside_the_bound_is_accepted_and_moves_the_clock_at_most_that_far(
    make_devices: DeviceFactory,
) -> None:
    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n', 'a little ahead', NULL, 1)")
    ahead = wall_clock_ms() + MAX_AHEAD_MS - 60_000
    a.sync(clock=HybridLogicalClock(now_ms=lambda: ahead), now_ms=lambda: ahead)
    summary = b.sync()
    assert summary.received == 1 and summary.set_aside == 0
    assert wall_ms_of(int(b.db.state()["clock"])) <= wall_clock_ms() + MAX_AHEAD_MS
