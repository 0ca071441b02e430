"""The command line's snapshot lifecycle: snapshot, compact, a new device bootstraps, status shows it."""

from __future__ import annotations

import json
from pathlib import Path

from .test_cli import cli, rows, sql, url


def test_snapshot_compact_bootstrap_and_status_through_the_cli(
    tmp_path: Path, firestore_project: str
) -> None:
    log = f"firestore://{firestore_project}"
    a, b, c = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"
    for path in (a, b, c):
        sql(path, "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT, body TEXT)")
    for path in (a, b):
        cli("init", "--db", url(path), "--tables", "notes", "--user", "alice", "--log", log)
    sql(a, "INSERT INTO notes VALUES ('1', 'groceries', 'milk')", "INSERT INTO notes VALUES ('2', 'x', NULL)")
    cli("sync", "--db", url(a), "--snapshot-after", "0")
    sql(a, "UPDATE notes SET body = 'eggs' WHERE id = '1'", "DELETE FROM notes WHERE id = '2'")
    assert "snapshot " in cli("snapshot", "--db", url(a)).stdout
    cli("sync", "--db", url(b))
    out = json.loads(cli("compact", "--db", url(b), "--older-than", "0s", "--json").stdout)
    assert out["ok"] and out["batches_deleted"] == 2
    bad = cli("compact", "--db", url(b), "--older-than", "soon", check=False)
    assert bad.returncode != 0 and "is not a duration" in bad.stderr
    cli("init", "--db", url(c), "--tables", "notes", "--user", "alice", "--log", log)
    cli("sync", "--db", url(c))
    assert rows(c) == rows(a) == [("1", "groceries", "eggs")]
    status = json.loads(cli("status", "--db", url(c), "--json").stdout)["shared_log"]
    assert status["batches"] == 0 and status["snapshot"]["entries"] >= 2
    assert {d["lag_entries"] for d in status["devices"]} == {0}
    text = cli("status", "--db", url(c)).stdout
    assert "shared log" in text and "snapshot" in text and "last seen" in text
    assert "shared log" not in cli("status", "--db", url(c), "--offline").stdout


def test_sync_writes_a_snapshot_past_its_threshold(tmp_path: Path, firestore_project: str) -> None:
    a = tmp_path / "a.db"
    sql(a, "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT, body TEXT)")
    cli(
        "init",
        "--db",
        url(a),
        "--tables",
        "notes",
        "--user",
        "alice",
        "--log",
        f"firestore://{firestore_project}",
    )
    sql(a, *(f"INSERT INTO notes VALUES ('{i}', 't', NULL)" for i in range(3)))
    cli("sync", "--db", url(a), "--snapshot-after", "3")
    assert json.loads(cli("status", "--db", url(a), "--json").stdout)["shared_log"]["snapshot"] is not None
