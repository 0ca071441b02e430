"""Device ids: registering this database as a device of a user in the shared log, once."""

from __future__ import annotations

from datetime import datetime

from .database import SyncedDatabase
from .errors import UnknownDeviceError
from .shared_log.base import SharedSyncLog


def register_device(
    db: SyncedDatabase,
    shared_log: SharedSyncLog,
    *,
    user_id: str,
    shared_until: datetime | None = None,
    log_url: str | None = None,
) -> str:
    """Give ``db`` a device id for ``user_id`` and remember it in the database; idempotent.

    A database already registered for this user keeps its id if the shared log still knows it. Pass
    ``shared_until`` for a database that already holds a copy of the data (restored from a backup, say):
    it will not download history shared before that instant.
    """
    state = db.state()
    known = state.get("device_id")
    if known and state.get("user_id") == user_id:
        if shared_log.get_device_info(user_id=user_id, device_id=known) is not None:
            return str(known)
        raise UnknownDeviceError(
            f"this database is registered as device {known!r}, which the shared log does not know",
            hint="check --log and --user, or re-register with 'storex-sync init --new-device'",
        )
    device_id = shared_log.create_device_id(user_id=user_id, shared_until=shared_until)
    db.update_state(device_id=device_id, user_id=user_id, log=log_url)
    return device_id
