"""Documents in the shared log that this package did not write are set aside; sync goes on past them."""

from __future__ import annotations

from typing import Any

from google.cloud import firestore

from storex_sync_firestore.shared_log import firestore_layout as layout
from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog

from .conftest import DeviceFactory


def test_malformed_batch_documents_are_set_aside(make_devices: DeviceFactory, firestore_client: Any) -> None:
    log = FirestoreSharedLog(firestore_client)
    a, b = make_devices(2, log=log)
    batches = firestore_client.collection(*layout.batches_path(log.root, "alice"))
    batches.document("junk-1").create({"deviceId": a.device_id, "sharedOn": firestore.SERVER_TIMESTAMP})
    batches.document("junk-2").create(
        {"deviceId": a.device_id, "sharedOn": firestore.SERVER_TIMESTAMP, "h": ["x", 5], "d": [1, "{}"]}
    )
    a.sql("INSERT INTO notes VALUES ('after-junk', 't', NULL, 1)")
    assert a.sync().set_aside == 2  # they claim to be a's own: a checks, and sets them aside too
    summary = b.sync()
    assert b.rows("notes") == [("after-junk", "t", None, 1)]
    assert summary.set_aside == 2
    reasons = sorted(r for (r,) in b.query("SELECT reason FROM _sync_quarantine"))
    assert reasons[0].startswith("batch 'junk-1' set aside: ") and "v1" in reasons[0]
    assert reasons[1].startswith("batch 'junk-2' set aside: ")
    assert b.sync().set_aside == 0  # set aside once, not again on every sync
