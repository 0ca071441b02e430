"""Sync while the application keeps writing through several connections: nothing lost, nothing twice.

Writers commit small transactions on their own rows and on "hot" rows that another shop edits too, while
two threads sync the PostgreSQL database (serialized by the sync advisory lock) and a SQLite shop syncs
and edits the hot rows. Every write carries a unique token; afterwards each token appears exactly once
in the PostgreSQL shop's log, the capture table is empty, both shops hold the same rows, and no
application write waited long for the sync.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from storex_sync_firestore import MemorySharedLog
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

from .pg_devices import PgDevice, SqliteDevice, set_aside, sync_rounds

PG_SCHEMA = "CREATE TABLE items (id text PRIMARY KEY, n integer NOT NULL, note text NOT NULL)"
SQLITE_SCHEMA = "CREATE TABLE items (id TEXT PRIMARY KEY, n INTEGER NOT NULL, note TEXT NOT NULL);"
WRITERS = 4
DURATION_S = 4.0
HOT = [f"hot-{i}" for i in range(10)]
NO_PRUNE = {"cleanup_after_reconcile": False, "reconcile_batch_size": 50}


class Writer(threading.Thread):
    """An application connection committing one-statement transactions; records tokens and latencies."""

    def __init__(self, url: str, number: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url, pool_size=1)
        self.number = number
        self.stop_event = stop
        self.tokens: list[str] = []
        self.deletes = 0
        self.latencies: list[float] = []
        self.error: BaseException | None = None

    def write(self, statement: str, params: dict[str, Any]) -> int:
        started = time.monotonic()
        with self.engine.begin() as conn:
            count = conn.execute(text(statement), params).rowcount
        self.latencies.append(time.monotonic() - started)
        return count

    def run(self) -> None:
        rng = random.Random(self.number)
        mine: list[str] = []
        k = 0
        try:
            while not self.stop_event.is_set():
                k += 1
                token = f"w{self.number}-{k}"
                roll = rng.random()
                if roll < 0.4 or not mine:
                    key = f"w{self.number}-row{k}"
                    self.write("INSERT INTO items VALUES (:id, 0, :t)", {"id": key, "t": token})
                    mine.append(key)
                    self.tokens.append(token)
                elif roll < 0.8:
                    key = rng.choice(mine + HOT)
                    sql = "UPDATE items SET n = n + 1, note = :t WHERE id = :id"
                    if self.write(sql, {"id": key, "t": token}):
                        self.tokens.append(token)
                else:
                    key = mine.pop(rng.randrange(len(mine)))
                    self.deletes += self.write("DELETE FROM items WHERE id = :id", {"id": key})
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.engine.dispose()


def test_sync_while_the_application_writes(postgres_urls: Any, tmp_path: Path) -> None:
    log = MemorySharedLog()
    pg = PgDevice(postgres_urls(), log, PG_SCHEMA, ["items"])
    lite = SqliteDevice(tmp_path / "peer.db", log, SQLITE_SCHEMA, ["items"])
    pg.sql("INSERT INTO items VALUES (:id, 0, 'seed')", [{"id": key} for key in HOT])
    initial_entries = len(HOT)
    sync_rounds([pg, lite], rounds=1)

    stop = threading.Event()
    writers = [Writer(pg.url, i, stop) for i in range(WRITERS)]
    sync_errors: list[BaseException] = []

    def syncing() -> None:
        while not stop.is_set():
            try:
                pg.sync(**NO_PRUNE)
            except BaseException as exc:
                sync_errors.append(exc)
                return

    syncers = [threading.Thread(target=syncing, daemon=True) for _ in range(2)]
    for thread in writers + syncers:
        thread.start()
    deadline = time.monotonic() + DURATION_S
    peer_edits = 0
    while time.monotonic() < deadline:
        peer_edits += 1
        lite.sql(
            "UPDATE items SET n = n + 10, note = ? WHERE id = ?", (f"peer-{peer_edits}", random.choice(HOT))
        )
        lite.sync()
    stop.set()
    for thread in writers + syncers:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in writers + syncers)
    assert [w.error for w in writers if w.error] == [] and sync_errors == []

    for _ in range(3):
        pg.sync(**NO_PRUNE)
        lite.sync()

    assert pg.query("SELECT count(*) FROM _sync_capture") == [(0,)]
    rows = pg.query("SELECT op, value FROM _sync_log WHERE device_id = :d", {"d": pg.device_id})
    logged = Counter(json.loads(v)["note"] for op, v in rows if op != "delete" and "note" in json.loads(v))
    written = Counter(token for w in writers for token in w.tokens)
    assert sum(written.values()) > 200, "the writers barely wrote: the test proves nothing"
    assert logged - Counter({"seed": initial_entries}) == written  # every write once: none lost, none twice
    assert sum(op == "delete" for op, _ in rows) == sum(w.deletes for w in writers)

    pg_rows = sorted(pg.query("SELECT id, n, note FROM items"))
    assert pg_rows == sorted(lite.query("SELECT id, n, note FROM items"))
    assert set_aside(pg) == [] and set_aside(lite) == []
    worst = max(latency for w in writers for latency in w.latencies)
    assert worst < 2.0, f"an application write waited {worst:.2f}s for the sync"
    pg.close()
    lite.close()
