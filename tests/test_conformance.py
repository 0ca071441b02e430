"""The shared-log contract (``testing.conformance``), run over every backend from one parametrization."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from storex_sync_firestore.shared_log.base import SharedSyncLog
from storex_sync_firestore.testing.conformance import SharedSyncLogConformance
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

BACKENDS = ["memory", "filesystem", "firestore", "firestore-short-settle", "postgresql"]


def open_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> SharedSyncLog:
    """A fresh, empty log of backend ``name``."""
    if name == "memory":
        from storex_sync_firestore import MemorySharedLog

        return MemorySharedLog()
    if name == "filesystem":
        from storex_sync_firestore.shared_log.filesystem import FilesystemSharedLog

        return FilesystemSharedLog(tmp_path / "log")
    if name.startswith("firestore"):
        from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog

        client = request.getfixturevalue("firestore_client")
        if name == "firestore-short-settle":  # a settle time close to the emulator's commit lag (~150 ms)
            return FirestoreSharedLog(client, settle_time=timedelta(seconds=1), page_docs=4)
        return FirestoreSharedLog(client)
    from storex_sync_firestore.shared_log import open_shared_log

    urls: Callable[[], str] = request.getfixturevalue("postgres_urls")
    return open_shared_log(urls())  # through the entry point, as a user's --log would


class TestConformance(SharedSyncLogConformance):
    @pytest.fixture(params=BACKENDS)
    def shared_log(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
        log = open_backend(request.param, request, tmp_path)
        yield log
        close = getattr(log, "close", None)
        if callable(close):
            close()
