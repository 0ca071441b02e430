"""Scale run, in its own processes: upload N changes from device A, then a new device B's first sync.

``python bench/scale.py HOST:PORT N`` prints one JSON line. The download runs in a child process so
that its peak RSS (``ru_maxrss``) belongs to the syncing device alone and can be checked for staying
flat rather than growing with the log.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fill, firestore_log, make_device

from storex_sync_firestore import do_sync


class _Emulator:
    def __init__(self, host_port: str) -> None:
        self.host_port = host_port


def upload(host_port: str, n: int, folder: Path, project: str) -> float:
    log, _client = firestore_log(_Emulator(host_port), project)
    a = make_device(folder / "a.db", log, "scale")
    for start in range(0, n, 100_000):
        fill(a, min(100_000, n - start), start)
    began = time.perf_counter()
    summary = do_sync(a.db, log, stages=["share"])
    assert summary.sent == n, summary
    return time.perf_counter() - began


def download(host_port: str, n: int, folder: Path, project: str) -> dict[str, float]:
    log, _client = firestore_log(_Emulator(host_port), project)
    b = make_device(folder / "b.db", log, "scale")
    began = time.perf_counter()
    summary = do_sync(b.db, log, stages=["receive", "reconcile"])
    elapsed = time.perf_counter() - began
    assert summary.received == n and summary.applied == n, summary
    return {
        "scale_changes": n,
        "scale_first_sync_s": elapsed,
        "scale_changes_per_s": n / elapsed,
        "peak_rss_mb_1m": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    host_port, n = sys.argv[1], int(sys.argv[2])
    os.environ["FIRESTORE_EMULATOR_HOST"] = host_port
    if len(sys.argv) > 3:  # child: the download side
        print(json.dumps(download(host_port, n, Path(sys.argv[3]), sys.argv[4])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        project = f"scale-{os.getpid()}"
        upload_s = upload(host_port, n, Path(tmp), project)
        out = subprocess.run(
            [sys.executable, __file__, host_port, str(n), tmp, project],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["scale_upload_s"] = upload_s
        print(json.dumps(result))


if __name__ == "__main__":
    main()
