"""How values and entries cross the log: JSON, with explicit tags for what JSON lacks.

A column value travels as plain JSON when JSON can hold it (null, booleans, integers, finite floats,
text), and otherwise as a one-key object naming its type::

    {"$bytes": "<hex>"}   {"$date": "2024-05-01"}   {"$datetime": "2024-05-01T10:00:00+02:00"}
    {"$decimal": "19.90"} {"$uuid": "..."}          {"$json": <any JSON>}   {"$float": "nan"|"inf"|"-inf"}

The same encoding is produced by the SQLite and PostgreSQL capture triggers and read by every apply
stage, which is what lets a SQLite database and a PostgreSQL database sync with each other. Text is never
guessed to be a date (the original revived every date-looking string).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from .errors import InvalidEntryError
from .models import OPS, Json, LogEntry


@dataclass(frozen=True, slots=True)
class JsonScalar:
    """A JSON column value that is a bare scalar (``"abc"``, ``5``, ``true``, ``null``): ``{"$json": "abc"}``.

    Decoded objects and arrays are plain dicts and lists, but a decoded JSON *string* would be
    indistinguishable from text, and a JSON column would then store ``abc`` instead of ``"abc"``. The
    wrapper keeps the difference until ``to_db`` writes it as JSON.
    """

    value: str | int | float | bool | None


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Canonical compact JSON: the same text for the same value on every device and backend."""
    return _ENCODER.encode(value)


def encode_value(value: Any) -> Json:
    """Python value -> wire JSON."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, dict | list):
        return {"$json": value}
    if isinstance(value, JsonScalar):
        return {"$json": value.value}
    raise TypeError(f"cannot encode a {type(value).__name__} for the sync log")


def decode_value(value: Json) -> Any:
    """Wire JSON -> Python value. Raises ``InvalidEntryError`` for anything malformed."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise InvalidEntryError(f"integer {value} does not fit 64 bits (larger ones travel as $decimal)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEntryError('a non-finite number must travel tagged, as {"$float": "nan"}')
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((tag, raw),) = value.items()
        try:
            return _DECODERS[tag](raw)
        except KeyError:
            raise InvalidEntryError(f"unknown value tag {tag!r}") from None
        except (ValueError, TypeError, InvalidOperation, AttributeError) as exc:
            raise InvalidEntryError(f"cannot decode {tag} value {raw!r}: {exc}") from exc
    raise InvalidEntryError(f"a column value must be a JSON scalar or a tagged object, not {value!r}")


def _decode_float(raw: str) -> float:
    if raw not in ("nan", "inf", "-inf"):
        raise ValueError("expected nan, inf or -inf")
    return float(raw)


def _decode_json(raw: Any) -> Any:
    return raw if isinstance(raw, dict | list) else JsonScalar(raw)


_DECODERS = {
    "$bytes": bytes.fromhex,
    "$date": date.fromisoformat,
    "$datetime": datetime.fromisoformat,
    "$decimal": lambda raw: _decimal(_str(raw)),
    "$uuid": lambda raw: uuid.UUID(_str(raw)),
    "$json": _decode_json,
    "$float": _decode_float,
}


MAX_DECIMAL_EXPONENT = 1_000


def _decimal(raw: str) -> Decimal:
    """A finite decimal of sane size: '1e999999999' would become a gigabyte of digits in a TEXT column."""
    value = Decimal(raw)
    if value.is_finite() and abs(value.adjusted()) > MAX_DECIMAL_EXPONENT:
        raise ValueError(f"exponent beyond +-{MAX_DECIMAL_EXPONENT}")
    return value


def _str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise TypeError("expected a string")
    return raw


def _refuse_constant(name: str) -> Any:
    raise ValueError(f'{name} is not JSON: a non-finite number must travel tagged, as {{"$float": ...}}')


class Serializer(Protocol):
    """Turns an entry's payload into the text stored in the shared log, and back.

    Swap it to add end-to-end encryption or compression; the default is compact JSON. ``loads`` must
    raise ``ValueError`` (or ``InvalidEntryError``) for text it cannot read, so the entry is set aside.
    """

    def dumps(self, payload: Mapping[str, Any]) -> str: ...

    def loads(self, text: str) -> Mapping[str, Any]: ...


class JsonSerializer:
    """The default serializer: ``{"op": ..., "table": ..., "pk": [...], "value": {...}}`` as compact JSON."""

    def dumps(self, payload: Mapping[str, Any]) -> str:
        return dumps(payload)

    def loads(self, text: str) -> Mapping[str, Any]:
        loaded = json.loads(text, parse_constant=_refuse_constant)
        if not isinstance(loaded, dict):
            raise InvalidEntryError("an entry payload must be a JSON object")
        return loaded


def entry_payload(entry: LogEntry) -> dict[str, Any]:
    """The part of an entry that the serializer turns into text (device and clock travel beside it)."""
    payload: dict[str, Any] = {"op": entry.op, "table": entry.table, "pk": list(entry.pk)}
    if entry.value is not None:
        payload["value"] = dict(entry.value)
    return payload


def check_identity(device_id: object, hlc: object) -> None:
    """An entry is known by (device id, clock): both must be well formed before anything else is read."""
    if not isinstance(device_id, str) or not device_id:
        raise InvalidEntryError(f"the entry names no device: {device_id!r}")
    if not isinstance(hlc, int) or isinstance(hlc, bool) or not 0 < hlc < 2**63:
        raise InvalidEntryError(f"the entry's clock must be a positive 64-bit integer, not {hlc!r}")


def entry_from_payload(payload: Mapping[str, Any], *, device_id: str, hlc: int) -> LogEntry:
    """Check the shape of a received payload and build the entry. Names are checked later (validate)."""
    check_identity(device_id, hlc)
    op, table, pk, value = (payload.get(k) for k in ("op", "table", "pk", "value"))
    if op not in OPS:
        raise InvalidEntryError(f"unknown operation {op!r}")
    if not isinstance(table, str) or not table:
        raise InvalidEntryError("the entry names no table")
    if not isinstance(pk, list) or not pk:
        raise InvalidEntryError(f"the entry's key must be a non-empty list, not {pk!r}")
    if op == "delete":
        value = None
    elif not isinstance(value, dict):
        raise InvalidEntryError(f"a {op} entry needs an object of column values")
    extra = set(payload) - {"op", "table", "pk", "value"}
    if extra:
        raise InvalidEntryError(f"unexpected fields in the entry: {sorted(extra)}")
    return LogEntry(device_id, hlc, table, tuple(pk), op, value, needs_integration=True)
