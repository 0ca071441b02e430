"""Sync events: a tiny observer so applications can watch a sync without subclassing anything.

Event names (all four are emitted, unlike the original's never-sent ``reconcilingEntries``):
``sending_shared_entries``, ``received_shared_entries``, ``reconciling_entries``, ``reconciled_entries``.
Continuous sync adds ``sync_started`` and ``sync_finished``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

Listener = Callable[..., None]
log = logging.getLogger(__name__)


class SyncEvents:
    """Register listeners with :meth:`on`; a listener that raises is logged and does not stop the sync."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = defaultdict(list)

    def on(self, name: str, listener: Listener) -> Listener:
        self._listeners[name].append(listener)
        return listener

    def off(self, name: str, listener: Listener) -> None:
        """Remove one listener (only that one: the original removed every listener of the event)."""
        self._listeners[name].remove(listener)

    def wants(self, name: str) -> bool:
        """True when someone listens to ``name``: lets a sync skip building a payload nobody reads."""
        return bool(self._listeners.get(name))

    def emit(self, name: str, **payload: Any) -> None:
        for listener in list(self._listeners.get(name, ())):
            try:
                listener(**payload)
            except Exception:
                log.exception("listener for sync event %r failed", name)
