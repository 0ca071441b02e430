"""Upload payload lines are assembled by the database from the stored JSON (``client_log._plain_lines``):
they must be the very bytes the default serializer writes for each entry, whatever the names and values
hold (quotes, backslashes, control characters, non-ASCII, long integers, floats, tagged values)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storex_sync_firestore import JsonSerializer, LogEntry, MemorySharedLog, SyncedDatabase, register_device
from storex_sync_firestore.client_log import Signer, insert_local, plan_upload
from storex_sync_firestore.codec import entry_payload
from storex_sync_firestore.shared_log import format as fmt

TABLE = 'we"ird\\ täble\t'
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.builds(lambda b: {"$bytes": b.hex()}, st.binary(max_size=8)),
)
entries = st.lists(
    st.tuples(
        st.sampled_from(["create", "modify", "delete"]),
        st.text(min_size=1),
        st.dictionaries(st.sampled_from(["a", "b"]), scalar, max_size=2),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=entries)
def test_lines_from_sql_are_the_serializers_bytes(tmp_path: Path, drawn: list[Any]) -> None:
    path = tmp_path / "lines.db"
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(f'CREATE TABLE "{TABLE.replace(chr(34), chr(34) * 2)}" (id TEXT PRIMARY KEY, a, b)')
    db = SyncedDatabase(f"sqlite:///{path}")
    try:
        db.enable_sync([TABLE])
        register_device(db, MemorySharedLog(), user_id="u")
        with db.transaction() as conn:
            key = db.signing_key(conn)
            device = db.device_id(conn)
            conn.exec_driver_sql("DELETE FROM _sync_log")
            logged = [
                LogEntry(device, 1 + i, TABLE, (pk,), op, None if op == "delete" else value)
                for i, (op, pk, value) in enumerate(drawn)
            ]
            insert_local(conn, logged)
            planned = plan_upload(
                conn,
                signer=Signer("u", device, key),
                serializer=JsonSerializer(),
                pre_send=None,
                max_entries=None,
                max_stored_bytes=1 << 20,
                now_ms=1,
            )
        assert planned is not None and planned.batch is not None
        opened = fmt.open_v2(planned.batch.batch_id, planned.batch.fields, user_id="u")
        serializer = JsonSerializer()
        assert [(line.hlc, line.text) for line in opened.lines] == [
            (e.hlc, serializer.dumps(entry_payload(e))) for e in logged
        ]
    finally:
        db.engine.dispose()
