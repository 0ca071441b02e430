"""``storex-sync demo``: two SQLite "devices" synced through a local Firestore emulator (or the shared log
that ``--log`` names), start to finish.

It is the README's first command, so it needs nothing but the package, Java and the emulator jar: it
starts the emulator (or uses the one ``FIRESTORE_EMULATOR_HOST`` names), writes with plain ``sqlite3``
as an application would (the sync triggers capture it), edits the same note on both devices, deletes one,
syncs, and prints both tables side by side. It returns True only if they converged.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .clock import wall_clock_ms
from .commands import init_database, open_database, sync_database
from .retry import wait_until

Echo = Callable[[str], None]
SCHEMA = "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT)"


@contextmanager
def _emulator(echo: Echo) -> Iterator[None]:
    """Use the emulator in ``FIRESTORE_EMULATOR_HOST``, or start one for the demo and stop it after."""
    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        echo(f"using the Firestore emulator at {os.environ['FIRESTORE_EMULATOR_HOST']}")
        yield
        return
    from .testing.emulator import FirestoreEmulator

    echo("starting the Firestore emulator ...")
    with FirestoreEmulator() as emulator:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host_port
        echo(f"Firestore emulator ready at {emulator.host_port}")
        try:
            yield
        finally:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)


def _run_sql(path: Path, *statements: str) -> None:
    """Write like any application would: plain sqlite3, one transaction, no sync code involved."""
    conn = sqlite3.connect(path)
    with conn:
        for sql in statements:
            conn.execute(sql)
    conn.close()


def _rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, title, body FROM notes ORDER BY id").fetchall()
    finally:
        conn.close()


def side_by_side(left: Sequence[tuple[Any, ...]], right: Sequence[tuple[Any, ...]]) -> list[str]:
    """Both tables as text, row by row, with ``!=`` where they differ."""

    def cell(row: tuple[Any, ...] | None) -> str:
        return "" if row is None else " | ".join("" if v is None else str(v) for v in row)

    by_id_left = {r[0]: r for r in left}
    by_id_right = {r[0]: r for r in right}
    ids = sorted(set(by_id_left) | set(by_id_right))
    width = max([len("laptop"), *(len(cell(r)) for r in left)])
    lines = [f"{'laptop':<{width}}    phone", f"{'-' * width}    {'-' * max(5, width)}"]
    for key in ids:
        a, b = by_id_left.get(key), by_id_right.get(key)
        mark = "==" if a == b else "!="
        lines.append(f"{cell(a):<{width}} {mark} {cell(b)}")
    return lines


@contextmanager
def _no_emulator() -> Iterator[None]:
    yield


def run_demo(
    echo: Echo = print, *, keep: bool = False, log_url: str | None = None, user_id: str = "alice"
) -> bool:
    """Run the demo, narrating through ``echo``; True when both databases ended identical.

    ``log_url`` names the shared log to use (``postgresql://...``, a folder, ...) instead of a Firestore
    emulator started for the demo."""
    folder = Path(tempfile.mkdtemp(prefix="storex-sync-demo-"))
    own_log = log_url is None
    log_url = log_url or f"firestore://demo-storex-sync-{uuid.uuid4().hex[:8]}"
    try:
        with _emulator(echo) if own_log else _no_emulator():
            laptop, phone = folder / "laptop.db", folder / "phone.db"
            for path in (laptop, phone):
                _run_sql(path, SCHEMA)
            dbs = {}
            for name, path in (("laptop", laptop), ("phone", phone)):
                db = open_database(f"sqlite:///{path}")
                info = init_database(db, ["notes"], user_id=user_id, log_url=log_url)
                echo(f"{name}: storex-sync init -> device {info['device_id'][:8]}")
                dbs[name] = db

            def sync(name: str) -> None:
                s = sync_database(dbs[name])
                echo(f"{name}: storex-sync sync -> sent {s.sent}, received {s.received}, applied {s.applied}")

            echo("laptop: three notes written with sqlite3")
            _run_sql(
                laptop,
                "INSERT INTO notes VALUES ('note-1', 'groceries', 'milk')",
                "INSERT INTO notes VALUES ('note-2', 'ideas', 'sync everything')",
                "INSERT INTO notes VALUES ('note-3', 'old', 'delete me')",
            )
            sync("laptop")
            sync("phone")
            echo("offline: both edit note-1 and note-2; the phone adds note-4; the laptop deletes note-3")
            _run_sql(laptop, "UPDATE notes SET body = 'milk, eggs' WHERE id = 'note-1'")
            _run_sql(laptop, "UPDATE notes SET title = 'ideas (laptop)' WHERE id = 'note-2'")
            _run_sql(laptop, "DELETE FROM notes WHERE id = 'note-3'")
            edited = wall_clock_ms()  # the phone's edit of note-2 must be the later one: last write wins
            wait_until(lambda: wall_clock_ms() > edited, timeout=1.0, interval=0.001)
            _run_sql(phone, "UPDATE notes SET title = 'shopping' WHERE id = 'note-1'")
            _run_sql(phone, "UPDATE notes SET title = 'ideas (phone, later)' WHERE id = 'note-2'")
            _run_sql(phone, "INSERT INTO notes VALUES ('note-4', 'from the phone', NULL)")
            for name in ("laptop", "phone", "laptop"):
                sync(name)
            left, right = _rows(laptop), _rows(phone)
            echo("")
            for line in side_by_side(left, right):
                echo(line)
            echo("")
            converged = left == right
            echo("converged: both devices hold the same notes" if converged else "NOT converged")
            if keep:
                echo(f"databases kept in {folder}")
            return converged
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
