"""A JSON data envelope decoded in one pass into its canonical bytes and its COPY rows.

``gateway.protocol.decode_json`` makes a ``Sample`` per sample, checks it, and encodes the
canonical bytes in another loop; packing the rows is one more. Those passes of Python per
sample were most of the CPU ingest spends. :func:`decode_packed` does the checks, the canonical
bytes (docs/protocol.md, "Canonical encoding") and the rows in a single loop, for the usual
envelope only: tags already accepted by the full decoder, series ids known for all of them,
numbers, booleans, nulls and texts, times in range. For anything else, valid or not, it
returns None and the caller uses the full decoder, so that what is accepted and the wording
of every refusal stay those of ``gateway.protocol``. The envelope's other fields are checked
by ``gateway.protocol`` itself (on the envelope cut to its first sample), and a property test
holds both decoders to the same canonical bytes.

The loop is Python; ``ingest._scan``, compiled from Cython at install time, does the same in
C straight from the payload's bytes, without parsing the JSON into objects first, ≈7 times
faster. It is used when it was built (:data:`COMPILED`); without a C compiler the
install goes on without it, and this module's own loop does the work. The tests run both.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from typing import Any

import gateway.protocol as wire
from ingest._rows import (
    DAY_US,
    MINUTE_US,
    PG_EPOCH_US,
    ROW_NULL,
    ROW_NUMBER,
    ROW_QUALITY,
    ROW_TEXT,
    Packed,
    Rollup,
)

try:
    from ingest import _scan  # type: ignore[attr-defined]
except ImportError:  # not compiled: the Python loop below
    _scan = None

_MAGIC_HEAD = b"guantong-envelope\x00" + bytes((wire.VERSION, int(wire.Kind.DATA)))
_U16 = struct.Struct(">H").pack
_U32 = struct.Struct(">I").pack
_CHAIN = struct.Struct(">Q32sqI").pack  # seq, prev, created, sample count
_NUMBER = struct.Struct(">qBBd").pack  # ts, quality, value type 1, the double
_BOOL = struct.Struct(">qBBB").pack  # ts, quality, value type 2, 0 or 1
_BARE = struct.Struct(">qBB").pack  # ts, quality, value type 0 (null) or 3 (text, then more)

_FIELDS = frozenset(("v", "kind", "gateway", "seq", "prev", "created", "sig", "device", "samples"))
_QUALITIES = {quality.label: int(quality) for quality in wire.Quality}
#: tag → its canonical bytes (u16 length ‖ UTF-8), for tags the full decoder has accepted
_TAGS: dict[str, bytes] = {}
_MAX_TAGS = 200_000
#: the quality labels in the order of their codes, for the compiled scanner
_LABELS = [quality.label.encode() for quality in sorted(wire.Quality)]
#: whether :func:`decode_packed` uses the compiled scanner (tests switch it off)
COMPILED = _scan is not None


def learn_tags(tags: Iterable[str]) -> None:
    """Remember tags of an envelope the full decoder accepted."""
    for tag in tags:
        if tag not in _TAGS and len(_TAGS) < _MAX_TAGS:
            encoded = tag.encode()
            _TAGS[tag] = _U16(len(encoded)) + encoded


def decode_packed(
    payload: bytes, series: dict[str, int]
) -> tuple[wire.SignedEnvelope, bytes, Packed, bool] | None:
    """(the envelope cut to its first sample, the canonical bytes of the whole envelope, its
    rows, whether a text holds U+0000), or None: then the full decoder decides."""
    if COMPILED:
        return _decode_compiled(payload, series)
    try:
        doc = wire.parse_json(payload)
    except wire.ProtocolError:
        return None
    items = doc.get("samples")
    if (
        doc.keys() != _FIELDS
        or doc.get("kind") != "data"
        or type(items) is not list
        or not 0 < len(items) <= wire.MAX_SAMPLES
    ):
        return None
    try:
        head = wire.decode_json_document({**doc, "samples": items[:1]})
    except wire.ProtocolError:
        return None
    packed = _pack(items, series)
    if packed is None:
        return None
    parts, has_nul, packed = packed
    env = head.envelope
    gateway, device = env.gateway.encode(), (env.device or "").encode()
    parts[0] = b"".join((
        _MAGIC_HEAD, _U16(len(gateway)), gateway, _U16(len(device)), device,
        _CHAIN(env.seq, env.prev, env.created, len(items)),
    ))  # fmt: skip
    return head, b"".join(parts), packed, has_nul


def _decode_compiled(
    payload: bytes, series: dict[str, int]
) -> tuple[wire.SignedEnvelope, bytes, Packed, bool] | None:
    if len(payload) > wire.MAX_PAYLOAD_BYTES:
        return None
    scanned = _scan.scan(payload, series, _TAGS, _LABELS)
    if scanned is None:
        return None
    doc, samples, rows, rollup, days, count, newest = scanned
    if doc.get("kind") != "data":
        return None
    try:
        head = wire.decode_json_document(doc)
    except wire.ProtocolError:
        return None
    env = head.envelope
    gateway, device = env.gateway.encode(), (env.device or "").encode()
    canonical = b"".join((
        _MAGIC_HEAD, _U16(len(gateway)), gateway, _U16(len(device)), device,
        _CHAIN(env.seq, env.prev, env.created, count), samples,
    ))  # fmt: skip
    # no text holds U+0000: the scanner declines escapes, and JSON has no other way to it
    return head, canonical, Packed(rows, rollup, days, count, newest), False


def _pack(items: list[Any], series: dict[str, int]) -> tuple[list[bytes], bool, Packed] | None:
    try:
        return _pack_checked(items, series)
    except (ValueError, TypeError):  # not 4 items, an unhashable tag or label, a lone surrogate
        return None


def _pack_checked(  # noqa: PLR0911, PLR0912, PLR0915 - one flat loop per sample, on purpose
    items: list[Any], series: dict[str, int]
) -> tuple[list[bytes], bool, Packed] | None:
    tags, qualities, isfinite = _TAGS, _QUALITIES, math.isfinite
    low, high, exact = wire.MIN_TS, wire.MAX_TS, wire.MAX_EXACT_INT
    number, boolean, bare, u32 = _NUMBER, _BOOL, _BARE, _U32
    row_number, row_null, row_text, row_quality = ROW_NUMBER, ROW_NULL, ROW_TEXT, ROW_QUALITY
    parts: list[bytes] = [b""]  # the head goes first
    append = parts.append
    data = bytearray()
    rollup: Rollup = {}
    days: set[int] = set()
    newest, has_nul = 0, False
    for item in items:
        if type(item) is not list:
            return None
        tag, ts, value, label = item
        # only str keys are in these: another type of tag or label is not found
        name, quality, sid = tags.get(tag), qualities.get(label), series.get(tag)
        if name is None or quality is None or sid is None:
            return None
        if type(ts) is not int or not low <= ts < high:
            return None
        append(name)
        pg_ts = ts - PG_EPOCH_US
        minute = pg_ts - pg_ts % MINUTE_US
        acc = rollup.get((sid, minute))
        if acc is None:
            acc = rollup[sid, minute] = [0, 0, None, None, None]
            days.add((minute + PG_EPOCH_US) // DAY_US)
        acc[0] += 1
        kind = type(value)
        if kind is float or kind is int or kind is bool:
            if kind is bool:
                append(boolean(ts, quality, 2, value))
            elif (kind is float and not isfinite(value)) or (kind is int and abs(value) > exact):
                return None
            else:
                append(number(ts, quality, 1, value))
            value = float(value)
            data += row_number(5, 4, sid, 8, pg_ts, 8, value, -1, 2, quality)
            # the fold of ingest._rows.pack_samples, inlined (a call per sample would cost
            # more than the fold); tests/ingest/test_fastjson.py holds the two to one result
            if acc[1]:
                acc[2] += value
                if value < acc[3]:
                    acc[3] = value
                elif value > acc[4]:
                    acc[4] = value
            else:
                acc[2] = acc[3] = acc[4] = value
            acc[1] += 1
        elif value is None:
            append(bare(ts, quality, 0))
            data += row_null(5, 4, sid, 8, pg_ts, -1, -1, 2, quality)
        elif kind is str:
            encoded = value.encode()
            if len(encoded) > wire.MAX_TEXT_BYTES:
                return None
            append(bare(ts, quality, 3) + u32(len(encoded)) + encoded)
            data += row_text(5, 4, sid, 8, pg_ts, -1, len(encoded))
            data += encoded
            data += row_quality(2, quality)
            has_nul = has_nul or "\x00" in value
        else:
            return None
        if ts > newest:  # noqa: PLR1730 - max() would be a call per sample
            newest = ts
    return parts, has_nul, Packed(bytes(data), rollup, tuple(days), len(items), newest)
