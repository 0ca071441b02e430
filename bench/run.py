"""Benchmarks: capture cost, upload and download throughput, Firestore cost, scale, propagation latency.

Every figure is measured against a baseline in the same run and printed as a ratio:

* capture: the same INSERT/UPDATE/DELETE statements on an identical table without sync;
* upload: the raw google-cloud-firestore client committing the same documents (same bytes, same count);
* download and apply: one ``executemany`` inserting the final rows in one transaction;
* bytes stored per change: the same entries as log format v1 (0.1.x) stored them, two arrays;
* encryption: the same upload and download-and-apply on an unencrypted log (``encryption.py``);
* a new device bootstrapping from a snapshot: one ``executemany`` of the live rows, and a full replay
  (``snapshots.py``, full runs only).

    python bench/run.py            # full sizes, with the 1,000,000-change scale run and watch latency
    python bench/run.py --quick    # reduced sizes, under a minute
    python bench/run.py --json out.json

The benchmark starts its own Firestore emulator. Results of a full run are kept in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import encryption
from common import (
    SCHEMA,
    Timer,
    document_size,
    fill,
    firestore_log,
    make_device,
    row,
)

from storex_sync_firestore import do_sync
from storex_sync_firestore.shared_log import format as fmt
from storex_sync_firestore.testing.emulator import FirestoreEmulator


def capture_overhead(n: int, repeats: int) -> dict[str, float]:
    """INSERT, UPDATE and DELETE of ``n`` rows: synced table over plain table, best of ``repeats``.

    Best rather than median: on a shared VM, disk flushes add noise that only ever makes a run slower."""
    from storex_sync_firestore import SyncedDatabase

    def run(synced: bool) -> list[float]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "capture.db"
            with sqlite3.connect(path) as conn:
                conn.executescript(SCHEMA)
            if synced:
                SyncedDatabase(f"sqlite:///{path}").enable_sync(["items"])
            conn = sqlite3.connect(path)
            times = []
            statements: list[tuple[str, list[tuple[Any, ...]]]] = [
                ("INSERT INTO items VALUES (?, ?, ?, ?, ?)", [row(i) for i in range(n)]),
                ("UPDATE items SET price = ? WHERE id = ?", [(i * 0.7, f"item-{i:09d}") for i in range(n)]),
                ("DELETE FROM items WHERE id = ?", [(f"item-{i:09d}",) for i in range(n)]),
            ]
            for sql, params in statements:
                start = time.perf_counter()
                conn.executemany(sql, params)
                conn.commit()
                times.append(time.perf_counter() - start)
            conn.close()
            return times

    plain_runs, synced_runs = [], []
    for _ in range(repeats):  # interleaved, so drift in machine load hits both sides alike
        plain_runs.append(run(False))
        synced_runs.append(run(True))
    plain = [min(r[i] for r in plain_runs) for i in range(3)]
    synced = [min(r[i] for r in synced_runs) for i in range(3)]
    result = {
        f"capture_{op}_ratio": s / p
        for op, p, s in zip(("insert", "update", "delete"), plain, synced, strict=True)
    }
    result["capture_overhead_ratio"] = sum(synced) / sum(plain)
    result["capture_plain_rows_per_s"] = 3 * n / sum(plain)
    return result


def upload_download(n: int, emulator: FirestoreEmulator, tmp: Path) -> dict[str, float]:
    """Share ``n`` small changes to Firestore, then receive and apply them on a new device."""
    log, client = firestore_log(emulator, f"bench-{uuid.uuid4().hex[:8]}")
    a = make_device(tmp / "a.db", log, "bench")
    fill(a, n)
    with Timer() as t_share:
        share = do_sync(a.db, log, stages=["share"])
    path = log_batches_path(log, "bench")
    docs = list(log.client.collection(*path).stream())
    raw_time = raw_commit(client, docs, f"raw-{uuid.uuid4().hex[:8]}")
    stored = sum(document_size((*path, d.id), d.to_dict()) for d in docs)
    as_v1 = sum(document_size((*path, d.id), v1_fields(d.to_dict())) for d in docs)

    b = make_device(tmp / "b.db", log, "bench")
    with Timer() as t_apply:
        got = do_sync(b.db, log, stages=["receive", "reconcile"])
    assert got.received == n and got.applied == n, got
    with sqlite3.connect(b.path) as conn:
        final = conn.execute("SELECT * FROM items").fetchall()
    baseline_apply = executemany_baseline(final, tmp / "baseline.db")
    return {
        "changes": n,
        "upload_s": t_share.seconds,
        "upload_changes_per_s": n / t_share.seconds,
        "raw_upload_s": raw_time,
        "upload_vs_raw_ratio": raw_time / t_share.seconds,
        "firestore_writes_per_1000_changes": share.documents_written * 1000 / n,
        "apply_s": t_apply.seconds,
        "apply_changes_per_s": n / t_apply.seconds,
        "raw_apply_s": baseline_apply,
        "apply_vs_raw_ratio": baseline_apply / t_apply.seconds,
        "firestore_reads_per_1000_changes": got.documents_read * 1000 / n,
        "upload_documents": len(docs),
        "upload_mib": stored / 2**20,
        "stored_bytes_per_change": stored / n,
        "v1_bytes_per_change": as_v1 / n,
        "bytes_per_change_vs_v1_ratio": stored / as_v1,
        "wire_bytes_per_change": sum(len(d.to_dict()[fmt.F_PAYLOAD]) for d in docs) / n,
    }


def v1_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The same batch as 0.1.x stored it (log format v1): the clocks and entry texts as two arrays."""
    opened = fmt.open_v2("", fields, user_id="bench")
    header = {
        k: fields[k] for k in (fmt.F_DEVICE_ID, fmt.F_FIRST_HLC, fmt.F_LAST_HLC, fmt.F_COUNT, "sharedOn")
    }
    return {
        **header,
        fmt.F_VERSION: fmt.LEGACY_VERSION,
        fmt.F_HLCS: [line.hlc for line in opened.lines],
        fmt.F_DATA: [line.text for line in opened.lines],
    }


def log_batches_path(log: Any, user_id: str) -> tuple[str, ...]:
    from storex_sync_firestore.shared_log import firestore_layout as layout

    return tuple(layout.batches_path(log.root, user_id))


def raw_commit(client: Any, docs: list[Any], collection: str) -> float:
    """The same documents, committed by the bare client, grouped into commits as our uploads are."""
    from storex_sync_firestore.shared_log import firestore_layout as layout

    payloads = [d.to_dict() for d in docs]
    start = time.perf_counter()
    batch, size = client.batch(), 0
    for i, payload in enumerate(payloads):
        doc_size = len(json.dumps(payload, default=str))
        if size and size + doc_size > layout.MAX_BATCH_BYTES:
            batch.commit(retry=None)
            batch, size = client.batch(), 0
        batch.create(client.collection(collection).document(f"doc{i}"), payload)
        size += doc_size
    batch.commit(retry=None)
    return time.perf_counter() - start


def executemany_baseline(rows: list[tuple[Any, ...]], path: Path) -> float:
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    conn = sqlite3.connect(path)
    start = time.perf_counter()
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", rows)
    conn.commit()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def scale(n: int, emulator: FirestoreEmulator) -> dict[str, float]:
    """A first sync of ``n`` changes to a new device, in a child process whose peak RSS is reported."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "scale.py"), emulator.host_port, str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def latency(samples: int, emulator: FirestoreEmulator, tmp: Path) -> dict[str, float]:
    from watch_latency import measure

    return measure(samples, emulator, tmp)


def table(results: dict[str, Any]) -> str:
    targets: dict[str, Callable[[float], bool]] = {  # issue 12's table, issue 14's encryption, issue 5
        "capture_overhead_ratio": lambda v: v <= 1.5,
        "upload_vs_raw_ratio": lambda v: v >= 0.8,
        "apply_vs_raw_ratio": lambda v: v >= 0.2,
        "bytes_per_change_vs_v1_ratio": lambda v: v <= 0.4,
        "firestore_writes_per_1000_changes": lambda v: v <= 0.25,
        "firestore_reads_per_1000_changes": lambda v: v <= 0.3,
        "peak_rss_mb_1m": lambda v: v < 200,
        "encrypted_upload_ratio": lambda v: v <= 1.2,
        "encrypted_download_apply_ratio": lambda v: v <= 1.2,
        "latency_p95_s": lambda v: v < 2,
        "snapshots_bootstrap_vs_executemany": lambda v: v <= 3,  # issue 13
    }
    lines = [f"{'measure':40} {'value':>14}  target"]
    for key, value in results.items():
        mark = ""
        if key in targets:
            mark = "met" if targets[key](value) else "MISSED"
        shown = f"{value:14.3f}" if isinstance(value, float) else f"{value!s:>14}"
        lines.append(f"{key:40} {shown}  {mark}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes, under a minute")
    parser.add_argument("--json", type=Path, help="also write the results as one JSON object to this file")
    args = parser.parse_args()
    n = 20_000 if args.quick else 100_000
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {_memory_gib():.0f} GiB, {platform.python_implementation()} "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
        "mode": "quick" if args.quick else "full",
    }
    print(f"capture overhead, {n:,} rows ...", file=sys.stderr)
    results.update(capture_overhead(n, repeats=2 if args.quick else 5))
    with FirestoreEmulator(max_heap="1g") as emulator, tempfile.TemporaryDirectory() as tmp:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host_port
        print(f"upload and download of {n:,} changes ...", file=sys.stderr)
        results.update(upload_download(n, emulator, Path(tmp)))
        print(f"encrypted against unencrypted, {n:,} changes ...", file=sys.stderr)
        results.update(encryption.measure(n, Path(tmp), repeats=1 if args.quick else 3))
        if not args.quick:
            print("first sync of 1,000,000 changes ...", file=sys.stderr)
            results.update(scale(1_000_000, emulator))
            results["first_sync_1m_s"] = results["scale_first_sync_s"]
            print("propagation latency under watch, 50 writes ...", file=sys.stderr)
            results.update(latency(50, emulator, Path(tmp)))
            print("snapshot bootstrap, 1,000,000 changes over 100,000 rows ...", file=sys.stderr)
            import snapshots  # imports this module's baseline: loaded here, not at the top

            measured = snapshots.measure(1_000_000, 100_000, Path(tempfile.mkdtemp(dir=tmp)), emulator)
            results.update({f"snapshots_{k}": v for k, v in measured.items()})
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def _memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


if __name__ == "__main__":
    main()
