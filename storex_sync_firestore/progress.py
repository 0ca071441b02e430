"""Progress of a long sync: a live bar on a terminal, a plain log line every few seconds elsewhere.

``do_sync`` reports ``progress(stage, count)`` after every batch; :class:`SyncProgress` is such a callable.
A first sync of 100,000 rows takes minutes, and a silent terminal for that long looks like a hang; a log
file, on the other hand, must not fill with carriage returns, hence the two modes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

log = logging.getLogger(__name__)
BAR_WIDTH = 24


class SyncProgress:
    """Counts entries per stage and shows them with their rate.

    ``totals`` gives the expected count of a stage when it is known beforehand (for ``share``: the
    unshared entries), which turns the counter into a bar. ``interactive`` defaults to ``stream.isatty()``.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        totals: Mapping[str, int] | None = None,
        interactive: bool | None = None,
        log_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.totals = dict(totals or {})
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.log_every = log_every
        self.clock = clock
        self.counts: dict[str, int] = {}
        self._stage: str | None = None
        self._started = 0.0
        self._last_shown = 0.0
        self._last_report = clock()  # a stage began when the previous one ended (or at creation)

    def __call__(self, stage: str, count: int) -> None:
        now = self.clock()
        if stage != self._stage:
            self._finish_line()
            self._stage, self._started = stage, self._last_report
            self._last_shown = self._last_report
        self.counts[stage] = self.counts.get(stage, 0) + count
        self._last_report = now
        if self.interactive and now - self._last_shown >= 0.1:
            self._draw(now)
            self._last_shown = now
        elif not self.interactive and now - self._last_shown >= self.log_every:
            log.info("%s", self.line(stage, now))
            self._last_shown = now

    def line(self, stage: str, now: float | None = None) -> str:
        """``share [######------]  40,000/100,000  8,210/s``, or without a known total just the count."""
        done = self.counts.get(stage, 0)
        elapsed = max((now if now is not None else self.clock()) - self._started, 1e-6)
        rate = f"{done / elapsed:,.0f}/s"
        total = self.totals.get(stage)
        if total:
            filled = min(BAR_WIDTH, BAR_WIDTH * done // total)
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            return f"{stage:<9} [{bar}] {done:,}/{total:,}  {rate}"
        return f"{stage:<9} {done:,} entries  {rate}"

    def _draw(self, now: float) -> None:
        assert self._stage is not None
        self.stream.write("\r" + self.line(self._stage, now).ljust(70))
        self.stream.flush()

    def _finish_line(self) -> None:
        if self._stage is None:
            return
        if self.interactive:
            self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()
        elif self.clock() - self._started >= self.log_every:
            log.info("%s (done)", self.line(self._stage))

    def close(self) -> None:
        """End the last stage's line; call once the sync returned or failed."""
        self._finish_line()
        self._stage = None
