"""Shared-log backends come from a registry: in-process registrations, built-ins, and installed packages'
entry points, so that a third party's ``--log myscheme://...`` works without editing this package."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from storex_sync_firestore.errors import ConfigurationError
from storex_sync_firestore.shared_log import MemorySharedLog, open_shared_log, register_backend
from storex_sync_firestore.shared_log import backends as registry

EXTERNAL = Path(__file__).parent / "external_backend"


def test_an_unknown_scheme_names_the_known_ones_and_the_entry_point_group() -> None:
    with pytest.raises(ConfigurationError) as raised:
        open_shared_log("nosuchscheme://somewhere")
    message = str(raised.value)
    assert "nosuchscheme://" in message and "firestore://" in message and "memory://" in message
    assert registry.ENTRY_POINT_GROUP in message


def test_a_backend_registered_in_process_opens_its_urls_with_the_callers_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_registered", {})
    opened: list[tuple[str, dict[str, Any]]] = []

    def opener(url: str, **options: Any) -> MemorySharedLog:
        opened.append((url, options))
        return MemorySharedLog()

    register_backend("mine", opener)
    assert isinstance(open_shared_log("mine://x"), MemorySharedLog)
    assert isinstance(open_shared_log("mine+driver://y", retry=None), MemorySharedLog)  # suffix stripped
    assert opened == [("mine://x", {}), ("mine+driver://y", {"retry": None})]


def test_postgresql_is_registered_like_a_third_party_backend() -> None:
    from importlib.metadata import entry_points

    (ep,) = entry_points(group=registry.ENTRY_POINT_GROUP, name="postgresql")
    assert ep.value == "storex_sync_firestore.shared_log.postgres:open_log"
    assert "postgresql" not in registry._BUILT_IN


@pytest.fixture(scope="module")
def example_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/external_backend pip-installed into a folder of its own (put on PYTHONPATH), as a user would
    install a third party's backend; the venv itself is left alone."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(EXTERNAL)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "storex_sync_firestore", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_a_package_outside_the_tree_registers_a_backend_by_entry_point_and_the_cli_syncs_through_it(
    example_package: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "example-log"
    dbs = [tmp_path / "a.db", tmp_path / "b.db"]
    for path in dbs:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT)")
        conn.close()
    for path in dbs:
        db, log = f"sqlite:///{path}", f"example://{folder}"
        cli(example_package, "init", "--db", db, "--tables", "notes", "--user", "alice", "--log", log)
    with sqlite3.connect(dbs[0]) as conn:
        conn.execute("INSERT INTO notes VALUES ('n1', 'through a third-party backend')")
    conn.close()
    for path in [*dbs, *dbs]:
        cli(example_package, "sync", "--db", f"sqlite:///{path}")
    with sqlite3.connect(dbs[1]) as conn:
        assert conn.execute("SELECT id, title FROM notes").fetchall() == [
            ("n1", "through a third-party backend")
        ]
    conn.close()
    status = cli(example_package, "status", "--db", f"sqlite:///{dbs[1]}")
    assert f"example://{folder.resolve()}" in status.stdout
    assert (folder / "opened-by-example").read_text().count("\n") >= 4  # every command opened it
    assert list((folder / "alice" / "batches").iterdir()), "the batches are in the example backend's folder"
