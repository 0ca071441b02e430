"""Forged and altered batches written into Firestore past the rules (issue 10 points 2, 3 and 5).

On the original every one of these was applied by some device and not by another, so devices differed
for good: a batch claiming to be B's was applied by A and skipped by B as its own; a real batch
overwritten under its id with altered rows was applied by the devices that read it afterwards; the same
(device, clock) under a new id, altered and 1 ms earlier, was kept by the receiver; the format version
was not checked; a clock 23 hours ahead was accepted and moved the receiver's clock 23 hours. Now every
device sets each of them aside alike (a device joining later too), and nothing hostile is applied.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from storex_sync_firestore.clock import HybridLogicalClock, wall_clock_ms, wall_ms_of
from storex_sync_firestore.shared_log import firestore_layout as layout
from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog
from storex_sync_firestore.signing import DeviceKey
from storex_sync_firestore.validate import MAX_AHEAD_MS

from .conftest import Device, DeviceFactory
from .forge import Writer


def create(title: str, key: str = "n") -> dict[str, Any]:
    return {"op": "create", "table": "notes", "pk": [key], "value": {"title": title, "body": None, "rank": 1}}


@pytest.fixture
def log(firestore_client: Any) -> FirestoreSharedLog:
    return FirestoreSharedLog(firestore_client, settle_time=timedelta(0))


def titles(device: Device) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in device.rows("notes")]


def reasons(device: Device) -> list[str]:
    return [r for (r,) in device.query("SELECT reason FROM _sync_quarantine ORDER BY id")]


def overwrite(client: Any, log: FirestoreSharedLog, batch_id: str, fields: dict[str, Any]) -> None:
    """Replace a batch document as an admin key can: same id, other content, a fresh sharedOn."""
    doc = client.collection(*layout.batches_path(log.root, "alice")).document(batch_id)
    doc.set({**fields, "sharedOn": firestore.SERVER_TIMESTAMP})


@pytest.mark.parametrize("victim", [0, 1], ids=["claims-b", "claims-a"])
def test_a_batch_forged_in_a_devices_name_is_set_aside_by_every_device(
    make_devices: DeviceFactory, log: FirestoreSharedLog, victim: int
) -> None:
    a, b = make_devices(2, log=log)
    claimed = (b, a)[victim]
    Writer(log, claimed.device_id, DeviceKey.generate()).upload([create("forged")])  # not its key
    a.sql("INSERT INTO notes VALUES ('real', 'from a', NULL, 1)")
    a.sync()
    (c,) = make_devices(1, log=log)
    for device in (a, b, c, a, b):
        device.sync()
    for device in (a, b, c):
        assert titles(device) == [("real", "from a")], device.path.name
        [reason] = reasons(device)
        assert "did not sign it" in reason if device is claimed else "forged or altered" in reason


def genuine_batch(
    firestore_client: Any, log: FirestoreSharedLog, device: Device
) -> tuple[str, dict[str, Any]]:
    [doc] = [
        d
        for d in firestore_client.collection(*layout.batches_path(log.root, "alice")).stream()
        if d.get("deviceId") == device.device_id
    ]
    return doc.id, {k: v for k, v in doc.to_dict().items() if k != "sharedOn"}


def test_a_batch_altered_under_its_own_id_is_set_aside(
    make_devices: DeviceFactory, log: FirestoreSharedLog, firestore_client: Any
) -> None:
    a, b = make_devices(2, log=log)
    a.sql("INSERT INTO notes VALUES ('n', 'genuine', NULL, 1)")
    a.sync()
    batch_id, fields = genuine_batch(firestore_client, log, a)
    hlc = fields["firstHlc"]
    # The attacker can sign with a key of its own, or leave the signature as it was: the id (a digest
    # of the signed content) gives both away, and a matching id needs the device's key to sign it.
    altered = Writer(log, a.device_id, DeviceKey.generate()).batch([create("altered")], [hlc]).fields
    overwrite(firestore_client, log, batch_id, altered)
    b.sync()
    assert titles(b) == [] and "does not match its content" in reasons(b)[0]
    overwrite(firestore_client, log, batch_id, {**fields, "p": altered["p"], "size": altered["size"]})
    (c,) = make_devices(1, log=log)
    c.sync()
    assert titles(c) == [] and "does not match its content" in reasons(c)[0]
    assert titles(a) == [("n", "genuine")]


def test_a_batch_altered_after_one_device_read_it_does_not_reach_a_newcomer(
    make_devices: DeviceFactory, log: FirestoreSharedLog, firestore_client: Any
) -> None:
    a, b = make_devices(2, log=log)
    a.sql("INSERT INTO notes VALUES ('n', 'genuine', NULL, 1)")
    a.sync()
    b.sync()
    batch_id, fields = genuine_batch(firestore_client, log, a)
    altered = Writer(log, a.device_id, DeviceKey.generate()).batch([create("altered")], [fields["firstHlc"]])
    overwrite(firestore_client, log, batch_id, altered.fields)
    (c,) = make_devices(1, log=log)
    for device in (a, b, c):
        device.sync()
    assert titles(a) == titles(b) == [("n", "genuine")]
    assert titles(c) == []  # the genuine batch is gone from the log; the altered one is not applied
    assert len(reasons(c)) == 1


def test_the_same_clock_under_a_new_id_altered_and_earlier_is_set_aside(
    make_devices: DeviceFactory, log: FirestoreSharedLog
) -> None:
    a, b = make_devices(2, log=log)
    a.sql("INSERT INTO notes VALUES ('n', 'genuine', NULL, 1)")
    a.sync()
    hlc = int(a.query("SELECT hlc FROM _sync_log")[0][0])
    Writer(log, a.device_id, DeviceKey.generate()).upload([create("altered")], [hlc - (1 << 16)])
    Writer(log, a.device_id, DeviceKey.generate()).upload([create("altered")], [hlc])
    for device in (b, *make_devices(1, log=log), a):
        device.sync()
        assert titles(device) == [("n", "genuine")], device.path.name


def test_an_unknown_format_version_is_set_aside(
    make_devices: DeviceFactory, log: FirestoreSharedLog, firestore_client: Any
) -> None:
    a, b = make_devices(2, log=log)
    writer = Writer.register(log)
    batch = writer.batch([create("from the future")])
    collection = firestore_client.collection(*layout.batches_path(log.root, "alice"))
    for i, v in enumerate((3, "2", None, 2.0)):
        fields = (
            {**batch.fields, "v": v} if v is not None else {k: x for k, x in batch.fields.items() if k != "v"}
        )
        collection.document(f"{batch.batch_id[:-1]}{i}").create(
            {**fields, "sharedOn": firestore.SERVER_TIMESTAMP}
        )
    for device in (a, b):
        summary = device.sync()
        assert titles(device) == [] and summary.set_aside == 4
        assert sum("unknown log format version" in r for r in reasons(device)) == 3, reasons(device)


def test_a_clock_23_hours_ahead_is_set_aside_and_does_not_move_the_clock(
    make_devices: DeviceFactory, log: FirestoreSharedLog
) -> None:
    a, b = make_devices(2, log=log)
    ahead = HybridLogicalClock(now_ms=lambda: wall_clock_ms() + 23 * 3_600_000)
    Writer.register(log).upload([create("tomorrow", "t")], [ahead.stamp()])
    a.sql("INSERT INTO notes VALUES ('n', 'now', NULL, 1)")
    a.sync()
    (c,) = make_devices(1, log=log)
    for device in (b, c):
        summary = device.sync()
        assert titles(device) == [("n", "now")] and summary.set_aside == 1
        assert "ahead of the time the shared log accepted it" in reasons(device)[0]
        assert wall_ms_of(int(device.db.state()["clock"])) <= wall_clock_ms() + MAX_AHEAD_MS
