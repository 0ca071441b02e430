"""The ``CaptureDialect`` contract as a test suite that every database dialect runs: capture, silencing,
transactions, the SQL fragments the package asks a dialect for, and apply.

Subclass :class:`DialectConformance` and provide a ``database_url`` fixture that yields the SQLAlchemy
URL of a fresh, empty database of your dialect; pytest collects every ``test_*`` method for it::

    class TestMyDialect(DialectConformance):
        @pytest.fixture
        def database_url(self):
            yield "mysql+pymysql://..."

The tables are written as an application would, with plain SQL on a connection of their own, and the
schema uses only types every SQL database has (text and integer), so the same tests hold everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from ..apply import apply_operations
from ..capture import capture_for, dialect_class
from ..capture.base import CAPTURE_TABLE, CaptureDialect, TableInfo
from ..codec import dumps, loads
from ..models import Operation

ODD = 'odd "name" table'
"""A table name that needs quoting, with a column named like a keyword."""


def app(engine: Engine, *statements: str) -> None:
    """Write as the application would: plain SQL, one transaction, no sync code involved."""
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


class DialectConformance:
    """What every dialect owes the package. Needs a ``database_url`` fixture (a fresh, empty database)."""

    @pytest.fixture
    def engine(self, database_url: str) -> Iterator[Engine]:
        engine = create_engine(database_url)
        yield engine
        engine.dispose()

    @pytest.fixture
    def dialect(self, engine: Engine) -> CaptureDialect:
        return capture_for(engine)

    def enable(self, engine: Engine, dialect: CaptureDialect, name: str = "notes") -> TableInfo:
        if name == "notes":
            app(engine, "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT, n INTEGER)")
        else:
            app(
                engine,
                f'CREATE TABLE "{name.replace(chr(34), chr(34) * 2)}" (k TEXT PRIMARY KEY, "select" TEXT)',
            )
        with dialect.transaction() as conn:
            dialect.create_sync_tables(conn)
            dialect.create_sync_tables(conn)  # idempotent
            info = dialect.reflect_table(conn, name)
            dialect.install_triggers(conn, info)
        return info

    def captured(self, dialect: CaptureDialect, info: TableInfo) -> list[tuple[str, object, str, object]]:
        """(table, key, op, values) of everything captured, in order; then forgotten."""
        with dialect.transaction() as conn:
            seqs, changes = dialect.read_captured(conn, 0, 1000, {info.name: info})
            if seqs:
                dialect.forget_captured(conn, seqs)
        return [(c.table, loads(c.pk), c.op, None if c.value is None else loads(c.value)) for c in changes]

    def test_the_registry_knows_the_dialect(self, engine: Engine, dialect: CaptureDialect) -> None:
        assert type(dialect) is dialect_class(engine.dialect.name)
        assert dialect.name == engine.dialect.name
        dialect.check_storage()  # a healthy database passes

    def test_triggers_capture_every_write_of_any_writer_in_order(
        self, engine: Engine, dialect: CaptureDialect
    ) -> None:
        info = self.enable(engine, dialect)
        assert info.pk == ("id",) and [c.name for c in info.value_columns] == ["title", "n"]
        # Read after each write: a dialect may drop a change that a later one makes moot (SQLite reads
        # values when it logs, so a created row deleted meanwhile is logged as the delete alone).
        got = []
        for statement in (
            "INSERT INTO notes VALUES ('a', 'first', 1)",
            "UPDATE notes SET title = 'changed' WHERE id = 'a'",
            "INSERT INTO notes VALUES ('b', NULL, 2)",
            "DELETE FROM notes WHERE id = 'b'",
        ):
            app(engine, statement)
            got += self.captured(dialect, info)
        assert [(t, k, op) for t, k, op, _ in got] == [
            ("notes", ["a"], "create"),
            ("notes", ["a"], "modify"),
            ("notes", ["b"], "create"),
            ("notes", ["b"], "delete"),
        ]
        first = got[0][3]
        assert isinstance(first, dict) and first.get("title") == "first" and first.get("n") == 1
        assert self.captured(dialect, info) == [], "forgotten once logged"

    def test_a_silenced_transaction_is_not_captured_and_capture_resumes(
        self, engine: Engine, dialect: CaptureDialect
    ) -> None:
        info = self.enable(engine, dialect)
        with dialect.transaction() as conn:
            dialect.silence(conn)
            conn.execute(text("INSERT INTO notes VALUES ('remote', 'applied by sync', 1)"))
            dialect.unsilence(conn)
        app(engine, "INSERT INTO notes VALUES ('local', 'by the app', 2)")
        assert [k for _, k, _, _ in self.captured(dialect, info)] == [["local"]]

    def test_a_failed_transaction_leaves_nothing(self, engine: Engine, dialect: CaptureDialect) -> None:
        info = self.enable(engine, dialect)
        with pytest.raises(RuntimeError), dialect.transaction() as conn:
            conn.execute(text("INSERT INTO notes VALUES ('x', 'rolled back', 1)"))
            raise RuntimeError("abort")
        with dialect.transaction(write=False) as conn:
            assert conn.execute(text("SELECT count(*) FROM notes")).scalar() == 0
            assert conn.execute(text(f"SELECT count(*) FROM {CAPTURE_TABLE}")).scalar() == 0
        assert self.captured(dialect, info) == []

    def test_dropped_triggers_capture_nothing_and_keep_the_data(
        self, engine: Engine, dialect: CaptureDialect
    ) -> None:
        info = self.enable(engine, dialect)
        with dialect.transaction() as conn:
            dialect.drop_triggers(conn, info)
        app(engine, "INSERT INTO notes VALUES ('a', 'uncaptured', 1)")
        assert self.captured(dialect, info) == []
        with dialect.transaction() as conn:
            assert dialect.table_exists(conn, "notes") and not dialect.table_exists(conn, "no_such_table")

    def test_names_that_need_quoting(self, engine: Engine, dialect: CaptureDialect) -> None:
        info = self.enable(engine, dialect, ODD)
        app(engine, f"INSERT INTO {info.sql_name} (k, \"select\") VALUES ('k1', 'v')")
        got = self.captured(dialect, info)
        assert [(t, k, op) for t, k, op, _ in got] == [(ODD, ["k1"], "create")]
        assert dialect.quote('a"b') == '"a""b"'

    def test_apply_upserts_updates_and_deletes_without_capturing(
        self, engine: Engine, dialect: CaptureDialect
    ) -> None:
        info = self.enable(engine, dialect)
        app(
            engine,
            "INSERT INTO notes VALUES ('old', 'to delete', 1)",
            "INSERT INTO notes VALUES ('u', 'x', 2)",
        )
        self.captured(dialect, info)
        ops = [
            Operation("insert", "notes", ("new",), {"title": "inserted", "n": 3}),
            Operation("insert", "notes", ("u",), {"title": "upserted", "n": 4}),  # the row exists: updated
            Operation("update", "notes", ("new",), {"n": 5}),
            Operation("delete", "notes", ("old",), {}),
        ]
        with dialect.transaction() as conn:
            dialect.silence(conn)
            dialect.lock_rows(conn, info, [("new",), ("u",), ("old",)])
            result = apply_operations(conn, dialect, {"notes": info}, ops[:2])
            result2 = apply_operations(conn, dialect, {"notes": info}, ops[2:])
            dialect.unsilence(conn)
        assert result.applied == 2 and result2.applied == 2 and not result.failed and not result2.failed
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, title, n FROM notes ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [("new", "inserted", 5), ("u", "upserted", 4)]
        assert self.captured(dialect, info) == []

    def test_insert_or_ignore_and_value_lists(self, engine: Engine, dialect: CaptureDialect) -> None:
        app(engine, "CREATE TABLE kv (k TEXT, v TEXT, w TEXT, PRIMARY KEY (k, v))")
        statement = dialect.insert_or_ignore("kv", ("k", "v", "w"), [":k", ":v", ":w"])
        with dialect.transaction() as conn:
            for w in ("first", "second"):  # the second is ignored: same key
                conn.execute(text(statement), [{"k": "a", "v": "1", "w": w}, {"k": "b", "v": "2", "w": w}])
            where = dialect.in_values(("k", "v"), [(":k0", ":v0"), (":k1", ":v1")])
            found = conn.execute(
                text(f"SELECT k, w FROM kv WHERE {where} ORDER BY k"),
                {"k0": "a", "v0": "1", "k1": "b", "v1": "9"},
            ).all()
        assert [tuple(r) for r in found] == [("a", "first")]

    def test_keys_read_back_as_capture_writes_them(self, engine: Engine, dialect: CaptureDialect) -> None:
        info = self.enable(engine, dialect)
        app(engine, "INSERT INTO notes VALUES ('k', 't', 1)")
        (captured,) = self.captured(dialect, info)
        with dialect.transaction(write=False) as conn:
            columns = ", ".join(dialect.key_columns(info, "t"))
            row = conn.execute(text(f"SELECT {columns} FROM notes t")).one()
        assert dialect.key_from_row(info, tuple(row)) == dumps(captured[1])
