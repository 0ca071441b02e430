"""Device ids: registering this database as a device of a user in the shared log, once; and joining
an encrypted log with its passphrase."""

from __future__ import annotations

from datetime import datetime

from . import client_log
from .database import SyncedDatabase
from .encryption import DataKey, unwrap, wrap
from .errors import ConfigurationError, UnknownDeviceError
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


def create_log_key(
    db: SyncedDatabase, shared_log: SharedSyncLog, *, user_id: str, passphrase: str
) -> DataKey:
    """Turn encryption on for ``user_id``'s log from its first device (``db``, already registered).

    Refused when the log already holds unencrypted batches: they would be unreadable for the devices
    that now expect sealed ones, and mixing would leave plaintext in the log. If another device created
    the key meanwhile, that key is unwrapped with ``passphrase`` instead.
    """
    probe = shared_log.get_unsynced_batches(user_id=user_id, device_id=db.state()["device_id"], batch_size=1)
    if any("enc" not in b.fields for b in probe.batches):
        raise ConfigurationError(
            "this shared log already holds unencrypted batches; encryption starts with a new log",
            hint="choose a new --log (or a new root: firestore://PROJECT/ROOT) for the encrypted log",
        )
    key = DataKey.generate()
    if shared_log.put_key_record(user_id=user_id, record=wrap(key, passphrase, user_id=user_id)):
        return key
    record = shared_log.get_key_record(user_id=user_id)  # another device was first
    if record is None:
        raise ConfigurationError("the shared log's key record vanished", hint="run the command again")
    return unwrap(record, passphrase, user_id=user_id)


def use_encryption(db: SyncedDatabase, key: DataKey) -> None:
    """Remember the log's data key in the database: this device now seals and opens every payload.

    The key is kept in ``_sync_state`` beside the signing key, protected as the database file is.
    """
    with db.transaction() as conn:
        known = db.get_state(conn, "data_key")
        if known and DataKey.from_hex(str(known)).key_id != key.key_id:
            raise ConfigurationError(
                "this database already holds another log's data key",
                hint="a database belongs to one log; register it afresh ('storex-sync init --new-device')",
            )
        db.set_state(conn, "data_key", key.key.hex())


def change_passphrase(shared_log: SharedSyncLog, *, user_id: str, old: str, new: str) -> None:
    """Rewrap the log's data key with a new passphrase: one document; nothing is re-encrypted."""
    record = shared_log.get_key_record(user_id=user_id)
    if record is None:
        raise ConfigurationError("this shared log is not encrypted", hint="turn it on with 'init --encrypt'")
    key = unwrap(record, old, user_id=user_id)
    if not shared_log.put_key_record(
        user_id=user_id, record=wrap(key, new, user_id=user_id), replaces=key.key_id
    ):
        raise ConfigurationError(
            "the key record changed while the passphrase was being changed", hint="run the command again"
        )
