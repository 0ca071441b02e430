"""Device ids: registering this database as a device of a user in the shared log, once.

Registration has a network half (ask the shared log for a device id, or check that it still knows ours)
and a database half (remember id, user and log URL in ``_sync_state``). :func:`prepare_registration` does
the first and returns a :class:`Registration` whose :meth:`~Registration.store` does the second inside a
transaction of the caller's choosing: ``storex-sync init`` stores it in the same commit that installs
capture, so an unreachable log leaves the database exactly as it was.

Each registration creates the device's signing key (kept in the database) and publishes its public key
with the device. A database registered by 0.1.x has none: it is registered afresh, once, the same way
(its old batches stay readable as the unsigned batches of its old id). Joining an encrypted log with its
passphrase is here too (:func:`create_log_key`, :func:`use_encryption`, :func:`change_passphrase`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from . import client_log
from .database import SyncedDatabase
from .encryption import DataKey, unwrap, wrap
from .errors import ConfigurationError, UnknownDeviceError
from .shared_log.base import SharedSyncLog
from .signing import DeviceKey


@dataclass(frozen=True, slots=True)
class Registration:
    """What :func:`prepare_registration` learnt from the shared log, to be stored in the database."""

    device_id: str
    user_id: str
    log_url: str | None
    previous_device_id: str | None
    """The id this database had before, whose unshared entries move to ``device_id``."""
    share_all_rows: bool
    """The database moves to another user's log: every row is shared again there."""
    signing_key: DeviceKey | None = None
    """The key of a newly registered device (None: the database keeps its id and key)."""

    def store(self, db: SyncedDatabase, conn: Connection) -> None:
        """Remember the registration in ``db`` inside the caller's write transaction ``conn``."""
        if self.previous_device_id and self.previous_device_id != self.device_id:
            client_log.adopt_unshared(conn, old=self.previous_device_id, new=self.device_id)
        if self.share_all_rows:
            db.share_all_rows_again(conn)
        db.set_state(conn, "device_id", self.device_id)
        if self.signing_key is not None:
            db.set_state(conn, "signing_key", self.signing_key.to_hex())
        db.set_state(conn, "user_id", self.user_id)
        if self.log_url is not None:
            db.set_state(conn, "log", self.log_url)


def log_url_of(shared_log: SharedSyncLog) -> str | None:
    """The URL that reopens ``shared_log`` with ``open_shared_log`` (None for a log that has none, such as
    a ``MemorySharedLog()`` made directly, or a backend that does not say)."""
    url = getattr(shared_log, "url", None)
    return str(url) if url else None


def check_user(state: dict[str, Any], user_id: str, *, switch_user: bool = False) -> None:
    """Refuse to register a database that is a device of another user for ``user_id`` (unless
    ``switch_user``); needs no network, so ``init`` asks it first."""
    known, known_user = state.get("device_id"), state.get("user_id")
    if known and known_user and known_user != user_id and not switch_user:
        raise ConfigurationError(
            f"this database is device {known} of user {known_user!r}; it cannot become a device of "
            f"{user_id!r} as well (its rows would stay in {known_user}'s log, out of {user_id}'s reach)",
            hint=f"leave out --user to keep syncing as {known_user!r}. To move the database to {user_id!r}, "
            f"add --switch-user: it becomes a new device of {user_id!r} and shares all its rows again in "
            f"{user_id}'s log; what it shared before stays in {known_user}'s log for {known_user}'s devices",
        )


def prepare_registration(
    db: SyncedDatabase,
    shared_log: SharedSyncLog,
    *,
    user_id: str,
    shared_until: datetime | None = None,
    log_url: str | None = None,
    new_device: bool = False,
    switch_user: bool = False,
) -> Registration:
    """The shared-log half of :func:`register_device`; writes nothing to ``db``."""
    state = db.state()
    known = state.get("device_id")
    known_user = state.get("user_id")
    log_url = log_url_of(shared_log) or log_url
    check_user(state, user_id, switch_user=switch_user)
    upgrading = bool(known) and not state.get("signing_key")  # registered by 0.1.x: no key yet
    if known and not new_device and not upgrading and known_user == user_id:
        if shared_log.get_device_info(user_id=user_id, device_id=known) is not None:
            return Registration(str(known), user_id, log_url, None, share_all_rows=False)
        raise UnknownDeviceError(
            f"this database is registered as device {known!r}, which the shared log does not know",
            hint="check --log and --user, or re-register with 'storex-sync init --new-device'",
        )
    key = DeviceKey.generate()
    device_id = shared_log.create_device_id(
        user_id=user_id, shared_until=shared_until, public_key=key.public_key
    )
    moved = bool(known) and known_user is not None and known_user != user_id
    previous = str(known) if known else None
    return Registration(device_id, user_id, log_url, previous, share_all_rows=moved, signing_key=key)


def register_device(
    db: SyncedDatabase,
    shared_log: SharedSyncLog,
    *,
    user_id: str,
    shared_until: datetime | None = None,
    log_url: str | None = None,
    new_device: bool = False,
    switch_user: bool = False,
) -> str:
    """Give ``db`` a device id for ``user_id`` and remember it, with the log's URL, in the database;
    idempotent.

    A database already registered for this user keeps its id if the shared log still knows it. Pass
    ``shared_until`` for a database that already holds a copy of the data (restored from a backup, say):
    it will not download history shared before that instant. ``new_device`` registers afresh even so (a
    copied database must not pose as the original); its changes not yet shared move to the new id.

    The log's URL is what ``storex-sync sync``, ``watch`` and ``status`` reopen it by: logs opened with
    ``open_shared_log`` know their own; pass ``log_url`` for one that does not. A database registered
    for another user is refused unless ``switch_user``: then it becomes a new device of ``user_id`` and
    shares every row again in that user's log (what it shared in the old user's log stays there).
    """
    registration = prepare_registration(
        db,
        shared_log,
        user_id=user_id,
        shared_until=shared_until,
        log_url=log_url,
        new_device=new_device,
        switch_user=switch_user,
    )
    db.upgrade()  # a 0.1.x database lacks the newer sync tables
    with db.transaction() as conn:
        registration.store(db, conn)
    return registration.device_id


def create_log_key(shared_log: SharedSyncLog, *, user_id: str, device_id: str, passphrase: str) -> DataKey:
    """Turn encryption on for ``user_id``'s log from its first device (``device_id``, registered in it).

    Refused when the log already holds unencrypted batches: they would be unreadable for the devices
    that now expect sealed ones, and mixing would leave plaintext in the log. If another device created
    the key meanwhile, that key is unwrapped with ``passphrase`` instead.
    """
    probe = shared_log.get_unsynced_batches(user_id=user_id, device_id=device_id, batch_size=1)
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


def remember_data_key(db: SyncedDatabase, conn: Connection, key: DataKey) -> None:
    """Keep the log's data key in the database (in the caller's transaction): this device now seals and
    opens every payload. It is kept in ``_sync_state`` beside the signing key, as safe as the file is."""
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
