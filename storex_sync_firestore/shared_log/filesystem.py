"""A shared log in a folder: for devices that share a disk, a network share or a synced folder, and for tests.

Layout, per user (ids are percent-encoded into file names)::

    {folder}/{user}/.lock                               flock(2) taken to append a batch or register a device
    {folder}/{user}/devices/{device}.json               registry: created_at, shared_until
    {folder}/{user}/markers/{device}.json               read marker: the last batch seq this device stored
    {folder}/{user}/batches/{seq:012d}_{device}_{first:016x}_{last:016x}_{count}.json

Every file is written to a temporary name, fsynced, renamed into place and the folder fsynced, so a reader
sees a whole file or none, and a crash leaves no half-written batch.

Why a sequence number in the batch name: readers page by it, and it must never let them skip a batch that
another process commits concurrently. The writer picks ``seq = highest existing + 1`` and renames the file
into place *while holding the lock*, so batch files appear strictly in seq order with no gaps. A reader
only takes the contiguous run after its marker; a gap (a listing that raced a rename) ends the page, and
the batch comes next time. The rest of the name (device, first and last clock, count) is the batch's
identity: a retried ``write_entries`` finds it and writes nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from ..errors import ConfigurationError, UnknownDeviceError
from ..models import DeviceInfo, SharedEntry, UnsyncedUpdate, WriteResult
from .base import SharedSyncLog, unpack_entries

_BATCH = re.compile(r"^(\d{12})_(.+)\.json$")
_U64 = 0xFFFFFFFFFFFFFFFF


def _name(kind: str, value: str) -> str:
    """A file-name-safe form of an id; ids that would escape the folder are refused."""
    encoded = quote(value, safe="")
    if not value or encoded in (".", ".."):
        raise ConfigurationError(f"{kind} {value!r} cannot be used as a file name", hint="use another id")
    return encoded


def _write_atomically(path: Path, data: bytes) -> None:
    """tmp + fsync + rename + fsync(dir): the file appears whole or not at all, and survives a crash."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        loaded = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError):
        return {"malformed": True}
    return loaded if isinstance(loaded, dict) else {"malformed": True}


def _entries(body: dict[str, object], path: Path) -> list[SharedEntry]:
    """A batch file's entries (a malformed file comes back to be set aside, naming the file)."""
    device = body.get("device_id") or "unknown"
    return unpack_entries(
        device, body.get("hlc"), body.get("data"), source=f"malformed batch file {path.name}"
    )


def _time(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


class FilesystemSharedLog(SharedSyncLog):
    """Shared log in ``folder`` (created if missing). Safe for several processes on one machine.

    Across machines it needs a file system whose ``flock`` and ``rename`` are honest (local disks, NFSv4
    with locking); folders synced by Dropbox-like tools are not, because they do not share locks.
    Appending lists the batch folder once (to find the next seq and to detect a retry), so it is meant
    for logs of up to some tens of thousands of batches.
    """

    max_batch_bytes: int | None = None
    max_entry_bytes: int | None = None

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FilesystemSharedLog({str(self.folder)!r})"

    @property
    def url(self) -> str:
        """The folder's absolute path: what ``open_shared_log`` reopens this log by, from any directory."""
        return str(self.folder.resolve())

    # ---- paths and locking ----

    def _user_dir(self, user_id: str) -> Path:
        path = self.folder / _name("user id", user_id)
        for sub in ("devices", "markers", "batches"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def _locked(self, user_dir: Path) -> Iterator[None]:
        """Exclusive lock on the user's log: between processes, and between threads (one fd per call)."""
        fd = os.open(user_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @staticmethod
    def _batches(user_dir: Path) -> list[tuple[int, str]]:
        """(seq, rest of name) of every committed batch, by seq."""
        found = []
        for name in os.listdir(user_dir / "batches"):
            match = _BATCH.match(name)
            if match:
                found.append((int(match.group(1)), match.group(2)))
        found.sort()
        return found

    # ---- devices ----

    def create_device_id(self, *, user_id: str, shared_until: datetime | None = None) -> str:
        user_dir = self._user_dir(user_id)
        device_id = uuid.uuid4().hex
        info = {
            "device_id": device_id,
            "created_at": datetime.now(UTC).isoformat(),
            "shared_until": shared_until.isoformat() if shared_until is not None else None,
        }
        with self._locked(user_dir):
            _write_atomically(user_dir / "markers" / f"{device_id}.json", b'{"seq": 0}')
            _write_atomically(user_dir / "devices" / f"{device_id}.json", json.dumps(info).encode())
        return device_id

    def get_device_info(self, *, user_id: str, device_id: str) -> DeviceInfo | None:
        data = _read_json(self._user_dir(user_id) / "devices" / f"{_name('device id', device_id)}.json")
        if data is None:
            return None
        return DeviceInfo(user_id, device_id, _time(data.get("shared_until")), _time(data.get("created_at")))

    def _device(self, user_dir: Path, user_id: str, device_id: str) -> dict[str, object]:
        data = _read_json(user_dir / "devices" / f"{_name('device id', device_id)}.json")
        if data is None:
            raise UnknownDeviceError(
                f"the shared log in {self.folder} has no device {device_id!r} for user {user_id!r}",
                hint="check --log and --user, or register the device again (storex-sync init)",
            )
        return data

    # ---- batches ----

    def write_entries(self, entries: Sequence[SharedEntry], *, user_id: str, device_id: str) -> WriteResult:
        if not entries:
            return WriteResult(0)
        user_dir = self._user_dir(user_id)
        identity = (
            f"{_name('device id', device_id)}_{entries[0].hlc & _U64:016x}_{entries[-1].hlc & _U64:016x}"
            f"_{len(entries)}"
        )
        with self._locked(user_dir):
            batches = self._batches(user_dir)
            if any(rest == identity for _, rest in batches):
                return WriteResult(0)  # a retry of a batch that landed
            seq = batches[-1][0] + 1 if batches else 1
            body = {
                "device_id": device_id,
                "shared_at": datetime.now(UTC).isoformat(),
                "hlc": [e.hlc for e in entries],
                "data": [e.data for e in entries],
            }
            _write_atomically(user_dir / "batches" / f"{seq:012d}_{identity}.json", json.dumps(body).encode())
        return WriteResult(1)

    def get_unsynced_entries(
        self, *, user_id: str, device_id: str, batch_size: int | None = None
    ) -> UnsyncedUpdate:
        user_dir = self._user_dir(user_id)
        device = self._device(user_dir, user_id, device_id)
        shared_until = _time(device.get("shared_until"))
        marker = self._marker(user_dir, device_id)
        own = f"_{_name('device id', device_id)}_"
        entries: list[SharedEntry] = []
        last, read, has_more = marker, 0, False
        for seq, rest in self._batches(user_dir):
            if seq <= marker:
                continue
            if seq != last + 1:
                has_more = True  # a gap: a concurrent commit not listed yet; never skip past it
                break
            body: dict[str, object] | None = None
            path = user_dir / "batches" / f"{seq:012d}_{rest}.json"
            if not f"_{rest}".startswith(own):  # our own batches are skipped unread
                body = _read_json(path)
                read += 1
            if body is not None and not _before(body, shared_until):
                data = _entries(body, path)
                if batch_size is not None and entries and len(entries) + len(data) > batch_size:
                    has_more = True
                    break
                entries.extend(data)
            last = seq
        return UnsyncedUpdate(entries, memo=last, documents_read=read, has_more=has_more)

    def mark_as_seen(self, update: UnsyncedUpdate, *, user_id: str, device_id: str) -> WriteResult:
        user_dir = self._user_dir(user_id)
        self._device(user_dir, user_id, device_id)
        with self._locked(user_dir):
            current = self._marker(user_dir, device_id)
            target = int(update.memo or 0)
            if target <= current:
                return WriteResult(0)  # nothing moved: no write
            _write_atomically(
                user_dir / "markers" / f"{_name('device id', device_id)}.json",
                json.dumps({"seq": target}).encode(),
            )
        return WriteResult(1)

    @staticmethod
    def _marker(user_dir: Path, device_id: str) -> int:
        data = _read_json(user_dir / "markers" / f"{_name('device id', device_id)}.json") or {}
        return int(str(data.get("seq", 0)))


def _before(body: dict[str, object], shared_until: datetime | None) -> bool:
    """True for a batch shared at or before ``shared_until``: a late-registered device skips it."""
    if shared_until is None:
        return False
    try:
        return datetime.fromisoformat(str(body.get("shared_at"))) <= shared_until
    except ValueError:
        return False  # no readable time: deliver it, and let sync judge the entries


__all__ = ["FilesystemSharedLog"]
