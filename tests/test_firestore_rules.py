"""firestore.rules, exercised as end users with emulator ID tokens: every allowed and every denied case.

The clients here send ``Bearer <unsigned JWT>`` (``EndUserClient`` overrides the private
``_rpc_metadata``), so the emulator applies the rules; the owner client used for setup bypasses them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from storex_sync_firestore.errors import PermanentSharedLogError
from storex_sync_firestore.shared_log import format as fmt
from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog
from storex_sync_firestore.shared_log.firestore_clients import end_user_client
from storex_sync_firestore.testing.conformance import drain, keys, make_batch


@pytest.fixture
def alice_log(as_user: Callable[..., Any]) -> FirestoreSharedLog:
    return FirestoreSharedLog(as_user("alice"), retry=None)


def body(batch: Any) -> dict[str, Any]:
    """A batch's fields as the backend writes them."""
    return {**batch.fields, "sharedOn": firestore.SERVER_TIMESTAMP}


def alice_batch(device: str, start: int, count: int) -> Any:
    return make_batch(device, start, count, user_id="alice")


def denied(fn: Callable[[], Any]) -> None:
    with pytest.raises(gexc.PermissionDenied):
        fn()


def test_alice_syncs_between_her_devices(alice_log: FirestoreSharedLog) -> None:
    a = alice_log.create_device_id(user_id="alice")
    b = alice_log.create_device_id(user_id="alice")
    batch = alice_batch(a, 1, 5)
    assert alice_log.write_batches([batch], user_id="alice", device_id=a).documents_written == 1
    assert alice_log.write_batches([batch], user_id="alice", device_id=a).documents_written == 0  # retry
    assert keys(drain(alice_log, b, user_id="alice")) == keys([batch])
    assert keys(drain(alice_log, a, user_id="alice"), besides=a) == []
    info = alice_log.get_device_info(user_id="alice", device_id=b)
    assert info is not None and info.created_at is not None


def test_the_rpc_metadata_override_is_what_makes_rules_apply(
    as_user: Callable[..., Any], firestore_client: Any
) -> None:
    """Guards the one private-API use: the owner client passes, the same call as bob is refused."""
    path = "storexSync/alice/devices/x"
    firestore_client.document(path).get()  # owner: rules bypassed
    denied(lambda: as_user("bob").document(path).get())
    assert as_user("alice").document(path).get().exists is False  # allowed, just absent


def test_bob_can_neither_read_list_write_nor_delete_alices_data(
    alice_log: FirestoreSharedLog, as_user: Callable[..., Any]
) -> None:
    a = alice_log.create_device_id(user_id="alice")
    batch_id = alice_batch(a, 1, 3).batch_id
    alice_log.write_batches([alice_batch(a, 1, 3)], user_id="alice", device_id=a)
    bob = as_user("bob")
    devices = bob.collection("storexSync/alice/devices")
    batches = bob.collection("storexSync/alice/batches")
    denied(lambda: devices.document(a).get())
    denied(lambda: list(devices.stream()))
    denied(lambda: batches.document(batch_id).get())
    denied(lambda: list(batches.stream()))
    denied(lambda: batches.document(batch_id).delete())
    denied(lambda: devices.document(a).update({"markerTs": None}))
    denied(lambda: devices.document(a).delete())
    forged = alice_batch(a, 10, 1)
    denied(lambda: batches.document(forged.batch_id).create(body(forged)))
    # Through the backend, the refusal is a permanent error that names the cause.
    bob_log = FirestoreSharedLog(bob, retry=None)
    with pytest.raises(PermanentSharedLogError, match="denied"):
        bob_log.get_unsynced_batches(user_id="alice", device_id=a)
    with pytest.raises(PermanentSharedLogError, match="denied"):
        bob_log.create_device_id(user_id="alice")
    with pytest.raises(PermanentSharedLogError, match="denied"):
        bob_log.write_batches([alice_batch(a, 20, 1)], user_id="alice", device_id=a)
    # Bob's own log works.
    assert bob_log.create_device_id(user_id="bob")


def test_batches_are_immutable_but_deletable_by_their_owner(
    alice_log: FirestoreSharedLog, as_user: Callable[..., Any]
) -> None:
    a = alice_log.create_device_id(user_id="alice")
    batch = alice_batch(a, 1, 2)
    alice_log.write_batches([batch], user_id="alice", device_id=a)
    ref = as_user("alice").collection("storexSync/alice/batches").document(batch.batch_id)
    denied(lambda: ref.update({"p": b"tampered"}))
    denied(lambda: ref.set({"deviceId": a}, merge=True))
    denied(lambda: ref.set(body(batch)))
    ref.delete()  # cleanup of the log by its owner is allowed


def test_batches_must_be_well_formed_and_from_a_registered_device(
    alice_log: FirestoreSharedLog, as_user: Callable[..., Any]
) -> None:
    a = alice_log.create_device_id(user_id="alice", public_key=bytes(32))
    batches = as_user("alice").collection("storexSync/alice/batches")
    good = alice_batch(a, 1, 2)
    fields = body(good)
    document = batches.document(good.batch_id)
    denied(lambda: document.create({**fields, "x": 1}))
    for field, bad in [
        ("count", "2"),
        ("p", "text"),
        ("sig", b"short"),
        ("z", "gzip"),
        ("v", 3),
        ("firstHlc", 9),
    ]:
        denied(lambda field=field, bad=bad: document.create({**fields, field: bad}))  # type: ignore[misc]
    denied(lambda: batches.document("other-" + good.batch_id).create(fields))  # id must start with deviceId
    denied(lambda: batches.document(good.batch_id + "-x").create(fields))  # and have the digest form
    ghost = alice_batch("ghost", 1, 1)
    denied(lambda: batches.document(ghost.batch_id).create(body(ghost)))
    v1 = {"deviceId": a, "sharedOn": firestore.SERVER_TIMESTAMP, "firstHlc": 1, "lastHlc": 1, "count": 1}
    v1 |= {"h": [1], "d": ["{}"], "v": 1}
    v1_id = fmt.legacy_id(a, [1], ["{}"])
    denied(lambda: batches.document(v1_id).create(v1))  # a device with a key writes only signed batches
    document.create(fields)
    legacy = alice_log.create_device_id(user_id="alice")  # registered without a key, as 0.1.x did
    batches.document(fmt.legacy_id(legacy, [1], ["{}"])).create({**v1, "deviceId": legacy})


def test_device_records_keep_identity_and_markers_only_move_forward(
    alice_log: FirestoreSharedLog, as_user: Callable[..., Any]
) -> None:
    a = alice_log.create_device_id(user_id="alice")
    b = alice_log.create_device_id(user_id="alice")
    alice_log.write_batches([alice_batch(a, 1, 2)], user_id="alice", device_id=a)
    drain(alice_log.with_options(settle_time=timedelta(0)), b, user_id="alice")  # settles the marker
    ref = as_user("alice").collection("storexSync/alice/devices").document(b)
    denied(lambda: ref.update({"deviceId": "someone-else"}))
    denied(lambda: ref.update({"createdAt": firestore.SERVER_TIMESTAMP}))
    denied(lambda: ref.update({"sharedUntil": datetime.now(UTC)}))
    denied(lambda: ref.update({"markerTs": None, "markerId": None}))  # back to the start of the log
    denied(lambda: ref.delete())
    devices = as_user("alice").collection("storexSync/alice/devices")
    denied(lambda: devices.document("forged").create({"deviceId": "other", "markerSeen": []}))
    keyed = alice_log.create_device_id(user_id="alice", public_key=bytes(32))
    denied(lambda: devices.document(keyed).update({"publicKey": bytes([1]) * 32}))  # the key never changes
    denied(lambda: ref.update({"publicKey": bytes(32)}))  # nor is one added later
    new = {"deviceId": "n", "createdAt": firestore.SERVER_TIMESTAMP, "markerSeen": [], "publicKey": b"x"}
    denied(lambda: devices.document("n").create(new))  # a key is 32 bytes


def test_a_device_token_may_move_only_its_own_marker(
    alice_log: FirestoreSharedLog, as_user: Callable[..., Any]
) -> None:
    """With a per-device ``storexDeviceId`` claim the rules tell alice's devices apart."""
    a = alice_log.create_device_id(user_id="alice")
    b = alice_log.create_device_id(user_id="alice")
    alice_log.write_batches([alice_batch(a, 1, 2)], user_id="alice", device_id=a)
    as_b = FirestoreSharedLog(as_user("alice", storexDeviceId=b), retry=None)
    assert len(keys(drain(as_b, b, user_id="alice"))) == 2  # b moves its own marker
    with pytest.raises(PermanentSharedLogError, match="denied"):
        drain(as_b, a, user_id="alice")  # a's marker is not b's to move
    with pytest.raises(PermanentSharedLogError, match="denied"):
        as_b.write_batches([alice_batch(a, 5, 1)], user_id="alice", device_id=a)  # nor a's batches
    as_b.write_batches([alice_batch(b, 5, 1)], user_id="alice", device_id=b)


def test_denied_invalid_token_and_invalid_argument_each_get_their_own_hint(
    as_user: Callable[..., Any], firestore_client: Any, firestore_project: str
) -> None:
    """A refusal by the rules, a token that is not a JWT, and a request over Firestore's limits used to share
    the hint "a document or request over Firestore's limits is a bug in packing"."""
    from storex_sync_firestore.shared_log.firestore import translate_errors

    hints: dict[str, str | None] = {}
    with pytest.raises(PermanentSharedLogError) as denied_error:
        FirestoreSharedLog(as_user("bob"), retry=None).create_device_id(user_id="alice")
    hints["denied"] = denied_error.value.hint
    garbage = end_user_client(project=firestore_project, token="not-a-jwt")
    with pytest.raises(PermanentSharedLogError, match="ID token") as token_error:
        FirestoreSharedLog(garbage, retry=None).create_device_id(user_id="alice")
    hints["token"] = token_error.value.hint
    garbage.close()
    with pytest.raises(PermanentSharedLogError) as limit_error, translate_errors("writing a document"):
        firestore_client.document("c/d").set({"x": "a" * 1_100_000}, retry=None)
    hints["limit"] = limit_error.value.hint
    # The emulator refuses to load rules that do not compile (the start fails on them: test_emulator), so
    # the message it gives requests under such rules is passed through the translation as it arrives.
    compiling = gexc.InvalidArgument("Error compiling rules:\nL4:52 Unexpected '='.")
    with pytest.raises(PermanentSharedLogError, match="do not compile") as rules_error, translate_errors("x"):
        raise compiling
    hints["rules"] = rules_error.value.hint

    assert "firestore.rules" in str(hints["denied"]) and "sign in" in str(hints["denied"])
    assert "emulator_id_token" in str(hints["token"])
    assert "packing" in str(hints["limit"])
    assert "line:column" in str(hints["rules"])
    assert len(set(hints.values())) == 4


EMPTY_MARKER = {"markerTs": None, "markerId": None, "markerSeen": []}


def test_markers_must_have_their_shape_and_batch_ids_their_length(
    alice_log: FirestoreSharedLog, as_user: Callable[..., Any], firestore_client: Any
) -> None:
    """Issue 10: a ``markerSeen`` item without ``id`` or a string ``markerTs`` broke every sync of the
    device; 800 batches with 1,400-byte ids made its marker outgrow a document."""
    a = alice_log.create_device_id(user_id="alice")
    b = alice_log.create_device_id(user_id="alice")
    alice_log.write_batches([alice_batch(a, 1, 2)], user_id="alice", device_id=a)
    drain(alice_log.with_options(settle_time=timedelta(0)), b, user_id="alice")
    ref = as_user("alice").collection("storexSync/alice/devices").document(b)
    now = datetime.now(UTC)
    denied(lambda: ref.update({"markerSeen": [{"t": now}]}))  # an item without id
    denied(lambda: ref.update({"markerSeen": [{"t": now, "id": "ok"}, {"id": "b"}]}))  # the last one
    denied(lambda: ref.update({"markerSeen": [{"t": now, "id": "x" * 163}]}))
    denied(lambda: ref.update({"markerSeen": [{"t": now, "id": "ok", "more": 1}]}))
    denied(lambda: ref.update({"markerSeen": [{"t": now, "id": "ok"}] * 2_001}))
    denied(lambda: ref.update({"markerTs": "yesterday"}))
    denied(lambda: ref.update({"markerTs": now + timedelta(days=365)}))  # no batch was read there yet
    denied(lambda: ref.update({"markerSeen": [{"t": now + timedelta(days=365), "id": "ok"}]}))
    denied(lambda: ref.update({"markerId": "x" * 1_501}))
    ref.update({"markerSeen": [{"t": now, "id": "ok"}] * 2_000})
    # A marker broken past the rules (an admin key) may be repaired, even to an earlier position.
    firestore_client.document(f"storexSync/alice/devices/{b}").update({"markerTs": "yesterday"})
    ref.update({"markerTs": None, "markerId": None, "markerSeen": []})
    devices = as_user("alice").collection("storexSync/alice/devices")
    long_id = "d" * 129
    devices.document(long_id).create(
        {"deviceId": long_id, "createdAt": firestore.SERVER_TIMESTAMP, **EMPTY_MARKER}
    )
    batches = as_user("alice").collection("storexSync/alice/batches")
    long = alice_batch(long_id, 1, 1)
    denied(lambda: batches.document(long.batch_id).create(body(long)))  # 163 bytes: longer than any batch id
    longest = "d" * 128
    devices.document(longest).create(
        {"deviceId": longest, "createdAt": firestore.SERVER_TIMESTAMP, **EMPTY_MARKER}
    )
    fine = alice_batch(longest, 1, 1)
    batches.document(fine.batch_id).create(body(fine))
