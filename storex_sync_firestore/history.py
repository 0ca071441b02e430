"""``ObjectHistory``: what the client log hands the reconciler, one object's retained entries.

A module of its own so that the client log (stage 2) and the reconciler (stage 5) both depend on it, and
the client log not on the reconciler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .codec import dumps
from .models import Json, LogEntry


@dataclass(frozen=True, slots=True)
class ObjectHistory:
    """All retained entries of one object: already applied ones (``needs_integration`` false) and new ones."""

    table: str
    pk: tuple[Json, ...]
    entries: Sequence[LogEntry]
    settled: frozenset[tuple[int, str]] = frozenset()
    """Keys of entries that are shared or integrated (filled in only where cleanup needs it)."""
    pk_json: str = ""
    """The key as canonical JSON text, as the client log stores it (computed when not given)."""

    @property
    def object_key(self) -> tuple[str, str]:
        """(table, key JSON): how the client log and the apply stage name this object."""
        return (self.table, self.pk_json or dumps(list(self.pk)))
