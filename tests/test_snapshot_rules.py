"""firestore.rules for compaction: snapshots (create-only, deletable), liveness, deleting batches.

Clients act as end users with emulator ID tokens (see test_firestore_rules.py), so the rules apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from storex_sync_firestore.models import StoredBatch
from storex_sync_firestore.shared_log import snapshot_format as sf
from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog
from storex_sync_firestore.signing import DeviceKey
from storex_sync_firestore.testing.conformance import make_batch

KEY = DeviceKey(bytes(32))


def snapshot(device: str) -> tuple[str, StoredBatch, StoredBatch]:
    """A real one-chunk snapshot of ``device``: (snapshot id, chunk, manifest)."""
    sid = sf.snapshot_id(device, 77)
    line = sf.SnapshotLine(device, 5, '{"op":"create","table":"notes","pk":["n1"],"value":{"t":"x"}}')
    cid, chunk, digest = sf.encode_chunk(
        [line], snapshot=sid, index=0, user_id="alice", device_id=device, key=KEY
    )
    _, manifest = sf.encode_manifest(
        hlc=77, count=1, frontier={device: 5}, digests=[digest], user_id="alice", device_id=device, key=KEY
    )
    return sid, StoredBatch(cid, chunk), StoredBatch(sid, manifest)


def denied(fn: Callable[[], Any]) -> None:
    with pytest.raises(gexc.PermissionDenied):
        fn()


def test_alices_devices_write_read_and_delete_snapshots(as_user: Callable[..., Any]) -> None:
    alice = FirestoreSharedLog(as_user("alice"), retry=None)
    a = alice.create_device_id(user_id="alice")
    sid, chunk, manifest = snapshot(a)
    assert alice.write_snapshot_chunks(sid, [chunk], user_id="alice", device_id=a).documents_written == 1
    assert alice.write_snapshot_manifest(manifest, user_id="alice", device_id=a).documents_written == 1
    assert [m.batch_id for m in alice.list_snapshots(user_id="alice")] == [sid]
    assert len(alice.get_snapshot_chunks(sid, user_id="alice")) == 1
    assert alice.delete_snapshot(sid, user_id="alice").documents_written == 2


def test_snapshots_are_create_only_and_of_registered_devices(as_user: Callable[..., Any]) -> None:
    client = as_user("alice")
    alice = FirestoreSharedLog(client, retry=None)
    a = alice.create_device_id(user_id="alice")
    sid, chunk, manifest = snapshot(a)
    alice.write_snapshot_chunks(sid, [chunk], user_id="alice", device_id=a)
    alice.write_snapshot_manifest(manifest, user_id="alice", device_id=a)
    doc = client.document(f"storexSync/alice/snapshots/{sid}")
    denied(lambda: doc.update({"count": 2}))
    denied(lambda: doc.set({**manifest.fields, "sharedOn": firestore.SERVER_TIMESTAMP}))
    denied(lambda: client.document(f"storexSync/alice/snapshots/{sid}/chunks/000000").update({"count": 9}))
    ghost = "f" * 32  # not registered
    gsid, gchunk, gmanifest = snapshot(ghost)
    denied(lambda: client.document(f"storexSync/alice/snapshots/{gsid}").create(
        {**gmanifest.fields, "sharedOn": firestore.SERVER_TIMESTAMP}))  # fmt: skip
    denied(lambda: client.document(f"storexSync/alice/snapshots/{gsid}/chunks/000000").create(
        {**gchunk.fields, "sharedOn": firestore.SERVER_TIMESTAMP}))  # fmt: skip
    other = f"{a}-{88:016x}"  # a manifest under an id that is not its own
    denied(lambda: client.document(f"storexSync/alice/snapshots/{other}x").create(
        {**manifest.fields, "sharedOn": firestore.SERVER_TIMESTAMP}))  # fmt: skip
    denied(lambda: client.document(f"storexSync/alice/snapshots/{a}-{99:016x}").create(
        {**manifest.fields, "extra": 1, "sharedOn": firestore.SERVER_TIMESTAMP}))  # fmt: skip


def test_bob_can_neither_read_write_nor_delete_alices_snapshots(as_user: Callable[..., Any]) -> None:
    alice = FirestoreSharedLog(as_user("alice"), retry=None)
    a = alice.create_device_id(user_id="alice")
    sid, chunk, manifest = snapshot(a)
    alice.write_snapshot_chunks(sid, [chunk], user_id="alice", device_id=a)
    alice.write_snapshot_manifest(manifest, user_id="alice", device_id=a)
    batch = make_batch(a, 1, 2, user_id="alice")
    alice.write_batches([batch], user_id="alice", device_id=a)
    bob = as_user("bob")
    denied(lambda: bob.document(f"storexSync/alice/snapshots/{sid}").get())
    denied(lambda: bob.document(f"storexSync/alice/snapshots/{sid}").delete())
    denied(lambda: bob.document(f"storexSync/alice/snapshots/{sid}/chunks/000000").delete())
    denied(lambda: bob.document(f"storexSync/alice/batches/{batch.batch_id}").delete())
    denied(
        lambda: bob.document(f"storexSync/alice/devices/{a}").update(
            {"lastSeen": firestore.SERVER_TIMESTAMP, "frontier": {}}
        )
    )
    alice.delete_batches([batch.batch_id], user_id="alice")
    assert alice.list_batches(user_id="alice") == []


def test_a_device_records_its_liveness_and_nothing_else(as_user: Callable[..., Any]) -> None:
    client = as_user("alice")
    alice = FirestoreSharedLog(client, retry=None)
    a = alice.create_device_id(user_id="alice")
    alice.touch_device(user_id="alice", device_id=a, frontier={a: 3}, compacted={a: 2})
    (info,) = alice.list_devices(user_id="alice")
    assert info.last_seen is not None and dict(info.frontier) == {a: 3}
    doc = client.document(f"storexSync/alice/devices/{a}")
    denied(
        lambda: doc.update({"lastSeen": firestore.SERVER_TIMESTAMP, "frontier": {}, "publicKey": b"x" * 32})
    )
    denied(lambda: doc.update({"frontier": {a: 9}}))  # lastSeen must be the server's time of the write
    b = alice.create_device_id(user_id="alice")
    as_a = FirestoreSharedLog(as_user("alice", storexDeviceId=a), retry=None)
    with pytest.raises(Exception, match="denied"):
        as_a.touch_device(user_id="alice", device_id=b, frontier={})


def test_the_optional_ttl_field_is_written_allowed_and_invisible_to_readers(
    as_user: Callable[..., Any], firestore_client: Any
) -> None:
    from datetime import UTC, datetime, timedelta

    from storex_sync_firestore.testing.conformance import drain, keys

    alice = FirestoreSharedLog(as_user("alice"), retry=None, expire_after=timedelta(days=365))
    a, b = (alice.create_device_id(user_id="alice") for _ in range(2))
    batch = make_batch(a, 1, 3, user_id="alice")
    assert alice.write_batches([batch], user_id="alice", device_id=a).documents_written == 1  # rules allow it
    stored = firestore_client.document(f"storexSync/alice/batches/{batch.batch_id}").get().to_dict()
    assert stored["expireAt"] > datetime.now(UTC) + timedelta(days=364)
    got = drain(alice, b, user_id="alice")
    assert keys(got) == keys([batch]) and dict(got[0].fields) == dict(batch.fields)
    assert [dict(x.fields) for x in alice.list_batches(user_id="alice")] == [dict(batch.fields)]
