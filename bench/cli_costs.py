"""What the command line costs while it waits: ``storex-sync --help`` start-up, and an idle ``watch``.

    python bench/cli_costs.py [--rows 100000] [--seconds 20]

* help: wall time of ``storex-sync --help``, median of 7, against ``python -c "import click"`` (the floor:
  an interpreter and the CLI library) in the same run;
* idle watch on a folder log: CPU used by a ``storex-sync watch`` process over ``--seconds`` after its
  first sync, on a database of ``--rows`` synced rows, against what polling with a full sync every 2 s
  (the behaviour before it asked the log first) would cost: one idle sync's CPU, measured here, times the
  polls made in that time;
* idle watch with Firestore unreachable: CPU of a watch whose emulator address answers nothing (its
  listener used to re-open its stream in a tight loop).

CPU is read from ``/proc/PID/stat`` (user + system ticks), so it counts the watch process alone.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from storex_sync_firestore import SyncedDatabase, open_shared_log, register_device
from storex_sync_firestore.continuous import sync_and_record
from storex_sync_firestore.testing.emulator import FirestoreEmulator

BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")


def wall(cmd: list[str], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def idle_cpu(cmd: list[str], env: dict[str, str], seconds: float, warmup: float = 5.0) -> float:
    """Share of one core that ``cmd`` uses over ``seconds``, after ``warmup``."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(warmup)
        before = cpu_seconds(proc.pid)
        time.sleep(seconds)
        return (cpu_seconds(proc.pid) - before) / seconds
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def device(folder: Path, rows: int, log_url: str) -> SyncedDatabase:
    path = folder / f"idle-{uuid.uuid4().hex[:6]}.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT)")
        conn.executemany("INSERT INTO notes VALUES (?, ?)", ((f"n{i:09d}", "x" * 50) for i in range(rows)))
    db = SyncedDatabase(f"sqlite:///{path}")
    db.enable_sync(["notes"])
    register_device(db, open_shared_log(log_url), user_id="bench", log_url=log_url)
    return db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    help_s = wall([str(BIN / "storex-sync"), "--help"])
    floor_s = wall([sys.executable, "-c", "import click"])
    print(f"storex-sync --help: {help_s * 1000:.0f} ms; python -c 'import click': {floor_s * 1000:.0f} ms "
          f"({help_s / floor_s:.2f}x)")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log_url = str(folder / "log")
        db = device(folder, args.rows, log_url)
        log = open_shared_log(log_url)
        sync_and_record(db, log)  # the first sync shares every row
        start = time.process_time()
        for _ in range(10):
            sync_and_record(db, log)
        per_sync = (time.process_time() - start) / 10
        db.engine.dispose()
        env = {**os.environ}
        env.pop("FIRESTORE_EMULATOR_HOST", None)
        watch = [str(BIN / "storex-sync"), "watch", "--db", str(db.engine.url)]
        share = idle_cpu(watch, env, args.seconds)
        polling = per_sync / 2.0  # a full idle sync every 2 s
        print(
            f"idle watch, folder log, {args.rows:,} rows: {share * 100:.2f}% of a core; a full sync "
            f"per 2 s poll would be {polling * 100:.2f}% ({per_sync * 1000:.0f} ms each)"
        )

        with FirestoreEmulator() as emulator:  # registered while it runs; watched once it is gone
            os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host_port
            offline = device(folder, 10, "firestore://bench-offline")
            del os.environ["FIRESTORE_EMULATOR_HOST"]
        offline.engine.dispose()
        dead = {**env, "FIRESTORE_EMULATOR_HOST": emulator.host_port}
        watch = [str(BIN / "storex-sync"), "watch", "--db", str(offline.engine.url)]
        offline_share = idle_cpu(watch, dead, args.seconds)
        print(f"idle watch, Firestore unreachable: {offline_share * 100:.2f}% of a core")


if __name__ == "__main__":
    main()
