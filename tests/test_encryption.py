"""End-to-end encryption through the Firestore emulator: the log holds only ciphertext, and every way of
getting it wrong (passphrase, tampering, copying, mixing) is refused with a clear error."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pytest_mock import MockerFixture

from storex_sync_firestore import encryption
from storex_sync_firestore.cli import cli
from storex_sync_firestore.commands import init_database
from storex_sync_firestore.encryption import WrongPassphraseError
from storex_sync_firestore.errors import ConfigurationError
from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog

from .conftest import NOTES_SCHEMA, SYNCED, Device, assert_converged, sync_all

SECRET_ROWS = [
    ("plaintext-key-1", "milk and eggs", "the secret body", 41),
    ("plaintext-key-2", "tax return", "numbers nobody may see", 42),
]
PASS = "correct horse battery staple"


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at its minimum cost: the tests check the protocol, not the key stretching."""
    monkeypatch.setattr(encryption, "OPSLIMIT", 1)
    monkeypatch.setattr(encryption, "MEMLIMIT", 8192)


class Devices:
    """Encrypted devices of alice on one Firestore project, set up as ``storex-sync init --encrypt`` does."""

    def __init__(self, tmp_path: Path, client: Any) -> None:
        self.tmp_path, self.client = tmp_path, client
        self.log = FirestoreSharedLog(client)
        self.made: list[Device] = []

    def plain(self, name: str, user: str = "alice") -> Device:
        """A device registered without encryption (like conftest's, on this log)."""
        device = Device(self.tmp_path / f"{name}.db", self.log, user, NOTES_SCHEMA, SYNCED)
        self.made.append(device)
        return device

    def new(self, name: str, passphrase: str = PASS, user: str = "alice") -> Device:
        path = self.tmp_path / f"{name}.db"
        import sqlite3

        sqlite3.connect(path).executescript(NOTES_SCHEMA)
        from storex_sync_firestore import SyncedDatabase

        db = SyncedDatabase(f"sqlite:///{path}")
        init_database(db, SYNCED, user_id=user, log_url="memory://unused", passphrase=lambda _new: passphrase)
        return self.adopt(path, db)

    def adopt(self, path: Path, db: Any) -> Device:
        device = Device.__new__(Device)
        import sqlite3

        device.path, device.log, device.tables = path, self.log, SYNCED
        device.app = sqlite3.connect(path, isolation_level=None)
        device.db, device.device_id = db, db.state()["device_id"]
        self.made.append(device)
        return device

    def documents(self) -> list[tuple[str, dict[str, Any]]]:
        """Every document in the emulator project, with its fields."""
        found = []

        def walk(collection: Any) -> None:
            for doc in collection.stream():
                found.append((doc.reference.path, doc.to_dict() or {}))
                for sub in doc.reference.collections():
                    walk(sub)

        for top in self.client.collections():
            walk(top)
        for ref in self.client.collection("storexSync").list_documents():  # user documents are never created
            for sub in ref.collections():
                walk(sub)
        return found


@pytest.fixture
def devices(tmp_path: Path, firestore_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Devices]:
    import storex_sync_firestore.commands as commands

    made = Devices(tmp_path, firestore_client)
    monkeypatch.setattr(commands, "open_log", lambda url, timeout=None: made.log)
    yield made
    for device in made.made:
        device.app.close()
        device.db.engine.dispose()


def write_secrets(device: Device) -> None:
    for row in SECRET_ROWS:
        device.sql("INSERT INTO notes VALUES (?, ?, ?, ?)", *row)
    device.sql("INSERT INTO tags VALUES ('plaintext-key-1', 'private-tag', 'colour-green')")


def test_two_devices_converge_and_firestore_holds_only_ciphertext(devices: Devices) -> None:
    a, b = devices.new("a"), devices.new("b")
    write_secrets(a)
    sync_all([a, b])
    b.sql("UPDATE notes SET title = 'edited on b, also secret' WHERE id = 'plaintext-key-2'")
    sync_all([b, a])
    state = assert_converged([a, b])
    assert ("plaintext-key-2", "edited on b, also secret", "numbers nobody may see", 42) in state["notes"]
    docs = devices.documents()
    assert any("/batches/" in path for path, _ in docs) and any("/keys/" in path for path, _ in docs)
    dump = repr(docs).encode()
    secrets = ["notes", "tags", "title", "body", "rank", "colour", "plaintext-key", "milk and eggs"]
    secrets += ["the secret body", "tax return", "private-tag", "colour-green", "edited on b"]
    for secret in secrets:
        assert secret.encode() not in dump, f"{secret!r} is readable in Firestore"
    for path, fields in docs:
        if "/batches/" in path:
            assert fields["enc"] == "xchacha20poly1305" and isinstance(fields["p"], bytes)


def test_a_third_device_joins_with_the_passphrase(devices: Devices) -> None:
    a = devices.new("a")
    write_secrets(a)
    a.sync()
    c = devices.new("c")
    c.sync()
    assert sorted(c.rows("notes")) == sorted(SECRET_ROWS)


def test_a_wrong_passphrase_fails_before_anything_is_written(devices: Devices) -> None:
    a = devices.new("a")
    a.sync()
    before = devices.documents()
    with pytest.raises(WrongPassphraseError, match="does not unlock"):
        devices.new("intruder", passphrase="wrong")
    assert devices.documents() == before, "nothing may be written to the log"
    from storex_sync_firestore import SyncedDatabase

    intruder = SyncedDatabase(f"sqlite:///{devices.tmp_path / 'intruder.db'}")
    assert not intruder.is_initialized(), "nothing may be written to the database either"
    intruder.engine.dispose()


def test_changing_the_passphrase_rewraps_one_document(devices: Devices) -> None:
    from storex_sync_firestore.devices import change_passphrase

    a, b = devices.new("a"), devices.new("b")
    write_secrets(a)
    a.sync()
    batches_before = [d for d in devices.documents() if "/batches/" in d[0]]
    change_passphrase(devices.log, user_id="alice", old=PASS, new="a new passphrase")
    with pytest.raises(WrongPassphraseError):
        change_passphrase(devices.log, user_id="alice", old=PASS, new="x")
    assert [d for d in devices.documents() if "/batches/" in d[0]] == batches_before, "nothing re-encrypted"
    b.sync()  # devices that hold the key keep syncing
    assert sorted(b.rows("notes")) == sorted(SECRET_ROWS)
    with pytest.raises(WrongPassphraseError):
        devices.new("late", passphrase=PASS)
    late = devices.new("late2", passphrase="a new passphrase")
    late.sync()
    assert sorted(late.rows("notes")) == sorted(SECRET_ROWS)


def tamper(
    devices: Devices, change: Callable[[dict[str, Any]], dict[str, Any]], copy_to: str | None = None
) -> str:
    """Rewrite the newest batch document with the admin client (as a leaked key could); return its path."""
    path, fields = next(d for d in reversed(devices.documents()) if "/batches/" in d[0])
    fields = change(dict(fields))
    if copy_to is None:
        devices.client.document(path).set(fields)
    else:
        devices.client.document(copy_to).set(fields)
    return path


@pytest.mark.parametrize("position", [0, 24, 100, -17, -1])
def test_a_flipped_byte_anywhere_in_a_batch_sets_it_aside(devices: Devices, position: int) -> None:
    a = devices.new("a")
    write_secrets(a)
    a.sync()

    def flip(fields: dict[str, Any]) -> dict[str, Any]:
        p = bytearray(fields["p"])
        p[position] ^= 0x01
        return {**fields, "p": bytes(p)}

    tamper(devices, flip)
    b = devices.new("b")
    summary = b.sync()
    assert summary.set_aside == 1 and b.rows("notes") == []
    [(reason,)] = b.query("SELECT reason FROM _sync_quarantine")
    assert "does not match its content" in reason
    b.sql("INSERT INTO notes VALUES ('later', 'still syncs', NULL, 1)")
    b.sync()
    a.sync()
    assert ("later", "still syncs", None, 1) in a.rows("notes")


def test_a_truncated_payload_or_a_changed_header_is_set_aside(devices: Devices) -> None:
    a = devices.new("a")
    write_secrets(a)
    a.sync()
    tamper(devices, lambda f: {**f, "p": f["p"][:-40]})
    b = devices.new("b")
    assert b.sync().set_aside == 1 and b.rows("notes") == []


def test_a_batch_copied_to_another_id_or_another_user_is_refused(devices: Devices) -> None:
    a = devices.new("a")
    write_secrets(a)
    a.sync()
    path = tamper(devices, lambda f: f, copy_to=None)
    batch_id = path.rsplit("/", 1)[1]
    fields = dict(devices.client.document(path).get().to_dict())
    devices.client.document(path).delete()
    other_id = batch_id[:-1] + ("0" if batch_id[-1] != "0" else "1")
    devices.client.document(path.rsplit("/", 1)[0] + "/" + other_id).set(fields)
    b = devices.new("b")
    assert b.sync().set_aside == 1 and b.rows("notes") == []
    # Into bob's log, encrypted with the same passphrase: refused (another data key; and the user is bound
    # into the id, the signature and the associated data, see test_format and test_encryption_units).
    bob = devices.new("bob", user="bob")
    devices.client.document(f"storexSync/bob/batches/{batch_id}").set(fields)
    assert bob.sync().set_aside == 1 and bob.rows("notes") == []
    [(reason,)] = bob.query("SELECT reason FROM _sync_quarantine")
    assert "another key" in reason


def test_an_unencrypted_device_and_an_encrypted_log_do_not_mix(devices: Devices) -> None:
    a = devices.new("a")
    write_secrets(a)
    a.sync()
    plain = devices.plain("plain")
    with pytest.raises(ConfigurationError, match="encrypted and this database has no key"):
        plain.sync()
    assert [d for d in devices.documents() if "/batches/" in d[0] and "enc" not in d[1]] == []
    devices.client.document("storexSync/alice/keys/data").delete()  # the log lost its key record
    with pytest.raises(ConfigurationError, match="this database encrypts, but its shared log has no key"):
        a.sync()


def test_encryption_cannot_be_turned_on_for_a_log_that_holds_plaintext(devices: Devices) -> None:
    plain = devices.plain("plain")
    write_secrets(plain)
    plain.sync()
    with pytest.raises(ConfigurationError, match="already holds unencrypted batches"):
        devices.new("a")
    assert devices.client.document("storexSync/alice/keys/data").get().exists is False
    with pytest.raises(ConfigurationError, match="already syncs through an unencrypted log"):
        init_database(plain.db, None, user_id="alice", log_url="x", passphrase=lambda _new: PASS)


def test_a_sealed_payload_is_bound_to_its_user_and_header() -> None:
    from storex_sync_firestore.shared_log import format as fmt
    from storex_sync_firestore.signing import DeviceKey

    key, data = DeviceKey.generate(), encryption.DataKey.generate()
    lines = [fmt.Line(7, '{"op":"delete","table":"notes","pk":["x"]}')]
    batch_id, fields = fmt.encode_batch(lines, user_id="alice", device_id="d", key=key, cipher=data)
    assert fmt.open_v2(batch_id, fields, user_id="alice", cipher=data).lines == tuple(lines)
    for user, changed in [("bob", {}), ("alice", {"count": 2, "lastHlc": 8}), ("alice", {"deviceId": "e"})]:
        with pytest.raises(fmt.RejectedBatchError, match="does not decrypt"):
            fmt.open_v2(batch_id, {**fields, **changed}, user_id=user, cipher=data)
    with pytest.raises(fmt.RejectedBatchError, match="another key"):
        fmt.check_v2(batch_id, fields, user_id="alice", cipher=encryption.DataKey.generate())
    with pytest.raises(fmt.RejectedBatchError, match="no key"):
        fmt.check_v2(batch_id, fields, user_id="alice")
    assert (
        batch_id.split("-")[2] == data.digest(fmt.signed_message("batch", "alice", fields, fields["p"]))[:16]
    )


def test_a_resumed_encrypted_upload_is_one_document(devices: Devices, mocker: MockerFixture) -> None:
    from google.cloud.firestore_v1.batch import WriteBatch

    a = devices.new("a")
    write_secrets(a)
    real = WriteBatch.commit
    calls = {"n": 0}

    def land_then_crash(self: WriteBatch, *args: Any, **kwargs: Any) -> Any:
        result = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt("crash after the commit, before it was recorded")
        return result

    mocker.patch.object(WriteBatch, "commit", land_then_crash)
    with pytest.raises(KeyboardInterrupt):
        a.sync()
    mocker.stopall()
    assert a.query("SELECT count(*) FROM _sync_outbox") == [(1,)]
    a.sync()
    batches = [d for d in devices.documents() if "/batches/" in d[0]]
    assert len(batches) == 1, "the resumed upload sent the same sealed bytes: one document"
    b = devices.new("b")
    b.sync()
    assert sorted(b.rows("notes")) == sorted(SECRET_ROWS)


def test_the_cli_turns_encryption_on_and_changes_the_passphrase(
    devices: Devices, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    path = devices.tmp_path / "cli.db"
    sqlite3.connect(path).executescript(NOTES_SCHEMA)
    runner = CliRunner()
    args = ["init", "--db", f"sqlite:///{path}", "--tables", "notes,tags", "--user", "alice", "--log", "x"]
    monkeypatch.delenv("STOREX_SYNC_PASSPHRASE", raising=False)
    result = runner.invoke(cli, [*args, "--encrypt", "--json"], input=f"{PASS}\n{PASS}\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1])["encrypted"] is True
    monkeypatch.setenv("STOREX_SYNC_PASSPHRASE", PASS)
    monkeypatch.setenv("STOREX_SYNC_NEW_PASSPHRASE", "another one")
    result = runner.invoke(cli, ["passphrase", "--db", f"sqlite:///{path}"])
    assert result.exit_code == 0 and "passphrase changed" in result.output, result.output
    result = runner.invoke(cli, ["passphrase", "--db", f"sqlite:///{path}"])  # the old one is gone now
    assert result.exit_code == 1 and "does not unlock" in result.output


def test_snapshots_are_sealed_too_and_a_new_device_bootstraps_from_one(devices: Devices) -> None:
    from datetime import timedelta

    from storex_sync_firestore.compaction import compact
    from storex_sync_firestore.snapshot import write_snapshot

    a, b = devices.new("a"), devices.new("b")
    write_secrets(a)
    sync_all([a, b])
    written = write_snapshot(a.db, devices.log)
    b.sync()
    assert compact(b.db, devices.log, older_than=timedelta(0)).batches_deleted > 0
    c = devices.new("c")
    assert c.sync().received == written.entries  # from the snapshot: the batches are gone
    assert sorted(c.rows("notes")) == sorted(SECRET_ROWS)
    docs = devices.documents()
    snapshot_docs = [(p, f) for p, f in docs if "/snapshots/" in p]
    assert any("/chunks/" in p for p, _ in snapshot_docs) and len(snapshot_docs) >= 2
    for _, fields in snapshot_docs:
        assert fields["enc"] == "xchacha20poly1305" and isinstance(fields["p"], bytes)
    dump = repr(docs).encode()
    for secret in [
        "notes",
        "title",
        "body",
        "plaintext-key",
        "milk and eggs",
        "the secret body",
        "private-tag",
    ]:
        assert secret.encode() not in dump, f"{secret!r} is readable in Firestore"
