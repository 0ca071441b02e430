"""Profile the upload and the download-and-apply paths: where the time of one sync goes.

    python bench/profiling.py [N] [--log firestore|memory] [--top 25] [--pyinstrument]

Device A shares N ~200-byte changes (``do_sync(stages=["share"])``), then a new device B receives and
applies them (``stages=["receive", "reconcile"]``); each side runs under cProfile (or pyinstrument) and
prints its heaviest functions by own time and by cumulative time. ``--log firestore`` (the default)
starts an emulator; ``--log memory`` leaves the network out, to see the local work alone.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fill, firestore_log, make_device

from storex_sync_firestore import do_sync


def profiled(label: str, call: Callable[[], Any], top: int, instrument: bool) -> Any:
    """Run ``call`` under a profiler; print its wall time and the heaviest functions."""
    if instrument:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        began = time.perf_counter()
        profiler.start()
        result = call()
        profiler.stop()
        print(f"== {label}: {time.perf_counter() - began:.3f} s (pyinstrument)")
        print(profiler.output_text(unicode=False, color=False, show_all=False))
        return result
    profile = cProfile.Profile()
    began = time.perf_counter()
    result = profile.runcall(call)
    print(f"== {label}: {time.perf_counter() - began:.3f} s (cProfile adds overhead per call)")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(order).print_stats(top)
        print(f"-- by {order}\n" + _trim(out.getvalue()))
    return result


def _trim(report: str) -> str:
    lines = report.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return "\n".join(lines[start:])


@contextmanager
def shared_log(kind: str) -> Iterator[Any]:
    if kind == "memory":
        from storex_sync_firestore.shared_log.memory import MemorySharedLog

        yield MemorySharedLog()
        return
    from storex_sync_firestore.testing.emulator import FirestoreEmulator

    with FirestoreEmulator(max_heap="1g") as emulator:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host_port
        log, _client = firestore_log(emulator, f"profile-{uuid.uuid4().hex[:8]}")
        yield log


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("n", nargs="?", type=int, default=100_000)
    parser.add_argument("--log", choices=("firestore", "memory"), default="firestore")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--pyinstrument", action="store_true", help="a sampling profile instead")
    args = parser.parse_args()
    with shared_log(args.log) as log, tempfile.TemporaryDirectory() as tmp:
        a = make_device(Path(tmp) / "a.db", log, "bench")
        fill(a, args.n)
        profiled(
            f"upload of {args.n:,} changes",
            lambda: do_sync(a.db, log, stages=["share"]),
            args.top,
            args.pyinstrument,
        )
        b = make_device(Path(tmp) / "b.db", log, "bench")
        got = profiled(
            f"download and apply of {args.n:,} changes",
            lambda: do_sync(b.db, log, stages=["receive", "reconcile"]),
            args.top,
            args.pyinstrument,
        )
        assert got.applied == args.n, got


if __name__ == "__main__":
    main()
