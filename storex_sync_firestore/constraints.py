"""Reconciling under the schema: foreign keys, unique columns, CHECK and NOT NULL in a merged state.

Per-column last-write-wins gives every device the same rows, as long as each device can write them. A
schema refuses some merged states: a child whose parent another device deleted, two rows that two
devices gave the same unique value, a row whose columns were changed on two devices into a combination
a CHECK refuses. This module applies one rule for each, in the reconcile pass:

* **Foreign keys.** A row whose parent does not exist once the pass is applied follows its parent: it
  is deleted too, as ``ON DELETE CASCADE`` would; if its foreign key says ``ON DELETE SET NULL`` (and
  the columns allow NULL), its reference is cleared instead. Parents are written before their children
  and children deleted before their parents, within a pass and across passes (a parent still waiting
  to be applied is pulled into the pass instead of being taken for deleted).
* **Unique columns.** Of two rows holding the same value of a unique column set, the one that claimed
  it later by the clock (its latest write to those columns) loses; the table's ``on_conflict`` rule
  says what happens to it: deleted (``delete-later``), its unique columns set to NULL
  (``clear-later``), or what a function decides.
* **CHECK, NOT NULL and any other refusal** of a merged row: the latest change to the row loses, and
  the columns it wrote take their earlier values again (repeated if the row is still refused). A row
  the database refuses as one device wrote it, with nothing merged, is no conflict but a difference of
  schemas: it is set aside with a hint, and replayed when the schemas match.

Every resolution is a write of this device: an ordinary entry of its log, stamped by its clock, shared
and applied by the other devices like any other write (and, like any write, overtaken by later ones).
The rules read only the entries, so two devices that meet the same conflict write the same resolution,
and a device that receives a conflict together with its resolution applies the resolution and meets no
conflict. Each resolution is recorded (``storex-sync status``).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection
from sqlalchemy.exc import InterfaceError, OperationalError

from . import client_log, lookups
from .apply import ApplyResult, apply_operations
from .capture.base import CaptureDialect, ForeignKey, TableInfo, savepoint
from .clock import HybridLogicalClock
from .codec import dumps
from .models import Json, LogEntry, Operation, OpName
from .policy import TableRules, UniqueConflict
from .reconcile import ObjectHistory, ObjectState, Reconciler, fold
from .resolutions import Resolution

log = logging.getLogger(__name__)

MAX_ROUNDS = 12
"""Plan-and-apply rounds per pass; each resolves every conflict the previous round met."""
MAX_REVERTS = 4
"""Changes the CHECK rule may undo on one row before the row is set aside."""

Key = tuple[str, str]
Slot = Literal["foreign key", "unique", "check"]
Processor = Callable[[Sequence[Operation]], Sequence[Operation]]

SCHEMA_HINT = (
    "this database's schema differs from the writing device's; make them match, then run "
    "'storex-sync init --db URL' to replay it"
)


@dataclass(frozen=True, slots=True)
class _Reference:
    """A foreign key between two synced tables, with the child's columns in the parent's key order."""

    child: str
    parent: str
    columns: tuple[str, ...]
    set_null: bool


class _Schema:
    """The synced tables' foreign keys, by child and by parent, and the order to write tables in."""

    def __init__(self, tables: Mapping[str, TableInfo]) -> None:
        by_local = {t.local_name: t for t in tables.values()}
        self.of_child: dict[str, list[_Reference]] = defaultdict(list)
        self.of_parent: dict[str, list[_Reference]] = defaultdict(list)
        for child in tables.values():
            for fk in child.foreign_keys:
                parent = by_local.get(fk.parent)
                if parent is None or set(fk.parent_columns) != set(parent.pk):
                    continue  # to an unsynced table, or to non-key columns: the database's own business
                ref = _Reference(child.name, parent.name, _in_key_order(fk, parent), _clears(fk, child))
                self.of_child[child.name].append(ref)
                self.of_parent[parent.name].append(ref)
        self.rank = _ranks(tables, self.of_child)

    def order(self, operations: Sequence[Operation]) -> list[Operation]:
        """Deletes first, children before parents; then writes, parents before children."""

        def position(item: tuple[int, Operation]) -> tuple[bool, int, int]:
            index, op = item
            rank = self.rank.get(op.table, 0)
            return (op.kind != "delete", -rank if op.kind == "delete" else rank, index)

        return [op for _, op in sorted(enumerate(operations), key=position)]


def _in_key_order(fk: ForeignKey, parent: TableInfo) -> tuple[str, ...]:
    return tuple(fk.columns[fk.parent_columns.index(c)] for c in parent.pk)


def _clears(fk: ForeignKey, child: TableInfo) -> bool:
    nullable = all((c := child.column(name)) is not None and c.nullable for name in fk.columns)
    return fk.on_delete == "set null" and nullable


def _ranks(tables: Mapping[str, TableInfo], of_child: Mapping[str, list[_Reference]]) -> dict[str, int]:
    """Depth of each table below its parents (a cycle is broken anywhere: apply retries what fails)."""
    rank: dict[str, int] = {}

    def depth(name: str, seen: frozenset[str]) -> int:
        if name not in rank:
            parents = [r.parent for r in of_child.get(name, ()) if r.parent != name and r.parent not in seen]
            rank[name] = 1 + max((depth(p, seen | {name}) for p in parents), default=-1)
        return rank[name]

    for name in tables:
        depth(name, frozenset())
    return rank


def _as_key(value: Json) -> Json:
    """A column value as it travels inside a key (UUIDs as plain text)."""
    if isinstance(value, dict) and len(value) == 1 and "$uuid" in value:
        return value["$uuid"]
    return value


@dataclass(slots=True)
class PassContext:
    """What one reconcile pass works with (its transaction, tables, rules and clock)."""

    conn: Connection
    dialect: CaptureDialect
    tables: Mapping[str, TableInfo]
    rules: Mapping[str, TableRules]
    clock: HybridLogicalClock
    device_id: str
    reconciler: Reconciler
    processor: Processor | None
    stamp: Callable[[], bool]
    """Stamp local changes captured meanwhile; True if there were some (histories are then reloaded)."""


@dataclass(slots=True)
class PassOutcome:
    """What a pass did: the objects it covered (pulled ones included), the operations applied, the
    objects set aside and why (and whether a replay may succeed), and the resolutions to log."""

    histories: list[ObjectHistory]
    operations: list[Operation]
    result: ApplyResult
    refused: dict[Key, tuple[str, bool]]
    entries: list[LogEntry]
    resolutions: list[Resolution]


class _Again(Exception):  # noqa: N818 - a signal, not an error
    """Roll the round's writes back: resolutions were added and the pass is planned again."""


def reconcile_pass(ctx: PassContext, histories: Sequence[ObjectHistory]) -> PassOutcome:
    """Reconcile and apply ``histories`` under the schema's rules, in the caller's transaction.

    Whatever goes wrong with one object (an exception in the reconciler, the processor, a rule's
    function, a value no code path foresaw) sets that object aside and the others go on: the pass is
    rolled back and run again one object at a time, and an object whose own pass fails is set aside
    with the reason. The same entries fail the same way on every device, so all decide alike. Errors
    of the database itself (a lost connection, a lock) are not any object's fault: they propagate.
    """
    try:
        with savepoint(ctx.conn, "sync_objects"):
            return _Pass(ctx, histories).run()
    except _NOT_AN_OBJECTS_FAULT:
        raise
    except Exception:
        log.exception("a reconcile pass failed: going again one object at a time")
    return one_by_one(ctx, histories)


_NOT_AN_OBJECTS_FAULT = (OperationalError, InterfaceError, MemoryError)


def one_by_one(ctx: PassContext, histories: Sequence[ObjectHistory]) -> PassOutcome:
    """The per-object path: each object reconciled and applied in a pass of its own (in a savepoint);
    an object whose pass raises is set aside with the reason, and the next one goes on."""
    total = PassOutcome([], [], ApplyResult(), {}, [], [])
    covered: dict[Key, ObjectHistory] = {}
    for history in histories:
        if history.object_key in covered:
            continue  # pulled into an earlier object's pass, and reconciled there
        try:
            with savepoint(ctx.conn, "sync_object"):
                outcome = _Pass(ctx, [history]).run()
        except _NOT_AN_OBJECTS_FAULT:
            raise
        except Exception as exc:
            log.exception("reconciling %s %s failed: set aside", history.table, list(history.pk))
            reason = f"reconciling it failed: {type(exc).__name__}: {exc}"[:1_000]
            covered.setdefault(history.object_key, history)
            total.refused[history.object_key] = (reason, True)
            continue
        for h in outcome.histories:  # a pass may pull in other objects (parents, holders of a value)
            covered.setdefault(h.object_key, h)
        total.operations.extend(outcome.operations)
        total.result.applied += outcome.result.applied
        total.result.failed.extend(outcome.result.failed)
        total.result.unfit |= outcome.result.unfit
        for key, why in outcome.refused.items():
            total.refused.setdefault(key, why)
        total.entries.extend(outcome.entries)
        total.resolutions.extend(outcome.resolutions)
    total.histories = list(covered.values())
    total.entries.sort(key=lambda e: e.hlc)
    return total


class _Pass:
    def __init__(self, ctx: PassContext, histories: Sequence[ObjectHistory]) -> None:
        self.ctx = ctx
        self.schema = _Schema(ctx.tables)
        self.objects: dict[Key, ObjectHistory] = {h.object_key: h for h in histories}
        self.extra: dict[Key, dict[Slot, LogEntry]] = defaultdict(dict)
        self.notes: dict[Key, dict[Slot, Resolution]] = defaultdict(dict)
        self.refused: dict[Key, tuple[str, bool]] = {}
        self.dropped: dict[Key, list[tuple[int, str]]] = defaultdict(list)
        self.to_pull: set[Key] = set()
        """Objects a refusal needs in the pass: pulled before the next round, outside its savepoint."""
        self.missing_from_log: set[Key] = set()
        """Rows in a table that the log does not know (written while capture was off)."""

    # --- the loop ----------------------------------------------------------------------------------

    def run(self) -> PassOutcome:
        ctx = self.ctx
        ctx.dialect.check_constraints_immediately(ctx.conn)
        result, operations = ApplyResult(), []
        for round_ in range(MAX_ROUNDS):
            last = round_ == MAX_ROUNDS - 1
            if self.to_pull:
                self._pull(self.to_pull)
                self.to_pull.clear()
            operations = self._operations()
            if not last and self._plan_foreign_keys(operations):
                continue
            try:
                with savepoint(ctx.conn, "sync_pass"):
                    result = apply_operations(
                        ctx.conn, ctx.dialect, ctx.tables, self.schema.order(operations)
                    )
                    if self._handle_refusals(result, final=last):
                        raise _Again
            except _Again:
                continue
            break
        live = [k for k in self.objects if k not in self.refused]
        return PassOutcome(
            histories=list(self.objects.values()),
            operations=operations,
            result=result,
            refused=self.refused,
            entries=sorted((e for k in live for e in self.extra[k].values()), key=lambda e: e.hlc),
            resolutions=[r for k in live for r in self.notes[k].values()],
        )

    def _entries(self, key: Key) -> tuple[LogEntry, ...]:
        history = self.objects.get(key)
        real = tuple(history.entries) if history is not None else ()
        return (*real, *sorted(self.extra[key].values(), key=lambda e: e.key)) if key in self.extra else real

    def _state(self, key: Key) -> ObjectState:
        return fold(self._entries(key))

    def _operations(self) -> list[Operation]:
        """The reconciler's operations for every object not set aside, resolutions included."""
        ctx = self.ctx
        histories = [
            ObjectHistory(h.table, h.pk, self._entries(k), h.settled, h.pk_json)
            for k, h in self.objects.items()
            if k not in self.refused
        ]
        reconciliation = ctx.reconciler(histories)
        for conflict in reconciliation.conflicts:
            self.refused[(conflict.table, dumps(list(conflict.pk)))] = (conflict.reason, False)
        operations = list(reconciliation.operations)
        if ctx.processor is not None:
            operations = list(ctx.processor(operations))
        return self._fit(operations)

    def _fit(self, operations: Iterable[Operation]) -> list[Operation]:
        """Keep the columns this database has: values for dropped ones are not written (see schema.py)."""
        fitted: list[Operation] = []
        for op in operations:
            key = (op.table, dumps(list(op.pk)))
            if key in self.refused:
                continue
            table = self.ctx.tables.get(op.table)
            if table is None:
                self.refused[key] = (f"table {op.table!r} is not synced on this device", True)
                continue
            known = {c.name for c in table.value_columns}
            if set(op.values) - known:
                op = Operation(op.kind, op.table, op.pk, {c: v for c, v in op.values.items() if c in known})
                if op.kind == "update" and not op.values:
                    continue
            fitted.append(op)
        return fitted

    # --- resolutions --------------------------------------------------------------------------------

    def _resolve(
        self, key: Key, slot: Slot, op: OpName, values: Mapping[str, Json] | None, note: Resolution
    ) -> None:
        """Add (or replace) this object's resolution of one kind: an entry stamped now."""
        table, pk_json = key
        entry = LogEntry(
            self.ctx.device_id, self.ctx.clock.stamp(), table, tuple(json.loads(pk_json)), op,
            None if op == "delete" else dict(values or {}), needs_integration=True,
        )  # fmt: skip
        self.extra[key][slot] = entry
        self.notes[key][slot] = note
        log.info("resolved %s %s by %s", table, pk_json, note.rule)

    def _is_gone(self, key: Key) -> bool:
        return any(e.op == "delete" for e in self.extra.get(key, {}).values())

    def _pull(self, keys: Iterable[Key]) -> dict[Key, ObjectHistory]:
        """Bring objects into the pass with their whole history (locked first, on a server database)."""
        ctx = self.ctx
        new = sorted({k for k in keys if k not in self.objects})
        if not new:
            return {}
        by_table: dict[str, list[list[Json]]] = defaultdict(list)
        for table, pk_json in new:
            by_table[table].append(json.loads(pk_json))
        for table, pks in by_table.items():
            ctx.dialect.lock_rows(ctx.conn, ctx.tables[table], pks)
        if ctx.stamp():  # an application write committed before the locks: see it
            for h in client_log.load_objects(ctx.conn, list(self.objects)):
                self.objects[h.object_key] = h
        loaded = {h.object_key: h for h in client_log.load_objects(ctx.conn, new)}
        self.objects.update(loaded)
        self.missing_from_log.update(k for k in new if k not in loaded)
        return loaded

    # --- foreign keys -------------------------------------------------------------------------------

    def _plan_foreign_keys(self, operations: Sequence[Operation]) -> bool:
        """Find rows that would point to a missing parent after this pass and resolve them.

        True when something changed (a resolution, a pulled object): the operations are then recomputed.
        """
        by_key = {(op.table, dumps(list(op.pk))): op for op in operations}
        wanted: dict[Key, list[tuple[Key, _Reference]]] = defaultdict(list)
        for key, op in by_key.items():
            if op.kind == "delete" or not self.schema.of_child.get(op.table):
                continue
            values = self._state(key).values()
            for ref in self.schema.of_child[op.table]:
                refers = [values.get(c) for c in ref.columns]
                if all(v is not None for v in refers):
                    wanted[(ref.parent, dumps([_as_key(v) for v in refers]))].append((key, ref))
        orphans: list[tuple[Key, _Reference, Key]] = []
        missing, changed = self._missing_parents(wanted, by_key)
        for parent in missing:
            orphans.extend((child, ref, parent) for child, ref in wanted[parent])
        deleted = [k for k, op in by_key.items() if op.kind == "delete" and self.schema.of_parent.get(k[0])]
        stray: dict[Key, tuple[_Reference, Key]] = {}
        for ref, child_key, parent in self._children_of(deleted):
            if child_key in by_key:
                continue  # written in this pass: checked above against its new parent
            if child_key in self.objects:
                orphans.append((child_key, ref, parent))
            else:
                stray[child_key] = (ref, parent)
        if stray:
            pulled = self._pull(stray)
            for child_key, (ref, parent) in stray.items():
                history = pulled.get(child_key)
                if history is None:
                    self.refused[parent] = (
                        f"row {child_key[1]} of {child_key[0]} refers to it but is not in the sync log "
                        "(written while capture was off?)",
                        True,
                    )
                    changed = True
                elif any(e.needs_integration for e in history.entries):
                    changed = True  # it arrives in this pass: plan again with it
                else:
                    orphans.append((child_key, ref, parent))
        for child_key, ref, parent in orphans:
            changed = self._orphan(child_key, ref, parent) or changed
        return changed

    def _missing_parents(
        self, wanted: Mapping[Key, object], by_key: Mapping[Key, Operation]
    ) -> tuple[list[Key], bool]:
        """The parents in ``wanted`` that will not exist after the pass, and whether any was pulled in.

        A parent still waiting in the log is pulled into the pass instead of being taken for deleted; a
        parent set aside on this device is marked so, and its children are set aside with it.
        """
        ctx = self.ctx
        missing: list[Key] = []
        unknown: dict[str, list[Key]] = defaultdict(list)
        for parent in wanted:
            op = by_key.get(parent)
            if op is not None:
                if op.kind == "delete":
                    missing.append(parent)
            elif parent in self.refused:
                missing.append(parent)
            else:
                unknown[parent[0]].append(parent)
        absent: list[Key] = []
        for table, keys in unknown.items():
            present = lookups.existing_keys(
                ctx.conn, ctx.dialect, ctx.tables[table], [json.loads(k) for _, k in keys]
            )
            absent.extend(k for k in keys if k[1] not in present)
        pulled = self._pull(k for k in absent if k not in self.objects)
        arriving = {k for k, h in pulled.items() if any(e.needs_integration for e in h.entries)}
        absent = [k for k in absent if k not in arriving]
        for parent in lookups.set_aside_objects(ctx.conn, absent):
            self.refused.setdefault(parent, ("set aside on this device", True))
        return missing + absent, bool(arriving)

    def _children_of(self, parents: Sequence[Key]) -> list[tuple[_Reference, Key, Key]]:
        """Rows in the tables that point to one of ``parents``: (reference, child key, parent key)."""
        ctx = self.ctx
        found: list[tuple[_Reference, Key, Key]] = []
        by_table: dict[str, list[Key]] = defaultdict(list)
        for parent in parents:
            by_table[parent[0]].append(parent)
        for table, keys in by_table.items():
            for ref in self.schema.of_parent[table]:
                values = [json.loads(k) for _, k in keys]
                child = ctx.tables[ref.child]
                for child_pk, parent_pk in lookups.referencing(
                    ctx.conn, ctx.dialect, child, ref.columns, values
                ):
                    if (ref.child, child_pk) != (table, parent_pk):
                        found.append((ref, (ref.child, child_pk), (table, parent_pk)))
        return found

    def _orphan(self, child: Key, ref: _Reference, parent: Key) -> bool:
        """Resolve a row whose parent is gone: delete it, or clear its reference. False if done already."""
        if child in self.refused or self._is_gone(child) or "foreign key" in self.extra.get(child, {}):
            return False
        pk = tuple(json.loads(child[1]))
        if parent in self.refused:  # the parent is set aside here, not deleted: so is the child
            self.refused[child] = (f"its parent {parent[1]} in {parent[0]} is set aside on this device", True)
            return True
        detail = {"parent": [parent[0], json.loads(parent[1])], "columns": list(ref.columns)}
        if ref.set_null:
            note = Resolution(child[0], pk, "foreign key: reference cleared", detail)
            self._resolve(child, "foreign key", "modify", dict.fromkeys(ref.columns), note)
        else:
            note = Resolution(child[0], pk, "foreign key: deleted with its parent", detail)
            self._resolve(child, "foreign key", "delete", None, note)
        return True

    # --- refusals: unique values, CHECK and the rest --------------------------------------------------

    def _handle_refusals(self, result: ApplyResult, *, final: bool) -> bool:
        """Resolve what the database refused; True when the round must be planned again.

        One kind of rule at a time, so that a row refused only because another one was (a child whose
        parent was refused) is not resolved for it: unique conflicts first; then the CHECK rule, for rows
        that do not point to another refused row; what none of them resolves is set aside.
        """
        failed = {(op.table, dumps(list(op.pk))): (op, reason) for op, reason in result.failed}
        waiting: dict[Key, str] = {}
        unique = False
        for key, (op, reason) in failed.items():
            if final or key in result.unfit:
                self.refused[key] = (reason if key in result.unfit else f"{reason}; {SCHEMA_HINT}", True)
            elif op.kind != "delete" and self._unique_conflicts(key, op):
                unique = True
            else:
                waiting[key] = reason
        if unique:
            return True  # a unique conflict was resolved: the rest may land now
        again = False
        for key, reason in waiting.items():
            op = failed[key][0]
            if op.kind != "delete" and not self._points_to(key, failed) and self._revert(key, reason):
                again = True
        if again:
            return True
        for key, reason in waiting.items():
            self.refused[key] = (f"{reason}: refused as written, with nothing merged; {SCHEMA_HINT}", True)
        return False

    def _points_to(self, key: Key, others: Mapping[Key, object]) -> bool:
        """Does this row refer to one of ``others`` (a refused parent would explain its refusal)?"""
        values = self._state(key).values()
        for ref in self.schema.of_child.get(key[0], ()):
            refers = [values.get(c) for c in ref.columns]
            if (
                all(v is not None for v in refers)
                and (ref.parent, dumps([_as_key(v) for v in refers])) in others
            ):
                return True
        return False

    def _unique_conflicts(self, key: Key, op: Operation) -> bool:
        """Resolve unique values this row claims that another row holds; True if there were any."""
        ctx = self.ctx
        table = ctx.tables[op.table]
        values = self._state(key).values()
        found = False
        for columns in table.unique:
            holders = lookups.holders(ctx.conn, ctx.dialect, table, columns, op.pk, values)
            for holder_pk in holders:
                holder = (op.table, holder_pk)
                found = True
                if holder not in self.objects:
                    if holder in self.missing_from_log:
                        self.refused[key] = (
                            f"row {holder_pk} holds its value of {', '.join(columns)} but is not in the "
                            "sync log (written while capture was off?)",
                            True,
                        )
                    self.to_pull.add(holder)
                    continue
                mine, theirs = _claim(self._entries(key), columns), _claim(self._entries(holder), columns)
                loser, winner = (key, holder) if mine > theirs else (holder, key)
                self._lose_unique(loser, winner, columns)
        return found

    def _lose_unique(self, loser: Key, winner: Key, columns: tuple[str, ...]) -> None:
        if self._is_gone(loser):
            return
        table = loser[0]
        rules = self.ctx.rules.get(table, TableRules())
        state, kept = self._state(loser).values(), self._state(winner).values()
        pk, winner_pk = tuple(json.loads(loser[1])), tuple(json.loads(winner[1]))
        detail = {
            "columns": list(columns),
            "value": {c: state.get(c) for c in columns},
            "kept": list(winner_pk),
        }
        rule = f"unique ({', '.join(columns)}): {rules.on_conflict}"
        handler = rules.handler()
        if handler is not None:
            try:
                decided = handler(UniqueConflict(table, columns, winner_pk, pk, dict(state), dict(kept)))
            except Exception as exc:  # the application's code: set the row aside, keep syncing the rest
                log.exception("the on_conflict function %s failed", rules.on_conflict)
                self.refused[loser] = (f"the on_conflict function failed: {type(exc).__name__}: {exc}", True)
                return
            if decided is not None and not any(decided.get(c, state.get(c)) != state.get(c) for c in columns):
                self.refused[loser] = (f"the on_conflict function left {', '.join(columns)} unchanged", True)
                return
            values = None if decided is None else dict(decided)
        elif rules.on_conflict == "clear-later":
            values = dict.fromkeys(columns)
        else:
            values = None
        known = {c.name for c in self.ctx.tables[table].value_columns}
        if values is not None and not set(values) <= known:
            self.refused[loser] = (
                f"the on_conflict function set unknown columns {sorted(set(values) - known)}",
                True,
            )
            return
        if values is None:
            self._resolve(
                loser, "unique", "delete", None, Resolution(table, pk, rule, {**detail, "row": state})
            )
        else:
            self._resolve(
                loser, "unique", "modify", values, Resolution(table, pk, rule, {**detail, "set": values})
            )

    def _revert(self, key: Key, reason: str) -> bool:
        """The CHECK rule: the latest change to the row loses. False if there is nothing merged to undo."""
        history = self.objects.get(key)
        dropped = self.dropped[key]
        if history is None or len(dropped) >= MAX_REVERTS:
            return False
        real = history.entries
        state = fold(e for e in real if e.key not in dropped)
        if not state.exists:
            return False
        changes = [e for e in state.live_fields().values() if e is not state.existence]
        if not changes:
            return False
        latest = max(changes, key=lambda e: e.key)
        dropped.append(latest.key)
        before = fold(e for e in real if e.key not in dropped).live_fields()
        known = {c.name for c in self.ctx.tables[key[0]].value_columns}
        undone = {c for e in real if e.key in dropped for c in (e.value or {})} & known
        restored = {c: _value(before, c) for c in sorted(undone)}
        note = Resolution(
            key[0], history.pk, "check: the later change lost",
            {"refused": reason, "change": [latest.device_id, latest.hlc], "restored": restored},
        )  # fmt: skip
        self._resolve(key, "check", "modify", restored, note)
        return True


def _value(fields: Mapping[str, LogEntry], column: str) -> Json:
    winner = fields.get(column)
    return None if winner is None or winner.value is None else winner.value.get(column)


def _claim(entries: Sequence[LogEntry], columns: Sequence[str]) -> tuple[int, str]:
    """When a row claimed its values of ``columns``: its latest write to any of them."""
    state = fold(entries)
    live = state.live_fields()
    floor = state.existence.key if state.existence is not None else (0, "")
    return max((live[c].key if c in live else floor) for c in columns)
