"""Errors a newcomer meets first: a missing database driver, and hints that fit the database named."""

from __future__ import annotations

import os
from pathlib import Path

from storex_sync_firestore.testing.emulator import free_port
from tests.test_cli import cli, one_line_error, sql, url

# Run the CLI as if neither PostgreSQL driver were installed: a None in sys.modules makes ``import`` fail
# and ``importlib.util.find_spec`` answer None, as for a package that is not there.
NO_DRIVERS = "import sys\nfor name in ('psycopg', 'psycopg2'):\n    sys.modules[name] = None\n"


def without_drivers(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_DRIVERS)
    return {**os.environ, "PYTHONPATH": str(site)}


def test_a_missing_postgres_driver_names_the_extra_to_install(tmp_path: Path) -> None:
    env = without_drivers(tmp_path)
    for db in ("postgresql://me@127.0.0.1/shop", "postgresql+psycopg://me@127.0.0.1/shop"):
        msg = one_line_error(cli("status", "--db", db, env=env, check=False))
        assert "driver" in msg and "pip install 'storex-sync-firestore[postgres]'" in msg, msg


def test_the_plain_postgresql_url_uses_the_driver_the_extra_installs(tmp_path: Path) -> None:
    """``postgresql://`` means psycopg2 to SQLAlchemy; the extra installs psycopg 3, which is used."""
    port = free_port()
    msg = one_line_error(cli("status", "--db", f"postgresql://me@127.0.0.1:{port}/shop", check=False))
    assert "Error: PostgreSQL error:" in msg and "No module" not in msg
    assert "PostgreSQL server is running" in msg


def test_an_unsupported_database_says_which_are_supported() -> None:
    msg = one_line_error(cli("status", "--db", "mysql://me@127.0.0.1/shop", check=False))
    assert "does not support mysql" in msg and "SQLite" in msg and "PostgreSQL" in msg


def test_a_sqlite_error_gets_a_sqlite_hint(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("these are my notes, not a database\n" * 200)
    msg = one_line_error(cli("status", "--db", url(text), check=False))
    assert "Error: SQLite error:" in msg and "not a SQLite database" in msg
    assert "server" not in msg  # a file has no server to be running

    typo = tmp_path / "notes.db"
    sql(typo, "CREATE TABLE notes (id TEXT PRIMARY KEY)")
    msg = one_line_error(
        cli("init", "--db", url(text), "--tables", "notes", "--log", "memory://", check=False)
    )
    assert "not a SQLite database" in msg and "server" not in msg
