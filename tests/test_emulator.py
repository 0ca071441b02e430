"""The emulator harness: start on a free port, readiness, wipe, rules, stop by PID, loud failures."""

from __future__ import annotations

import os
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
    import json

    config = json.loads((ROOT / "firebase.json").read_text())
    assert config["emulators"]["ui"] == {"enabled": False}
    assert {"hub", "logging"} <= config["emulators"].keys()
    assert config["firestore"]["indexes"] == "firestore.indexes.json"
