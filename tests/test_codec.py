"""Values cross the log as JSON with explicit tags; text is never guessed to be anything else."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from storex_sync_firestore import InvalidEntryError, decode_value, encode_value
from storex_sync_firestore.codec import JsonText, TimeText, dumps

VALUES = [
    None, True, False, 0, -7, 2**62, 1.5, "", "text é 中", b"\x00\xff", b"",
    date(2024, 5, 1), datetime(2024, 5, 1, 10, 0, 0, 123456),
    datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))), datetime(2024, 1, 1, tzinfo=UTC),
    Decimal("19.90"), Decimal("-0.000000000000000000001"), uuid.UUID("01a217db-c51e-706f-b96e-1769f8bef04b"),
    JsonText('{"a": [1.10, 2, {"b": null}]}'), JsonText('"s"'), math.inf, -math.inf,
    TimeText("$date", "infinity"), TimeText("$datetime", "0044-03-15T00:00:00 BC"),
]  # fmt: skip


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_round_trip(value: Any) -> None:
    wire = encode_value(value)
    dumps(wire)  # always valid JSON
    back = decode_value(wire)
    assert back == value and type(back) is type(value)


def test_nan_round_trips() -> None:
    assert math.isnan(decode_value(encode_value(math.nan)))


def test_date_looking_text_stays_text() -> None:
    assert decode_value("2024-05-01T10:00:00Z") == "2024-05-01T10:00:00Z"  # flaw 3.16
    assert decode_value("/Date(1700000000000)/") == "/Date(1700000000000)/"


@pytest.mark.parametrize(
    "wire",
    [{"$nope": 1}, {"$bytes": "zz"}, {"$date": "yesterday"}, {"$decimal": "abc"}, {"$uuid": 5},
     {"$float": "1.0"}, {"a": 1, "b": 2}, [1, 2]],
)  # fmt: skip
def test_malformed_values_are_rejected(wire: Any) -> None:
    with pytest.raises(InvalidEntryError):
        decode_value(wire)
