"""How values and entries cross the log: one canonical JSON encoding, with tags only for what JSON lacks.

A column value travels as plain JSON when JSON holds it exactly (null, booleans, 64-bit integers, finite
floats, text), and otherwise as a one-key object naming its type::

    {"$bytes": "<lowercase hex>"}  {"$float": "nan"|"inf"|"-inf"}
    {"$date": "2024-05-01"}  {"$datetime": "2024-05-01T10:00:00.12+00:00"}  {"$decimal": "19.90"}
    {"$uuid": "..."}  {"$json": "<the JSON document's text>"}

SQLite values are encoded by storage class, never by declared type: a TEXT that looks like a date stays
that text, byte for byte (the original revived every date-looking string). The date, decimal, uuid and
json tags come only from PostgreSQL's typed columns. What each becomes in the other database is the table
in ``docs/types.md``.

``dumps`` is the one encoder of everything stored in ``_sync_log`` and sent to the shared log (orjson:
compact, UTF-8, shortest round-trip floats; it refuses integers beyond 64 bits and lone surrogates), and
``loads`` its decoder, whose nesting limit is fixed (1024) rather than set by the Python stack.
"""

from __future__ import annotations

import math
import re
import reprlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import orjson

from .errors import InvalidEntryError
from .models import Json, LogEntry


def dumps(value: Any) -> str:
    """The canonical encoding: the same text for the same value on every device, backend and path."""
    return orjson.dumps(value).decode()


_PREVIEW = reprlib.Repr()
_PREVIEW.maxlevel, _PREVIEW.maxstring, _PREVIEW.maxother = 4, 80, 80


def preview(value: Any) -> str:
    """A short repr for messages: bounded in depth and length, so a hostile value nesting a thousand
    levels cannot exhaust the stack while its error is being written."""
    return _PREVIEW.repr(value)


def loads(text: str | bytes) -> Any:
    """Decode what :func:`dumps` (or any JSON writer) wrote. Raises ``ValueError`` for invalid JSON.

    orjson reads an integer beyond 64 bits as a float, silently rounding it: such a number is refused
    instead (found by a scan that runs only when the text holds a run of 19 digits).
    """
    value = orjson.loads(text)
    raw = text if isinstance(text, str) else text.decode()
    if _LONG_DIGITS.search(raw):
        for token in _JSON_TOKEN.finditer(raw):
            number = token.group(1)
            if number is not None and not -(2**63) <= int(number) < 2**64:
                raise ValueError(f"integer {number} is beyond 64 bits: JSON readers would round it")
    return value


_LONG_DIGITS = re.compile(r"\d{19}")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|(-?\d+)(?![.eE\d])|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?')
"""Strings, integers (group 1) and other numbers of valid JSON text: digits inside strings are skipped."""


@dataclass(frozen=True, slots=True)
class JsonText:
    """A JSON document from a ``json``/``jsonb`` column, as its text: ``{"$json": "{\\"a\\": 1.10}"}``.

    Text, not a parsed value: parsing would turn ``1.10`` into ``1.1`` and lose digits of large numbers,
    and PostgreSQL's ``json`` type keeps the document's spacing and key order exactly.
    """

    text: str


@dataclass(frozen=True, slots=True)
class TimeText:
    """A date or timestamp PostgreSQL holds but Python cannot (``infinity``, a BC date, year 10000 and
    beyond), kept as PostgreSQL's ISO text: PostgreSQL reads it back exactly, SQLite stores the text."""

    tag: str
    text: str


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
        return {"$json": dumps(value)}
    if isinstance(value, JsonText):
        return {"$json": value.text}
    if isinstance(value, TimeText):
        return {value.tag: value.text}
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
            raise InvalidEntryError(f"cannot decode {tag} value {preview(raw)}: {exc}") from exc
    raise InvalidEntryError(f"a column value must be a JSON scalar or a tagged object, not {preview(value)}")


def _decode_float(raw: str) -> float:
    if raw not in ("nan", "inf", "-inf"):
        raise ValueError("expected nan, inf or -inf")
    return float(raw)


def _decode_bytes(raw: Any) -> bytes:
    if not _HEX.fullmatch(_str(raw)):
        raise ValueError("expected lowercase hex digits, two per byte")
    return bytes.fromhex(raw)


def _decode_json(raw: Any) -> JsonText:
    # A string is the document's text. Anything else is a document written by an older version, which
    # sent the parsed value: its canonical text is the closest there is to what was written.
    return JsonText(raw if isinstance(raw, str) else dumps(raw))


_HEX = re.compile(r"(?:[0-9a-f]{2})*")
DECIMAL_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?(NaN|Infinity)")
"""Decimal numbers as PostgreSQL and Python write them; not Python's laxer forms (' 1', '1_000')."""
_TIME_TEXT = re.compile(
    r"-?infinity|\d{4,}-\d\d-\d\d([T ]\d\d:\d\d:\d\d(\.\d{1,6})?([+-]\d\d(:\d\d(:\d\d)?)?)?)?( BC)?"
)
_LONG_FRACTION = re.compile(r"[.,]\d{7}")


def parse_date(raw: str) -> date | TimeText:
    """An ISO-8601 date; PostgreSQL's ``infinity`` or BC forms as :class:`TimeText`."""
    try:
        return date.fromisoformat(raw)
    except ValueError:
        if _TIME_TEXT.fullmatch(raw) and "T" not in raw and " " not in raw.removesuffix(" BC"):
            return TimeText("$date", raw)
        raise


def parse_datetime(raw: str) -> datetime | TimeText:
    """An ISO-8601 timestamp to the microsecond (more digits would be cut: refused); PostgreSQL's
    ``infinity`` or BC forms as :class:`TimeText`."""
    if _LONG_FRACTION.search(raw):
        raise ValueError("more than 6 fractional digits: finer than a microsecond")
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        if _TIME_TEXT.fullmatch(raw):
            return TimeText("$datetime", raw)
        raise


def _decode_date(raw: Any) -> date | TimeText:
    return parse_date(_str(raw))


def _decode_datetime(raw: Any) -> datetime | TimeText:
    return parse_datetime(_str(raw))


_DECODERS = {
    "$bytes": _decode_bytes,
    "$date": _decode_date,
    "$datetime": _decode_datetime,
    "$decimal": lambda raw: _decimal(_str(raw)),
    "$uuid": lambda raw: uuid.UUID(_str(raw)),
    "$json": _decode_json,
    "$float": _decode_float,
}


MAX_DECIMAL_EXPONENT = 1_000


def _decimal(raw: str) -> Decimal:
    """A decimal of sane size: '1e999999999' would become a gigabyte of digits in a TEXT column."""
    if not DECIMAL_TEXT.fullmatch(raw):
        raise ValueError("not a decimal number")
    value = Decimal(raw)
    if value.is_finite() and abs(value.adjusted()) > MAX_DECIMAL_EXPONENT:
        raise ValueError(f"exponent beyond +-{MAX_DECIMAL_EXPONENT}")
    return value


def _str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise TypeError("expected a string")
    return raw


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
        loaded = loads(text)  # NaN and Infinity are not JSON: orjson refuses them
        if not isinstance(loaded, dict):
            raise InvalidEntryError("an entry payload must be a JSON object")
        return loaded


def entry_payload(entry: LogEntry) -> dict[str, Any]:
    """The part of an entry that the serializer turns into text (device and clock travel beside it)."""
    payload: dict[str, Any] = {"op": entry.op, "table": entry.table, "pk": list(entry.pk)}
    if entry.value is not None:
        payload["value"] = dict(entry.value)
    return payload
