"""Stage 5: reconciliation, a pure function from log entries to operations (no I/O, swappable).

The default policy is last-write-wins per column by hybrid-logical-clock order, ties broken by device id.
An object's state is a set of registers, each won by the latest entry that wrote it:

* existence: the latest create or delete. The object exists if that is a create, so a delete followed
  by later edits from another device stays deleted until someone re-creates it;
* one register per column: the latest create or modify that set it. A column whose winner is older than
  the existence winner does not count (it was written before the object was last created).

Because every register is a maximum over a set, the result does not depend on the order entries arrive
in, and any device holding the same entries holds the same rows. The reconciler compares the state
before the new entries with the state after them and emits the writes that take the table from one to
the other: a create and delete that arrive together cancel out, a delete then create becomes an update
of the row in place (no cascade), and a double create merges column by column (or, with
``double_create="error"``, is set aside as a conflict without blocking the rest).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .history import ObjectHistory as ObjectHistory  # part of the reconciler's interface
from .models import Conflict, Json, LogEntry, Operation, Reconciliation
from .policy import RULES_TABLE

DoubleCreate = Literal["merge", "error"]


class Reconciler(Protocol):
    """Anything that turns object histories into operations; pass one to ``do_sync(reconciler=...)``."""

    def __call__(self, histories: Sequence[ObjectHistory]) -> Reconciliation: ...


@dataclass(slots=True)
class ObjectState:
    """The registers of one object after folding a set of entries."""

    existence: LogEntry | None = None
    fields: dict[str, LogEntry] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.existence is not None and self.existence.op == "create"

    def live_fields(self) -> dict[str, LogEntry]:
        """Column -> winning entry, for columns written since the object was last created."""
        if not self.exists:
            return {}
        floor = self.existence.key  # type: ignore[union-attr]
        return {c: e for c, e in self.fields.items() if e.key >= floor}

    def values(self) -> dict[str, Json]:
        """The row's non-key column values (empty if the object does not exist)."""
        return {c: e.value[c] for c, e in self.live_fields().items()}  # type: ignore[index]


def fold(entries: Iterable[LogEntry]) -> ObjectState:
    """The state a set of entries gives, whatever order they come in."""
    state = ObjectState()
    for e in entries:
        if e.op != "modify" and (state.existence is None or e.key > state.existence.key):
            state.existence = e
        if e.op != "delete" and e.value:
            for column in e.value:
                current = state.fields.get(column)
                if current is None or e.key > current.key:
                    state.fields[column] = e
    return state


def retained_keys(entries: Iterable[LogEntry]) -> set[tuple[int, str]]:
    """Keys of the entries that decide the object's state: what log cleanup must keep.

    Rule declarations (``policy``) are all kept: the first one counts, not the latest.
    """
    entries = list(entries)
    if any(e.table == RULES_TABLE for e in entries):
        return {e.key for e in entries}
    state = fold(entries)
    if state.existence is None:
        return {e.key for e in state.fields.values()}
    # A column written before the latest create/delete can never be live again: the floor only rises.
    floor = state.existence.key
    return {state.existence.key} | {e.key for e in state.fields.values() if e.key >= floor}


def _double_create(entries: Sequence[LogEntry]) -> bool:
    """Two creates with no delete between them, at least one of them new."""
    previous: LogEntry | None = None
    for e in sorted(entries, key=lambda e: e.key):
        if e.op == "delete":
            previous = None
        elif e.op == "create":
            if previous is not None and (previous.needs_integration or e.needs_integration):
                return True
            previous = e
    return False


def diff(table: str, pk: tuple[Json, ...], old: ObjectState, new: ObjectState) -> Operation | None:
    """The one write that turns a row in state ``old`` into state ``new``, if any."""
    if not new.exists:
        return Operation("delete", table, pk) if old.exists else None
    if not old.exists:
        return Operation("insert", table, pk, new.values())
    old_live, new_live = old.live_fields(), new.live_fields()
    changed: dict[str, Json] = {
        c: e.value[c]  # type: ignore[index]
        for c, e in new_live.items()
        if old_live.get(c) is not e
    }
    changed.update({c: None for c in old_live if c not in new_live})
    return Operation("update", table, pk, changed) if changed else None


class LastWriteWins:
    """The default reconciler. ``double_create`` is ``"merge"`` (default) or ``"error"``."""

    def __init__(self, *, double_create: DoubleCreate = "merge") -> None:
        self.double_create = double_create

    def __repr__(self) -> str:  # it is do_sync's default reconciler: help(do_sync) shows this
        return f"LastWriteWins(double_create={self.double_create!r})"

    def __call__(self, histories: Sequence[ObjectHistory]) -> Reconciliation:
        operations: list[Operation] = []
        conflicts: list[Conflict] = []
        for h in histories:
            if self.double_create == "error" and _double_create(h.entries):
                conflicts.append(
                    Conflict(h.table, h.pk, f"double create of {h.table} key {list(h.pk)} (merging is off)")
                )
                continue
            old = fold(e for e in h.entries if not e.needs_integration)
            op = diff(h.table, h.pk, old, fold(h.entries))
            if op is not None:
                operations.append(op)
        return Reconciliation(operations, conflicts)


reconcile_sync_log: Reconciler = LastWriteWins()
"""The default reconciler instance (merging double creates)."""
