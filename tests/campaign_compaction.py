"""Fuzz campaign: many random histories with snapshots, compactions and evictions (RELIABILITY.md).

``python -m tests.campaign_compaction memory|firestore N`` runs the histories of seeds 0..N-1 through
``tests.test_compaction_random.run_history`` (the CI test runs a few random seeds), counts the
compactions, deleted batches and bootstraps they caused, and lists the seeds that failed.
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from storex_sync_firestore import MemorySharedLog
from storex_sync_firestore import snapshot as snapshots

from . import test_compaction_random as random_test


def main() -> None:
    backend, n = sys.argv[1], int(sys.argv[2])
    stats: collections.Counter[str] = collections.Counter()
    compact, bootstrap = random_test.compact, snapshots.bootstrap_if_needed

    def counted_compact(*args: Any, **kwargs: Any) -> Any:
        done = compact(*args, **kwargs)
        stats["compactions"] += 1
        stats["batches deleted"] += done.batches_deleted
        return done

    def counted_bootstrap(*args: Any, **kwargs: Any) -> Any:
        done = bootstrap(*args, **kwargs)
        stats["bootstraps"] += done.snapshot is not None
        return done

    random_test.compact = counted_compact  # type: ignore[assignment]
    snapshots.bootstrap_if_needed = counted_bootstrap  # type: ignore[assignment]
    emulator: Any = None
    if backend == "firestore":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import firestore

        from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog
        from storex_sync_firestore.testing.emulator import FirestoreEmulator

        emulator = FirestoreEmulator(max_heap="1g").start()
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host_port
        client = firestore.Client(project="campaign", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    began, failed = time.time(), []
    try:
        for seed in range(n):
            log: Any = (
                MemorySharedLog()
                if backend == "memory"
                else FirestoreSharedLog(client, root=f"c{uuid.uuid4().hex[:10]}")
            )
            try:
                random_test.run_history(
                    log,
                    Path(tempfile.mkdtemp()),
                    random_test.make_history(seed),
                    "title" if seed % 2 else "body",
                )
            except AssertionError:
                failed.append(seed)
    finally:
        if emulator is not None:
            emulator.stop()
    print(f"{backend}: {n} histories, {dict(stats)}, failed seeds {failed}, {time.time() - began:.0f} s")


if __name__ == "__main__":
    main()
