"""PostgreSQL to PostgreSQL is exact, whatever the writer's session settings (issue 9), and keys are one
object per row (issue 10 point 4). Each value is compared by its text, which shows numeric scale, float
digits, JSON spacing and microseconds."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from storex_sync_firestore import HybridLogicalClock, MemorySharedLog, UnsuitableTableError
from storex_sync_firestore.clock import wall_clock_ms
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

from .forge import Writer
from .pg_devices import PgDevice, set_aside, sync_rounds

SESSIONS = {
    "kolkata": "-c TimeZone=Asia/Kolkata -c extra_float_digits=0 -c DateStyle=German,DMY "
    "-c IntervalStyle=sql_standard",
    "new_york": "-c TimeZone=America/New_York -c extra_float_digits=3 -c DateStyle=SQL,MDY",
}

SCHEMA = """
CREATE TABLE items (
    id text PRIMARY KEY, tz timestamptz, ts timestamp, d date, n numeric, n2 numeric(12, 2), f float8,
    f4 real, jb jsonb, j json, b bytea, u uuid, ok boolean, i int, big bigint, t text, iv interval,
    tza timestamptz[]
)
"""
VALUES = [
    "('r1', '2024-05-01 10:00:00.123456+02', '2024-05-01 10:00:00.000001', '2024-05-01', 1.50, 19.90, "
    '1.7976931348623157e308, 0.1, \'{"a": 1.10, "big": 123456789012345678901234567890, "x": [1e2]}\', '
    "'{\"b\" : 1,  \"b\": 2}', '\\x00ff', '01a217db-c51e-706f-b96e-1769f8bef04b', true, -2147483648, "
    "9223372036854775807, 'text é', '1 day 02:03:04', '{2024-05-01 10:00+02}')",
    "('r2', 'infinity', '-infinity', '0044-03-15 BC', 'NaN', -0.05, '-0', '-Infinity', '\"s\"', '5', '', "
    "NULL, false, 0, -1, '', '-1 year', '{}')",
    "('r3', '1999-12-31 23:59:59.999999-12', '0001-01-01 00:00:00', 'infinity', 'Infinity', 0, 5e-324, "
    "'NaN', 'null', '[]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "('r4', '12345-01-01 00:00+00', '-infinity', '12345-06-07', 0.000000000000000000001, NULL, 'NaN', "
    "3.4028235e38, '{}', NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL)",
]


def as_text(device: PgDevice, table: str = "items") -> list[tuple[Any, ...]]:
    """Every column as text under fixed settings: equal text means the same value, bit for bit."""
    with device.app.begin() as conn:
        conn.exec_driver_sql("SET LOCAL TimeZone = 'UTC'")
        conn.exec_driver_sql("SET LOCAL extra_float_digits = 1")
        conn.exec_driver_sql("SET LOCAL DateStyle = 'ISO, YMD'")
        conn.exec_driver_sql("SET LOCAL IntervalStyle = 'postgres'")
        columns = conn.execute(
            text(
                "SELECT attname FROM pg_attribute "
                "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 ORDER BY attnum"
            ),
            {"t": table},
        ).scalars()
        select = ", ".join(f'"{c}"::text' for c in columns)
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT {select} FROM {table} ORDER BY 1").all()]


@pytest.fixture
def shops(postgres_urls: Callable[[], str]) -> Iterator[Callable[..., PgDevice]]:
    made: list[PgDevice] = []

    def make(session: str | None = None, schema: str = SCHEMA, log: Any = None) -> PgDevice:
        device = PgDevice(postgres_urls(), log, schema, ["items"])
        if session is not None:
            device.app.dispose()
            device.app = create_engine(device.url, connect_args={"options": SESSIONS[session]})
        made.append(device)
        return device

    yield make
    for device in made:
        device.close()


def test_every_type_arrives_exactly_whatever_the_session(shops: Callable[..., PgDevice]) -> None:
    log = MemorySharedLog()
    a, b = shops("kolkata", log=log), shops("new_york", log=log)
    for row in VALUES:
        a.sql(f"INSERT INTO items VALUES {row}")
    sync_rounds([a, b])
    assert set_aside(b) == []
    assert as_text(b) == as_text(a)
    # and back, written by b's session: b copies each row, a receives the copies
    b.sql(
        "INSERT INTO items SELECT 'copy-' || id, tz, ts, d, n, n2, f, f4, jb, j, b, u, ok, i, big, t, iv,"
        " tza FROM items"
    )
    sync_rounds([b, a])
    assert set_aside(a) == []
    copies = [r[1:] for r in as_text(a) if r[0].startswith("copy-")]
    assert copies == [r[1:] for r in as_text(a) if not r[0].startswith("copy-")]


def test_the_log_text_does_not_depend_on_the_writers_session(shops: Callable[..., PgDevice]) -> None:
    log = MemorySharedLog()
    a, b = shops("kolkata", log=log), shops("new_york", log=log)
    for device in (a, b):
        for row in VALUES:
            device.sql(f"INSERT INTO items VALUES {row}")
        device.sync(stages=["share"])
    texts = [device.query("SELECT tbl, pk, op, value FROM _sync_log ORDER BY pk") for device in (a, b)]
    assert texts[0] == texts[1]
    value = json.loads(texts[0][0][3])
    assert value["tz"] == {"$datetime": "2024-05-01T08:00:00.123456+00:00"}
    assert value["f"] == 1.7976931348623157e308 and value["jb"]["$json"].startswith('{"a": 1.10, "x"')


def test_updates_that_only_flip_the_sign_of_zero_are_captured(shops: Callable[..., PgDevice]) -> None:
    log = MemorySharedLog()
    a, b = shops(log=log), shops(log=log)
    a.sql("INSERT INTO items (id, f) VALUES ('z', 0)")
    sync_rounds([a, b])
    a.sql("UPDATE items SET f = '-0' WHERE id = 'z'")
    sync_rounds([a, b])
    assert b.query("SELECT f::text FROM items") == [("-0",)]


def test_a_value_set_aside_for_its_column_is_applied_after_a_migration(
    shops: Callable[..., PgDevice],
) -> None:
    log = MemorySharedLog()
    a, b = (shops(log=log, schema="CREATE TABLE items (id text PRIMARY KEY, d date)") for _ in range(2))
    a.sql("INSERT INTO items (id, d) VALUES ('r', 'infinity'), ('s', '2024-05-01')")
    from .pg_devices import SqliteDevice  # a SQLite writer holds any text in a DATE column

    lite = SqliteDevice(
        Path(tempfile.mkdtemp()) / "s.db",
        log,
        "CREATE TABLE items (id TEXT PRIMARY KEY, d DATE)",
        ["items"],
        user_id="shopco",
    )
    lite.sql("INSERT INTO items VALUES ('t', '31/12/2024')")
    sync_rounds([a, lite, b])
    assert b.query("SELECT id, d::text FROM items ORDER BY id") == [("r", "infinity"), ("s", "2024-05-01")]
    assert [(r[1], r[2]) for r in set_aside(b)] == [("items", '["t"]')]
    b.sql("ALTER TABLE items ALTER COLUMN d TYPE text")
    b.db.enable_sync(["items"])
    b.sync()
    assert b.query("SELECT id, d FROM items ORDER BY id") == [
        ("r", "infinity"),
        ("s", "2024-05-01"),
        ("t", "31/12/2024"),
    ]
    assert set_aside(b) == []
    lite.close()


# --- keys: one object per row, or refused ---------------------------------------------------------------

KEYED = """
CREATE TABLE items (
    n numeric(10, 2), tz timestamptz, i int, u uuid, c char(4), f float8, v text,
    PRIMARY KEY (n, tz, i, u, c, f)
)
"""
LOCAL_KEY = (
    "(1.5, '2024-05-01 10:00:00.5+02', 777, '01a217db-c51e-706f-b96e-1769f8bef04b', 'ab', '-0', 'newer')"
)
SAME_KEY = [
    [
        {"$decimal": "1.5"},
        {"$datetime": "2024-05-01T08:00:00.5+00:00"},
        777,
        "01a217db-c51e-706f-b96e-1769f8bef04b",
        "ab",
        0.0,
    ],
    [
        "1.500",
        "2024-05-01 11:00:00.500000+03:00",
        777.0,
        {"$uuid": "01A217DB-C51E-706F-B96E-1769F8BEF04B"},
        "ab  ",
        0,
    ],
]


def foreign(log: MemorySharedLog, payloads: list[dict[str, Any]], user_id: str = "shopco") -> None:
    """Entries written by another device a minute ago (older than anything the test writes)."""
    clock = HybridLogicalClock(now_ms=lambda: wall_clock_ms() - 60_000)
    Writer.register(log, user_id).upload(payloads, hlcs=[clock.stamp() for _ in payloads])


@pytest.mark.parametrize("form", range(len(SAME_KEY)))
def test_a_key_in_another_form_is_the_same_object(shops: Callable[..., PgDevice], form: int) -> None:
    log = MemorySharedLog()
    foreign(log, [{"op": "create", "table": "items", "pk": SAME_KEY[form], "value": {"v": "older"}}])
    a = shops(schema=KEYED, log=log)
    a.sql(f"INSERT INTO items VALUES {LOCAL_KEY}")
    a.sync()
    assert a.query("SELECT v FROM items") == [("newer",)]
    assert set_aside(a) == []
    assert len(a.query("SELECT DISTINCT pk FROM _sync_log")) == 1


@pytest.mark.parametrize(
    ("key_type", "why"),
    [
        ("real", "rounds"),
        ("numeric", "unconstrained numeric"),
        ("jsonb", "canonical text"),
        ("interval", "canonical text"),
    ],
)
def test_key_types_without_one_text_per_row_are_refused(postgres_url: str, key_type: str, why: str) -> None:
    with pytest.raises(UnsuitableTableError, match=why) as error:
        PgDevice(
            postgres_url, MemorySharedLog(), f"CREATE TABLE items (id {key_type} PRIMARY KEY)", ["items"]
        )
    assert "numeric(p,s)" in (error.value.hint or "")
