"""Gateway checkpoints in the store: the signed envelope kept whole, its counts as rows.

A checkpoint (docs/protocol.md, "Checkpoints") passes the same topic, signature and chain
checks as any envelope and gets a receipt (kind 3). Then it is stored twice over: the signed
envelope itself, in its JSON form, which a report hands to an evaluator to verify without
trusting the platform; and its counts as rows, so the platform can compare them with the
samples it stored. Migration 2 of ``ingest._schema`` makes the two tables.
"""

from __future__ import annotations

import datetime as dt

import psycopg

import gateway.protocol as wire
from ingest._decode import Checked

#: migration 2
SCHEMA = [
    """CREATE TABLE checkpoint (
        gateway_id integer NOT NULL REFERENCES gateway,
        seq bigint NOT NULL,
        period_from timestamptz NOT NULL,
        period_to timestamptz NOT NULL,
        previous bigint NOT NULL,
        restarted boolean NOT NULL,
        samples bigint NOT NULL,
        envelope bytea NOT NULL,
        PRIMARY KEY (gateway_id, seq))""",
    "CREATE INDEX checkpoint_period ON checkpoint (gateway_id, period_to)",
    """CREATE TABLE checkpoint_count (
        gateway_id integer NOT NULL,
        seq bigint NOT NULL,
        device text NOT NULL,
        tag text NOT NULL,
        period_from timestamptz NOT NULL,
        period_to timestamptz NOT NULL,
        samples bigint NOT NULL,
        PRIMARY KEY (gateway_id, seq, period_from, device, tag),
        FOREIGN KEY (gateway_id, seq) REFERENCES checkpoint)""",
    # a report finds the late counts of its window by period: from the window on, not all
    "CREATE INDEX checkpoint_count_period ON checkpoint_count (gateway_id, period_to)",
]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

#: what a Batch holds per checkpoint: the checkpoint row, then its count rows
Rows = tuple[tuple[object, ...], list[tuple[object, ...]]]


def _time(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def rows(gateway_id: int, env: Checked) -> Rows:
    """The rows of a verified checkpoint envelope."""
    cp = env.checkpoint
    if cp is None:
        raise ValueError(f"envelope {env.gateway} #{env.seq} is not a checkpoint")
    envelope = wire.Envelope(env.gateway, env.seq, env.prev, env.created, checkpoint=cp)
    signed = wire.encode_json(wire.SignedEnvelope(envelope, env.signature))
    head = (
        gateway_id, env.seq, _time(cp.start), _time(cp.end), cp.previous, cp.restarted,
        cp.samples, signed,
    )  # fmt: skip
    counts = [
        (gateway_id, env.seq, c.device, c.tag, _time(p.start), _time(p.end), c.samples)
        for p in cp.periods
        for c in p.counts
    ]
    return head, counts


def write(cur: psycopg.Cursor, checkpoints: list[Rows]) -> None:
    """Insert the checkpoints of a batch; inside the batch's transaction."""
    cur.executemany(
        "INSERT INTO checkpoint (gateway_id, seq, period_from, period_to, previous, restarted, "
        "samples, envelope) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        [head for head, _ in checkpoints],
    )
    counts = [row for _, rows_ in checkpoints for row in rows_]
    if counts:
        with cur.copy(
            "COPY checkpoint_count (gateway_id, seq, device, tag, period_from, period_to, "
            "samples) FROM STDIN"
        ) as copy:
            for row in counts:
                copy.write_row(row)
