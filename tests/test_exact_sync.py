"""Property: random rows of random storage classes in columns of random declared types sync through the
Firestore emulator and arrive identical on every device, the writer's own rows included after a
double-create merge (two databases start with the same rows). SQLite to SQLite, and PostgreSQL to
PostgreSQL with writers in different session settings.

``STOREX_EXACT_EXAMPLES`` sets the number of examples (CI keeps it small; the emulator makes each one
take about a second).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import tempfile
import uuid
from datetime import timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

from .conftest import Device
from .pg_devices import PgDevice, set_aside, sync_rounds
from .test_exact_postgres import SESSIONS, as_text

EXAMPLES = int(os.environ.get("STOREX_EXACT_EXAMPLES", "8"))
EXACT = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def firestore_log(client: Any) -> Any:
    from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog

    return FirestoreSharedLog(client)


# --- SQLite --------------------------------------------------------------------------------------------

DECLARED = [
    "INTEGER", "TEXT", "BLOB", "REAL", "NUMERIC", "DATETIME", "DATE", "TIMESTAMP", "BOOLEAN", "JSON",
    "DECIMAL(10,2)", "VARCHAR(20)", "",
]  # fmt: skip
KEY_DECLARED = ["TEXT", "INTEGER", "REAL", "NUMERIC", "DATETIME", "VARCHAR(20)"]
TRICKY_TEXT = [
    "2019-09-08T23:23:45.000Z", "1970-01-01 00:00:00.000000", '{"a" : 1, "a": 2}', "1e2", " 12 ", "0x10",
    "12.50", "-0", "true", "31/12/2024", "not-a-uuid", "", "9223372036854775808", "1e400", "NaN", "Inf",
]  # fmt: skip
SQLITE_VALUES = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 2**53 + 1, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=False),
    st.sampled_from(
        [-0.0, 5e-324, 2.225073858507201e-308, 1.7976931348623157e308, math.inf, -math.inf, 1e-7]
    ),
    st.text(max_size=30),
    st.sampled_from(TRICKY_TEXT),
    st.binary(max_size=12),
)


def sqlite_cells(conn: sqlite3.Connection, width: int) -> dict[Any, tuple[Any, ...]]:
    """Each row by its key, every cell as (typeof, quote, value), floats by their bits."""
    names = ["id", "k", *(f"c{i}" for i in range(width))]
    select = ", ".join(f"typeof({n}), quote({n}), {n}" for n in names)
    rows = conn.execute(f"SELECT {select} FROM t").fetchall()
    return {r[2]: tuple(v.hex() if isinstance(v, float) else v for v in r) for r in rows}


@st.composite
def sqlite_tables(draw: st.DrawFn) -> tuple[str, list[str], list[list[tuple[Any, ...]]]]:
    key_type = draw(st.sampled_from(KEY_DECLARED))
    types = draw(st.lists(st.sampled_from(DECLARED), min_size=1, max_size=6))
    columns = ", ".join(f"c{i} {t}" for i, t in enumerate(types))
    schema = f"CREATE TABLE t (id TEXT NOT NULL, k {key_type} NOT NULL, {columns}, PRIMARY KEY (id, k));"
    row = st.tuples(
        st.just(None), SQLITE_VALUES.filter(lambda v: v is not None), *[SQLITE_VALUES] * len(types)
    )
    groups = [draw(st.lists(row, max_size=5)) for _ in range(3)]  # shared, only on a, only on b
    numbered = [
        [(f"{g}{i}", *r[1:]) for i, r in enumerate(rows)] for g, rows in zip("sab", groups, strict=True)
    ]
    return schema, types, numbered


@EXACT
@given(table=sqlite_tables(), edits=st.lists(SQLITE_VALUES, min_size=1, max_size=4))
def test_sqlite_to_sqlite_is_exact(
    firestore_client: Any, table: tuple[str, list[str], list[list[tuple[Any, ...]]]], edits: list[Any]
) -> None:
    schema, types, (shared, only_a, only_b) = table
    log, user = firestore_log(firestore_client), f"u-{uuid.uuid4().hex[:10]}"
    marks = ", ".join("?" * (len(types) + 2))
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / "a.db", Path(folder) / "b.db"]
        for path in paths:
            with sqlite3.connect(path) as conn:
                conn.executescript(schema)
                conn.executemany(f"INSERT INTO t VALUES ({marks})", shared)
        devices = [Device(p, log, user, "", ["t"]) for p in paths]
        a, b = devices
        a.app.executemany(f"INSERT INTO t VALUES ({marks})", only_a)
        b.app.executemany(f"INSERT INTO t VALUES ({marks})", only_b)
        written = sqlite_cells(a.app, len(types)) | sqlite_cells(b.app, len(types))
        sync_rounds(devices)
        for device in devices:
            assert sqlite_cells(device.app, len(types)) == written, device.path.name
            assert device.query("SELECT count(*) FROM _sync_quarantine") == [(0,)]
        # then edits by one writer: its rows stay as it wrote them, and the other reads the same
        for value in edits:
            a.app.execute(
                f"UPDATE t SET c{len(types) - 1} = ? WHERE id IN (SELECT id FROM t LIMIT 3)", (value,)
            )
        edited = sqlite_cells(a.app, len(types))
        sync_rounds(devices)
        assert sqlite_cells(a.app, len(types)) == sqlite_cells(b.app, len(types)) == edited
        for device in devices:
            device.app.close()
            device.db.engine.dispose()


# --- PostgreSQL ------------------------------------------------------------------------------------------

NO_NUL = st.text(max_size=30).map(lambda s: s.replace("\x00", ""))  # PostgreSQL text holds no NUL
JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | NO_NUL,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NO_NUL, inner, max_size=3),
    max_leaves=8,
).map(json.dumps)
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
PG_TYPES: dict[str, st.SearchStrategy[Any]] = {
    "boolean": st.booleans(),
    "smallint": st.integers(-(2**15), 2**15 - 1),
    "integer": st.integers(-(2**31), 2**31 - 1),
    "bigint": st.integers(-(2**63), 2**63 - 1),
    "double precision": st.floats() | st.sampled_from([-0.0, 5e-324, 1.7976931348623157e308]),
    "real": st.floats(width=32),
    "numeric": st.builds(
        lambda i, s: Decimal(i).scaleb(-s), st.integers(-(10**30), 10**30), st.integers(0, 25)
    )
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "1.10", "0.000"]),
    "numeric(12,2)": st.builds(lambda i: Decimal(i).scaleb(-2), st.integers(-(10**12) + 1, 10**12 - 1)),
    "text": NO_NUL,
    "varchar(20)": NO_NUL.map(lambda s: s[:20]),
    "char(4)": NO_NUL.map(lambda s: s[:4]),
    "bytea": st.binary(max_size=12),
    "uuid": st.uuids().map(str),
    "date": st.dates() | st.sampled_from(["infinity", "-infinity", "0044-03-15 BC"]),
    "timestamp": st.datetimes() | st.sampled_from(["infinity", "2024-05-01 10:00:00.000001"]),
    "timestamptz": st.datetimes(timezones=OFFSETS) | st.sampled_from(["-infinity", "2024-05-01 10:00+05:45"]),
    "jsonb": JSON_TEXT | st.sampled_from(['{"a": 1.10, "a": 2}', "123456789012345678901234567890", "1e2"]),
    "json": JSON_TEXT | st.sampled_from(['{"b" : 1,  "b": 2}', "[1.0, 2.50]"]),
    "interval": st.sampled_from(["1 day 02:03:04", "-1 year", "3 months 1.5 seconds", "0"]),
}


@st.composite
def pg_tables(draw: st.DrawFn) -> tuple[list[str], list[list[tuple[Any, ...]]]]:
    types = draw(st.lists(st.sampled_from(sorted(PG_TYPES)), min_size=1, max_size=6))
    row = st.tuples(*[st.none() | PG_TYPES[t] for t in types])
    groups = [draw(st.lists(row, max_size=4)) for _ in range(3)]
    return types, [
        [(f"{g}{i}", *r) for i, r in enumerate(rows)] for g, rows in zip("sab", groups, strict=True)
    ]


def insert_sql(types: list[str]) -> str:
    casts = ", ".join(f"CAST(:c{i} AS {t})" for i, t in enumerate(types))
    return f"INSERT INTO items VALUES (:id, {casts})"


def params(types: list[str], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [{"id": r[0], **{f"c{i}": v for i, v in enumerate(r[1:])}} for r in rows]


@EXACT
@given(table=pg_tables())
def test_postgres_to_postgres_is_exact(
    firestore_client: Any, postgres_urls: Any, table: tuple[list[str], list[list[tuple[Any, ...]]]]
) -> None:
    types, (shared, only_a, only_b) = table
    log, user = firestore_log(firestore_client), f"u-{uuid.uuid4().hex[:10]}"
    schema = (
        f"CREATE TABLE items (id text PRIMARY KEY, {', '.join(f'c{i} {t}' for i, t in enumerate(types))})"
    )
    devices: list[PgDevice] = []
    for session in SESSIONS:
        url = postgres_urls()
        engine = create_engine(url, connect_args={"options": SESSIONS[session]})
        with engine.begin() as conn:
            conn.exec_driver_sql(schema)
            if shared:
                conn.execute(text(insert_sql(types)), params(types, shared))
        device = PgDevice(url, log, "SELECT 1", ["items"], user_id=user)
        device.app.dispose()
        device.app = engine  # the application writes in its own session settings
        devices.append(device)
    a, b = devices
    for device, rows in ((a, only_a), (b, only_b)):
        if rows:
            device.sql(insert_sql(types), params(types, rows))
    written = sorted({*as_text(a), *as_text(b)})
    sync_rounds(devices)
    for device in devices:
        assert set_aside(device) == []
        assert as_text(device) == written
    for device in devices:
        device.close()
