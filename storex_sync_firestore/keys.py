"""Globally unique primary keys: synced tables need keys that cannot clash across devices.

An auto-incremented integer key is refused when sync is enabled (two devices would both create row 1);
these helpers give keys that are unique everywhere and sort by creation time, which keeps B-tree inserts
local.
"""

from __future__ import annotations

import os
import time
import uuid

SQLITE_UUID7_DEFAULT = (
    "(lower(printf('%08x-%04x-7%03x-%s%03x-%012x',"
    " (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) >> 16) & 0xffffffff,"
    " CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) & 0xffff,"
    " abs(random()) % 4096,"
    " substr('89ab', 1 + abs(random()) % 4, 1),"
    " abs(random()) % 4096,"
    " abs(random()) % 281474976710656)))"
)
"""A SQLite column default that fills a missing TEXT key with a UUIDv7, e.g.
``CREATE TABLE notes (id TEXT PRIMARY KEY DEFAULT {SQLITE_UUID7_DEFAULT}, ...)``.
Any writer benefits, including plain ``sqlite3`` inserts that omit the key."""


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7) as a string: 48 bits of milliseconds, 74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
