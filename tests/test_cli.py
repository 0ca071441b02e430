"""The command line as a user meets it: separate processes, plain sqlite3 writes, the Firestore emulator."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storex_sync_firestore.progress import SyncProgress
from storex_sync_firestore.testing.emulator import free_port

SCRIPT = Path(sys.executable).with_name("storex-sync")


def cli(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m storex_sync_firestore ARGS`` as a user would, in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-m", "storex_sync_firestore", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"storex-sync {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, title, body FROM notes ORDER BY id").fetchall()
    finally:
        conn.close()


def url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def log_url(firestore_project: str) -> str:
    return f"firestore://{firestore_project}"


@pytest.fixture
def two_devices(tmp_path: Path, log_url: str) -> tuple[Path, Path]:
    a, b = tmp_path / "laptop.db", tmp_path / "phone.db"
    for path in (a, b):
        sql(path, "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT, body TEXT)")
        cli("init", "--db", url(path), "--tables", "notes", "--user", "alice", "--log", log_url)
    return a, b


def test_two_devices_converge_through_the_cli(two_devices: tuple[Path, Path]) -> None:
    a, b = two_devices
    sql(
        a,
        "INSERT INTO notes VALUES ('1', 'groceries', 'milk')",
        "INSERT INTO notes VALUES ('2', 'ideas', NULL)",
    )
    out = cli("sync", "--db", url(a)).stdout
    assert "sent 2" in out and "log documents:" in out
    assert "received 2, applied 2" in cli("sync", "--db", url(b)).stdout
    assert rows(a) == rows(b)

    sql(a, "UPDATE notes SET body = 'milk, eggs' WHERE id = '1'", "DELETE FROM notes WHERE id = '2'")
    sql(
        b,
        "UPDATE notes SET title = 'shopping' WHERE id = '1'",
        "INSERT INTO notes VALUES ('3', 'new', 'on b')",
    )
    for path in (a, b, a):
        cli("sync", "--db", url(path))
    assert rows(a) == rows(b) == [("1", "shopping", "milk, eggs"), ("3", "new", "on b")]


def test_init_is_idempotent_and_the_script_entry_point_works(
    two_devices: tuple[Path, Path], log_url: str
) -> None:
    a, _b = two_devices
    first = json.loads(cli("status", "--db", url(a), "--json").stdout)["device_id"]
    again = subprocess.run(
        [str(SCRIPT), "init", "--db", url(a), "--tables", "notes", "--json"], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {
        "device_id": first,
        "user_id": "alice",
        "log": log_url,
        "tables": ["notes"],
        "encrypted": False,
    }


def test_status_and_json(two_devices: tuple[Path, Path], log_url: str) -> None:
    a, _b = two_devices
    sql(a, "INSERT INTO notes VALUES ('1', 'x', 'y')")
    before = json.loads(cli("status", "--db", url(a), "--json").stdout)
    assert before["user_id"] == "alice" and before["log"] == log_url and before["tables"] == ["notes"]
    assert before["unshared"] == 1 and before["last_sync"] is None
    summary = json.loads(cli("sync", "--db", url(a), "--json").stdout)
    assert summary["ok"] is True and summary["sent"] == 1 and summary["documents_written"] >= 1
    after = json.loads(cli("status", "--db", url(a), "--json").stdout)
    assert after["unshared"] == 0 and after["unintegrated"] == 0 and after["set_aside_entries"] == []
    assert after["last_sync"]["ok"] is True and after["last_sync"]["summary"]["sent"] == 1
    text = cli("status", "--db", url(a)).stdout
    assert before["device_id"] in text and "last sync" in text and "ok: sent 1" in text


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_errors_are_one_line_with_what_to_do(
    tmp_path: Path, two_devices: tuple[Path, Path], log_url: str
) -> None:
    a, _b = two_devices
    plain = tmp_path / "plain.db"
    sql(plain, "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT)")
    assert "storex-sync init" in one_line_error(cli("sync", "--db", url(plain), check=False))
    assert "no database file" in one_line_error(cli("status", "--db", url(tmp_path / "typo.db"), check=False))

    counted = tmp_path / "counted.db"
    sql(counted, "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT)")
    msg = one_line_error(
        cli("init", "--db", url(counted), "--tables", "items", "--log", log_url, check=False)
    )
    assert "auto-incremented" in msg and "uuid7" in msg

    msg = one_line_error(cli("init", "--db", url(a), "--log", f"{log_url}/otherRoot", check=False))
    assert "does not know" in msg and "--new-device" in msg

    env = {k: v for k, v in os.environ.items() if k != "FIRESTORE_EMULATOR_HOST"}
    env.update(GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "missing-key.json"), HOME=str(tmp_path))
    msg = one_line_error(
        cli("init", "--db", url(plain), "--tables", "notes", "--log", log_url, env=env, check=False)
    )
    assert "no Google credentials" in msg and "GOOGLE_APPLICATION_CREDENTIALS" in msg

    dead = {**os.environ, "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}
    start = time.monotonic()
    msg = one_line_error(cli("sync", "--db", url(a), "--timeout", "1", env=dead, check=False))
    assert "Firestore unavailable" in msg and "check the network" in msg
    assert time.monotonic() - start < 30
    status = json.loads(cli("status", "--db", url(a), "--json").stdout)
    assert status["last_sync"]["ok"] is False and "unavailable" in status["last_sync"]["error"]

    debug = cli("--debug", "sync", "--db", url(plain), check=False)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@pytest.fixture
def watchers() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_watch(path: Path, procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "storex_sync_firestore", "watch", "--db", url(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    assert proc.stdout is not None
    assert "watching" in proc.stdout.readline()
    return proc


def test_watch_brings_a_row_from_a_to_b_quickly(two_devices: tuple[Path, Path], watchers: list[Any]) -> None:
    a, b = two_devices
    watch_a, watch_b = start_watch(a, watchers), start_watch(b, watchers)
    time.sleep(1.0)  # let both finish their first sync and attach their listeners
    sql(a, "INSERT INTO notes VALUES ('w', 'written on a', NULL)")
    start = time.monotonic()
    while ("w", "written on a", None) not in rows(b):
        assert time.monotonic() - start < 10, "the row never reached b"
        time.sleep(0.02)
    took = time.monotonic() - start
    print(f"\nrow written on device A appeared on device B (watch) after {took:.2f} s")
    assert took < 2.0
    for proc in (watch_a, watch_b):
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in out
    assert "applied 1" in out  # b's watch reported the change it applied


def test_demo_converges(firestore_emulator: Any) -> None:
    proc = cli("demo")
    assert proc.stdout.rstrip().endswith("converged: both devices hold the same notes")
    assert "!=" not in proc.stdout


def test_progress_is_a_bar_on_a_terminal_and_log_lines_elsewhere(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    tty = io.StringIO()
    bar = SyncProgress(tty, totals={"share": 100_000}, interactive=True, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 1.0
        bar("share", 5_000)
    bar.close()
    assert "[############------------] 50,000/100,000  5,000/s" in tty.getvalue()

    caplog.set_level("INFO", logger="storex_sync_firestore.progress")
    plain = io.StringIO()
    lines = SyncProgress(plain, interactive=False, log_every=5.0, clock=lambda: now[0])
    for _ in range(12):
        now[0] += 1.0
        lines("receive", 1_000)
    lines.close()
    assert plain.getvalue() == ""
    messages = [r.getMessage() for r in caplog.records]
    assert "receive   5,000 entries  1,000/s" in messages
    assert len(messages) == 3  # every 5 s, and a last line at the end


@pytest.fixture
def hanging_host() -> Iterator[str]:
    """An address that accepts connections and never answers (the kernel completes the handshakes)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def ignore_sigint() -> None:
    """What a shell does to a job it starts in the background: Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("network", "signum"),
    [("refused", signal.SIGINT), ("hanging", signal.SIGTERM)],
    ids=["refused", "hanging"],
)
def test_watch_stops_within_two_seconds_whatever_the_network_does(
    two_devices: tuple[Path, Path], hanging_host: str, network: str, signum: int
) -> None:
    a, _b = two_devices
    host = hanging_host if network == "hanging" else f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "storex_sync_firestore", "watch", "--db", url(a), "--timeout", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FIRESTORE_EMULATOR_HOST": host},
        preexec_fn=ignore_sigint,
    )
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(proc.stderr or ()), daemon=True)
    reader.start()
    try:
        assert proc.stdout is not None and "watching" in proc.stdout.readline()
        if network == "refused":  # wait until it failed once and is backing off
            deadline = time.monotonic() + 60
            while not any("sync failed" in line for line in errors):
                assert time.monotonic() < deadline and proc.poll() is None, "".join(errors)
                time.sleep(0.05)
        else:
            time.sleep(3.0)  # the first call waits on its deadline (20 s) with nothing answering
        start = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=30)
        took = time.monotonic() - start
        out = proc.stdout.read()
        reader.join(timeout=10)
        err = "".join(errors)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"\nwatch ({network} network) stopped {took:.2f} s after {signal.Signals(signum).name}")
    assert took < 2.0, err
    assert proc.returncode == 0, err
    assert out.splitlines()[-1].startswith("stopped"), out
    assert "Traceback" not in err and "Background thread did not exit" not in err, err
    failures = [line for line in err.splitlines() if "sync failed" in line]
    if network == "refused":
        assert failures, err
    assert err.count("Firestore unavailable") == len(failures), err  # each failure reported once
    assert all("trying again in" in line for line in failures), err
