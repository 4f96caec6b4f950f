"""Samples as binary COPY rows of ``sample`` and 1-minute rollup buckets.

No database here: a decode worker process packs an envelope's samples with the series ids the
ingest process gave it, so that the ingest process only appends bytes and merges buckets.
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: µs between the Unix epoch and PostgreSQL's (2000-01-01), the zero of binary timestamps
PG_EPOCH_US = 946_684_800_000_000
MINUTE_US = 60_000_000
DAY_US = 86_400_000_000


def pg_us(unix_us: int) -> int:
    return unix_us - PG_EPOCH_US


# Binary COPY rows of ``sample`` (5 fields: int4, int8 timestamp, float8, text, int2), packed
# here rather than by psycopg's generic ``write_row``: a third of the cost per row.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
ROW_NUMBER = struct.Struct(">hiiiqidiih").pack  # count, len, sid, len, ts, len, value, NULL, len, q
ROW_NULL = struct.Struct(">hiiiqiiih").pack  # count, len, sid, len, ts, NULL, NULL, len, q
ROW_TEXT = struct.Struct(">hiiiqii").pack  # count, len, sid, len, ts, NULL, len ‖ text, then:
ROW_QUALITY = struct.Struct(">ih").pack


#: (series_id, minute µs since 2000) → [samples, numeric samples, sum, min, max]
Rollup = dict[tuple[int, int], list]

# Binary COPY rows of ``sample_1m`` (7 fields: int4, int8 timestamp, int8, int8, 3 × float8),
# for the same reason: psycopg's ``write_row`` per bucket was most of the Python a batch's
# write spent in its thread, holding the GIL against the event loop.
_BUCKET = struct.Struct(">hiiiqiqiqididid").pack
_BUCKET_NULL = struct.Struct(">hiiiqiqiqiii").pack  # no numeric sample: sum, min, max NULL


def pack_rollup(rollup: Rollup) -> bytes:
    """The buckets of ``rollup`` as binary COPY data of ``sample_1m``, header to trailer."""
    bucket, bucket_null = _BUCKET, _BUCKET_NULL
    rows = [
        bucket(7, 4, sid, 8, minute, 8, acc[0], 8, acc[1], 8, acc[2], 8, acc[3], 8, acc[4])
        if acc[1]
        else bucket_null(7, 4, sid, 8, minute, 8, acc[0], 8, 0, -1, -1, -1)
        for (sid, minute), acc in rollup.items()
    ]
    return b"".join((COPY_HEADER, *rows, COPY_TRAILER))


def pack_samples(
    samples: Iterable[tuple[str, int, object, int]],
    series: dict[str, int],
    data: bytearray,
    rollup: Rollup,
    days: set[int],
) -> tuple[int, int]:
    """Append the COPY rows of (tag, ts µs since the Unix epoch, value, quality) samples of
    one device to ``data`` and fold them into ``rollup`` (a new bucket adds its UTC day to
    ``days``); return (samples, newest ts).

    One loop with everything in local names: it runs for every sample ingest stores, in a
    decode worker when there is one. A value is a number (``bool`` and ``int`` stored as a
    double), a text, or None.
    """
    pack_number, pack_null, pack_text, pack_quality = (
        ROW_NUMBER, ROW_NULL, ROW_TEXT, ROW_QUALITY,
    )  # fmt: skip
    count = newest = 0
    for tag, ts, value, quality in samples:
        sid = series[tag]
        pg_ts = ts - PG_EPOCH_US
        minute = pg_ts - pg_ts % MINUTE_US
        acc = rollup.get((sid, minute))
        if acc is None:
            acc = rollup[sid, minute] = [0, 0, None, None, None]
            days.add((minute + PG_EPOCH_US) // DAY_US)
        acc[0] += 1
        if value is None:
            data += pack_null(5, 4, sid, 8, pg_ts, -1, -1, 2, quality)
        elif type(value) is str:
            encoded = value.encode()
            data += pack_text(5, 4, sid, 8, pg_ts, -1, len(encoded))
            data += encoded
            data += pack_quality(2, quality)
        else:
            number = float(value)  # type: ignore[arg-type]
            data += pack_number(5, 4, sid, 8, pg_ts, 8, number, -1, 2, quality)
            if acc[1]:
                acc[2] += number
                if number < acc[3]:
                    acc[3] = number
                elif number > acc[4]:
                    acc[4] = number
            else:
                acc[2] = acc[3] = acc[4] = number
            acc[1] += 1
        if ts > newest:  # noqa: PLR1730 - max() would be a call per sample
            newest = ts
        count += 1
    return count, newest


@dataclass(frozen=True, slots=True)
class Packed:
    """The samples of one envelope as :func:`pack_samples` makes them: COPY rows (with their
    series ids), rollup buckets, the UTC days they touch, their count and newest time."""

    rows: bytes
    rollup: Rollup
    days: tuple[int, ...]
    count: int
    newest: int

    @classmethod
    def of(cls, samples: Iterable[tuple[str, int, object, int]], series: dict[str, int]) -> Packed:
        """Raise ``KeyError`` for a tag that ``series`` lacks."""
        data: bytearray = bytearray()
        rollup: Rollup = {}
        days: set[int] = set()
        count, newest = pack_samples(samples, series, data, rollup, days)
        return cls(bytes(data), rollup, tuple(days), count, newest)

    def __reduce__(self) -> tuple[Any, ...]:
        # marshal is several times cheaper than pickle for the buckets (same Python both sides)
        fields = (self.rows, self.rollup, self.days, self.count, self.newest)
        return _unmarshal_packed, (marshal.dumps(fields),)


def _unmarshal_packed(data: bytes) -> Packed:
    return Packed(*marshal.loads(data))  # noqa: S302 - from our own worker
