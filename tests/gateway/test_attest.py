"""Checkpoints: counts committed with the envelopes, attested once a period is over."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as p
from edge import Batch, Quality, Sample
from gateway._attest import Attested, Attestor
from gateway._envelopes import EnvelopeWriter
from gateway._outbox import Head, Outbox

GW = "88.709.911/gw.1"
DEV = "88.709.911/dev.kiln"
SECOND = 1_000_000
T0 = 1_764_000_000 * SECOND  # a whole minute


def samples(*ts: int, tag: str = "t") -> list[p.Sample]:
    return [p.Sample(tag, t, 1.0) for t in ts]


def test_counts_go_to_the_period_of_their_time_and_a_repeated_ts_counts_once() -> None:
    attestor = Attestor(60, {(DEV, "t"): T0}, now=T0, grace=SECOND)
    tally = attestor.tally(
        [(DEV, samples(T0, T0 + 1, T0 + 1, T0 + 60 * SECOND)), (DEV, samples(T0, tag="u"))]
    )
    minute = 60 * SECOND
    assert tally.counts == {
        (T0, T0 + minute, DEV, "t"): 1,  # T0 was the last ts before; T0 + 1 came twice
        (T0 + minute, T0 + 2 * minute, DEV, "t"): 1,
        (T0, T0 + minute, DEV, "u"): 1,
    }
    assert attestor.tally([(DEV, samples(T0 + 1))]).counts != {}, "not committed: not known"
    attestor.committed(tally)
    assert attestor.tally([(DEV, samples(T0 + 60 * SECOND))]).counts == {}


def test_a_checkpoint_is_due_once_a_period_and_the_grace_are_over() -> None:
    attestor = Attestor(60, {}, now=T0 + 30 * SECOND, grace=SECOND)
    assert attestor.due(T0 + 60 * SECOND, None) is None
    assert attestor.due(T0 + 61 * SECOND, None) == T0 + 60 * SECOND
    done = Attested(7, bytes(32), T0 + 60 * SECOND)
    assert attestor.due(T0 + 119 * SECOND, done) is None
    # after a long silence, one checkpoint closes up to the newest whole period
    assert attestor.due(T0 + 3600 * SECOND, done) == T0 + 59 * 60 * SECOND
    assert attestor.next_due(done) == T0 + 121 * SECOND


def test_late_counts_travel_under_their_own_period_and_overlaps_wait() -> None:
    attestor = Attestor(60, {}, now=T0, grace=SECOND)
    m = 60 * SECOND
    rows = [
        (T0 - m, T0, DEV, "t", 2),  # late: committed after its own checkpoint
        (T0, T0 + 30 * SECOND, DEV, "t", 5),  # from a run with another interval: overlaps
        (T0, T0 + m, DEV, "t", 60),
        (T0, T0 + m, DEV, "u", 60),
    ]
    done = Attested(7, b"\x01" * 32, T0)
    checkpoint, taken = attestor.checkpoint(T0 + m, done, sorted(rows))
    assert (checkpoint.start, checkpoint.end, checkpoint.previous) == (T0, T0 + m, 7)
    assert checkpoint.restarted
    assert [(x.start, x.end, len(x.counts)) for x in checkpoint.periods] == [
        (T0 - m, T0, 1),
        (T0, T0 + 30 * SECOND, 1),
    ]
    assert rows[2] not in taken, "overlapping periods wait for the next checkpoint"
    p.Envelope(GW, 8, bytes(32), T0 + m, checkpoint=checkpoint)  # valid


async def test_the_writer_attests_exactly_what_it_committed_across_restarts(
    tmp_path: Path,
) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "o.db"
    sent = 0
    for _run in range(2):
        with Outbox(path) as box:
            async with EnvelopeWriter(
                box, key, GW, {"kiln": DEV}, max_delay=0.05, checkpoint_interval=1
            ) as writer:
                deadline = time.monotonic() + 2.5
                while time.monotonic() < deadline:
                    now = time.time_ns()
                    writer.add(Batch("kiln", "g", (Sample("t", 1.0, Quality.GOOD, now),)))
                    sent += 1
                    await asyncio.sleep(0.01)
            assert writer.stats.checkpoints >= 1
    with Outbox(path) as box:
        envelopes = [p.decode_json(e.payload) for e in box.peek(100_000)]
        pending = sum(row[4] for row in box.counts(2**62))
    for signed in envelopes:
        signed.verify(p.public_key_bytes(key))
    checkpoints = [s.envelope for s in envelopes if s.envelope.checkpoint is not None]
    attested = sum(e.checkpoint.samples for e in checkpoints if e.checkpoint is not None)
    data = sum(len(s.envelope.samples) for s in envelopes)
    assert data == sent
    assert attested + pending == sent, "every committed sample is attested or still counted"
    assert [e.checkpoint.restarted for e in checkpoints if e.checkpoint is not None].count(
        True
    ) == 2


def test_an_unchanged_source_time_is_not_counted_again_after_a_restart(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        first = Attestor(60, box.last_ts(), now=T0, grace=SECOND)
        tally = first.tally([(DEV, samples(T0 + 5))])
        box.append([], Head(0, p.GENESIS), tally=tally)
    with Outbox(tmp_path / "o.db") as box:  # a new run: what it knows comes from the outbox
        again = Attestor(60, box.last_ts(), now=T0, grace=SECOND)
        assert again.tally([(DEV, samples(T0 + 5))]).counts == {}
        assert box.counts(T0 + 60 * SECOND) == [(T0, T0 + 60 * SECOND, DEV, "t", 1)]
