"""The in-memory shared log passes the conformance suite that every backend runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storex_sync_firestore import MemorySharedLog
from storex_sync_firestore.testing.conformance import SharedSyncLogConformance


class TestMemorySharedLog(SharedSyncLogConformance):
    @pytest.fixture
    def shared_log(self) -> Iterator[MemorySharedLog]:
        yield MemorySharedLog()
