"""Hostile shared-log documents for the fuzz campaign (``test_fuzz_hostile``): recipes and their writer.

A *recipe* is what hypothesis generates (plain data, so a failing example prints readably); the
:class:`Campaign` turns it into a document (or a change of a device document) in the emulator, written
with the admin client, past the rules, as someone holding a leaked admin key could. Every recipe is
hostile by construction: nothing it carries may be applied, by any device. Rows that hostile entries
would write carry the title ``HOSTILE``; the legitimate rows are written by the two honest devices.

Kinds of recipe: ``forged`` (a valid batch signed with a key that is not the claimed device's: it
claims a, b, the registered attacker m, or an unknown device), ``entries`` (a batch validly signed by a
registered device m, whose entries are each broken one way: they must be set aside one by one),
``header`` (a signed batch with one header field changed, removed or added), ``payload`` (a header
that m signs over a hand-made, broken payload), ``relabel`` (a signed batch under another id),
``junk`` (arbitrary fields and ids, ``sharedOn`` of any type) and ``marker`` (a device's read marker
overwritten with arbitrary values).
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from storex_sync_firestore.clock import HybridLogicalClock, wall_clock_ms
from storex_sync_firestore.shared_log import format as fmt
from storex_sync_firestore.signing import DeviceKey

HOSTILE = "HOSTILE"

# --- entries: each breaks one rule --------------------------------------------------------------------

BASE: dict[str, Any] = {"op": "create", "table": "notes", "pk": ["k"], "value": {"title": HOSTILE}}
names = st.text(string.ascii_letters + string.digits + "_; \"'-", min_size=1, max_size=12)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _entry_text(breaker: str, arg: Any) -> str:
    """The text of one entry line, broken by ``breaker``."""
    e = json.loads(json.dumps(BASE))
    if breaker == "table":
        e["table"] = arg if arg not in ("notes", "tags", "_sync_rules") else arg + "x"
    elif breaker == "column":
        e["value"][arg if arg not in ("title", "body", "rank") else arg + "x"] = 1
    elif breaker == "arity":
        e["pk"] = ["k", "l"] if arg else []
    elif breaker == "null-key":
        e["pk"] = [None]
    elif breaker == "json-key":
        e["pk"] = [{"$json": "1"}]
    elif breaker == "op":
        e["op"] = arg if arg not in ("create", "modify", "delete") else arg + "x"
    elif breaker == "values":
        e["value"] = arg
    elif breaker == "tag":
        e["value"]["body"] = arg
    elif breaker == "extra":
        e[arg if arg not in e else arg + "x"] = 1
    elif breaker == "big-int":
        return (
            json.dumps(e).replace('"title": "HOSTILE"', f'"title": "HOSTILE", "rank": {arg}').replace(" ", "")
        )
    elif breaker == "deep":
        return json.dumps(e, separators=(",", ":"))[:-2] + f',"body":{{"$json":{nested(arg)}}}}}}}'
    elif breaker == "non-canonical":
        return json.dumps(e)  # spaces after separators: not what any writer makes
    elif breaker == "not-json":
        return arg
    elif breaker == "nan":
        return json.dumps(e, separators=(",", ":")).replace('"HOSTILE"', '"HOSTILE","rank":NaN')
    return json.dumps(e, separators=(",", ":"))


BROKEN_ENTRY = st.one_of(
    st.tuples(st.just("table"), names),
    st.tuples(st.just("column"), names),
    st.tuples(st.just("arity"), st.booleans()),
    st.tuples(st.just("null-key"), st.none()),
    st.tuples(st.just("json-key"), st.none()),
    st.tuples(st.just("op"), names),
    st.tuples(
        st.just("values"), st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3))
    ),
    st.tuples(
        st.just("tag"),
        st.sampled_from(
            [
                {"$nope": 1},
                {"$bytes": "zz"},
                {"$bytes": 5},
                {"$decimal": "1e99999"},
                {"$float": "x"},
                {"$date": "yesterday"},
                {"$uuid": "u"},
                {"$datetime": "2024-01-01T00:00:00.1234567"},
                {"$json": 1, "$bytes": "00"},
                [1, 2],
            ]
        ),
    ),
    st.tuples(st.just("extra"), names),
    st.tuples(st.just("big-int"), st.integers(min_value=2**64, max_value=2**80)),
    st.tuples(st.just("deep"), st.integers(min_value=130, max_value=1_100)),
    st.tuples(st.just("non-canonical"), st.none()),
    st.tuples(st.just("not-json"), st.sampled_from(["", "{", "[1]", "null", '"x"', '{"op":', "\x00"])),
    st.tuples(st.just("nan"), st.none()),
    st.tuples(st.just("ahead"), st.integers(min_value=11, max_value=60 * 24 * 400)),  # minutes ahead
)

# --- Firestore values of every type, for header fields and junk ------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=80),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=6), inner, max_size=3),
    ),
    max_leaves=6,
)
FIELDS = [*fmt.V2_FIELDS, *fmt.ENCRYPTION_FIELDS, "h", "d", "sharedOn", "x"]
SHARED_ON = st.sampled_from(["server", "string", "int", "null", "missing", "past", "future"])
DOC_IDS = st.one_of(
    st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=40),
    st.integers(min_value=150, max_value=1_400).map(lambda n: "x" * n),
)

_BRANCHES = (
    st.tuples(st.just("forged"), st.sampled_from(["a", "b", "m", "unknown"]), st.integers(1, 3)),
    st.tuples(st.just("entries"), st.lists(BROKEN_ENTRY, min_size=1, max_size=4)),
    st.tuples(
        st.just("header"),
        st.sampled_from(FIELDS),
        st.one_of(st.just("remove"), VALUES, st.sampled_from(["flip-p", "flip-sig"])),
    ),
    st.tuples(
        st.just("payload"),
        st.sampled_from(
            ["not-utf8", "unordered", "repeated", "no-newline", "no-tab", "count", "size", "bomb", "random"]
        ),
        st.binary(max_size=40),
    ),
    st.tuples(
        st.just("relabel"), st.sampled_from(["other-id", "other-device", "long-id", "drop-digest"]), DOC_IDS
    ),
    st.tuples(
        st.just("junk"), st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8), DOC_IDS, SHARED_ON
    ),
    st.tuples(
        st.just("marker"),
        st.sampled_from(["markerTs", "markerId", "markerSeen", "markerSeenItem"]),
        VALUES,
    ),
)
RECIPES = st.integers(0, len(_BRANCHES) - 1).flatmap(lambda i: _BRANCHES[i])
"""Every kind of hostile document, with its arguments (each kind equally often)."""


# --- turning recipes into documents ------------------------------------------------------------------------


def minutes_ahead(clock: HybridLogicalClock, minutes: int) -> int:
    ahead = HybridLogicalClock(now_ms=lambda: wall_clock_ms() + minutes * 60_000)
    return max(ahead.stamp(), clock.stamp())


def entry_lines(clock: HybridLogicalClock, broken: Sequence[tuple[str, Any]]) -> list[fmt.Line]:
    lines = []
    for breaker, arg in broken:
        if breaker == "ahead":
            lines.append(fmt.Line(minutes_ahead(clock, arg), _entry_text("valid", None)))
        else:
            lines.append(fmt.Line(clock.stamp(), _entry_text(breaker, arg)))
    lines.sort(key=lambda line: line.hlc)
    return lines


def valid_lines(clock: HybridLogicalClock, n: int) -> list[fmt.Line]:
    """Well-formed entries writing HOSTILE rows: applied if their batch were believed."""
    return [
        fmt.Line(clock.stamp(), json.dumps({**BASE, "pk": [f"h{i}"]}, separators=(",", ":")))
        for i in range(n)
    ]


def signed(
    lines: Sequence[fmt.Line], device_id: str, key: DeviceKey, user_id: str
) -> tuple[str, dict[str, Any]]:
    return fmt.encode_batch(lines, user_id=user_id, device_id=device_id, key=key)


def resealed(
    raw: bytes,
    device_id: str,
    key: DeviceKey,
    user_id: str,
    *,
    count: int,
    first: int,
    last: int,
    size: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """A header that ``key`` signs over a hand-made payload: only the payload's own checks can fail."""
    fields: dict[str, Any] = {
        "v": 2,
        "deviceId": device_id,
        "firstHlc": first,
        "lastHlc": last,
        "count": count,
    }
    fields |= {"size": len(raw) if size is None else size, "z": "zstd", "p": fmt.compress(raw)}
    message = fmt.signed_message(fmt.KIND_BATCH, user_id, fields, fields["p"])
    fields["sig"] = key.sign(message)
    return fmt.document_id(device_id, first, message), fields


def broken_payload(kind: str, noise: bytes, clock: HybridLogicalClock) -> tuple[bytes, dict[str, int]]:
    """A raw payload broken one way, and the header values (count, first, last[, size]) that go with it."""
    h1, h2 = clock.stamp(), clock.stamp()
    good = f'{{"op":"create","table":"notes","pk":["p"],"value":{{"title":"{HOSTILE}"}}}}'
    if kind == "not-utf8":
        return f"{h1}\t".encode() + b"\xff\xfe" + noise + b"\n", {"count": 1, "first": h1, "last": h1}
    if kind == "unordered":
        return f"{h2}\t{good}\n{h1}\t{good}\n".encode(), {"count": 2, "first": h2, "last": h1}
    if kind == "repeated":
        return f"{h1}\t{good}\n{h1}\t{good}\n".encode(), {"count": 2, "first": h1, "last": h1}
    if kind == "no-newline":
        return f"{h1}\t{good}".encode(), {"count": 1, "first": h1, "last": h1}
    if kind == "no-tab":
        return f"{h1} {good}\n".encode(), {"count": 1, "first": h1, "last": h1}
    if kind == "count":
        return f"{h1}\t{good}\n".encode(), {"count": 2, "first": h1, "last": h1}
    if kind == "size":
        raw = f"{h1}\t{good}\n".encode()
        return raw, {"count": 1, "first": h1, "last": h1, "size": len(raw) + 1 + len(noise)}
    if kind == "bomb":
        raw = f"{h1}\t{good}\n".encode() + b" " * 10_000_000
        return raw, {"count": 1, "first": h1, "last": h1, "size": 100}
    return noise or b"\x00", {"count": 1, "first": h1, "last": h1}


def shared_on_value(kind: str) -> Any:
    from google.cloud import firestore

    return {
        "server": firestore.SERVER_TIMESTAMP,
        "string": "2026-01-01T00:00:00Z",
        "int": 1_700_000_000_000,
        "null": None,
        "past": datetime(2001, 1, 1, tzinfo=UTC),
        "future": datetime.now(UTC) + timedelta(days=365 * 50),
    }.get(kind)
