"""Each type crosses PostgreSQL -> SQLite -> PostgreSQL and SQLite -> PostgreSQL -> SQLite unchanged.

A value written in one database arrives in the other as that database's natural value; the receiver then
copies the row under a new key (so the copy is captured with *its* encoding) and the copy that comes back
must equal the original. The SQLite column types are what a user mirroring the PostgreSQL schema writes;
decimals use ``DECIMAL_TEXT`` (TEXT affinity), because a SQLite ``DECIMAL`` column turns '19.90' into 19.9.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from storex_sync_firestore import MemorySharedLog
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

from .pg_devices import PgDevice, SqliteDevice, set_aside, sync_rounds

U = "01a217db-c51e-706f-b96e-1769f8bef04b"


@dataclass(frozen=True)
class Case:
    pg_type: str
    sqlite_type: str
    pg: list[Any]  # parameters for INSERT ... VALUES (:id, CAST(:v AS pg_type))
    sqlite: list[Any]  # the same values as SQLite stores them
    sqlite_in: list[Any] | None = None  # values written in SQLite when they differ from ``sqlite``


CASES = {
    "bool": Case("boolean", "BOOLEAN", [True, False, None], [1, 0, None]),
    "bigint": Case("bigint", "INTEGER", [0, -7, 2**62], [0, -7, 2**62]),
    "smallint": Case("smallint", "INTEGER", [-32768, 32767], [-32768, 32767]),
    "float8": Case(
        "double precision",
        "REAL",
        [1.5, 0.1, -1e300, math.inf, -math.inf],
        [1.5, 0.1, -1e300, math.inf, -math.inf],
    ),
    "float4": Case("real", "REAL", [0.5, 0.1, 3.0e38], [0.5, 0.1, 3e38]),
    "text": Case(
        "text", "TEXT", ["", "text é 中", 'it\'s "q" \\ b\n'], ["", "text é 中", 'it\'s "q" \\ b\n']
    ),
    "varchar": Case("varchar(20)", "VARCHAR(20)", ["short"], ["short"]),
    "bytea": Case("bytea", "BLOB", [b"\x00\xff", b""], [b"\x00\xff", b""]),
    "timestamp": Case(
        "timestamp",
        "TIMESTAMP",
        [
            datetime(2024, 5, 1, 10, 0, 0, 123456),
            datetime(2024, 5, 1, 10, 0),
            datetime(1999, 12, 31, 23, 59, 59, 120000),
        ],
        ["2024-05-01 10:00:00.123456", "2024-05-01 10:00:00", "1999-12-31 23:59:59.120000"],
    ),
    "timestamptz": Case(
        "timestamptz",
        "TIMESTAMP WITH TIME ZONE",
        [datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))), datetime(2024, 1, 1, tzinfo=UTC)],
        [
            "2024-05-01 08:00:00+00:00",
            "2024-01-01 00:00:00+00:00",
        ],  # PostgreSQL keeps the instant, not the offset
    ),
    "date": Case("date", "DATE", [date(2024, 5, 1), date(1, 1, 1)], ["2024-05-01", "0001-01-01"]),
    "numeric(12,2)": Case(
        "numeric(12,2)",
        "DECIMAL_TEXT(12,2)",
        [Decimal("19.90"), Decimal("-0.05"), Decimal("1234567890.12")],
        ["19.90", "-0.05", "1234567890.12"],
    ),
    "numeric": Case(
        "numeric",
        "DECIMAL_TEXT",
        [Decimal("0.000000000000000000001"), Decimal("123456789012345678901234567890.123"), Decimal("NaN")],
        ["0.000000000000000000001", "123456789012345678901234567890.123", "NaN"],
    ),
    "numeric-as-text": Case("numeric(8,3)", "TEXT", [Decimal("1.500")], ["1.500"]),
    "uuid": Case("uuid", "UUID", [U], [U]),
    "uuid-as-text": Case("uuid", "TEXT", [U], [U]),
    "jsonb": Case(
        "jsonb",
        "JSON",
        ['{"a": [1, 2, {"b": null}], "é": "中"}', '[1, "x"]', '"s"', "5", "null"],
        # PostgreSQL's text of each document (jsonb prints ", " and ": "); JSON has NUMERIC affinity
        ['{"a": [1, 2, {"b": null}], "é": "中"}', '[1, "x"]', '"s"', 5, "null"],
    ),
    "json": Case("json", "JSON", ['{"b":1,"a":[true]}', '"s"'], ['{"b":1,"a":[true]}', '"s"']),
}


def make(postgres_urls: Any, tmp_path: Path, case: Case) -> tuple[PgDevice, SqliteDevice]:
    log = MemorySharedLog()
    pg = PgDevice(
        postgres_urls(), log, f"CREATE TABLE items (id text PRIMARY KEY, v {case.pg_type})", ["items"]
    )
    lite = SqliteDevice(
        tmp_path / "shop.db",
        log,
        f"CREATE TABLE items (id TEXT PRIMARY KEY, v {case.sqlite_type})",
        ["items"],
    )
    return pg, lite


def pg_values(pg: PgDevice, prefix: str) -> list[Any]:
    """Each row's value as text (which shows numeric scale and float digits); JSON as parsed values, since
    a json column keeps the incoming text's spacing."""
    rows = pg.query(
        "SELECT v, v::text, pg_typeof(v)::text FROM items WHERE id LIKE :p ORDER BY id", {"p": prefix + "%"}
    )
    return [value if kind in ("json", "jsonb") else as_text for value, as_text, kind in rows]


def sqlite_values(lite: SqliteDevice, prefix: str) -> list[tuple[Any, ...]]:
    return lite.query("SELECT v, typeof(v) FROM items WHERE id LIKE ? ORDER BY id", (prefix + "%",))


@pytest.mark.parametrize("name", CASES)
def test_postgres_to_sqlite_and_back(postgres_urls: Any, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    pg, lite = make(postgres_urls, tmp_path, case)
    pg.sql(
        f"INSERT INTO items VALUES (:id, CAST(:v AS {case.pg_type}))",
        [{"id": f"r{i}", "v": v} for i, v in enumerate(case.pg)],
    )
    sync_rounds([pg, lite])
    assert [v for v, _ in sqlite_values(lite, "r")] == case.sqlite
    assert set_aside(lite) == []

    lite.sql("INSERT INTO items SELECT 'copy-' || id, v FROM items")
    sync_rounds([lite, pg])
    assert set_aside(pg) == []
    assert pg_values(pg, "copy-r") == pg_values(pg, "r")
    pg.close()
    lite.close()


@pytest.mark.parametrize("name", CASES)
def test_sqlite_to_postgres_and_back(postgres_urls: Any, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    pg, lite = make(postgres_urls, tmp_path, case)
    for i, v in enumerate(case.sqlite_in or case.sqlite):
        lite.sql("INSERT INTO items VALUES (?, ?)", (f"r{i}", v))
    sync_rounds([lite, pg])
    assert set_aside(pg) == []
    assert len(pg_values(pg, "r")) == len(case.sqlite)

    pg.sql("INSERT INTO items SELECT 'copy-' || id, v FROM items")
    sync_rounds([pg, lite])
    assert set_aside(lite) == []
    assert sqlite_values(lite, "copy-r") == sqlite_values(lite, "r")
    pg.close()
    lite.close()


def test_postgres_values_are_the_python_values_written(postgres_urls: Any, tmp_path: Path) -> None:
    """SQLite -> PostgreSQL gives the typed values, not text (checked for the types psycopg returns)."""
    pg, lite = make(postgres_urls, tmp_path, CASES["uuid"])
    lite.sql("INSERT INTO items VALUES ('r', ?)", (U,))
    sync_rounds([lite, pg])
    assert pg.query("SELECT v FROM items") == [(uuid.UUID(U),)]
    pg.close()
    lite.close()


def test_nan_reaches_postgres_but_sqlite_sets_it_aside(postgres_urls: Any, tmp_path: Path) -> None:
    """SQLite has no NaN (it would store NULL): the entry is set aside there, never altered."""
    log = MemorySharedLog()
    schema = "CREATE TABLE items (id text PRIMARY KEY, v float8)"
    a, b = (PgDevice(postgres_urls(), log, schema, ["items"]) for _ in range(2))
    lite = SqliteDevice(tmp_path / "s.db", log, "CREATE TABLE items (id TEXT PRIMARY KEY, v REAL)", ["items"])
    a.sql("INSERT INTO items VALUES ('nan', 'NaN'), ('one', 1)")
    sync_rounds([a, b, lite])
    assert b.query("SELECT id, v::text FROM items ORDER BY id") == [("nan", "NaN"), ("one", "1")]
    assert lite.query("SELECT id, v FROM items") == [("one", 1.0)]
    assert [r[2] for r in set_aside(lite)] == ['["nan"]']
    for device in (a, b, lite):
        device.close()


def test_sqlite_decimal_affinity_would_round_so_text_affinity_is_used() -> None:
    """Why decimals live in TEXT-affinity columns in SQLite (documents the choice)."""
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (lossy DECIMAL(20,2), exact DECIMAL_TEXT(20,2))")
    conn.execute("INSERT INTO t VALUES ('12345678901234567.89', '12345678901234567.89')")
    lossy, exact = conn.execute("SELECT lossy, exact FROM t").fetchone()
    assert lossy != "12345678901234567.89" and exact == "12345678901234567.89"
