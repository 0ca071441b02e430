"""A shared log in a folder: for devices that share a disk, a network share or a synced folder, and for tests.

Layout, per user (ids are percent-encoded into file names)::

    {folder}/{user}/.lock                               flock(2) taken to append a batch or register a device
    {folder}/{user}/devices/{device}.json               registry: created_at, shared_until
    {folder}/{user}/markers/{device}.json               read marker: the last batch seq this device stored
    {folder}/{user}/key.json                            the wrapped data key of an encrypted log
    {folder}/{user}/batches/{seq:012d}_{batchId}.batch          a batch (format v2, see below)
    {folder}/{user}/batches/{seq:012d}_{device}_{first:016x}_{last:016x}_{count}.json   one of 0.1.x (v1)
    {folder}/{user}/deleted.json                        seqs of batches deleted by compaction
    {folder}/{user}/seen/{device}.json                  liveness: last seen, frontier, compaction record
    {folder}/{user}/snapshots/{snapshot}/{chunk}.chunk  snapshot chunks (same file layout as a batch)
    {folder}/{user}/snapshots/{snapshot}.manifest       a snapshot's manifest: written last

A batch file is one line of JSON (the batch's fields but its payload, bytes fields in hex, and the time it
was shared), a line break, and the payload bytes as they are: the same fields, encoding and checks as in
Firestore (``shared_log.format``).

Every file is written to a temporary name, fsynced, renamed into place and the folder fsynced, so a reader
sees a whole file or none, and a crash leaves no half-written batch.

Why a sequence number in the batch name: readers page by it, and it must never let them skip a batch that
another process commits concurrently. The writer picks ``seq = highest existing + 1`` and renames the file
into place *while holding the lock*, so batch files appear strictly in seq order with no gaps. A reader
only takes the contiguous run after its marker; a gap (a listing that raced a rename) ends the page, and
the batch comes next time. The rest of the name is the batch's id: a retried ``write_batches`` finds it
and writes nothing. Compaction records a batch's seq in ``deleted.json`` (under the lock) before it
removes the file, so a reader tells a deleted batch from one not listed yet.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from ..errors import ConfigurationError, UnknownDeviceError
from ..models import DeviceInfo, StoredBatch, UnsyncedUpdate, WriteResult
from .base import SharedSyncLog, entry_count
from .format import F_PAYLOAD, from_header_json, header_json, legacy_id

_TRANSIENT_ERRNOS = frozenset(
    {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ENOTCONN}
    | {errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH}
)
"""OS errors of a folder on a network share that is away for a while (EIO: an NFS mount's time-out)."""

_BATCH = re.compile(r"^(\d{12})_(.+)\.(batch|json)$")


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


def _encode_file(batch: StoredBatch, shared_at: datetime) -> bytes:
    head = json.dumps({"shared_at": shared_at.isoformat(), "fields": header_json(batch.fields)})
    payload = batch.fields.get(F_PAYLOAD)
    return head.encode() + b"\n" + (payload if isinstance(payload, bytes) else b"")


def _decode_file(batch_id: str, data: bytes) -> StoredBatch:
    """A batch file's fields as written; a damaged file comes back with what could be read (the parser
    above then sets it aside, as it would a damaged Firestore document)."""
    head, _, payload = data.partition(b"\n")
    try:
        body = json.loads(head)
        return StoredBatch(batch_id, from_header_json(body["fields"], payload), _time(body.get("shared_at")))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return StoredBatch(batch_id, {})


def _decode_legacy(data: bytes) -> StoredBatch:
    """A 0.1.x batch file, as the v1 fields it stands for (its id is the v1 content digest)."""
    try:
        body = json.loads(data)
        device, hlcs, texts = body["device_id"], body["hlc"], body["data"]
        fields = {"v": 1, "deviceId": device, "h": hlcs, "d": texts}
        return StoredBatch(legacy_id(device, hlcs, texts), fields, _time(body.get("shared_at")))
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError):
        return StoredBatch("malformed", {})


def _clocks(value: object) -> dict[str, int]:
    """A frontier as stored (device -> clock); anything malformed reads as nothing."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if type(v) is int}


def _time(value: object) -> datetime | None:
    try:
        return None if value is None else datetime.fromisoformat(str(value))
    except ValueError:
        return None


class FilesystemSharedLog(SharedSyncLog):
    """Shared log in ``folder`` (created if missing). Safe for several processes on one machine.

    Across machines it needs a file system whose ``flock`` and ``rename`` are honest (local disks, NFSv4
    with locking); folders synced by Dropbox-like tools are not, because they do not share locks.
    Appending lists the batch folder once (to find the next seq and to detect a retry), so it is meant
    for logs of up to some tens of thousands of batches.
    """

    max_batch_bytes: int | None = None

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def is_transient(self, exc: BaseException) -> bool:
        """Which of this backend's errors are transient (the optional protocol part): a network share
        that is unreachable, stale or busy may come back; a missing permission or a full disk does not."""
        return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS

    def __repr__(self) -> str:
        return f"FilesystemSharedLog({str(self.folder)!r})"

    @property
    def url(self) -> str:
        """The folder's absolute path: what ``open_shared_log`` reopens this log by, from any directory."""
        return str(self.folder.resolve())

    # ---- paths and locking ----

    def _user_dir(self, user_id: str) -> Path:
        path = self.folder / _name("user id", user_id)
        for sub in ("devices", "markers", "batches", "seen", "snapshots"):
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
        """(seq, file name) of every committed batch, by seq."""
        found = []
        for name in os.listdir(user_dir / "batches"):
            match = _BATCH.match(name)
            if match:
                found.append((int(match.group(1)), name))
        found.sort()
        return found

    # ---- devices ----

    def create_device_id(
        self, *, user_id: str, shared_until: datetime | None = None, public_key: bytes | None = None
    ) -> str:
        user_dir = self._user_dir(user_id)
        device_id = uuid.uuid4().hex
        info = {
            "device_id": device_id,
            "created_at": datetime.now(UTC).isoformat(),
            "shared_until": shared_until.isoformat() if shared_until is not None else None,
            "public_key": public_key.hex() if public_key is not None else None,
        }
        with self._locked(user_dir):
            _write_atomically(user_dir / "markers" / f"{device_id}.json", b'{"seq": 0}')
            _write_atomically(user_dir / "devices" / f"{device_id}.json", json.dumps(info).encode())
        return device_id

    def get_device_info(self, *, user_id: str, device_id: str) -> DeviceInfo | None:
        data = _read_json(self._user_dir(user_id) / "devices" / f"{_name('device id', device_id)}.json")
        if data is None:
            return None
        key = data.get("public_key")
        return DeviceInfo(
            user_id,
            device_id,
            _time(data.get("shared_until")),
            _time(data.get("created_at")),
            bytes.fromhex(key) if isinstance(key, str) else None,
        )

    def _device(self, user_dir: Path, user_id: str, device_id: str) -> dict[str, object]:
        data = _read_json(user_dir / "devices" / f"{_name('device id', device_id)}.json")
        if data is None:
            raise UnknownDeviceError(
                f"the shared log in {self.folder} has no device {device_id!r} for user {user_id!r}",
                hint="check --log and --user, or register the device again (storex-sync init)",
            )
        return data

    # ---- batches ----

    def write_batches(self, batches: Sequence[StoredBatch], *, user_id: str, device_id: str) -> WriteResult:
        if not batches:
            return WriteResult(0)
        user_dir = self._user_dir(user_id)
        written = 0
        with self._locked(user_dir):
            existing = self._batches(user_dir)
            names = {name.split("_", 1)[1].rsplit(".", 1)[0] for _, name in existing}
            # A deleted seq is never reused: a reader skips it.
            seq = max([existing[-1][0] if existing else 0, *self._deleted(user_dir)])
            for batch in batches:
                stem = _name("batch id", batch.batch_id)
                if stem in names:
                    continue  # a retry of a batch that landed
                seq += 1
                data = _encode_file(batch, datetime.now(UTC))
                _write_atomically(user_dir / "batches" / f"{seq:012d}_{stem}.batch", data)
                names.add(stem)
                written += 1
        return WriteResult(written)

    def get_unsynced_batches(
        self, *, user_id: str, device_id: str, batch_size: int | None = None
    ) -> UnsyncedUpdate:
        user_dir = self._user_dir(user_id)
        device = self._device(user_dir, user_id, device_id)
        shared_until = _time(device.get("shared_until"))
        marker, broken = self._marker(user_dir, device_id)
        page: list[StoredBatch] = []
        deleted = self._deleted(user_dir)
        listed = self._batches(user_dir)
        top = max([listed[-1][0] if listed else 0, *deleted])
        if marker > top:  # past every batch there is: later batches would be skipped; read them all again
            marker, broken = 0, True
        last, read, entries, has_more = marker, 0, 0, False
        for seq, name in listed:
            if seq <= marker or seq in deleted:
                continue
            while last + 1 in deleted:
                last += 1
            if seq != last + 1:
                has_more = True  # a gap: a concurrent commit not listed yet; never skip past it
                break
            batch = self._read(user_dir / "batches" / name)
            read += 1
            skip = (
                shared_until is not None and batch.shared_on is not None and batch.shared_on <= shared_until
            )
            if not skip:
                if batch_size is not None and page and entries + entry_count(batch.fields) > batch_size:
                    has_more = True
                    break
                page.append(batch)
                entries += entry_count(batch.fields)
            last = seq
        return UnsyncedUpdate(page, memo=(last, broken), documents_read=read, has_more=has_more)

    @staticmethod
    def _read(path: Path) -> StoredBatch:
        data = path.read_bytes()
        if path.suffix == ".json":
            return _decode_legacy(data)
        return _decode_file(unquote(path.name.split("_", 1)[1].rsplit(".", 1)[0]), data)

    def mark_as_seen(self, update: UnsyncedUpdate, *, user_id: str, device_id: str) -> WriteResult:
        user_dir = self._user_dir(user_id)
        self._device(user_dir, user_id, device_id)
        with self._locked(user_dir):
            current, _ = self._marker(user_dir, device_id)
            target, repair = update.memo if isinstance(update.memo, tuple) else (0, False)
            if target <= current and not repair:
                return WriteResult(0)  # nothing moved: no write
            _write_atomically(
                user_dir / "markers" / f"{_name('device id', device_id)}.json",
                json.dumps({"seq": target}).encode(),
            )
        return WriteResult(1)

    @staticmethod
    def _deleted(user_dir: Path) -> set[int]:
        data = _read_json(user_dir / "deleted.json") or {}
        seqs = data.get("seqs")
        return {int(n) for n in seqs} if isinstance(seqs, list) else set()

    def list_batches(self, *, user_id: str) -> Sequence[StoredBatch]:
        user_dir = self._user_dir(user_id)
        deleted = self._deleted(user_dir)
        found = []
        for seq, name in self._batches(user_dir):
            if seq not in deleted:
                with suppress(FileNotFoundError):  # deleted meanwhile
                    found.append(self._read(user_dir / "batches" / name))
        return found

    def delete_batches(self, batch_ids: Sequence[str], *, user_id: str) -> WriteResult:
        user_dir = self._user_dir(user_id)
        stems = {_name("batch id", b) for b in batch_ids}
        with self._locked(user_dir):
            deleted = self._deleted(user_dir)
            doomed = [
                (seq, name)
                for seq, name in self._batches(user_dir)
                if name.split("_", 1)[1].rsplit(".", 1)[0] in stems
            ]
            fresh = [seq for seq, _ in doomed if seq not in deleted]
            if fresh:
                body = json.dumps({"seqs": sorted(deleted.union(fresh))}).encode()
                _write_atomically(user_dir / "deleted.json", body)
            for _, name in doomed:
                with suppress(FileNotFoundError):
                    os.unlink(user_dir / "batches" / name)
        return WriteResult(len(fresh))

    def touch_device(
        self,
        *,
        user_id: str,
        device_id: str,
        frontier: Mapping[str, int],
        compacted: Mapping[str, int] | None = None,
    ) -> WriteResult:
        user_dir = self._user_dir(user_id)
        self._device(user_dir, user_id, device_id)
        path = user_dir / "seen" / f"{_name('device id', device_id)}.json"
        with self._locked(user_dir):
            old = _read_json(path) or {}
            body = {
                "last_seen": datetime.now(UTC).isoformat(),
                "frontier": dict(frontier),
                "compacted": dict(compacted) if compacted is not None else old.get("compacted", {}),
            }
            _write_atomically(path, json.dumps(body).encode())
        return WriteResult(1)

    def list_devices(self, *, user_id: str) -> Sequence[DeviceInfo]:
        user_dir = self._user_dir(user_id)
        found = []
        for name in sorted(os.listdir(user_dir / "devices")):
            if not name.endswith(".json"):
                continue
            device_id = unquote(name[: -len(".json")])
            info = self.get_device_info(user_id=user_id, device_id=device_id)
            if info is None:
                continue
            seen = _read_json(user_dir / "seen" / name) or {}
            found.append(
                replace(
                    info,
                    last_seen=_time(seen.get("last_seen")),
                    frontier=_clocks(seen.get("frontier")),
                    compacted=_clocks(seen.get("compacted")),
                )
            )
        return found

    def _snapshot_dir(self, user_id: str, snapshot_id: str) -> Path:
        return self._user_dir(user_id) / "snapshots" / _name("snapshot id", snapshot_id)

    def write_snapshot_chunks(
        self, snapshot_id: str, chunks: Sequence[StoredBatch], *, user_id: str, device_id: str
    ) -> WriteResult:
        folder = self._snapshot_dir(user_id, snapshot_id)
        folder.mkdir(exist_ok=True)
        written = 0
        for chunk in chunks:
            path = folder / f"{_name('chunk id', chunk.batch_id)}.chunk"
            if not path.exists():
                _write_atomically(path, _encode_file(chunk, datetime.now(UTC)))
                written += 1
        return WriteResult(written)

    def write_snapshot_manifest(self, manifest: StoredBatch, *, user_id: str, device_id: str) -> WriteResult:
        folder = self._snapshot_dir(user_id, manifest.batch_id)
        path = folder.with_name(folder.name + ".manifest")
        if path.exists():
            return WriteResult(0)
        _write_atomically(path, _encode_file(manifest, datetime.now(UTC)))
        return WriteResult(1)

    def list_snapshots(self, *, user_id: str) -> Sequence[StoredBatch]:
        folder = self._user_dir(user_id) / "snapshots"
        found = []
        for name in sorted(os.listdir(folder)):
            if name.endswith(".manifest"):
                with suppress(FileNotFoundError):
                    data = (folder / name).read_bytes()
                    found.append(_decode_file(unquote(name[: -len(".manifest")]), data))
        return found

    def get_snapshot_chunks(self, snapshot_id: str, *, user_id: str) -> Sequence[StoredBatch]:
        folder = self._snapshot_dir(user_id, snapshot_id)
        if not folder.is_dir():
            return []
        return [
            _decode_file(unquote(name[: -len(".chunk")]), (folder / name).read_bytes())
            for name in sorted(os.listdir(folder))
            if name.endswith(".chunk")
        ]

    def delete_snapshot(self, snapshot_id: str, *, user_id: str) -> WriteResult:
        folder = self._snapshot_dir(user_id, snapshot_id)
        deleted = 0
        with suppress(FileNotFoundError):
            os.unlink(folder.with_name(folder.name + ".manifest"))
            deleted += 1
        if folder.is_dir():
            for name in os.listdir(folder):
                with suppress(FileNotFoundError):
                    os.unlink(folder / name)
                    deleted += name.endswith(".chunk")
            with suppress(OSError):
                folder.rmdir()
        return WriteResult(deleted)

    def get_key_record(self, *, user_id: str) -> Mapping[str, Any] | None:
        data = _read_json(self._user_dir(user_id) / "key.json")
        if data is None:
            return None
        try:
            return {k: bytes.fromhex(v["$hex"]) if isinstance(v, dict) else v for k, v in data.items()}
        except (TypeError, KeyError, ValueError):
            return {"damaged": True}

    def put_key_record(self, *, user_id: str, record: Mapping[str, Any], replaces: str | None = None) -> bool:
        user_dir = self._user_dir(user_id)
        with self._locked(user_dir):
            current = self.get_key_record(user_id=user_id)
            if (current is None) != (replaces is None) or (
                current is not None and current.get("kid") != replaces
            ):
                return False
            _write_atomically(user_dir / "key.json", json.dumps(header_json(record)).encode())
        return True

    @staticmethod
    def _marker(user_dir: Path, device_id: str) -> tuple[int, bool]:
        """The device's read marker, and whether what is stored is broken (then: 0, read everything
        again, which receive makes harmless). Anyone who can write the folder can write this file."""
        data = _read_json(user_dir / "markers" / f"{_name('device id', device_id)}.json")
        seq = data.get("seq") if isinstance(data, dict) else None
        if type(seq) is not int or seq < 0:
            return 0, True
        return seq, False


__all__ = ["FilesystemSharedLog"]
