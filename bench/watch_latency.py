"""Propagation latency under continuous sync: a row written on A until it is readable on B."""

from __future__ import annotations

import sqlite3
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from common import firestore_log, make_device

from storex_sync_firestore.continuous import ContinuousSync


def measure(samples: int, emulator: Any, folder: Path) -> dict[str, float]:
    log, _client = firestore_log(emulator, f"latency-{uuid.uuid4().hex[:8]}")
    a = make_device(folder / "latency-a.db", log, "latency")
    b = make_device(folder / "latency-b.db", log, "latency")
    delays: list[float] = []
    writer = sqlite3.connect(a.path, isolation_level=None)
    reader = sqlite3.connect(b.path, isolation_level=None)
    with ContinuousSync(a.db, log), ContinuousSync(b.db, log):
        time.sleep(1.0)  # both listeners attached
        for i in range(samples):
            key = f"latency-{i}"
            start = time.perf_counter()
            writer.execute("INSERT INTO items VALUES (?, 'x', 1.0, 1, 'n')", (key,))
            deadline = start + 30
            while not reader.execute("SELECT 1 FROM items WHERE id = ?", (key,)).fetchone():
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"row {key} did not reach device B within 30 s")
                time.sleep(0.005)
            delays.append(time.perf_counter() - start)
            time.sleep(0.2)
    writer.close()
    reader.close()
    delays.sort()
    return {
        "latency_samples": len(delays),
        "latency_p50_s": statistics.median(delays),
        "latency_p95_s": delays[max(0, round(0.95 * len(delays)) - 1)],
    }
