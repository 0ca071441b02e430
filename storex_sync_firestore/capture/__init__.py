"""Stage 1: capture. Changes are logged by triggers inside the database; see ``base`` for the contract."""

from __future__ import annotations

from sqlalchemy import Engine

from ..errors import ConfigurationError
from .base import CaptureDialect, ColumnInfo, TableInfo


def capture_for(engine: Engine) -> CaptureDialect:
    """The capture dialect for ``engine``'s database (SQLite or PostgreSQL)."""
    name = engine.dialect.name
    if name == "sqlite":
        from .sqlite import SQLiteCapture

        return SQLiteCapture(engine)
    if name == "postgresql":
        from .postgres import PostgresCapture

        return PostgresCapture(engine)
    raise ConfigurationError(f"sync does not support {name} databases", hint="use SQLite or PostgreSQL")


__all__ = ["CaptureDialect", "ColumnInfo", "TableInfo", "capture_for"]
