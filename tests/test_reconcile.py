"""The default reconciler as a pure function: the original's per-object table, LWW, double creates."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storex_sync_firestore import LastWriteWins, LogEntry, ObjectHistory, Operation
from storex_sync_firestore.reconcile import fold, retained_keys


def e(op: str, hlc: int, new: bool, value: dict[str, Any] | None = None, device: str = "d1") -> LogEntry:
    return LogEntry(device, hlc, "notes", ("id-1",), op, value, needs_integration=new)  # type: ignore[arg-type]


def ops(*entries: LogEntry, double_create: str = "merge") -> list[Operation]:
    reconciler = LastWriteWins(double_create=double_create)  # type: ignore[arg-type]
    return list(reconciler([ObjectHistory("notes", ("id-1",), entries)]).operations)


def op(kind: str, values: dict[str, Any] | None = None) -> Operation:
    return Operation(kind, "notes", ("id-1",), values or {})  # type: ignore[arg-type]


C = {"title": "a", "body": "b"}

CASES = {
    "create(n)": ([e("create", 1, True, C)], [op("insert", C)]),
    "create(n), modify(n)": (
        [e("create", 1, True, C), e("modify", 2, True, {"title": "x"})],
        [op("insert", {"title": "x", "body": "b"})],
    ),
    "create(o), modify(n)": (
        [e("create", 1, False, C), e("modify", 2, True, {"title": "x"})],
        [op("update", {"title": "x"})],
    ),
    "create(n), modify(n), delete(n)": (
        [e("create", 1, True, C), e("modify", 2, True, {"title": "x"}), e("delete", 3, True)],
        [],
    ),
    "create(o), delete(n)": ([e("create", 1, False, C), e("delete", 2, True)], [op("delete")]),
    "create(o), delete(n), modify(n)": (
        [e("create", 1, False, C), e("delete", 2, True), e("modify", 3, True, {"title": "x"})],
        [op("delete")],
    ),
    "create(o), delete(o), modify(n)": (
        [e("create", 1, False, C), e("delete", 2, False), e("modify", 3, True, {"title": "x"})],
        [],
    ),
    "create(o), delete(o), create(n)": (
        [
            e("create", 1, False, C),
            e("delete", 2, False),
            e("create", 3, True, {"title": "new", "body": None}),
        ],
        [op("insert", {"title": "new", "body": None})],
    ),
    "create(o), delete(n), create(n)": (
        [
            e("create", 1, False, C),
            e("delete", 2, True),
            e("create", 3, True, {"title": "new", "body": None}),
        ],
        [op("update", {"title": "new", "body": None})],  # a recreate updates in place: no cascade
    ),
    "create(o), create(n) merges": (
        [e("create", 1, False, C), e("create", 2, True, {"title": "z", "body": "b"}, device="d2")],
        [op("update", {"title": "z", "body": "b"})],
    ),
    "late old modify loses": (
        [
            e("create", 1, False, C),
            e("modify", 5, False, {"title": "new"}),
            e("modify", 3, True, {"title": "old"}),
        ],
        [],
    ),
    "late delete older than recreate": (
        [e("create", 1, False, C), e("delete", 4, False), e("create", 6, False, C), e("delete", 5, True)],
        [],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_per_object_table(name: str) -> None:
    entries, expected = CASES[name]
    assert ops(*entries) == expected


def test_equal_clocks_break_ties_by_device_id() -> None:
    a = e("create", 1, False, C, device="aaa")
    b1 = e("modify", 7, True, {"title": "from b"}, device="bbb")
    c1 = e("modify", 7, True, {"title": "from c"}, device="ccc")
    assert ops(a, b1, c1) == ops(a, c1, b1) == [op("update", {"title": "from c"})]


def test_double_create_can_be_an_error_without_blocking_other_objects() -> None:
    reconciler = LastWriteWins(double_create="error")
    twice = ObjectHistory("notes", ("x",), (
        LogEntry("d1", 1, "notes", ("x",), "create", C, True),
        LogEntry("d2", 2, "notes", ("x",), "create", C, True),
    ))  # fmt: skip
    fine = ObjectHistory("notes", ("y",), (LogEntry("d1", 3, "notes", ("y",), "create", C, True),))
    result = reconciler([twice, fine])
    assert [c.pk for c in result.conflicts] == [("x",)]
    assert "double create" in result.conflicts[0].reason
    assert [o.pk for o in result.operations] == [("y",)]


def test_many_objects_in_one_pass() -> None:
    histories = [
        ObjectHistory("notes", (f"k{i}",), (LogEntry("d", i + 1, "notes", (f"k{i}",), "create", C, True),))
        for i in range(1000)
    ]
    assert len(LastWriteWins()(histories).operations) == 1000


entry_strategy = st.builds(
    lambda op_, hlc, dev, title: LogEntry(
        dev,
        hlc,
        "notes",
        ("id-1",),
        op_,
        None if op_ == "delete" else {"title": title, "body": title} if op_ == "create" else {"title": title},
    ),
    st.sampled_from(["create", "modify", "delete"]),
    st.integers(1, 30),
    st.sampled_from(["d1", "d2", "d3"]),
    st.text(max_size=3),
)


@given(st.lists(entry_strategy, max_size=12, unique_by=lambda x: x.key), st.randoms())
def test_state_does_not_depend_on_arrival_order(entries: list[LogEntry], rnd: Any) -> None:
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert fold(entries).values() == fold(shuffled).values()
    assert fold(entries).exists == fold(shuffled).exists


@given(st.lists(entry_strategy, max_size=12, unique_by=lambda x: x.key), st.lists(entry_strategy, max_size=5))
def test_pruned_history_merges_like_the_full_one(entries: list[LogEntry], later: list[LogEntry]) -> None:
    keep = retained_keys(entries)
    pruned = [x for x in entries if x.key in keep]
    seen = {x.key for x in entries}
    later = [x for x in later if x.key not in seen]
    full, short = fold(entries + later), fold(pruned + later)
    assert (full.exists, full.values()) == (short.exists, short.values())
