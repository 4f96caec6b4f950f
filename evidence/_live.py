"""What the API shows between two evidence windows: firms, device freshness, newest values and
downsampled series, read from the ingest store (blocking psycopg; the service runs these in
threads).

Every query is an index lookup per series (``ORDER BY ts DESC LIMIT 1``) or a range scan of one
series, so the cost does not grow with the size of the store. A series over a long range reads
the 1-minute rollup ``sample_1m`` instead of the samples.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import psycopg

#: points a series answer holds at most, whatever the client asks for
MAX_POINTS = 2000

_FIRMS = """
SELECT e.identifier, e.first_seen,
       (SELECT count(*) FROM gateway g WHERE g.enterprise_id = e.id),
       (SELECT count(*) FROM device d WHERE d.enterprise_id = e.id)
FROM enterprise e
WHERE %(all)s OR e.identifier = ANY(%(firms)s)
ORDER BY e.identifier
"""

_DEVICES = """
SELECT d.identifier, g.identifier, count(s.id), max(newest.ts)
FROM device d
JOIN enterprise e ON e.id = d.enterprise_id
JOIN gateway g ON g.id = d.gateway_id
LEFT JOIN series s ON s.device_id = d.id
LEFT JOIN LATERAL (
    SELECT ts FROM sample WHERE series_id = s.id ORDER BY ts DESC LIMIT 1) newest ON true
WHERE e.identifier = %(firm)s
GROUP BY d.identifier, g.identifier
ORDER BY d.identifier
"""

_FIRM_OF_DEVICE = """
SELECT e.identifier FROM device d JOIN enterprise e ON e.id = d.enterprise_id
WHERE d.identifier = %(device)s
"""

_LIVE = """
SELECT s.tag, v.ts, v.value, v.text_value, v.quality
FROM series s
JOIN device d ON d.id = s.device_id
LEFT JOIN LATERAL (
    SELECT ts, value, text_value, quality FROM sample
    WHERE series_id = s.id ORDER BY ts DESC LIMIT 1) v ON true
WHERE d.identifier = %(device)s
ORDER BY s.tag
"""

_SERIES_ID = """
SELECT s.id FROM series s JOIN device d ON d.id = s.device_id
WHERE d.identifier = %(device)s AND s.tag = %(tag)s
"""

_RAW = """
SELECT date_bin(make_interval(secs => %(step)s), ts, %(origin)s) AS t,
       avg(value), min(value), max(value), count(*)
FROM sample WHERE series_id = %(series)s AND ts >= %(start)s AND ts < %(end)s
GROUP BY t ORDER BY t
"""

_ROLLUP = """
SELECT date_bin(make_interval(secs => %(step)s), bucket, %(origin)s) AS t,
       sum(value_sum) / nullif(sum(numeric_samples), 0), min(value_min), max(value_max),
       sum(samples)::bigint
FROM sample_1m WHERE series_id = %(series)s AND bucket >= %(origin)s AND bucket < %(end)s
GROUP BY t ORDER BY t
"""


@dataclass(frozen=True, slots=True)
class StoredFirm:
    identifier: str
    first_seen: dt.datetime | None
    gateways: int
    devices: int


@dataclass(frozen=True, slots=True)
class StoredDevice:
    identifier: str
    gateway: str
    tags: int
    last_sample: dt.datetime | None


@dataclass(frozen=True, slots=True)
class TagValue:
    tag: str
    ts: dt.datetime | None
    value: float | None
    text_value: str | None
    #: 0 good, 1 uncertain, 2 bad (docs/protocol.md)
    quality: int | None


@dataclass(frozen=True, slots=True)
class Series:
    """Columns of equal length, one entry per step that holds samples (empty steps are left
    out, so a gap shows as a gap). ``avg`` is None where the samples carry text only."""

    device: str
    tag: str
    start: dt.datetime
    end: dt.datetime
    step: float
    source: str  # "sample" or "sample_1m"
    t: list[dt.datetime]
    avg: list[float | None]
    min: list[float | None]
    max: list[float | None]
    samples: list[int]


def firms(conn: psycopg.Connection, scope: frozenset[str] | None) -> list[StoredFirm]:
    """The store's firms, all (``scope`` None) or those in ``scope``; a firm in scope the store
    has not seen yet is listed too, with nothing in it."""
    rows = conn.execute(_FIRMS, {"all": scope is None, "firms": sorted(scope or ())}).fetchall()
    found = [StoredFirm(r[0], r[1], int(r[2]), int(r[3])) for r in rows]
    seen = {f.identifier for f in found}
    found += [StoredFirm(f, None, 0, 0) for f in sorted(scope or ()) if f not in seen]
    return sorted(found, key=lambda f: f.identifier)


def devices(conn: psycopg.Connection, firm: str) -> list[StoredDevice]:
    rows = conn.execute(_DEVICES, {"firm": firm}).fetchall()
    return [StoredDevice(r[0], r[1], int(r[2]), r[3]) for r in rows]


def firm_of_device(conn: psycopg.Connection, device: str) -> str | None:
    row = conn.execute(_FIRM_OF_DEVICE, {"device": device}).fetchone()
    return None if row is None else str(row[0])


def live_values(conn: psycopg.Connection, device: str) -> list[TagValue]:
    return [TagValue(*row) for row in conn.execute(_LIVE, {"device": device}).fetchall()]


def step_for(start: dt.datetime, end: dt.datetime, points: int) -> tuple[float, bool]:
    """(seconds per point, whether the rollup serves it): at most ``points`` steps cover the
    range; from one minute up the step is whole minutes, read from ``sample_1m``."""
    step = max(1.0, math.ceil((end - start).total_seconds() / points))
    if step < 60:
        return step, False
    return math.ceil(step / 60) * 60.0, True


def series(
    conn: psycopg.Connection,
    device: str,
    tag: str,
    *,
    start: dt.datetime,
    end: dt.datetime,
    points: int,
) -> Series | None:
    """``tag`` of ``device`` over ``[start, end)`` in at most ``points`` steps (avg, min, max
    and count per step); None if the device has no such tag. Steps of the rollup start at the
    minute ``start`` falls in."""
    row = conn.execute(_SERIES_ID, {"device": device, "tag": tag}).fetchone()
    if row is None:
        return None
    step, rollup = step_for(start, end, min(points, MAX_POINTS))
    origin = start.replace(second=0, microsecond=0) if rollup else start
    args: dict[str, Any] = {"series": row[0], "step": step, "origin": origin,
                            "start": start, "end": end}  # fmt: skip
    rows = conn.execute(_ROLLUP if rollup else _RAW, args).fetchall()
    return Series(
        device=device,
        tag=tag,
        start=start,
        end=end,
        step=step,
        source="sample_1m" if rollup else "sample",
        t=[r[0] for r in rows],
        avg=[r[1] for r in rows],
        min=[r[2] for r in rows],
        max=[r[3] for r in rows],
        samples=[int(r[4]) for r in rows],
    )
