"""The emulator ignores indexes, so check here that firestore.indexes.json serves every query we make.

The layout module declares its queries as data (``QUERIES``); ``FirestoreSharedLog`` builds them, and the
first test checks that the built queries are exactly the declared ones.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from storex_sync_firestore.shared_log import firestore_layout as layout
from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog
from storex_sync_firestore.shared_log.firestore_marker import Marker, Position

INDEXES = json.loads((Path(__file__).resolve().parents[1] / "firestore.indexes.json").read_text())
T = datetime(2026, 1, 1, tzinfo=UTC)


def shape(query: Any) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """(filters, order) of a built query, in the spec's terms."""
    ops = {"GREATER_THAN": ">", "GREATER_THAN_OR_EQUAL": ">=", "LESS_THAN": "<", "EQUAL": "=="}
    filters = tuple((f.field.field_path, ops[f.op.name]) for f in query._field_filters)
    order = tuple((o.field.field_path, o.direction.name) for o in query._orders)
    return filters, order


@pytest.mark.parametrize(
    "marker",
    [Marker(), Marker(Position(T, None)), Marker(Position(T, "b1"), (Position(T, "b2"),))],
    ids=["start", "after-time", "after-cursor"],
)
def test_built_queries_are_declared(marker: Marker) -> None:
    client = firestore.Client(project="offline", credentials=AnonymousCredentials())
    query = FirestoreSharedLog(client)._unseen_query("u", marker)
    declared = {(spec.filters, spec.order_by) for spec in layout.QUERIES}
    declared.add(((), layout.UNSEEN_AFTER_CURSOR.order_by))
    assert shape(query) in declared
    assert query._parent.id == layout.BATCHES


def exempted(collection: str, field: str) -> bool:
    return any(
        o["collectionGroup"] == collection and o["fieldPath"] == field and o.get("indexes") == []
        for o in INDEXES.get("fieldOverrides", [])
    )


@pytest.mark.parametrize("spec", layout.QUERIES, ids=lambda s: s.name)
def test_every_query_has_its_index(spec: layout.QuerySpec) -> None:
    for field in spec.fields():  # single-field indexes must not be switched off for a queried field
        assert not exempted(spec.collection, field), f"{spec.name} needs the index on {field}"
    if spec.needs_composite_index():
        wanted = [(f, d) for f, d in spec.order_by if f != layout.NAME]
        matching = [
            ix
            for ix in INDEXES["indexes"]
            if ix["collectionGroup"] == spec.collection
            and [(f["fieldPath"], f.get("order")) for f in ix["fields"]][: len(wanted)] == wanted
        ]
        assert matching, f"firestore.indexes.json lacks a composite index for {spec.name}"


def test_big_unqueried_arrays_are_exempt_from_indexing() -> None:
    for collection, field in layout.UNINDEXED_FIELDS:
        assert exempted(collection, field), f"{collection}.{field} should not be indexed"
        assert all(field not in spec.fields() for spec in layout.QUERIES)


def test_no_composite_index_is_unused() -> None:
    needed = [s for s in layout.QUERIES if s.needs_composite_index()]
    assert len(INDEXES["indexes"]) == len(needed)
