"""OEE per device, computed in SQL over the raw samples of the tags its record declares.

OEE = availability × performance × quality, over the time the device's tags observed:

- a stretch between two good samples of a tag (the newest one before the window included,
  the window's edges and ``as_of`` cutting) is observed when they are at most
  ``outage_after`` apart, or 1.5 times the tag's expected interval if that is longer (a
  counter polled every 10 s with ``outage_after`` 10 s must not lose a stretch to jitter); a
  longer silence is time nobody observed, left out of every factor;
- availability = running time / planned production time: the observed stretches of the state
  tag, each with the value of the sample that starts it;
- performance = ideal cycle time × parts made / running time;
- quality = good parts / parts made (the good counter, or parts made − rejects).

Parts are the increases of a counter over its observed stretches: a decrease (a reset to
zero, a wrap past the type's maximum, a replaced controller) counts as no parts, so a reset
can make a count short by the parts of one poll interval, never negative or huge.

Raw samples, not the 1-minute rollup: a state's time in a minute and a counter's increases
need the samples in order, which the rollup's sums and extremes do not keep. A query reads
one series of the window in time order through its ``(series_id, ts)`` index, so its cost
grows with the samples of the declared tags in the window (``bench/report_bench.py``
measures it); OEE is computed only for the devices that declare it, a few queries each.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

import identifiers
from evidence._models import OeeEvidence, Params, Window
from evidence._registry import RegisteredDevice

_SERIES = """
SELECT s.tag, s.id FROM series s
JOIN device d ON d.id = s.device_id
JOIN enterprise e ON e.id = d.enterprise_id
WHERE e.identifier = %(firm)s AND d.identifier = %(device)s AND s.tag = ANY(%(tags)s)
"""

# the good samples of one series from the newest one before the window (found first, by the
# index, so that one range scan in time order feeds the window function) to `until`
_RANGE = """
    FROM sample
    WHERE series_id = %(series)s AND quality = 0 AND value IS NOT NULL AND ts < %(until)s
      AND ts >= coalesce((SELECT max(ts) FROM sample
                          WHERE series_id = %(series)s AND ts < %(start)s AND quality = 0
                            AND value IS NOT NULL), %(start)s)"""

# the state's observed time per value: intervals summed, converted once per value
_STATE = f"""
WITH s AS (
    SELECT ts, value, lead(ts, 1, %(until)s) OVER (ORDER BY ts) AS next {_RANGE})
SELECT value, extract(epoch FROM sum(next - greatest(ts, %(start)s)))::float8
FROM s WHERE next - ts <= %(hold)s AND next > %(start)s
GROUP BY value
"""  # noqa: S608 - constant text

# a counter's increases over its observed stretches, its decreases, its samples
_COUNTER = f"""
WITH s AS (
    SELECT value - lag(value) OVER w AS step, ts - lag(ts) OVER w AS gap {_RANGE}
    WINDOW w AS (ORDER BY ts))
SELECT coalesce(sum(step) FILTER (WHERE step > 0 AND gap <= %(hold)s), 0)::float8,
       count(*) FILTER (WHERE step < 0),
       count(*)
FROM s
"""  # noqa: S608 - constant text


class _Reader:
    """The queries of one device, and what they could not find."""

    def __init__(
        self,
        cur: psycopg.Cursor[Any],
        series: dict[str, int],
        args: dict[str, Any],
        holds: dict[str, dt.timedelta],
    ) -> None:
        self.cur, self.series, self.args, self.holds = cur, series, args, holds
        self.missing: list[str] = []
        self.resets = 0

    def _args(self, tag: str) -> dict[str, Any]:
        return {**self.args, "series": self.series[tag], "hold": self.holds[tag]}

    def state(self, signals: identifiers.OeeSignals) -> tuple[float, float, float]:
        """Seconds observed, planned and running."""
        if signals.state not in self.series:
            self.missing.append(f"state: tag {signals.state!r} has no data in the store")
            return 0.0, 0.0, 0.0
        held = self.cur.execute(_STATE, self._args(signals.state)).fetchall()
        observed = sum(seconds for _, seconds in held)
        planned = sum(seconds for value, seconds in held if value in signals.planned)
        running = sum(seconds for value, seconds in held if value in signals.running)
        if observed == 0:
            self.missing.append("state: no good sample covers the window")
        elif planned == 0:
            self.missing.append("state: no planned production time in the window")
        return observed, planned, running

    def parts(self, role: str, tag: str | None) -> int | None:
        """The increases of the counter ``tag``; None if it cannot be read."""
        if tag is None:
            return None
        if tag not in self.series:
            self.missing.append(f"{role}: tag {tag!r} has no data in the store")
            return None
        row = self.cur.execute(_COUNTER, self._args(tag)).fetchone()
        increase, decreases, samples = row or (0, 0, 0)
        if samples < 2:
            self.missing.append(f"{role}: fewer than two good samples of {tag!r}")
            return None
        self.resets += int(decreases)
        return round(increase)


def oee(
    cur: psycopg.Cursor[Any],
    firm: str,
    device: RegisteredDevice,
    *,
    window: Window,
    params: Params,
    as_of: dt.datetime,
    intervals: dict[tuple[str, str], float | None],
) -> OeeEvidence | None:
    """The OEE of ``device`` in ``window`` up to ``as_of``; None if it declares no signals.

    ``intervals``: the expected interval of each (device, tag), as the tag metrics found it:
    a stretch is observed up to ``outage_after`` or 1.5 × the tag's interval, the longer."""
    signals = device.oee
    if signals is None:
        return None
    tags = sorted({t for t in (signals.state, signals.total, signals.good, signals.defects) if t})
    series = dict(
        cur.execute(_SERIES, {"firm": firm, "device": device.identifier, "tags": tags}).fetchall()
    )
    holds = {
        tag: dt.timedelta(
            seconds=max(params.outage_after, 1.5 * (intervals.get((device.identifier, tag)) or 0))
        )
        for tag in tags
    }
    read = _Reader(cur, series, {"start": window.start, "until": as_of}, holds)
    observed, planned, running = read.state(signals)
    total = read.parts("total", signals.total)
    if signals.total is None:
        read.missing.append("total: no part counter declared")
    good = read.parts("good", signals.good)
    if signals.defects is not None:
        defects = read.parts("defects", signals.defects)
        good = None if total is None or defects is None else max(0, total - defects)
    elif signals.good is None:
        read.missing.append("quality: neither a good-part nor a reject counter declared")
    if signals.ideal_cycle is None:
        read.missing.append("performance: no ideal cycle time declared")

    availability = running / planned if planned else None
    performance = None
    if signals.ideal_cycle is not None and total is not None:
        if running:
            performance = signals.ideal_cycle * total / running
        elif observed:
            read.missing.append("performance: no running time in the window")
    quality = None
    if good is not None and total is not None:
        if total:
            quality = min(good, total) / total
        else:
            read.missing.append("quality: no parts made in the window")
    product = None
    if availability is not None and performance is not None and quality is not None:
        product = availability * performance * quality
    return OeeEvidence(
        observed_seconds=observed,
        planned_seconds=planned,
        running_seconds=running,
        total=total,
        good=good,
        ideal_cycle=signals.ideal_cycle,
        availability=availability,
        performance=performance,
        quality=quality,
        oee=product,
        counter_resets=read.resets,
        missing=tuple(read.missing),
    )
