"""The shared-log contract, run against FirestoreSharedLog on the emulator (never skipped)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog
from storex_sync_firestore.testing.conformance import SharedSyncLogConformance


class TestFirestoreConformance(SharedSyncLogConformance):
    @pytest.fixture
    def shared_log(self, firestore_client: Any) -> Iterator[FirestoreSharedLog]:
        yield FirestoreSharedLog(firestore_client)


class TestFirestoreConformanceShortSettle(SharedSyncLogConformance):
    """Same contract with a settle time close to the emulator's measured commit lag (~150 ms)."""

    @pytest.fixture
    def shared_log(self, firestore_client: Any) -> Iterator[FirestoreSharedLog]:
        yield FirestoreSharedLog(firestore_client, settle_time=timedelta(seconds=1), page_docs=4)
