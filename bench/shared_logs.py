"""Shared-log backends side by side: one device shares N changes, another receives and applies them.

Every backend runs the same sync in the same process, with the in-memory log as the baseline (its time
is the sync's own work: capture, encoding, signing, reconcile, apply), so each ratio is what the backend
adds. PostgreSQL runs on a throwaway local cluster (``testing.postgres``) reached as a confined login
role, Firestore on the emulator.

    python bench/shared_logs.py            # 20,000 changes
    python bench/shared_logs.py --quick    # 2,000 changes
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import fill, firestore_log, make_device

from storex_sync_firestore import MemorySharedLog, do_sync
from storex_sync_firestore.shared_log import open_shared_log
from storex_sync_firestore.shared_log.base import SharedSyncLog
from storex_sync_firestore.shared_log.filesystem import FilesystemSharedLog
from storex_sync_firestore.testing.emulator import FirestoreEmulator
from storex_sync_firestore.testing.postgres import PostgresServer

Opener = Callable[[Path], SharedSyncLog]


@contextmanager
def backends() -> Iterator[dict[str, Opener]]:
    with PostgresServer() as server, FirestoreEmulator() as emulator:
        import os

        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host_port

        def postgresql(_: Path) -> SharedSyncLog:
            url = server.create_database("bench")
            admin = open_shared_log(url)
            admin.add_user("bench", "bench-secret")  # type: ignore[attr-defined]
            return open_shared_log(url.replace("+psycopg://postgres@", "://bench:bench-secret@"))

        yield {
            "memory": lambda _: MemorySharedLog(),
            "folder": lambda tmp: FilesystemSharedLog(tmp / "log"),
            "postgresql": postgresql,
            "firestore": lambda _: firestore_log(emulator, f"bench-{uuid.uuid4().hex[:8]}")[0],
        }


def measure(opener: Opener, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log = opener(folder)
        a, b = (make_device(folder / f"{name}.db", log, "bench") for name in "ab")
        fill(a, n)
        started = time.perf_counter()
        sent = do_sync(a.db, log).sent
        shared = time.perf_counter() - started
        started = time.perf_counter()
        applied = do_sync(b.db, log).applied
        received = time.perf_counter() - started
        assert sent >= n and applied == n, (sent, applied)
        for device in (a, b):
            device.db.engine.dispose()
        close: Any = getattr(log, "close", None)
        if callable(close):
            close()
    return {"share_s": shared, "receive_s": received}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 changes instead of 20,000")
    n = 2_000 if parser.parse_args().quick else 20_000
    with backends() as openers:
        results = {name: measure(opener, n) for name, opener in openers.items()}
    base = results["memory"]
    print(f"{n:,} changes; times in seconds, ratio to the in-memory log in brackets")
    print(f"{'backend':<12}{'share':>16}{'receive+apply':>22}")
    for name, r in results.items():
        share, receive = r["share_s"], r["receive_s"]
        print(
            f"{name:<12}{share:>9.2f} ({share / base['share_s']:>4.1f}x)"
            f"{receive:>14.2f} ({receive / base['receive_s']:>4.1f}x)"
        )


if __name__ == "__main__":
    main()
