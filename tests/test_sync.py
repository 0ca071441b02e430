"""Multi-device convergence on real SQLite files, random histories against a model, crash injection."""

from __future__ import annotations

import importlib
import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storex_sync_firestore import JsonSerializer, MemorySharedLog
from storex_sync_firestore.reconcile import reconcile_sync_log
from storex_sync_firestore.shared_log.base import SharedSyncLog

from .conftest import Device, DeviceFactory, assert_converged, sync_all
from .forge import observed


def test_three_devices_converge_after_interleaved_edits(
    make_devices: DeviceFactory, backend_log: SharedSyncLog
) -> None:
    a, b, c = make_devices(3, log=backend_log)
    a.sql("INSERT INTO notes VALUES ('n1', 'groceries', 'milk', 1)")
    a.sql("INSERT INTO notes VALUES ('n2', 'todo', 'call mum', 2)")
    b.sql("INSERT INTO notes VALUES ('n3', 'ideas', 'sync lib', 3)")
    a.sync()
    b.sync()
    c.sync()  # c is now up to date with a, not yet with everything b saw later
    b.sql("UPDATE notes SET body = 'milk, eggs' WHERE id = 'n1'")  # b edits a's note
    c.sql("UPDATE notes SET title = 'shopping' WHERE id = 'n1'")  # c edits another field of it
    a.sql("DELETE FROM notes WHERE id = 'n2'")
    c.sql("UPDATE notes SET rank = 20 WHERE id = 'n2'")  # edit after a's delete (in clock order)
    c.sql("INSERT INTO tags VALUES ('n1', 'home', 'red')")
    b.sql("INSERT INTO tags VALUES ('n1', 'home', 'blue')")  # double create: merged, does not block
    sync_all([c, b, a])
    state = assert_converged([a, b, c])
    assert state["notes"] == [("n1", "shopping", "milk, eggs", 1), ("n3", "ideas", "sync lib", 3)]
    assert state["tags"] in ([("n1", "home", "blue")], [("n1", "home", "red")])
    # n2 was deleted then re-created offline on b: it comes back everywhere
    b.sql("INSERT INTO notes VALUES ('n2', 'todo again', NULL, 5)")
    sync_all([b, a, c])
    assert ("n2", "todo again", None, 5) in assert_converged([a, b, c])["notes"]


def test_offline_device_catches_up_and_its_edits_order_by_time(
    make_devices: DeviceFactory, backend_log: SharedSyncLog
) -> None:
    a, b = make_devices(2, log=backend_log)
    a.sql("INSERT INTO notes VALUES ('n', 't', 'v1', 1)")
    sync_all([a, b])
    b.sql("UPDATE notes SET body = 'offline edit on b' WHERE id = 'n'")  # b is offline for a while
    for i in range(5):
        a.sql("UPDATE notes SET body = ? WHERE id = 'n'", f"a{i}")
        a.sync()
    sync_all([b, a])
    # b's edit was made before a's edits: it loses to them although b synced last
    assert assert_converged([a, b])["notes"] == [("n", "t", "a4", 1)]


def test_existing_rows_reach_other_devices_and_equal_rows_merge(
    tmp_path: Any, backend_log: SharedSyncLog
) -> None:
    schema = "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT); INSERT INTO notes VALUES ('x', 'same');"
    a = Device(tmp_path / "a.db", backend_log, "alice", schema, ["notes"])
    b = Device(tmp_path / "b.db", backend_log, "alice", schema, ["notes"])
    a.sql("INSERT INTO notes VALUES ('only-a', 'a')")
    sync_all([a, b])
    assert assert_converged([a, b])["notes"] == [("only-a", "a"), ("x", "same")]
    assert a.query("SELECT count(*) FROM _sync_quarantine") == [(0,)]


# --- random histories against a last-write-wins model -------------------------------------------------

KEYS = ["k1", "k2", "k3"]
action = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 2), st.sampled_from(KEYS), st.integers(0, 99)),
    st.tuples(st.just("delete"), st.integers(0, 2), st.sampled_from(KEYS), st.just(0)),
    st.tuples(st.just("sync"), st.integers(0, 2), st.just(""), st.just(0)),
)


def replay_model(entries: list[tuple[str, int, str]]) -> dict[str, dict[str, Any]]:
    """Independent model: replay every entry in (clock, device) order; creates are full rows."""
    rows: dict[str, dict[str, Any]] = {}
    serializer = JsonSerializer()
    for _device, _hlc, text in sorted(entries, key=lambda e: (e[1], e[0])):
        payload = serializer.loads(text)
        key = json.dumps(payload["pk"])
        if payload["op"] == "create":
            rows[key] = dict(payload["value"])
        elif payload["op"] == "modify" and key in rows:
            rows[key].update(payload["value"])
        elif payload["op"] == "delete":
            rows.pop(key, None)
    return rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    history=st.lists(action, min_size=1, max_size=25),
    final_order=st.permutations([0, 1, 2]),
    column=st.sampled_from(["title", "body"]),
)
def test_random_histories_converge_to_the_lww_model(
    tmp_path_factory: Any, history: list[tuple[str, int, str, int]], final_order: list[int], column: str
) -> None:
    log = MemorySharedLog()
    folder = tmp_path_factory.mktemp("h")
    schema = "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT, body TEXT, rank INTEGER);"
    devices = [Device(folder / f"d{i}.db", log, "alice", schema, ["notes"]) for i in range(3)]
    try:
        for kind, who, key, value in history:
            d = devices[who]
            if kind == "sync":
                d.sync()
            elif kind == "delete":
                d.sql("DELETE FROM notes WHERE id = ?", key)
            elif d.query("SELECT 1 FROM notes WHERE id = ?", key):
                d.sql(f"UPDATE notes SET {column} = ?, rank = rank + 1 WHERE id = ?", f"v{value}", key)
            else:
                d.sql("INSERT INTO notes VALUES (?, ?, ?, 0)", key, f"t{value}", f"b{value}")
        sync_all([devices[i] for i in final_order])
        state = assert_converged(devices)["notes"]
        model = replay_model(observed(log))
        expected = sorted((json.loads(k)[0], v["title"], v["body"], v["rank"]) for k, v in model.items())
        assert state == expected
    finally:
        for d in devices:
            d.app.close()
            d.db.engine.dispose()


# --- crash injection -----------------------------------------------------------------------------------

CRASH_POINTS = [
    "storex_sync_firestore.sync.client_log.insert_received",  # fetched, nothing stored
    "storex_sync_firestore.shared_log.memory.MemorySharedLog.mark_as_seen",  # stored, marker not moved
    "storex_sync_firestore.sync.client_log.plan_upload",  # before an upload is planned
    "storex_sync_firestore.shared_log.memory.MemorySharedLog.write_batches",  # planned, not sent
    "storex_sync_firestore.sync.client_log.mark_shared",  # the log accepted the batch, not marked shared
    "storex_sync_firestore.constraints.apply_operations",  # during apply (per-object path)
    "storex_sync_firestore.sync.client_log.mark_integrated",  # applied, not marked integrated
    "storex_sync_firestore.sync.reconcile_sets.apply",  # during apply (set-based path)
    "storex_sync_firestore.sync.client_log.mark_integrated_rows",  # applied, not marked integrated
    "storex_sync_firestore.sync.client_log.prune",  # during cleanup
]


class CrashError(BaseException):
    """A kill mid-step: not an ``Exception``, so no handler for one object's failure takes it."""


def resolve(target: str) -> tuple[Any, str]:
    """The object holding ``target``'s last attribute (a module or a class) and that attribute's name."""
    path, _, name = target.rpartition(".")
    try:
        return importlib.import_module(path), name
    except ModuleNotFoundError:
        module, _, cls = path.rpartition(".")
        return getattr(importlib.import_module(module), cls), name


@pytest.mark.parametrize("target", CRASH_POINTS)
@pytest.mark.parametrize("after", [False, True], ids=["before-step", "after-step"])
def test_crash_between_steps_loses_and_duplicates_nothing(
    make_devices: DeviceFactory, memory_log: MemorySharedLog, mocker: Any, target: str, after: bool
) -> None:
    a, b = make_devices(2)
    a.sql("INSERT INTO notes VALUES ('n1', 'a', 'x', 1)")
    b.sql("INSERT INTO notes VALUES ('n2', 'b', 'y', 2)")
    sync_all([a, b])
    a.sql("UPDATE notes SET body = 'edited on a' WHERE id = 'n2'")
    b.sql("UPDATE notes SET title = 'edited on b' WHERE id = 'n1'")
    b.sql("INSERT INTO tags VALUES ('n1', 'work', 'green')")

    owner, name = resolve(target)
    real = getattr(owner, name)
    calls = {"n": 0}

    def crashing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            if after:
                real(*args, **kwargs)
            raise CrashError(f"crash {'after' if after else 'before'} {name}")
        return real(*args, **kwargs)

    mocker.patch.object(owner, name, side_effect=crashing, autospec=True)
    crashed = 0
    options: dict[str, Any] = {}
    if target.endswith(("apply_operations", "mark_integrated")):  # a custom reconciler: per object
        options["reconciler"] = lambda histories: reconcile_sync_log(histories)
    for device in (a, b, a, b):
        try:
            device.sync(**options)
        except CrashError:
            crashed += 1
    mocker.stopall()
    sync_all([a, b])
    assert crashed == 1
    state = assert_converged([a, b])
    assert state["notes"] == [("n1", "edited on b", "x", 1), ("n2", "b", "edited on a", 2)]
    assert state["tags"] == [("n1", "work", "green")]
    uploaded = Counter((device, hlc) for device, hlc, _text in observed(memory_log))
    assert uploaded and max(uploaded.values()) == 1, "an entry was uploaded twice"
    for device in (a, b):
        assert device.query(
            "SELECT count(*) FROM _sync_log WHERE shared_on = 0 OR needs_integration = 1"
        ) == [(0,)]
        assert device.query("SELECT count(*) FROM _sync_quarantine") == [(0,)]
