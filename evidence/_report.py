"""The signed evidence report: the facts of a firm and window, and the gateways' own word.

A report holds what ``collect`` and ``assess`` say about a firm in a window, and, per gateway,
the signed checkpoint envelopes that cover the window (as the gateway signed them), the
platform's sample counts for every attested period, and the losses the platform recorded.
The platform signs it with its Ed25519 key over the RFC 8785 canonical JSON of ``report``
(one byte string for one content, in any language). ``evidence.verify_report`` checks it
with nothing but the file and the gateways' keys (docs/evidence.md, "Signed report").
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import psycopg
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as wire
from evidence._errors import ReportError, StoreUnavailable
from evidence._mapping import Indicators, assess
from evidence._metrics import collect
from evidence._models import FirmEvidence, Params, Window
from evidence._registry import RegisteredDevice

FORMAT = "guantong-evidence-report/1"
#: domain separation: a report signature can never be taken for an envelope's or anything else's
DOMAIN = b"guantong-evidence-report\x00"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# the checkpoints of the window, and what time they cover together: the closing ones whose
# time overlaps it, the partial ones (from = to) ending in it, and those of the closing one
# the window ends in (their end lies beyond the window's)
_COVERING = """
SELECT seq, envelope, period_from, period_to, previous FROM checkpoint
WHERE gateway_id = %(gid)s AND period_to > %(start)s AND (
    period_from < %(end)s OR period_to <= %(end)s OR period_to IN (
        SELECT period_to FROM checkpoint
        WHERE gateway_id = %(gid)s AND period_from < %(end)s AND period_to > %(end)s))
ORDER BY seq
"""
# the checkpoint before them: a partial one left out at the start would show
_ANCHOR = "SELECT envelope FROM checkpoint WHERE gateway_id = %(gid)s AND seq = %(seq)s"
# later checkpoints holding counts of that time: samples that were committed late
_LATE = """
SELECT seq, envelope FROM checkpoint
WHERE gateway_id = %(gid)s AND seq > %(after)s AND seq IN (
    SELECT seq FROM checkpoint_count WHERE gateway_id = %(gid)s
    AND period_to > %(start)s AND period_from < %(end)s)
ORDER BY seq
"""

# the platform's count per series for each period: from the 1-minute rollup when the period
# is whole minutes, from the raw samples otherwise
_STORED = """
WITH p AS (SELECT * FROM unnest(%(froms)s::timestamptz[], %(tos)s::timestamptz[]) AS p(f, t)),
ser AS (SELECT s.id, d.identifier AS device, s.tag FROM series s
        JOIN device d ON d.id = s.device_id WHERE d.gateway_id = %(gid)s)
SELECT ser.device, ser.tag, p.f, p.t, sum(n)::bigint FROM (
    SELECT b.series_id, p.f, p.t, b.samples AS n FROM p JOIN sample_1m b
        ON b.bucket >= p.f AND b.bucket < p.t
    WHERE b.series_id IN (SELECT id FROM ser)
      AND date_trunc('minute', p.f) = p.f AND date_trunc('minute', p.t) = p.t
    UNION ALL
    SELECT x.series_id, p.f, p.t, 1 FROM p JOIN sample x ON x.ts >= p.f AND x.ts < p.t
    WHERE x.series_id IN (SELECT id FROM ser)
      AND NOT (date_trunc('minute', p.f) = p.f AND date_trunc('minute', p.t) = p.t)) c
JOIN ser ON ser.id = c.series_id JOIN p ON p.f = c.f AND p.t = c.t
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3
"""

# each declared loss, with the samples of the envelopes it declared that arrived all the same
_LOSSES = """
SELECT e.first_seq, e.last_seq, e.samples, e.reason, (
    SELECT coalesce(sum(a.samples), 0) FROM receipt a
    WHERE a.gateway_id = e.gateway_id AND a.seq BETWEEN e.first_seq AND e.last_seq)
FROM connectivity_event e
WHERE e.gateway_id = %(gid)s AND e.kind = 'loss' AND e.seq BETWEEN %(first)s AND %(last)s
ORDER BY e.first_seq
"""


def us(t: dt.datetime) -> int:
    """µs since the epoch of an aware datetime, exactly (no float on the way)."""
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def at(micros: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=micros)


def jsonable(value: Any) -> Any:
    """Dataclasses, tuples and datetimes as JSON values (times in ISO 8601, UTC)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return value


def signed_bytes(report: dict[str, Any]) -> bytes:
    """What the platform signs: the domain, then the RFC 8785 canonical JSON of ``report``."""
    try:
        return DOMAIN + rfc8785.dumps(report)
    except rfc8785.CanonicalizationError as exc:
        raise ReportError("report", f"cannot be canonicalised: {exc}") from None


@dataclasses.dataclass(frozen=True)
class Report:
    """``report`` is the signed content; ``signature`` the platform's over ``signed_bytes``."""

    report: dict[str, Any]
    signature: bytes

    def to_json(self) -> bytes:
        doc = {"report": self.report, "signature": base64.b64encode(self.signature).decode()}
        return json.dumps(doc, ensure_ascii=False, indent=1, allow_nan=False).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> Report:
        """Parse a report file; raise :class:`ReportError` naming what is not as it must be."""
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReportError("file", f"not a JSON report: {exc}") from None
        if not isinstance(doc, dict) or set(doc) != {"report", "signature"}:
            raise ReportError("file", "must be an object with 'report' and 'signature' only")
        report = doc["report"]
        if not isinstance(report, dict) or report.get("format") != FORMAT:
            raise ReportError("report.format", f"must be {FORMAT!r}")
        try:
            signature = base64.b64decode(doc["signature"], validate=True)
        except (TypeError, ValueError):
            raise ReportError("signature", "is not base64") from None
        return cls(report, signature)


def build_report(
    conn: psycopg.Connection,
    firm: str,
    window: Window,
    registered: Sequence[RegisteredDevice],
    key: Ed25519PrivateKey,
    *,
    params: Params | None = None,
    as_of: dt.datetime | None = None,
    indicators: Indicators | None = None,
) -> Report:
    """Collect, assess and gather the attestation of ``firm`` in ``window`` from one snapshot
    of the store, and sign it all with the platform's ``key`` (blocking psycopg)."""
    try:
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with conn.transaction(), conn.cursor() as cur:
            if idle:  # else the caller's transaction is the snapshot
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            facts = collect(conn, firm, window, registered, params=params, as_of=as_of)
            attestation = [_attestation(cur, gw.identifier, window) for gw in facts.gateways]
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable) as exc:
        raise StoreUnavailable(f"the ingest store cannot be read: {exc}") from exc
    public = wire.public_key_bytes(key)
    report = {
        "format": FORMAT,
        "firm": facts.firm,
        "window": {"from": window.start.isoformat(), "to": window.end.isoformat()},
        "generated": dt.datetime.now(dt.UTC).isoformat(),
        "platform_key": base64.b64encode(public).decode(),
        "facts": _facts(facts),
        "assessment": jsonable(assess(facts, indicators)),
        "attestation": [a for a in attestation if a is not None],
    }
    report = json.loads(json.dumps(report, allow_nan=False))  # plain JSON values only
    return Report(report, key.sign(signed_bytes(report)))


def _facts(facts: FirmEvidence) -> dict[str, Any]:
    doc: dict[str, Any] = jsonable(facts)
    doc["window"] = {"from": facts.window.start.isoformat(), "to": facts.window.end.isoformat()}
    return doc


def _attestation(cur: psycopg.Cursor[Any], gateway: str, window: Window) -> dict[str, Any] | None:
    row = cur.execute("SELECT id FROM gateway WHERE identifier = %s", (gateway,)).fetchone()
    if row is None:  # registered, never seen
        return None
    args: dict[str, Any] = {"gid": row[0], "start": window.start, "end": window.end}
    covering = cur.execute(_COVERING, args).fetchall()
    late_args = {**args, "after": covering[-1][0] if covering else 0}
    while covering and covering[-1][2] == covering[-1][3]:
        covering.pop()  # partial ones whose closing checkpoint has not arrived: not yet whole
    if not covering:
        return {"gateway": gateway, "checkpoints": [], "stored": [], "losses": []}
    # a checkpoint's own time is a period too: samples there that no count attests show
    periods = {(us(f), us(t)) for _, _, f, t, _ in covering if f < t}
    late_args.update(start=min(r[2] for r in covering), end=max(r[3] for r in covering))
    rows = [(seq, raw) for seq, raw, *_ in covering] + cur.execute(_LATE, late_args).fetchall()
    checkpoints = [json.loads(bytes(raw)) for _, raw in rows]
    for envelope in checkpoints:
        periods.update((p["from"], p["to"]) for p in envelope["checkpoint"]["periods"])
    ordered = sorted(periods)
    stored = cur.execute(
        _STORED,
        {**args, "froms": [at(f) for f, _ in ordered], "tos": [at(t) for _, t in ordered]},
    ).fetchall()
    seqs = [c["seq"] for c in checkpoints]
    losses = cur.execute(_LOSSES, {**args, "first": min(seqs), "last": max(seqs)}).fetchall()
    anchor = cur.execute(_ANCHOR, {**args, "seq": covering[0][4]}).fetchone()
    if anchor is not None:
        checkpoints.insert(0, json.loads(bytes(anchor[0])))
    return {
        "gateway": gateway,
        "checkpoints": checkpoints,
        # [device, tag, from µs, to µs, samples] for each period a checkpoint names, its own
        # [from, to) included, so that samples no checkpoint attests are seen too
        "stored": [[d, t, us(f), us(e), int(n)] for d, t, f, e, n in stored],
        # [first, last, samples, reason, samples of those envelopes the platform received]
        "losses": [
            [int(a), int(b), None if n is None else int(n), r, int(got)]
            for a, b, n, r, got in losses
        ],
    }
