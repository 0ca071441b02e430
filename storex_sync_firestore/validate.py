"""Stage 4: everything that arrives from the shared log is checked here, once, before anything is stored.

The shared log is not trusted: another device may run a different schema or a newer version, and anyone
holding the user's credentials can write any document. This module is the one parser for remote input;
nothing that passed it can fail to parse later, because the client log stores only what it re-encoded.

Per batch document (``shared_log.format``), a reader checks, the same way on every device:

* the format version is known and the fields have their types and bounds;
* the document id matches the content, and the content is signed by the device it names, with the public
  key that device registered before the batch was shared (a batch that claims to be this device's own but
  is not signed by it is set aside, not silently skipped); v1 batches (0.1.x, unsigned) are accepted only
  from devices registered without a key, and their ids must match their content;
* the payload inflates to the size its header declares, and its clocks match the header.

A batch that fails is set aside whole. Snapshots (``shared_log.snapshot_format``) are checked the same
way: the manifest and every chunk signed by one registered device, each chunk the one the manifest
names by digest, every entry within the manifest's frontier; a snapshot that fails is not used at all.
Then per entry (of a batch or a snapshot): its shape, its table and columns are synced here,
its key has that table's arity, every value decodes, and its clock is not far ahead of the time the log
accepted the batch (``MAX_AHEAD_MS``: judged against the log's clock, so every device decides alike, and
the local clock never moves more than that past the log's). An entry that fails is set aside with the
reason; the rest of its batch goes on. Names from the log never reach SQL unless they are synced ones.

Keys are made canonical here too (``validate_entry``): the client log groups entries into objects by
the exact key text, so a key must read as the receiving database stores it. ``[777]`` and ``["777"]``
for a TEXT key column are one SQLite row, and become one object, ``["777"]``.

Rule declarations (entries of the reserved table ``_sync_rules``, see ``policy``) are checked for their
shape; values for a column that some device dropped (``TableInfo.dropped``) are accepted, never written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .capture.base import CaptureDialect, TableInfo
from .clock import wall_ms_of
from .codec import (
    JsonSerializer,
    Serializer,
    decode_value,
    dumps,
    entry_payload,
    preview,
)
from .encryption import DataKey
from .errors import InvalidEntryError
from .models import OPS, DeviceInfo, Json, LogEntry, StoredBatch
from .policy import RULES_TABLE, validate_declaration
from .shared_log import format as fmt
from .shared_log import snapshot_format as sf
from .signing import DeviceKey, verify

MAX_AHEAD_MS = 10 * 60 * 1000
"""How far an entry's clock may be ahead of the time the shared log accepted its batch."""
MAX_JSON_DEPTH = 128
"""Deepest nesting of a JSON column value (the JSON parser itself stops at 1,024, the encoder at 254).
The client log re-reads stored entries under the same bound (``client_log``), so the two agree."""
MAX_ENTRY_DEPTH = MAX_JSON_DEPTH + 2
"""The same bound for a whole entry's values object: ``{column: {"$json": <MAX_JSON_DEPTH levels>}}``."""
PREVIEW_CHARS = 2_000

PostReceive = Callable[[LogEntry], LogEntry | None]
DeviceLookup = Callable[[str], DeviceInfo | None]


@dataclass(frozen=True, slots=True)
class SetAside:
    """Something from the shared log that was not accepted, with the reason, kept for inspection.

    ``text`` is the entry as it arrived (or a preview of a rejected document); ``replayable`` entries were
    well formed but named a table or column this database lacks, and are tried again after a migration.
    """

    device_id: str
    hlc: int | None
    text: str
    reason: str
    replayable: bool = False


@dataclass(slots=True)
class Checked:
    """What a page of batches gave: entries to store, and what was set aside."""

    entries: list[LogEntry] = field(default_factory=list)
    set_aside: list[SetAside] = field(default_factory=list)
    frontier: dict[str, int] = field(default_factory=dict)
    """Per device, the last clock of its batches that verified (this device's own included)."""


class NotSyncedHereError(InvalidEntryError):
    """Well formed, but not for this device's synced tables as they are now: replayed after a migration."""


@dataclass(slots=True)
class Verifier:
    """Checks batches for one device of one user; caches the other devices' registrations."""

    user_id: str
    device_id: str
    key: DeviceKey
    lookup: DeviceLookup
    tables: Mapping[str, TableInfo]
    dialect: CaptureDialect
    serializer: Serializer = field(default_factory=JsonSerializer)
    post_receive: PostReceive | None = None
    now_ms: Callable[[], int] | None = None
    cipher: DataKey | None = None
    _devices: dict[str, DeviceInfo | None] = field(default_factory=dict)

    def check(self, batches: Sequence[StoredBatch]) -> Checked:
        checked = Checked()
        for batch in batches:
            try:
                opened = self.open(batch)
            except InvalidEntryError as exc:
                checked.set_aside.append(_rejected(batch, exc))
                continue
            last = batch.fields.get(fmt.F_LAST_HLC) if opened is None else opened.lines[-1].hlc
            device = self.device_id if opened is None else opened.device_id
            if type(last) is int:
                checked.frontier[device] = max(last, checked.frontier.get(device, 0))
            if opened is None:
                continue  # this device's own batch: it has the entries already
            for line in opened.lines:
                try:
                    checked.entries.append(self.entry(opened, line, batch.shared_on))
                except InvalidEntryError as exc:
                    again = isinstance(exc, NotSyncedHereError)
                    checked.set_aside.append(SetAside(opened.device_id, line.hlc, line.text, str(exc), again))
        return checked

    def _signer_key(self, claimed: str, shared_on: datetime | None) -> bytes:
        """The public key that a snapshot document claiming ``claimed`` must verify with."""
        if claimed == self.device_id:
            return self.key.public_key
        info = self.device(claimed)
        if info is None or info.public_key is None:
            raise fmt.RejectedBatchError(f"device {claimed!r} is not registered with a signing key")
        if info.created_at is not None and shared_on is not None and shared_on < info.created_at:
            raise fmt.RejectedBatchError(f"the snapshot was written before device {claimed!r} was registered")
        return info.public_key

    def manifest(self, stored: StoredBatch) -> sf.Manifest:
        """Verify a snapshot's manifest and read it (frontier, chunk digests)."""
        message = sf.check_manifest(stored.batch_id, stored.fields, user_id=self.user_id, cipher=self.cipher)
        key = self._signer_key(stored.fields[fmt.F_DEVICE_ID], stored.shared_on)
        if not verify(key, message, stored.fields[fmt.F_SIGNATURE]):
            raise fmt.RejectedBatchError("the manifest's signature is not its device's (forged or altered)")
        return sf.open_manifest(stored.batch_id, stored.fields, user_id=self.user_id, cipher=self.cipher)

    def snapshot(
        self, manifest: sf.Manifest, chunks: Sequence[StoredBatch], shared_on: datetime | None
    ) -> tuple[list[LogEntry], list[SetAside]]:
        """Verify a snapshot's chunks and check their entries as a batch's; raises RejectedBatchError if
        the snapshot as a whole does not verify (then it is not used)."""
        if [c.batch_id for c in chunks] != [sf.chunk_id(i) for i in range(len(manifest.digests))]:
            raise fmt.RejectedBatchError(
                f"snapshot {manifest.snapshot_id!r} is missing chunks or has extra ones"
            )
        key = self._signer_key(manifest.device_id, shared_on)
        entries: list[LogEntry] = []
        set_aside: list[SetAside] = []
        for chunk in chunks:
            message = sf.check_chunk(
                chunk.batch_id, chunk.fields, manifest, user_id=self.user_id, cipher=self.cipher
            )
            if not verify(key, message, chunk.fields[fmt.F_SIGNATURE]):
                raise fmt.RejectedBatchError("a chunk's signature is not its device's (forged or altered)")
            for line in sf.open_chunk(chunk.fields, user_id=self.user_id, cipher=self.cipher):
                if len(line.device_id.encode()) > fmt.MAX_DEVICE_ID_BYTES or line.hlc > manifest.frontier.get(
                    line.device_id, 0
                ):
                    raise fmt.RejectedBatchError("a snapshot entry lies outside the manifest's frontier")
                origin = fmt.OpenedBatch(chunk.batch_id, line.device_id, fmt.VERSION, ())
                try:
                    entries.append(self.entry(origin, fmt.Line(line.hlc, line.text), shared_on))
                except InvalidEntryError as exc:
                    again = isinstance(exc, NotSyncedHereError)
                    set_aside.append(SetAside(line.device_id, line.hlc, line.text, str(exc), again))
        return entries, set_aside

    def device(self, device_id: str) -> DeviceInfo | None:
        if device_id not in self._devices:
            self._devices[device_id] = self.lookup(device_id)
        return self._devices[device_id]

    def open(self, batch: StoredBatch) -> fmt.OpenedBatch | None:
        """Verify a batch document and read its lines; None for a genuine batch of this very device."""
        if not isinstance(batch.fields, Mapping):
            raise fmt.RejectedBatchError("the document is not a set of fields")
        version = fmt.version_of(batch.fields)
        claimed = fmt.claimed_device(batch.fields)
        if version == fmt.LEGACY_VERSION and self.cipher is not None:
            raise fmt.RejectedBatchError("an unencrypted (v1) batch in an encrypted log")
        if version == fmt.LEGACY_VERSION:
            info = None if claimed == self.device_id else self.device(claimed)
            if info is None or info.public_key is not None:
                raise fmt.RejectedBatchError(
                    f"an unsigned (v1) batch claims device {claimed!r}, which "
                    + (
                        "signs its batches"
                        if info is not None or claimed == self.device_id
                        else "is not registered"
                    )
                )
            return fmt.open_v1(batch.batch_id, batch.fields)
        message = fmt.check_v2(batch.batch_id, batch.fields, user_id=self.user_id, cipher=self.cipher)
        signature = batch.fields[fmt.F_SIGNATURE]
        if claimed == self.device_id:
            if verify(self.key.public_key, message, signature):
                return None
            raise fmt.RejectedBatchError(
                "a batch claims to come from this device, but this device did not sign it"
            )
        info = self.device(claimed)
        if info is None or info.public_key is None:
            raise fmt.RejectedBatchError(f"device {claimed!r} is not registered with a signing key")
        if info.created_at is not None and batch.shared_on is not None and batch.shared_on < info.created_at:
            raise fmt.RejectedBatchError(f"the batch was shared before device {claimed!r} was registered")
        if not verify(info.public_key, message, signature):
            raise fmt.RejectedBatchError(f"the signature is not device {claimed!r}'s (forged or altered)")
        return fmt.open_v2(batch.batch_id, batch.fields, user_id=self.user_id, cipher=self.cipher)

    def entry(self, batch: fmt.OpenedBatch, line: fmt.Line, shared_on: datetime | None) -> LogEntry:
        """Check one entry of a verified batch and build it."""
        entry, shallow = parse_entry(line.text, self.serializer, device_id=batch.device_id, hlc=line.hlc)
        canonical = batch.version == fmt.VERSION and type(self.serializer) is JsonSerializer
        if canonical and dumps(entry_payload(entry)) != line.text:
            raise InvalidEntryError(
                "the entry is not in canonical form (every writer of this version makes it)"
            )
        if self.post_receive is not None:
            processed = self.post_receive(entry)
            if processed is None:
                raise InvalidEntryError("dropped by the post_receive hook")
            canonical = canonical and processed is entry
            entry = processed
        try:
            entry = validate_entry(entry, self.tables, self.dialect, encoded=canonical and shallow)
        except InvalidEntryError as exc:
            raise NotSyncedHereError(str(exc)) from exc
        self.check_clock(entry.hlc, shared_on)
        return entry

    def check_clock(self, hlc: int, shared_on: datetime | None) -> None:
        reference = int(shared_on.timestamp() * 1000) if shared_on is not None else None
        if reference is None and self.now_ms is not None:
            reference = self.now_ms()
        if reference is None:
            return
        ahead = wall_ms_of(hlc) - reference
        if ahead > MAX_AHEAD_MS:
            raise InvalidEntryError(
                f"its clock is {ahead / 60_000:.1f} minutes ahead of the time the shared log accepted it "
                f"(at most {MAX_AHEAD_MS // 60_000} allowed): check the clock of the device that wrote it"
            )


def _rejected(batch: StoredBatch, error: InvalidEntryError) -> SetAside:
    fields = batch.fields if isinstance(batch.fields, Mapping) else {}
    device = fields.get(fmt.F_DEVICE_ID)
    first = fields.get(fmt.F_FIRST_HLC)
    summary = {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) else preview(v)) for k, v in fields.items()}
    text = f"batch {batch.batch_id!r}: {summary!r}"[:PREVIEW_CHARS]
    return SetAside(
        str(device)[:200] if device else "?",
        first if type(first) is int and 0 < first < 2**63 else None,
        text,
        f"batch {batch.batch_id!r} set aside: {error}"[:1_000],
    )


def canonical_pk(table: TableInfo, pk: tuple[Json, ...], dialect: CaptureDialect) -> tuple[Json, ...]:
    """The key as this database's capture would write it for the row it names, or InvalidEntryError."""
    canonical: list[Json] = []
    for column, value in zip(table.pk_columns, pk, strict=True):
        if value is None:
            raise InvalidEntryError("a primary key value cannot be null")
        if isinstance(value, dict) and "$json" in value:
            raise InvalidEntryError("a primary key value cannot be JSON")
        try:
            canonical.append(dialect.canonical_key(column, value))
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise InvalidEntryError(
                f"key column {table.name}.{column.name} cannot hold {preview(value)}: {exc}"
            ) from exc
    return tuple(canonical)


def parse_entry(text: str, serializer: Serializer, *, device_id: str, hlc: int) -> tuple[LogEntry, bool]:
    """Read one entry's text under the depth bound, before anything recurses into it; the entry, and
    whether the text is shallow: too few brackets for any value in it to nest past ``MAX_JSON_DEPTH``."""
    try:
        payload = serializer.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidEntryError(f"the serializer cannot read the entry: {exc}") from exc
    shallow = brackets(text) <= MAX_JSON_DEPTH + 1  # str.count first: a full walk only when it may nest
    if not shallow and json_depth(payload) > MAX_ENTRY_DEPTH + 1:
        raise InvalidEntryError(f"the entry nests deeper than {MAX_JSON_DEPTH} levels")
    return entry_from_payload(payload, device_id=device_id, hlc=hlc), shallow


def replay_entry(
    text: str, tables: Mapping[str, TableInfo], dialect: CaptureDialect, *, device_id: str, hlc: int
) -> LogEntry:
    """An entry set aside at receive (its payload text as it arrived), checked again as receive checks
    it, for a replay once the schema here accepts it."""
    entry, _ = parse_entry(text, JsonSerializer(), device_id=device_id, hlc=hlc)
    return validate_entry(entry, tables, dialect)


def brackets(text: str) -> int:
    """Opening brackets in a JSON text: an upper bound of its nesting depth, counted in C."""
    return text.count("[") + text.count("{")


def json_depth(value: Json) -> int:
    """Nesting depth of a JSON value, without recursion (a hostile value may nest a thousand levels)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def validate_entry(
    entry: LogEntry, tables: Mapping[str, TableInfo], dialect: CaptureDialect, *, encoded: bool = False
) -> LogEntry:
    """The entry with its key made canonical; raise ``InvalidEntryError`` with the reason if ``entry``
    may not be applied here. Values for a column that some device dropped are accepted, never written.

    ``encoded``: the entry is what the canonical encoder wrote, in a text shallow enough that no value
    can nest past the bound (``parse_entry``), so the depth and storability checks are answered already:
    they cost as much as the rest of receive together, and a backlog is read one entry at a time."""
    if entry.table == RULES_TABLE:
        validate_declaration(entry)
        return entry
    table = tables.get(entry.table)
    if table is None:
        raise InvalidEntryError(f"table {entry.table!r} is not synced on this device")
    if len(entry.pk) != len(table.pk):
        raise InvalidEntryError(
            f"{entry.table} has a {len(table.pk)}-column key, the entry gives {len(entry.pk)} values"
        )
    pk = canonical_pk(table, entry.pk, dialect)
    if pk != entry.pk or any(type(a) is not type(b) for a, b in zip(pk, entry.pk, strict=True)):
        entry = replace(entry, pk=pk)
    if entry.value is None:
        return entry
    allowed = {c.name for c in table.value_columns}.union(table.dropped)
    unknown = sorted(set(entry.value) - allowed)
    if unknown:
        raise InvalidEntryError(
            f"columns {unknown} are not synced columns of {entry.table}",
            hint="if they are new, add them here and run 'storex-sync init --db URL' to replay the entry",
        )
    for value in entry.value.values():
        decode_value(value)
        if not encoded and isinstance(value, dict) and json_depth(value) > MAX_JSON_DEPTH + 1:
            raise InvalidEntryError(f"a JSON value nests deeper than {MAX_JSON_DEPTH} levels")
    if encoded:
        return entry
    try:  # what the client log will store: the one encoder refuses what it cannot write exactly
        dumps([list(entry.pk), entry.value])
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidEntryError(f"the entry cannot be stored as JSON: {exc}") from exc
    return entry


def check_identity(device_id: object, hlc: object) -> None:
    """An entry is known by (device id, clock): both must be well formed before anything else is read."""
    if not isinstance(device_id, str) or not device_id:
        raise InvalidEntryError(f"the entry names no device: {preview(device_id)}")
    if not isinstance(hlc, int) or isinstance(hlc, bool) or not 0 < hlc < 2**63:
        raise InvalidEntryError(f"the entry's clock must be a positive 64-bit integer, not {preview(hlc)}")


def entry_from_payload(payload: Mapping[str, Any], *, device_id: str, hlc: int) -> LogEntry:
    """Check the shape of a received payload and build the entry; its names are checked by
    ``validate_entry``."""
    check_identity(device_id, hlc)
    op, table, pk, value = (payload.get(k) for k in ("op", "table", "pk", "value"))
    if op not in OPS:
        raise InvalidEntryError(f"unknown operation {preview(op)}")
    if not isinstance(table, str) or not table:
        raise InvalidEntryError("the entry names no table")
    if not isinstance(pk, list) or not pk:
        raise InvalidEntryError(f"the entry's key must be a non-empty list, not {preview(pk)}")
    if op == "delete":
        value = None
    elif not isinstance(value, dict):
        raise InvalidEntryError(f"a {op} entry needs an object of column values")
    extra = set(payload) - {"op", "table", "pk", "value"}
    if extra:
        raise InvalidEntryError(f"unexpected fields in the entry: {sorted(extra)}")
    return LogEntry(device_id, hlc, table, tuple(pk), op, value, needs_integration=True)
