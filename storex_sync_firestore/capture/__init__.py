"""Stage 1: capture. Changes are logged by triggers inside the database; see ``base`` for the contract.

Each database family has one dialect (a :class:`~.base.CaptureDialect`), which owns everything that
differs between databases: the sync tables' DDL, triggers, silencing, transactions, value conversion and
the SQL fragments the rest of the package needs (upsert, insert-or-ignore, value lists, quoting). The
dialect is found by SQLAlchemy's dialect name in a registry:

1. :func:`register_dialect` calls made in this process;
2. the built-ins, ``sqlite`` and ``postgresql``;
3. the entry-point group ``storex_sync_firestore.dialects`` of installed packages (name: SQLAlchemy's
   dialect name, value: the dialect class), so that a package can add a database without editing this
   one. A new dialect runs ``testing.dialect_conformance`` as SQLite and PostgreSQL do.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from sqlalchemy import Connection, Engine

from ..errors import ConfigurationError
from .base import CaptureDialect, ColumnInfo, TableInfo

DIALECT_ENTRY_POINT_GROUP = "storex_sync_firestore.dialects"
_BUILT_IN = {"sqlite": ".sqlite:SQLiteCapture", "postgresql": ".postgres:PostgresCapture"}
_registered: dict[str, type[CaptureDialect]] = {}


def register_dialect(name: str, dialect: type[CaptureDialect]) -> None:
    """Use ``dialect`` for databases whose SQLAlchemy dialect is ``name`` (in this process)."""
    _registered[name] = dialect


def dialect_class(name: str) -> type[CaptureDialect]:
    """The dialect class for SQLAlchemy dialect ``name``; ConfigurationError if none is known."""
    found = _registered.get(name)
    if found is not None:
        return found
    loaded: object = None
    if name in _BUILT_IN:
        module, attr = _BUILT_IN[name].split(":")
        loaded = getattr(importlib.import_module(module, __name__), attr)
    else:
        for ep in entry_points(group=DIALECT_ENTRY_POINT_GROUP, name=name):
            loaded = ep.load()
            if not (isinstance(loaded, type) and issubclass(loaded, CaptureDialect)):
                raise ConfigurationError(
                    f"the entry point {ep.name} = {ep.value!r} in group {DIALECT_ENTRY_POINT_GROUP} is "
                    "not a CaptureDialect subclass",
                    hint="point it at the dialect class",
                )
            break
    if isinstance(loaded, type) and issubclass(loaded, CaptureDialect):
        found = loaded
    if found is None:
        known = sorted(
            {*_BUILT_IN, *_registered, *(ep.name for ep in entry_points(group=DIALECT_ENTRY_POINT_GROUP))}
        )
        raise ConfigurationError(
            f"sync does not support {name} databases",
            hint=f"use one of {', '.join(known)}, or install a package that registers a dialect for {name} "
            f"(entry-point group {DIALECT_ENTRY_POINT_GROUP})",
        )
    _registered[name] = found
    return found


def capture_for(engine: Engine) -> CaptureDialect:
    """The dialect for ``engine``'s database."""
    return dialect_class(engine.dialect.name)(engine)


def dialect_of(conn: Connection) -> type[CaptureDialect]:
    """The dialect class of the database ``conn`` is connected to, for its SQL fragments."""
    return dialect_class(conn.dialect.name)


__all__ = [
    "CaptureDialect",
    "ColumnInfo",
    "TableInfo",
    "capture_for",
    "dialect_class",
    "dialect_of",
    "register_dialect",
]
