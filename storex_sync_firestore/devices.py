"""Device ids: registering this database as a device of a user in the shared log, once."""

from __future__ import annotations

from datetime import datetime

from . import client_log
from .database import SyncedDatabase
from .errors import UnknownDeviceError
from .shared_log.base import SharedSyncLog
from .signing import DeviceKey


def register_device(
    db: SyncedDatabase,
    shared_log: SharedSyncLog,
    *,
    user_id: str,
    shared_until: datetime | None = None,
    log_url: str | None = None,
    new_device: bool = False,
) -> str:
    """Give ``db`` a device id for ``user_id`` and remember it in the database; idempotent.

    A database already registered for this user keeps its id if the shared log still knows it. Pass
    ``shared_until`` for a database that already holds a copy of the data (restored from a backup, say):
    it will not download history shared before that instant. ``new_device`` registers afresh even so (a
    copied database must not pose as the original); its changes not yet shared move to the new id.

    Each registration creates the device's signing key (kept in the database) and publishes its public
    key with the device. A device registered by 0.1.x has none; it is registered afresh, once, the same way
    (its old batches stay readable as the unsigned batches of its old id).
    """
    state = db.state()
    known = state.get("device_id")
    upgrading = bool(known) and not state.get("signing_key")
    if known and not new_device and not upgrading and state.get("user_id") == user_id:
        if shared_log.get_device_info(user_id=user_id, device_id=known) is not None:
            return str(known)
        raise UnknownDeviceError(
            f"this database is registered as device {known!r}, which the shared log does not know",
            hint="check --log and --user, or re-register with 'storex-sync init --new-device'",
        )
    # Register first: a failure leaves the stored id as it was.
    key = DeviceKey.generate()
    device_id = shared_log.create_device_id(
        user_id=user_id, shared_until=shared_until, public_key=key.public_key
    )
    db.upgrade()
    with db.transaction() as conn:
        if known:
            client_log.adopt_unshared(conn, old=str(known), new=device_id)
        db.set_state(conn, "device_id", device_id)
        db.set_state(conn, "signing_key", key.to_hex())
        db.set_state(conn, "user_id", user_id)
        if log_url is not None:
            db.set_state(conn, "log", log_url)
    return device_id
