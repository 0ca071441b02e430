"""Every error this package raises, in one place.

::

    SyncError                      base; .hint says what to do, .transient whether a retry may help
     +-- ConfigurationError        the database or the log is not set up for sync (run ``init``)
     |    +-- UnsuitableTableError a table cannot be synced as it is (key, missing table)
     |    +-- SchemaChangedError   a synced table changed in a way sync cannot follow (gone, new key)
     |    +-- RulesMismatchError   this device's conflict rules differ from the log's
     +-- DamagedDatabaseError      the database file reports corruption: sync will not write to it
     +-- InvalidEntryError         an entry from the shared log is malformed or names unsynced data
     +-- DoubleCreateError         two devices created the same key and merging is switched off
     +-- ContendedError            application writes kept racing a reconcile pass: try again later
     +-- SharedLogError            the shared log failed
          +-- TransientSharedLogError   the network or the service is busy: retried, then raised
          +-- PermanentSharedLogError   permission, invalid argument, size limit: retrying cannot help
          +-- EntryTooLargeError        one entry does not fit into a shared-log document
          +-- UnknownDeviceError        the log does not know this device id

Foreign exceptions (google.api_core, grpc, OS) are translated at the backend edge and kept as
``__cause__``; above that line only these types exist.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base class. ``hint`` names the fix; ``transient`` tells retry logic whether trying again may help."""

    transient: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class ConfigurationError(SyncError):
    """The database or the shared log is not set up the way sync needs."""


class UnsuitableTableError(ConfigurationError):
    """A table cannot be synced as it is, for example because its key is auto-incremented."""


class SchemaChangedError(ConfigurationError):
    """A synced table changed in a way sync cannot follow on its own: it is gone, or its key changed."""


class RulesMismatchError(ConfigurationError):
    """This device resolves conflicts on a table by other rules than the log's devices."""


class DamagedDatabaseError(SyncError):
    """SQLite reports the database file damaged (``PRAGMA quick_check``); writing to it could spread the
    damage, so sync refuses to touch it, the failure record included."""


class InvalidEntryError(SyncError):
    """An entry from the shared log is malformed, or names a table or column that is not synced."""


class DoubleCreateError(SyncError):
    """Two devices created the same primary key while ``double_create="error"``."""


class ContendedError(SyncError):
    """Application writes to the rows being reconciled raced every attempt of a reconcile pass; each
    attempt rolled back whole, so nothing is lost, and a later sync applies what waits."""

    transient = True


class SharedLogError(SyncError):
    """The shared log failed."""


class TransientSharedLogError(SharedLogError):
    """The shared log is unreachable or busy; retried with back-off before this is raised."""

    transient = True


class PermanentSharedLogError(SharedLogError):
    """The shared log refused the request for a reason that retrying cannot fix."""


class EntryTooLargeError(PermanentSharedLogError):
    """One entry alone is larger than a shared-log document may be."""


class UnknownDeviceError(SharedLogError):
    """The shared log has no record of this device id."""
