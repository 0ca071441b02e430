"""Bootstrap from a snapshot against full replay, and the log's size after compaction (issue 13).

``python bench/snapshots.py [--changes N] [--rows R] [--json out.json]`` (defaults: 1,000,000 changes
over 100,000 live rows; ``--quick``: 100,000 over 10,000). It starts its own Firestore emulator, then:

1. device A inserts R rows and updates every row until N changes are shared (no automatic snapshot);
2. device R, new, replays the whole log (today's path): time and documents read;
3. A writes a snapshot; device B, new, bootstraps from it while the log is still whole;
4. A compacts (``--older-than 0s``); device C, new, bootstraps from the compacted log;
5. baseline, in the same run: one ``executemany`` of the R final rows into an empty table.

Figures: seconds and documents read for each new device, the ratio of the bootstrap to the baseline
(target at most 3x) and to the full replay, and the documents the log holds before and after compaction.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fill, firestore_log, make_device
from run import executemany_baseline

from storex_sync_firestore import compact, do_sync, write_snapshot
from storex_sync_firestore.testing.emulator import FirestoreEmulator

USER = "bench"


def documents(log: Any) -> int:
    batches = log.list_batches(user_id=USER)
    manifests = log.list_snapshots(user_id=USER)
    chunks = sum(len(log.get_snapshot_chunks(m.batch_id, user_id=USER)) for m in manifests)
    return len(batches) + len(manifests) + chunks


def new_device(log: Any, path: Path) -> tuple[float, int, int]:
    """A new device's first sync: (seconds, documents read, rows it then holds)."""
    device = make_device(path, log, USER)
    began = time.perf_counter()
    summary = do_sync(device.db, log, stages=["receive", "reconcile"], snapshot_after=None)
    elapsed = time.perf_counter() - began
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    return elapsed, summary.documents_read, rows


def measure(changes: int, rows: int, tmp: Path, emulator: FirestoreEmulator) -> dict[str, Any]:
    log, _client = firestore_log(emulator, f"snap-{uuid.uuid4().hex[:8]}")
    a = make_device(tmp / "a.db", log, USER)
    fill(a, rows)
    began = time.perf_counter()
    do_sync(a.db, log, snapshot_after=None)
    shared = rows
    while shared < changes:
        with sqlite3.connect(a.path) as conn:
            todo = min(rows, changes - shared)
            conn.execute("UPDATE items SET qty = qty + 1 WHERE rowid <= ?", (todo,))
        do_sync(a.db, log, snapshot_after=None)
        shared += todo
    upload_s = time.perf_counter() - began
    with sqlite3.connect(a.path) as conn:
        final = conn.execute("SELECT * FROM items").fetchall()
    baseline_s = executemany_baseline(final, tmp / "baseline.db")

    replay_s, replay_reads, replay_rows = new_device(log, tmp / "replay.db")
    began = time.perf_counter()
    written = write_snapshot(a.db, log)
    snapshot_s = time.perf_counter() - began
    whole_s, whole_reads, whole_rows = new_device(log, tmp / "b.db")
    docs_before = documents(log)
    do_sync(a.db, log, snapshot_after=None)  # a has stored every batch: nothing holds the log back
    began = time.perf_counter()
    done = compact(a.db, log, older_than=timedelta(0))
    compact_s = time.perf_counter() - began
    docs_after = documents(log)
    boot_s, boot_reads, boot_rows = new_device(log, tmp / "c.db")
    assert replay_rows == whole_rows == boot_rows == rows, (replay_rows, whole_rows, boot_rows)
    return {
        "changes": changes,
        "live_rows": rows,
        "upload_s": round(upload_s, 1),
        "baseline_executemany_s": round(baseline_s, 3),
        "replay_s": round(replay_s, 2),
        "replay_documents_read": replay_reads,
        "snapshot_write_s": round(snapshot_s, 2),
        "snapshot_entries": written.entries,
        "snapshot_chunks": written.chunks,
        "bootstrap_whole_log_s": round(whole_s, 2),
        "bootstrap_whole_log_documents_read": whole_reads,
        "compact_s": round(compact_s, 2),
        "batches_deleted": done.batches_deleted,
        "documents_before_compaction": docs_before,
        "documents_after_compaction": docs_after,
        "bootstrap_s": round(boot_s, 2),
        "bootstrap_documents_read": boot_reads,
        "bootstrap_vs_executemany": round(boot_s / baseline_s, 1),
        "replay_vs_bootstrap": round(replay_s / boot_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="100,000 changes over 10,000 rows")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    changes, rows = (100_000, 10_000) if args.quick else (args.changes, args.rows)
    with FirestoreEmulator(max_heap="1g") as emulator, tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host_port
        results = measure(changes, rows, Path(tmp), emulator)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
