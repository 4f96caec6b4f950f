"""Metrics of one firm in one window, computed in SQL over the ingest store.

Two clocks meet here, and each fact is windowed by the one it is about:

- samples by their own timestamp (``sample.ts``, the PLC's or the gateway's reading time);
- envelopes (receipts, connectivity events, outages, latency) by ``receipt.created``, the
  gateway's time of signing, so an envelope that arrived late still counts in the window it
  speaks for; events by the receipt of the envelope that revealed them;
- quarantined messages by ``quarantine.received``: their content is not trusted, so neither
  is the time they claim.

Counts come from the 1-minute rollup ``sample_1m`` for the whole minutes of the window and
from ``sample`` for the partial minutes at its edges; the newest sample, the newest good
sample and the median spacing are index lookups (``ORDER BY ts DESC LIMIT n`` per series),
so the cost grows with the number of series, not with the length of the window.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

import identifiers
from evidence._errors import InvalidWindow, StoreUnavailable
from evidence._models import (
    DeviceEvidence,
    FirmEvidence,
    GatewayEvidence,
    IdentifierCoverage,
    Integrity,
    Latency,
    Networking,
    OeeEvidence,
    Outage,
    Params,
    StageCoverage,
    TagEvidence,
    Unmatched,
    Window,
)
from evidence._oee import oee
from evidence._registry import RegisteredDevice

_MINUTE = dt.timedelta(minutes=1)

_TAGS = """
WITH ser AS (
    SELECT s.id, d.identifier AS device, s.tag
    FROM series s
    JOIN device d ON d.id = s.device_id
    JOIN enterprise e ON e.id = d.enterprise_id
    WHERE e.identifier = %(firm)s),
cnt AS (
    SELECT series_id, sum(n)::bigint AS n FROM (
        SELECT series_id, sum(samples) AS n FROM sample_1m
        WHERE series_id IN (SELECT id FROM ser) AND bucket >= %(a)s AND bucket < %(b)s
        GROUP BY series_id
        UNION ALL
        SELECT series_id, count(*) FROM sample
        WHERE series_id IN (SELECT id FROM ser)
          AND ((ts >= %(start)s AND ts < %(a)s) OR (ts >= %(b)s AND ts < %(end)s))
        GROUP BY series_id) parts
    GROUP BY series_id)
SELECT ser.device, ser.tag, coalesce(cnt.n, 0), newest.ts, good.ts, spacing.median
FROM ser
LEFT JOIN cnt ON cnt.series_id = ser.id
LEFT JOIN LATERAL (
    SELECT ts FROM sample WHERE series_id = ser.id AND ts < %(end)s
    ORDER BY ts DESC LIMIT 1) newest ON true
LEFT JOIN LATERAL (
    SELECT ts FROM sample
    WHERE series_id = ser.id AND ts >= %(start)s AND ts < %(end)s AND quality = 0
    ORDER BY ts DESC LIMIT 1) good ON true
LEFT JOIN LATERAL (
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY step) AS median FROM (
        SELECT extract(epoch FROM ts - lag(ts) OVER (ORDER BY ts))::float8 AS step
        FROM (SELECT ts FROM sample WHERE series_id = ser.id AND ts < %(end)s
              ORDER BY ts DESC LIMIT %(spacing_samples)s) last_ones) steps
    WHERE step IS NOT NULL AND %(median)s) spacing ON true
ORDER BY ser.device, ser.tag
"""

_DEVICES = """
SELECT d.identifier, g.identifier
FROM device d JOIN gateway g ON g.id = d.gateway_id JOIN enterprise e ON e.id = d.enterprise_id
WHERE e.identifier = %(firm)s
"""

# the devices whose data envelopes created in the window the firm's gateways delivered, and
# by which gateway(s)
_DELIVERED = """
SELECT d.identifier, array_agg(DISTINCT g.identifier ORDER BY g.identifier)
FROM receipt r
JOIN device d ON d.id = r.device_id
JOIN gateway g ON g.id = r.gateway_id
JOIN enterprise e ON e.id = g.enterprise_id
WHERE e.identifier = %(firm)s AND r.kind = 1 AND r.created >= %(start)s AND r.created < %(end)s
GROUP BY d.identifier
"""

_GATEWAYS = """
SELECT g.id, g.identifier FROM gateway g JOIN enterprise e ON e.id = g.enterprise_id
WHERE e.identifier = %(firm)s OR g.identifier = ANY(%(named)s)
"""

# per gateway, and once over all of them (the empty grouping set: gateway_id NULL)
_RECEIPTS = """
SELECT gateway_id, count(*), count(*) FILTER (WHERE kind = 1),
       count(*) FILTER (WHERE signature_valid), min(created), max(created),
       count(*) FILTER (WHERE kind = 2),
       percentile_cont(ARRAY[0.5, 0.99]::float8[]) WITHIN GROUP (
           ORDER BY extract(epoch FROM received - created)::float8) FILTER (WHERE kind = 1),
       max(extract(epoch FROM received - created)::float8) FILTER (WHERE kind = 1)
FROM receipt
WHERE gateway_id = ANY(%(gws)s) AND created >= %(start)s AND created < %(end)s
GROUP BY GROUPING SETS ((gateway_id), ())
"""

_OUTAGES = """
WITH t AS (
    SELECT gid AS gateway_id, %(start)s::timestamptz AS created FROM unnest(%(gws)s::int[]) gid
    UNION ALL
    SELECT gid, %(as_of)s::timestamptz FROM unnest(%(gws)s::int[]) gid
    UNION ALL
    SELECT gateway_id, created FROM receipt
    WHERE gateway_id = ANY(%(gws)s) AND created >= %(start)s AND created < %(as_of)s),
l AS (
    SELECT gateway_id, lag(created) OVER (PARTITION BY gateway_id ORDER BY created) AS prev,
           created
    FROM t)
SELECT gateway_id, prev, created FROM l
WHERE created - prev > make_interval(secs => %(after)s)
ORDER BY gateway_id, prev
"""

# a declared loss counts the envelopes of its range that never arrived, and their samples: an
# outbox may drop an envelope it had sent over a connection that died before the PUBACK
_EVENTS = """
SELECT e.gateway_id, e.kind, count(*),
       coalesce(sum(e.last_seq - e.first_seq + 1 - arrived.envelopes), 0)::bigint,
       coalesce(sum(greatest(e.samples - arrived.samples, 0)), 0)::bigint
FROM connectivity_event e
JOIN receipt r ON r.gateway_id = e.gateway_id AND r.seq = e.seq
CROSS JOIN LATERAL (
    SELECT count(*) AS envelopes, coalesce(sum(a.samples), 0) AS samples FROM receipt a
    WHERE e.kind = 'loss' AND a.gateway_id = e.gateway_id
      AND a.seq BETWEEN e.first_seq AND e.last_seq) arrived
WHERE e.gateway_id = ANY(%(gws)s) AND r.created >= %(start)s AND r.created < %(end)s
GROUP BY e.gateway_id, e.kind
"""

# the seqs from just after the last envelope created before the window up to the last one
# created in it, that no receipt holds; and which of them no declared loss covers
_MISSING = """
WITH span AS (
    SELECT w.gateway_id, coalesce(
        (SELECT max(seq) FROM receipt b WHERE b.gateway_id = w.gateway_id
           AND b.created < %(start)s AND b.seq < w.lo), w.lo - 1) + 1 AS lo, w.hi
    FROM (SELECT gateway_id, min(seq) AS lo, max(seq) AS hi FROM receipt
          WHERE gateway_id = ANY(%(gws)s) AND created >= %(start)s AND created < %(end)s
          GROUP BY gateway_id) w),
miss AS (
    SELECT span.gateway_id, x.seq
    FROM span CROSS JOIN LATERAL generate_series(span.lo, span.hi) x(seq)
    WHERE NOT EXISTS (
        SELECT 1 FROM receipt r WHERE r.gateway_id = span.gateway_id AND r.seq = x.seq))
SELECT gateway_id, count(*), count(*) FILTER (WHERE NOT EXISTS (
    SELECT 1 FROM connectivity_event e
    WHERE e.gateway_id = miss.gateway_id AND e.kind = 'loss'
      AND miss.seq BETWEEN e.first_seq AND e.last_seq))
FROM miss GROUP BY gateway_id
"""

_QUARANTINE = """
SELECT gateway, reason, count(*) FROM quarantine
WHERE received >= %(start)s AND received < %(end)s
  AND (gateway = ANY(%(names)s) OR split_part(gateway, '/', 1) = %(prefix)s)
GROUP BY gateway, reason
"""


def _ceil_minute(t: dt.datetime) -> dt.datetime:
    floor = t.replace(second=0, microsecond=0)
    return floor if floor == t else floor + _MINUTE


def collect(
    conn: psycopg.Connection,
    firm: str,
    window: Window,
    registered: Sequence[RegisteredDevice],
    *,
    params: Params | None = None,
    as_of: dt.datetime | None = None,
) -> FirmEvidence:
    """The evidence of ``firm`` in ``window`` from the store behind ``conn`` (blocking).

    ``registered``: the firm's device records (:func:`registered_devices`), the denominator
    of the networking rate, the source of key-equipment flags and business stages, and what
    the identifier coverage checks the delivering devices against.
    ``as_of`` (default: the window's end, or now if the window has not ended) is the moment
    freshness and gateway online time are measured at.

    All queries read one snapshot (a repeatable-read, read-only transaction) when ``conn`` is
    idle, so a running ingest cannot make the counts of one query disagree with another's.
    """
    params = params or Params()
    firm = str(identifiers.parse(firm))
    now = dt.datetime.now(dt.UTC)
    as_of = as_of or min(window.end, now)
    if as_of.tzinfo is None:
        raise InvalidWindow("as_of must carry a timezone")
    if not window.start < as_of <= window.end:
        raise InvalidWindow(f"as_of {as_of} is not inside the window")
    try:
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with conn.transaction(), conn.cursor() as cur:
            if idle:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return _collect(
                cur, firm, window=window, registered=registered, params=params, as_of=as_of
            )
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable) as exc:
        raise StoreUnavailable(f"the ingest store cannot be read: {exc}") from exc


def _collect(
    cur: psycopg.Cursor[Any],
    firm: str,
    *,
    window: Window,
    registered: Sequence[RegisteredDevice],
    params: Params,
    as_of: dt.datetime,
) -> FirmEvidence:
    a, b = _ceil_minute(window.start), window.end.replace(second=0, microsecond=0)
    if a >= b:  # no whole minute inside: everything from the raw samples
        a = b = window.start
    base = {"firm": firm, "start": window.start, "end": window.end, "as_of": as_of}
    tags = _tags(cur, {**base, "a": a, "b": b}, window, params, as_of)
    stored = dict(cur.execute(_DEVICES, base).fetchall())
    intervals = {(t.device, t.tag): t.expected_interval for t in tags}
    oees = {
        d.identifier: oee(
            cur, firm, d, window=window, params=params, as_of=as_of, intervals=intervals
        )
        for d in registered
        if d.oee is not None
    }
    devices = _devices(tags, stored, registered, oees=oees, params=params, as_of=as_of)
    gateway_names = sorted({*(d.gateway for d in registered), *stored.values()})
    gateways, firm_latency, firm_integrity = _gateways(
        cur, {**base, "named": gateway_names}, firm=firm, window=window, params=params, as_of=as_of
    )
    key = [d for d in devices if d.registered and d.key_equipment]
    networked = sum(d.networked for d in key)
    networking = Networking(len(key), networked, networked / len(key) if key else None)
    return FirmEvidence(
        firm=firm,
        window=window,
        as_of=as_of,
        params=params,
        devices=tuple(devices),
        tags=tuple(tags),
        gateways=tuple(gateways),
        networking=networking,
        stages=_stages(devices, tags, params, as_of),
        latency=firm_latency,
        integrity=firm_integrity,
        identifier_coverage=_coverage(cur.execute(_DELIVERED, base).fetchall(), registered),
    )


def _age(as_of: dt.datetime, ts: dt.datetime | None) -> float | None:
    return None if ts is None else (as_of - ts).total_seconds()


def _tags(
    cur: psycopg.Cursor[Any],
    args: dict[str, Any],
    window: Window,
    params: Params,
    as_of: dt.datetime,
) -> list[TagEvidence]:
    args = {
        **args,
        "median": params.expected_interval is None,
        "spacing_samples": params.interval_samples,
    }
    out = []
    for device, tag, samples, newest, good, median in cur.execute(_TAGS, args).fetchall():
        interval, source = params.expected_interval, "parameter"
        if interval is None:
            interval, source = (median, "median") if median else (None, None)
        expected = window.seconds / interval if interval else None
        out.append(
            TagEvidence(
                device=device,
                tag=tag,
                samples=int(samples),
                expected_interval=interval,
                interval_source=source,
                expected_samples=expected,
                completeness=min(1.0, samples / expected) if expected else None,
                last_sample=newest,
                last_good=good,
                age=_age(as_of, newest),
            )
        )
    return out


def _devices(
    tags: list[TagEvidence],
    stored: dict[str, str],
    registered: Sequence[RegisteredDevice],
    *,
    oees: dict[str, OeeEvidence | None],
    params: Params,
    as_of: dt.datetime,
) -> list[DeviceEvidence]:
    by_device: dict[str, list[TagEvidence]] = defaultdict(list)
    for tag in tags:
        by_device[tag.device].append(tag)
    records = {d.identifier: d for d in registered}
    out = []
    for name in sorted({*records, *stored}):
        record = records.get(name)
        own = by_device.get(name, [])
        known = [t for t in own if t.expected_samples]
        expected = sum(t.expected_samples or 0.0 for t in known) if known else None
        newest = max((t.last_sample for t in own if t.last_sample), default=None)
        good = max((t.last_good for t in own if t.last_good), default=None)
        out.append(
            DeviceEvidence(
                identifier=name,
                gateway=record.gateway if record else stored.get(name),
                registered=record is not None,
                key_equipment=bool(record and record.key_equipment),
                stages=record.stages if record else (),
                tags=len(own),
                samples=sum(t.samples for t in own),
                expected_samples=expected,
                completeness=completeness(own),
                last_sample=newest,
                last_good=good,
                age=_age(as_of, newest),
                networked=fresh(as_of, good, params),
                tag_stages=record.tag_stages if record else {},
                oee=oees.get(name),
            )
        )
    return out


def completeness(tags: Sequence[TagEvidence]) -> float | None:
    """Of a device, or of the tags by which it serves a stage: their samples / their expected
    samples, over the tags with an expected interval."""
    known = [t for t in tags if t.expected_samples]
    expected = sum(t.expected_samples or 0.0 for t in known)
    if expected:
        return min(1.0, sum(t.samples for t in known) / expected)
    # nothing to measure against: tags that sent nothing are 0 %, not unknown
    return 0.0 if not any(t.samples for t in tags) else None


def fresh(as_of: dt.datetime, good: dt.datetime | None, params: Params) -> bool:
    """Networked: a good sample in the window, the newest no older than ``fresh_within``."""
    age = _age(as_of, good)
    return age is not None and age <= params.fresh_within


@dataclass(frozen=True, slots=True)
class StageService:
    """How one device serves one business stage: as a whole (``tags`` None, judged by the
    device), or through some of its tags (``GT_TAG_STAGE``, judged by those tags alone)."""

    networked: bool
    completeness: float | None
    tags: tuple[str, ...] | None


def serves(
    dev: DeviceEvidence, stage: str, tags: Sequence[TagEvidence], params: Params, as_of: dt.datetime
) -> StageService | None:
    """``dev``'s service of ``stage`` (``tags``: the device's), or None if it serves it not.

    Through tags, it is networked when one of them has a good sample no older than
    ``fresh_within``, and complete as those tags are."""
    if stage in dev.stages:
        return StageService(dev.networked, dev.completeness, None)
    names = dev.tag_stages.get(stage)
    if not names:
        return None
    own = [t for t in tags if t.tag in names]
    networked = any(fresh(as_of, t.last_good, params) for t in own)
    return StageService(networked, completeness(own), names)


def _stages(
    devices: list[DeviceEvidence], tags: list[TagEvidence], params: Params, as_of: dt.datetime
) -> tuple[StageCoverage, ...]:
    by_device: dict[str, list[TagEvidence]] = defaultdict(list)
    for t in tags:
        by_device[t.device].append(t)
    count: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for dev in devices:
        for stage in {*dev.stages, *dev.tag_stages}:
            service = serves(dev, stage, by_device[dev.identifier], params, as_of)
            if service is not None:
                count[stage][0] += 1
                count[stage][1] += service.networked
    return tuple(StageCoverage(s, n, ok) for s, (n, ok) in sorted(count.items()))


def _coverage(
    delivered: list[tuple[str, list[str]]], registered: Sequence[RegisteredDevice]
) -> IdentifierCoverage:
    records = {d.identifier: d.gateway for d in registered}
    unmatched = []
    for device, gateways in sorted(delivered):
        by, gateway = tuple(gateways), records.get(device)
        if gateway is None:
            unmatched.append(Unmatched(device, "no_record", by, None))
        elif by != (gateway,):
            unmatched.append(Unmatched(device, "other_gateway", by, gateway))
    matched = len(delivered) - len(unmatched)
    rate = matched / len(delivered) if delivered else None
    return IdentifierCoverage(len(delivered), matched, rate, tuple(unmatched))


def _latency(row: tuple[Any, ...] | None) -> Latency:
    if row is None or not row[2]:
        return Latency(0, None, None, None)
    p50, p99 = row[7]
    return Latency(int(row[2]), float(p50), float(p99), float(row[8]))


def _integrity(
    receipts: tuple[Any, ...] | None,
    events: dict[str, tuple[int, int, int]],
    missing: tuple[int, int],
    quarantined: dict[str, int],
) -> Integrity:
    envelopes = int(receipts[1]) if receipts else 0
    valid = int(receipts[3]) if receipts else 0
    bad = quarantined.get("bad_signature", 0)
    lost = events.get("loss", (0, 0, 0))
    return Integrity(
        envelopes=envelopes,
        data_envelopes=int(receipts[2]) if receipts else 0,
        valid_signatures=valid,
        bad_signatures=bad,
        signature_share=valid / (valid + bad) if valid + bad else None,
        gaps=events.get("gap", (0, 0, 0))[0],
        missing_envelopes=missing[0],
        declared_losses=lost[0],
        declared_lost_envelopes=lost[1],
        declared_lost_samples=lost[2],
        undeclared_missing=missing[1],
        chain_breaks=events.get("chain_break", (0, 0, 0))[0],
        quarantined=dict(sorted(quarantined.items())),
    )


def _gateways(
    cur: psycopg.Cursor[Any],
    args: dict[str, Any],
    *,
    firm: str,
    window: Window,
    params: Params,
    as_of: dt.datetime,
) -> tuple[list[GatewayEvidence], Latency, Integrity]:
    ids = dict(cur.execute(_GATEWAYS, args).fetchall())
    args = {**args, "gws": list(ids), "after": params.outage_after}
    receipts: dict[int | None, tuple[Any, ...]] = {
        row[0]: row for row in cur.execute(_RECEIPTS, args).fetchall()
    }
    outages: dict[int, list[Outage]] = defaultdict(list)
    for gid, start, end in cur.execute(_OUTAGES, args).fetchall():
        outages[gid].append(Outage(start, end))
    events: dict[int | None, dict[str, tuple[int, int, int]]] = defaultdict(dict)
    for gid, kind, n, seqs, samples in cur.execute(_EVENTS, args).fetchall():
        events[gid][kind] = (int(n), int(seqs), int(samples))
        total = events[None].get(kind, (0, 0, 0))
        events[None][kind] = (total[0] + n, total[1] + seqs, total[2] + samples)
    missing: dict[int | None, tuple[int, int]] = {}
    for gid, n, undeclared in cur.execute(_MISSING, args).fetchall():
        missing[gid] = (int(n), int(undeclared))
    missing[None] = (sum(m[0] for m in missing.values()), sum(m[1] for m in missing.values()))
    quarantine_args = {
        **args,
        "names": args["named"] + list(ids.values()),
        "prefix": identifiers.parse(firm).prefix,
    }
    by_name: dict[str | None, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for gateway, reason, n in cur.execute(_QUARANTINE, quarantine_args).fetchall():
        by_name[gateway][reason] += n
        by_name[None][reason] += n
    names = {*args["named"], *ids.values()}
    ident = {name: gid for gid, name in ids.items()}
    span = (as_of - window.start).total_seconds()
    out = []
    for name in sorted(names):
        gid = ident.get(name)
        row = receipts.get(gid) if gid is not None else None
        gaps = tuple(outages.get(gid, ())) if gid is not None else (Outage(window.start, as_of),)
        out.append(
            GatewayEvidence(
                identifier=name,
                envelopes=int(row[1]) if row else 0,
                first_created=row[4] if row else None,
                last_created=row[5] if row else None,
                online_seconds=max(0.0, span - sum(o.seconds for o in gaps)),
                outages=gaps,
                latency=_latency(row),
                integrity=_integrity(
                    row,
                    events.get(gid, {}) if gid is not None else {},
                    missing.get(gid, (0, 0)) if gid is not None else (0, 0),
                    dict(by_name.get(name, {})),
                ),
            )
        )
    total = receipts.get(None)
    firm_integrity = _integrity(total, events[None], missing[None], dict(by_name[None]))
    return out, _latency(total), firm_integrity
