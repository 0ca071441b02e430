"""Hybrid logical clock: entry timestamps that are unique per device, never go backwards, and move past
every timestamp received, so an edit made after seeing a remote edit always wins it.

A timestamp is one integer, ``wall_ms << 16 | counter``: it sorts like the wall clock, fits in a 64-bit
column, and leaves 65,536 ticks per millisecond before the wall part is pushed ahead. No busy-waiting:
when the wall clock stands still or steps back, the counter moves on instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

COUNTER_BITS = 16


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch from the system clock (the default clock source)."""
    return time.time_ns() // 1_000_000


def wall_ms_of(hlc: int) -> int:
    """The wall-clock part of a timestamp, in milliseconds since the epoch."""
    return hlc >> COUNTER_BITS


class HybridLogicalClock:
    """One device's clock. ``last`` is the newest timestamp issued or seen; persist it between runs.

    ``now_ms`` is injectable so tests can put a device's wall clock an hour behind another's.
    """

    def __init__(self, last: int = 0, *, now_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.last = last
        self.now_ms = now_ms

    def stamp(self, wall_ms: int | None = None) -> int:
        """Issue the next timestamp for a local change captured at ``wall_ms`` (default: now).

        A capture time later than the clock's own "now" is capped to it, so a wrong database clock cannot
        push timestamps into the future either.
        """
        now = self.now_ms()
        wall = now if wall_ms is None else min(wall_ms, now)
        self.last = max(self.last + 1, wall << COUNTER_BITS)
        return self.last

    def stamp_many(self, walls: Sequence[int | None]) -> list[int]:
        """:meth:`stamp` for a run of changes in capture order, reading the wall clock once."""
        now = self.now_ms()
        last, stamps = self.last, []
        for wall_ms in walls:
            last = max(last + 1, (now if wall_ms is None else min(wall_ms, now)) << COUNTER_BITS)
            stamps.append(last)
        self.last = last
        return stamps

    def receive(self, hlc: int) -> None:
        """Move past a timestamp seen from another device.

        How far ahead a received timestamp may be is judged before this, against the shared log's clock
        (``validate.MAX_AHEAD_MS``), so every device makes the same decision about it.
        """
        self.last = max(self.last, hlc)
