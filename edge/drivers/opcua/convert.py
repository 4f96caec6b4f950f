"""From OPC UA DataValues to samples: pure functions, no I/O.

Status codes carry their class in the top two bits (OPC UA Part 4, 7.39): ``00`` Good,
``01`` Uncertain, ``10`` and ``11`` Bad. A Bad value is dropped (the sample's value is
``None``, as for every Bad sample); an Uncertain one is kept. A value that does not fit the
tag's configured type (text for a number, a number for a bool) is kept but Uncertain, as are
NaN and infinities: the config and the server disagree, and somebody should look.

The sample's ``source_ts`` is the DataValue's SourceTimestamp, or its ServerTimestamp when the
server gives no source time; ``None`` when it gives neither.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from edge._model import DataType, Tag
from edge._samples import Quality, Sample, Value

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_INTEGERS = {
    DataType.INT8, DataType.UINT8, DataType.INT16, DataType.UINT16, DataType.INT32,
    DataType.UINT32, DataType.INT64, DataType.UINT64,
}  # fmt: skip
_FLOATS = {DataType.FLOAT32, DataType.FLOAT64}


def quality_of(status: int) -> Quality:
    """The quality class of a StatusCode value."""
    severity = (status >> 30) & 0b11
    if severity == 0:
        return Quality.GOOD
    if severity == 1:
        return Quality.UNCERTAIN
    return Quality.BAD


def timestamp_ns(stamp: dt.datetime | None) -> int | None:
    """Integer nanoseconds since the epoch, exact to the microsecond a datetime holds."""
    if stamp is None:
        return None
    if stamp.tzinfo is None:  # asyncua decodes UTC; older versions left it naive
        stamp = stamp.replace(tzinfo=dt.UTC)
    return (stamp - _EPOCH) // _MICROSECOND * 1000


class TagCodec:
    """How one tag's DataValues become samples; built once per tag, used on every value."""

    __slots__ = ("length", "name", "offset", "scale", "type")

    def __init__(self, tag: Tag) -> None:
        self.name = tag.name
        self.type = tag.type
        self.scale = tag.scale
        self.offset = tag.offset
        self.length = tag.length

    def sample(self, status: int, value: Any, source: dt.datetime | None, edge_ts: int) -> Sample:
        quality = quality_of(status)
        if quality is Quality.BAD:
            return Sample(self.name, None, Quality.BAD, edge_ts, timestamp_ns(source))
        converted, fits = self.convert(value)
        if not fits:
            quality = Quality.UNCERTAIN
        return Sample(self.name, converted, quality, edge_ts, timestamp_ns(source))

    def convert(self, value: Any) -> tuple[Value, bool]:  # noqa: PLR0911 - one return per type
        """The sample value, and whether it fits the configured type cleanly."""
        kind = self.type
        if kind is DataType.BOOL:
            return (value, True) if isinstance(value, bool) else (_plain(value), False)
        if kind in _INTEGERS or kind in _FLOATS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return _plain(value), False
            if self.scale != 1.0 or self.offset != 0.0:
                value = value * self.scale + self.offset
            if isinstance(value, float) and not math.isfinite(value):
                return value, False
            return value, kind in _FLOATS or isinstance(value, int) or _scaled(self)
        if kind is DataType.STRING:
            if not isinstance(value, str):
                return _plain(value), False
            return _cut(value, self.length)
        if isinstance(value, bytes):  # BYTES
            return _cut(value, self.length)
        return _plain(value), False


def _scaled(codec: TagCodec) -> bool:
    """A scaled integer tag is a float on purpose: the config asked for it."""
    return codec.scale != 1.0 or codec.offset != 0.0


def _cut(value: Any, length: int | None) -> tuple[Any, bool]:
    if length is not None and len(value) > length:
        return value[:length], False
    return value, True


def _plain(value: Any) -> Value:
    """Values of other OPC UA types (LocalizedText, DateTime, arrays…) as text; None stays."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    return str(value)
