"""Encrypted against unencrypted sync, in the same run: upload and download-and-apply of N changes.

    python bench/encryption.py [N]        # default 100,000 ~200-byte changes

Each mode gets its own project on one emulator: device A shares N changes, a new device B receives and
applies them; both modes run three times, alternating, and the best of each counts. Prints both times and
the ratios (target: encrypted at most 1.2x unencrypted), then the same as one line of JSON.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SCHEMA, Device, Timer, fill

from storex_sync_firestore import SyncedDatabase, do_sync, open_shared_log
from storex_sync_firestore.commands import init_database
from storex_sync_firestore.testing.emulator import FirestoreEmulator

REPEATS = 3


def device(path: Path, project: str, encrypted: bool) -> Device:
    """A SQLite device set up as ``storex-sync init [--encrypt]`` does, on the emulator's ``project``."""
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    db = SyncedDatabase(f"sqlite:///{path}")
    passphrase = (lambda _new: "a benchmark passphrase") if encrypted else None
    init_database(db, ["items"], user_id="bench", log_url=f"firestore://{project}", passphrase=passphrase)
    return Device(path, db)


def run(n: int, tmp: Path, encrypted: bool, attempt: int) -> dict[str, float]:
    project = f"demo-encryption-{int(encrypted)}-{attempt}"
    log = open_shared_log(f"firestore://{project}")
    a = device(tmp / f"a{int(encrypted)}-{attempt}.db", project, encrypted)
    fill(a, n)
    with Timer() as up:
        shared = do_sync(a.db, log, stages=["share"])
    b = device(tmp / f"b{int(encrypted)}-{attempt}.db", project, encrypted)
    with Timer() as down:
        got = do_sync(b.db, log, stages=["receive", "reconcile"])
    assert shared.sent == n and got.applied == n, (shared, got)
    return {"upload_s": up.seconds, "download_apply_s": down.seconds}


def measure(n: int, tmp: Path, repeats: int = REPEATS) -> dict[str, float]:
    """Both modes ``repeats`` times, alternating, on the emulator ``FIRESTORE_EMULATOR_HOST`` names; the
    best of each counts (a shared VM only ever adds time)."""
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for attempt in range(repeats):
        for encrypted in (attempt % 2 == 1, attempt % 2 == 0):
            runs[encrypted].append(run(n, tmp, encrypted, attempt))
    plain, sealed = ({k: min(r[k] for r in runs[e]) for k in runs[e][0]} for e in (False, True))
    return {
        "encryption_changes": n,
        "plain_upload_s": plain["upload_s"],
        "encrypted_upload_s": sealed["upload_s"],
        "encrypted_upload_ratio": sealed["upload_s"] / plain["upload_s"],
        "plain_download_apply_s": plain["download_apply_s"],
        "encrypted_download_apply_s": sealed["download_apply_s"],
        "encrypted_download_apply_ratio": sealed["download_apply_s"] / plain["download_apply_s"],
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with FirestoreEmulator(max_heap="1g") as emulator, tempfile.TemporaryDirectory() as tmp:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host_port
        results = measure(n, Path(tmp))
    for key, value in results.items():
        print(f"{key:34} {value:12.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
