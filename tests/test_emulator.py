"""The emulator harness: start on a free port, readiness, wipe, rules, stop by PID, loud failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from storex_sync_firestore.testing import emulator as em
from storex_sync_firestore.testing.emulator import EmulatorError, FirestoreEmulator

ROOT = Path(__file__).resolve().parents[1]


def test_session_emulator_is_exported_to_clients(firestore_emulator: FirestoreEmulator) -> None:
    assert os.environ["FIRESTORE_EMULATOR_HOST"] == firestore_emulator.host_port
    assert firestore_emulator.is_ready()


def test_projects_are_wiped_after_each_test(
    firestore_client: Any, firestore_emulator: FirestoreEmulator
) -> None:
    firestore_client.document("c/d").set({"x": 1})
    firestore_emulator.wipe(firestore_client.project)
    assert not firestore_client.document("c/d").get().exists


def test_own_instance_lifecycle(monkeypatch: pytest.MonkeyPatch) -> None:
    with FirestoreEmulator() as emu:
        assert emu.host == "127.0.0.1" and emu.host_port == f"127.0.0.1:{emu.port}"
        assert emu.process is not None and "java" in Path(f"/proc/{emu.pid}/exe").resolve().name
        pid = emu.pid
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emu.host_port)
        client = firestore.Client(project="demo-own", credentials=AnonymousCredentials())
        client.document("c/d").set({"x": 1})
        assert client.document("c/d").get().to_dict() == {"x": 1}
        with pytest.raises(EmulatorError, match="400"):
            emu.set_rules("demo-own", "this is not a rules file")
        emu.set_rules("demo-own", (ROOT / "firestore.rules").read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not emu.is_ready()


def test_missing_jar_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(em.JAR_ENV, str(tmp_path / "nope.jar"))
    with pytest.raises(EmulatorError, match="apt-get install openjdk-17-jre-headless"):
        FirestoreEmulator().start()


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EmulatorError, match="google-cloud-cli-firestore-emulator"):
        FirestoreEmulator().start()


def test_a_failed_start_shows_the_log_tail() -> None:
    emu = FirestoreEmulator(rules="/nonexistent/firestore.rules", start_timeout=60)
    with pytest.raises(EmulatorError) as info:
        emu.start()
        emu.stop()
    assert "nonexistent" in str(info.value) or "exited" in str(info.value)


def test_firebase_json_settings() -> None:
    settings = em.load_firebase_json(ROOT / "firebase.json")
    assert settings == {"host": "127.0.0.1", "port": 8080, "rules": str(ROOT / "firestore.rules")}
    config = json.loads((ROOT / "firebase.json").read_text())
    assert config["emulators"]["ui"] == {"enabled": False}
    assert {"hub", "logging"} <= config["emulators"].keys()
    assert config["firestore"]["indexes"] == "firestore.indexes.json"


def test_rules_that_do_not_compile_fail_the_start_and_say_where(tmp_path: Path) -> None:
    rules = tmp_path / "firestore.rules"
    rules.write_text((ROOT / "firestore.rules").read_text().replace("if ", "if = ", 1))
    emu = FirestoreEmulator(rules=rules)
    try:
        with pytest.raises(EmulatorError, match=r"(?s)do not compile: .*L\d+:\d+") as info:
            emu.start()
    finally:
        process = emu.process
        emu.stop()  # were it started after all, it must not outlive the test
    assert str(rules) in str(info.value)
    assert process is None  # stopped by start itself, not left running


def test_storex_sync_emulator_runs_one_as_firebase_json_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command a pip user has (emulator/start.py is not installed with the package)."""
    from storex_sync_firestore.shared_log.firestore_clients import emulator_id_token, end_user_client

    config = json.loads((ROOT / "firebase.json").read_text())
    config["emulators"]["firestore"]["port"] = em.free_port()
    (tmp_path / "firebase.json").write_text(json.dumps(config))
    (tmp_path / "firestore.rules").write_text((ROOT / "firestore.rules").read_text())
    proc = subprocess.Popen(
        [sys.executable, "-m", "storex_sync_firestore", "emulator"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert "ready" in ready and "firestore.rules" in ready, ready + (
            proc.stderr.read() if proc.stderr else ""
        )
        export = proc.stdout.readline().strip()
        assert (
            export == f"export FIRESTORE_EMULATOR_HOST=127.0.0.1:{config['emulators']['firestore']['port']}"
        )
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", export.split("=", 1)[1])
        bob = end_user_client(project="demo-cmd", token=emulator_id_token("bob"))
        with pytest.raises(Exception, match="403"):
            bob.document("storexSync/alice/devices/x").get()  # the rules apply
        bob.close()
        proc.send_signal(signal.SIGINT)
        out, _err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out.strip().endswith("stopped")


def test_firestore_debug_log_is_ignored() -> None:
    """firebase-tools writes it into the directory it runs in, the repository root included."""

    ignored = subprocess.run(["git", "check-ignore", "-q", "firestore-debug.log"], cwd=ROOT)
    assert ignored.returncode == 0


def test_firebase_emulators_exec_runs_the_readme_tests_with_the_repos_firebase_json(tmp_path: Path) -> None:
    """The documented firebase CLI path: ``emulator/firebase emulators:exec``, this repository's firebase.json
    (its ports moved to free ones, so parallel runs do not collide), its rules in force, and the README's
    example tests run by pytest against that emulator through the plugin."""
    from tests.test_docs import readme_block

    config = json.loads((ROOT / "firebase.json").read_text())
    for name in ("firestore", "hub", "logging"):
        config["emulators"][name]["port"] = em.free_port()
    config["emulators"]["firestore"]["websocketPort"] = em.free_port()
    (tmp_path / "firebase.json").write_text(json.dumps(config))
    for name in ("firestore.rules", "firestore.indexes.json"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    (tmp_path / "test_readme.py").write_text(readme_block("python", 1))
    host = f"127.0.0.1:{config['emulators']['firestore']['port']}"
    (tmp_path / "test_attached.py").write_text(
        "import os\n\n"
        "def test_the_plugin_uses_the_firebase_emulator(firestore_emulator):\n"
        "    assert firestore_emulator.process is None  # attached, not started\n"
        f"    assert os.environ['FIRESTORE_EMULATOR_HOST'] == {host!r}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIRESTORE_", "PYTEST_"))}
    script = f"{sys.executable} -m pytest -q -p no:cacheprovider -p no:xdist"
    proc = subprocess.run(
        [
            str(ROOT / "emulator" / "firebase"),
            "emulators:exec",
            "--only",
            "firestore",
            "--project",
            "demo-fb",
            script,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 passed" in proc.stdout, proc.stdout[-3000:]
    assert (tmp_path / "firestore-debug.log").exists()  # where it runs, not in the repository
