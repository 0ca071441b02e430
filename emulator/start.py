#!/usr/bin/env python3
"""Start the Firestore emulator as firebase.json configures it, for manual use; Ctrl-C stops it.

    python emulator/start.py [--config firebase.json] [--port N]

Prints the ``export FIRESTORE_EMULATOR_HOST=...`` line to paste into another shell. The harness itself
lives in ``storex_sync_firestore.testing.emulator`` so that tests use the same code.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from storex_sync_firestore.testing.emulator import EmulatorError, FirestoreEmulator, load_firebase_json

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", default=str(ROOT / "firebase.json"), help="path to firebase.json")
    parser.add_argument("--port", type=int, help="override the port from firebase.json (0: any free port)")
    args = parser.parse_args(argv)
    settings = load_firebase_json(args.config)
    port = settings["port"] if args.port is None else (args.port or None)
    emulator = FirestoreEmulator(host=settings["host"], port=port, rules=settings["rules"])
    try:
        emulator.start()
    except EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(
        f"Firestore emulator ready (pid {emulator.pid}, rules {settings['rules']}, log {emulator.log_path})"
    )
    print(f"export FIRESTORE_EMULATOR_HOST={emulator.host_port}")
    try:
        assert emulator.process is not None
        emulator.process.wait()
        print(
            f"emulator exited with code {emulator.process.returncode}:\n{emulator.log_tail()}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
