"""Schema changes of synced tables, on SQLite and PostgreSQL: each followed or stopped at with a fix, never
a silent difference, and every device ends with identical tables (the README's migration recipes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from storex_sync_firestore import FilesystemSharedLog, SchemaChangedError
from storex_sync_firestore.cli import cli
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

from .pg_devices import PgDevice, SqliteDevice

NOTES = "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT, body TEXT);"
Make = Callable[..., Any]


@pytest.fixture(params=["sqlite", "postgresql"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """Devices of one dialect sharing one folder log (so that the CLI can open it too)."""
    log = FilesystemSharedLog(tmp_path / "log")
    made: list[Any] = []

    def device(schema: str = NOTES, tables: tuple[str, ...] = ("notes",), **enable: Any) -> Any:
        if request.param == "sqlite":
            new: Any = SqliteDevice(tmp_path / f"d{len(made)}.db", log, schema, [])
        else:
            new = PgDevice(request.getfixturevalue("postgres_urls")(), log, schema, [])
        new.db.enable_sync(list(tables), **enable)
        new.db.update_state(log=str(tmp_path / "log"))
        new.tables = list(tables)
        made.append(new)
        return new

    yield device
    for d in made:
        d.close()


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def db_url(device: Any) -> str:
    return str(device.db.engine.url.render_as_string(hide_password=False))


def migrate(device: Any, statement: str, tables: list[str] | None = None) -> None:
    with device.db.migrate(tables) as conn:
        conn.exec_driver_sql(statement)
    device.query("SELECT count(*) FROM notes")  # a SQLite connection prepares with the schema it last read


def settle(devices: list[Any], rounds: int = 2) -> None:
    for _ in range(rounds):
        for device in devices:
            device.sync()


def rows(device: Any, table: str = "notes") -> list[tuple[Any, ...]]:
    return [tuple(r) for r in device.query(f"SELECT * FROM {table} ORDER BY 1")]


def set_aside(device: Any) -> list[str]:
    return [str(r) for (r,) in device.query("SELECT reason FROM _sync_quarantine ORDER BY id")]


def identical(devices: list[Any], table: str = "notes") -> list[tuple[Any, ...]]:
    first = rows(devices[0], table)
    for other in devices[1:]:
        assert rows(other, table) == first
        assert set_aside(other) == []
    assert set_aside(devices[0]) == []
    return first


@pytest.mark.parametrize("column", ["TEXT", "TEXT NOT NULL DEFAULT 'none'"])
def test_a_column_added_on_one_device_is_captured_and_shared(make: Make, column: str) -> None:
    a, b = make(), make()
    a.sql("INSERT INTO notes VALUES ('n1', 'one', NULL)")
    settle([a, b])
    a.sql(f"ALTER TABLE notes ADD COLUMN extra {column}")
    a.sql("UPDATE notes SET extra = 'written before sync knew the column' WHERE id = 'n1'")
    a.sql("INSERT INTO notes VALUES ('n2', 'two', NULL, 'new row')")
    a.sync()  # notices the column at its start: captured from now on, the value written meanwhile shared
    b.sync()
    # b lacks the column: a's entries wait, with the fix in the reason (before, they were lost silently)
    assert any("extra" in r and "init --db" in r for r in set_aside(b))
    b.sql("INSERT INTO notes VALUES ('n3', 'three', NULL)")  # reaches a, which fills in its default
    b.sql(f"ALTER TABLE notes ADD COLUMN extra {column}")
    run("init", "--db", db_url(b))  # alone: the schema is followed and the entries set aside replayed
    settle([a, b])
    default = None if column == "TEXT" else "none"
    assert identical([a, b]) == [
        ("n1", "one", None, "written before sync knew the column"),
        ("n2", "two", None, "new row"),
        ("n3", "three", None, default),
    ]


def test_a_column_dropped_with_capture_off_and_on_devices_joining_later(make: Make) -> None:
    a, b = make(), make()
    a.sql("INSERT INTO notes VALUES ('n1', 'one', 'body one')")
    settle([a, b])
    run("disable", "--db", db_url(a), "--tables", "notes")  # SQLite refuses the drop while triggers name it
    a.sql("ALTER TABLE notes DROP COLUMN body")
    run("init", "--db", db_url(a), "--tables", "notes")
    b.sql("UPDATE notes SET title = 'edited on b', body = 'b still has it' WHERE id = 'n1'")
    settle([a, b])
    assert rows(a) == [("n1", "edited on b")] and set_aside(a) == []  # body is ignored, the rest applied
    migrate(b, "ALTER TABLE notes DROP COLUMN body", ["notes"])  # the helper: one transaction, capture on
    b.sql("INSERT INTO notes VALUES ('n2', 'two')")
    settle([a, b])
    late = make("CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT);")  # never had the column
    settle([late, a, b])
    assert identical([a, b, late]) == [("n1", "edited on b"), ("n2", "two")]


def test_a_column_renamed_by_expand_and_contract(make: Make) -> None:
    a, b = make(), make()
    a.sql("INSERT INTO notes VALUES ('n1', 'one', 'x')")
    settle([a, b])
    for device in (a, b):  # 1. every device adds the new column
        migrate(device, "ALTER TABLE notes ADD COLUMN headline TEXT")
    settle([a, b])
    a.sql("UPDATE notes SET headline = title")  # 2. one device copies (the application writes both now)
    b.sql("INSERT INTO notes VALUES ('n2', 'two', 'y', 'two')")
    settle([a, b])
    for device in (a, b):  # 3. every device drops the old column
        migrate(device, "ALTER TABLE notes DROP COLUMN title")
    settle([a, b])
    late = make("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, headline TEXT);")
    settle([late, a, b])
    assert identical([a, b, late]) == [("n1", "x", "one"), ("n2", "y", "two")]


def test_a_renamed_table_is_followed_and_renaming_it_back_too(make: Make) -> None:
    a, b = make(), make()
    a.sql("INSERT INTO notes VALUES ('n1', 'one', NULL)")
    settle([a, b])
    a.sql("ALTER TABLE notes RENAME TO memos")  # before, every later sync of a failed
    a.sql("INSERT INTO memos VALUES ('n2', 'two', NULL)")
    b.sql("UPDATE notes SET body = 'from b' WHERE id = 'n1'")
    settle([a, b])
    assert rows(a, "memos") == rows(b, "notes") == [("n1", "one", "from b"), ("n2", "two", None)]
    assert any("renamed" in str(r) for (r,) in a.query("SELECT detail FROM _sync_resolutions"))
    a.sql("ALTER TABLE memos RENAME TO notes")
    b.sql("INSERT INTO notes VALUES ('n3', 'three', NULL)")
    settle([a, b])
    late = make("CREATE TABLE memos (id TEXT PRIMARY KEY, title TEXT, body TEXT);", tables=())
    run("init", "--db", db_url(late), "--tables", "memos:notes")  # joins under the log's name
    settle([late, a, b])
    assert (
        identical([a, b])
        == rows(late, "memos")
        == [
            ("n1", "one", "from b"),
            ("n2", "two", None),
            ("n3", "three", None),
        ]
    )


def test_a_synced_table_gone_stops_sync_with_the_fix(make: Make) -> None:
    a, b = make(), make()
    a.sql("INSERT INTO notes VALUES ('n1', 'one', NULL)")
    settle([a, b])
    a.sql("DROP TABLE notes")
    with pytest.raises(SchemaChangedError, match="no longer in this database") as stopped:
        a.sync()
    assert "storex-sync disable --db URL --tables notes" in str(stopped.value.hint)
    run("disable", "--db", db_url(a), "--tables", "notes")
    b.sql("INSERT INTO notes VALUES ('n2', 'two', NULL)")
    settle([a, b])  # a syncs again; b's entries wait on a, set aside until notes is synced there again
    assert any("not synced" in r for r in set_aside(a))
    assert "capture off  notes" in run("status", "--db", db_url(a))


def test_a_changed_primary_key_stops_sync(make: Make) -> None:
    (a,) = [make()]
    a.sql("INSERT INTO notes VALUES ('n1', 'one', NULL)")
    a.sync()
    a.sql("CREATE TABLE notes2 (id TEXT, title TEXT, body TEXT, PRIMARY KEY (id, title))")
    a.sql("INSERT INTO notes2 SELECT * FROM notes")
    a.sql("DROP TABLE notes")
    a.sql("ALTER TABLE notes2 RENAME TO notes")
    with pytest.raises(SchemaChangedError, match="primary key"):
        a.sync()
