"""PostgreSQL capture: triggers log every write, by any session, in the writer's transaction."""

from __future__ import annotations

import json
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from storex_sync_firestore import MemorySharedLog, SyncedDatabase, UnsuitableTableError, do_sync
from storex_sync_firestore.capture.base import ColumnInfo
from storex_sync_firestore.codec import JsonText
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

from .pg_devices import PgDevice, SqliteDevice, set_aside, sync_rounds

SCHEMA = """
CREATE TABLE notes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), title text, body bytea, score float8,
                    n int, price numeric(10, 2));
"""
ID = "01a217db-c51e-706f-b96e-1769f8bef04b"


@pytest.fixture
def engine(postgres_url: str) -> Any:
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(SCHEMA)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: Any, postgres_url: str) -> Any:
    db = SyncedDatabase(postgres_url)
    db.enable_sync(["notes"])
    yield db
    db.engine.dispose()


def run(engine: Any, statement: str, params: dict[str, Any] | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params or {})


def captured(engine: Any) -> list[tuple[str, list[Any], Any]]:
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT op, pk, value FROM _sync_capture ORDER BY seq")).all()
    return [(op, json.loads(pk), None if v is None else json.loads(v)) for op, pk, v in rows]


def test_insert_update_delete_are_captured_with_changed_columns_only(engine: Any, db: Any) -> None:
    run(engine, f"INSERT INTO notes VALUES ('{ID}', 'hi', '\\x00ff', 1.5, 7, 19.90)")
    run(engine, f"UPDATE notes SET title = 'ho', n = 7 WHERE id = '{ID}'")
    run(engine, f"UPDATE notes SET title = 'ho' WHERE id = '{ID}'")  # identical: nothing logged
    run(engine, f"DELETE FROM notes WHERE id = '{ID}'")
    assert captured(engine) == [
        (
            "create",
            [ID],
            {"title": "hi", "body": {"$bytes": "00ff"}, "score": 1.5, "n": 7, "price": {"$decimal": "19.90"}},
        ),
        ("modify", [ID], {"title": "ho"}),
        ("delete", [ID], None),
    ]


def test_value_text_is_compact_json(engine: Any, db: Any) -> None:
    run(engine, f"INSERT INTO notes (id, title) VALUES ('{ID}', 'a \"quoted\" \\ text')")
    with engine.begin() as conn:
        pk, value = conn.execute(text("SELECT pk, value FROM _sync_capture")).one()
    assert pk == f'["{ID}"]'
    assert value == '{"title":"a \\"quoted\\" \\\\ text","body":null,"score":null,"n":null,"price":null}'


def test_key_change_is_a_delete_and_a_create(engine: Any, db: Any) -> None:
    run(engine, f"INSERT INTO notes (id, title) VALUES ('{ID}', 'x')")
    other = str(uuid.uuid4())
    run(engine, f"UPDATE notes SET id = '{other}' WHERE id = '{ID}'")
    ops = [(op, pk) for op, pk, _ in captured(engine)]
    assert ops == [("create", [ID]), ("delete", [ID]), ("create", [other])]


def test_rolled_back_writes_are_not_captured(engine: Any, db: Any) -> None:
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO notes (title) VALUES ('never')"))
        conn.rollback()
    assert captured(engine) == []


def test_truncate_is_captured_as_deletes(engine: Any, db: Any) -> None:
    run(engine, "INSERT INTO notes (title) SELECT 'n' || i FROM generate_series(1, 3) i")
    run(engine, "TRUNCATE notes")
    assert [op for op, _, _ in captured(engine)] == ["create"] * 3 + ["delete"] * 3


def test_silence_is_per_transaction_other_sessions_are_still_captured(engine: Any, db: Any) -> None:
    with db.transaction() as conn:
        db.dialect.silence(conn)
        conn.execute(text("INSERT INTO notes (title) VALUES ('applied')"))
        run(engine, "INSERT INTO notes (title) VALUES ('app')")  # another session, same moment
        db.dialect.unsilence(conn)
    run(engine, "INSERT INTO notes (title) VALUES ('after')")  # the setting did not outlive the transaction
    titles = [v["title"] for _, _, v in captured(engine)]
    assert titles == ["app", "after"]


def test_existing_rows_are_captured_once_and_enable_is_idempotent(engine: Any, postgres_url: str) -> None:
    run(engine, "INSERT INTO notes (title) VALUES ('old')")
    db = SyncedDatabase(postgres_url)
    db.enable_sync(["notes"])
    db.enable_sync(["notes"])
    assert [op for op, _, _ in captured(engine)] == ["create"]
    run(engine, "UPDATE notes SET title = 'new'")
    assert [op for op, _, _ in captured(engine)] == ["create", "modify"]  # one trigger, not two
    db.engine.dispose()


def test_disable_leaves_tables_and_data(engine: Any, db: Any) -> None:
    run(engine, "INSERT INTO notes (title) VALUES ('kept')")
    db.disable_sync()
    db.disable_sync()
    run(engine, "INSERT INTO notes (title) VALUES ('unlogged')")
    with engine.begin() as conn:
        assert sorted(conn.execute(text("SELECT title FROM notes")).scalars()) == ["kept", "unlogged"]
        triggers = conn.execute(text("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal")).scalar()
        functions = conn.execute(text("SELECT count(*) FROM pg_proc WHERE proname LIKE '\\_sync%'")).scalar()
    assert (triggers, functions) == (0, 0)
    assert len(captured(engine)) == 1


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE t (id serial PRIMARY KEY, x text)",
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, x text)",
        "CREATE TABLE t (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, x text)",
        "CREATE SEQUENCE s; CREATE TABLE t (id bigint PRIMARY KEY DEFAULT nextval('s'), x text)",
    ],
)
def test_sequence_numbered_keys_are_refused_with_an_explanation(postgres_url: str, ddl: str) -> None:
    engine = create_engine(postgres_url)
    run(engine, ddl)
    db = SyncedDatabase(postgres_url)
    with pytest.raises(UnsuitableTableError) as raised:
        db.enable_sync(["t"])
    message = str(raised.value)
    assert "same key" in message and "gen_random_uuid()" in message and "uuid7()" in message
    with engine.begin() as conn:  # nothing was installed
        assert conn.execute(text("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal")).scalar() == 0
    engine.dispose()
    db.engine.dispose()


def test_tables_without_key_or_missing_are_refused(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    run(engine, "CREATE TABLE loose (x text)")
    db = SyncedDatabase(postgres_url)
    with pytest.raises(UnsuitableTableError, match="no primary key"):
        db.enable_sync(["loose"])
    with pytest.raises(UnsuitableTableError, match="no table"):
        db.enable_sync(["nope"])
    engine.dispose()
    db.engine.dispose()


def test_text_composite_and_plain_integer_keys_are_accepted(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    run(engine, "CREATE TABLE a (code text PRIMARY KEY, x int)")
    run(engine, "CREATE TABLE b (shop text, sku int, qty int, PRIMARY KEY (sku, shop))")
    db = SyncedDatabase(postgres_url)
    infos = db.enable_sync(["a", "b"])
    assert [i.pk for i in infos] == [("code",), ("sku", "shop")]
    run(engine, "INSERT INTO b VALUES ('s1', 42, 3)")
    assert captured(engine) == [("create", [42, "s1"], {"qty": 3})]
    engine.dispose()
    db.engine.dispose()


def col(kind: str, type_: str) -> ColumnInfo:
    return ColumnInfo("c", type_, kind)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "type_", "value"),
    [
        ("int", "integer", "12"),
        ("int", "integer", 2**31),
        ("int", "smallint", 40_000),
        ("int", "bigint", 1.5),
        ("uuid", "uuid", "not-a-uuid"),
        ("uuid", "uuid", ID.upper()),
        ("decimal", "numeric(10,2)", Decimal("1.005")),
        ("decimal", "numeric(4,2)", Decimal("100")),
        ("decimal", "numeric", "abc"),
        ("bool", "boolean", "yes"),
        ("text", "text", 5),
        ("text", "text", "nul\x00"),
        ("bytes", "bytea", "00ff"),
        ("datetime", "timestamp without time zone", "2024-05-01T10:00:00+02:00"),
        ("datetime_tz", "timestamp with time zone", "2024-05-01T10:00:00"),
        ("date", "date", "yesterday"),
        ("json", "jsonb", "not json"),
        ("float", "real", 1e300),
        ("float", "double precision", 2**60 + 1),
    ],
)
def test_values_a_column_cannot_hold_raise_value_error(db: Any, kind: str, type_: str, value: Any) -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        db.dialect.to_db(col(kind, type_), value)


def test_values_are_converted_without_alteration(db: Any) -> None:
    to_db = db.dialect.to_db
    assert to_db(col("bool", "boolean"), 1) is True
    assert to_db(col("uuid", "uuid"), ID) == uuid.UUID(ID)
    assert str(to_db(col("decimal", "numeric(10,2)"), "19.90")) == "19.90"
    assert to_db(col("decimal", "numeric(10,2)"), 19.9) == Decimal("19.9")
    assert to_db(col("int", "integer"), 3.0) == 3
    assert to_db(col("json", "jsonb"), JsonText('"s"')).obj == '"s"'  # the document's text, verbatim


def test_a_value_the_column_cannot_hold_is_set_aside_not_altered(postgres_urls: Any, tmp_path: Any) -> None:
    log = MemorySharedLog()
    pg = PgDevice(
        postgres_urls(), log, "CREATE TABLE items (id text PRIMARY KEY, qty int, note text)", ["items"]
    )
    lite = SqliteDevice(
        tmp_path / "s.db", log, "CREATE TABLE items (id TEXT PRIMARY KEY, qty, note)", ["items"]
    )
    lite.sql("INSERT INTO items VALUES ('good', 1, 'ok'), ('bad', 'lots', 'x'), ('big', 99999999999, 'y')")
    sync_rounds([lite, pg])
    assert pg.query("SELECT id, qty, note FROM items") == [("good", 1, "ok")]
    assert sorted(r[2] for r in set_aside(pg)) == ['["bad"]', '["big"]']
    pg.close()
    lite.close()


def test_lock_rows_holds_the_rows_until_the_sync_transaction_ends(engine: Any, db: Any) -> None:
    run(engine, f"INSERT INTO notes (id, title) VALUES ('{ID}', 'x')")
    table = db.synced_tables()["notes"]
    blocked: list[str] = []

    def app_write() -> None:
        try:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '300ms'"))
                conn.execute(text(f"UPDATE notes SET title = 'y' WHERE id = '{ID}'"))
        except OperationalError:
            blocked.append("blocked")

    with db.transaction() as conn:
        db.dialect.lock_rows(conn, table, [[ID], [str(uuid.uuid4())], ["not a uuid"]])
        writer = threading.Thread(target=app_write)
        writer.start()
        writer.join()
    assert blocked == ["blocked"]
    app_write()  # after the transaction the row is free again
    assert blocked == ["blocked"]


def test_sync_log_pages_in_code_point_order(db: Any) -> None:
    """The engine pages through (tbl, pk) comparing in Python; the columns must sort the same way."""
    with db.transaction() as conn:
        ordered = conn.execute(
            text("SELECT x FROM (VALUES ('a'), ('B'), ('[\"b\"]'), ('_')) v(x) ORDER BY x COLLATE \"C\"")
        ).scalars()
        collation = conn.execute(
            text("SELECT collation_name FROM information_schema.columns WHERE table_name = '_sync_log' "
                 "AND column_name IN ('tbl', 'pk')")
        ).scalars()  # fmt: skip
        assert list(ordered) == sorted(["a", "B", '["b"]', "_"])
        assert set(collation) == {"C"}


def test_round_trip_through_a_sync(postgres_urls: Any) -> None:
    log = MemorySharedLog()
    a, b = (PgDevice(postgres_urls(), log, SCHEMA, ["notes"]) for _ in range(2))
    a.sql(f"INSERT INTO notes VALUES ('{ID}', 'hi', '\\x00ff', 'NaN', 7, 19.90)")
    sync_rounds([a, b])
    assert b.query("SELECT id::text, title, body, score::text, n, price::text FROM notes") == [
        (ID, "hi", b"\x00\xff", "NaN", 7, "19.90")
    ]
    b.sql(f"UPDATE notes SET price = 21.00 WHERE id = '{ID}'")
    do_sync(b.db, log)
    do_sync(a.db, log)
    assert a.query("SELECT price::text FROM notes") == [("21.00",)]
    a.close()
    b.close()
