"""Checkpoints: counts committed with the envelopes, attested once a period is over."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as p
from edge import Batch, Quality, Sample
from gateway import _attest
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


def _view(path: Path) -> dict[tuple[int, int, str, str], int]:
    """What a reader of the outbox file sees in the view ``tally``, summed per series."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out: dict[tuple[int, int, str, str], int] = {}
        for *key, n in db.execute("SELECT start, period_end, device, tag, samples FROM tally"):
            out[tuple(key)] = out.get(tuple(key), 0) + n  # type: ignore[index]
        return {key: n for key, n in out.items() if n}  # attested, not yet folded: 0
    finally:
        db.close()


def _journal(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM tally_log").fetchone()[0])
    finally:
        db.close()


@pytest.mark.parametrize("fold_entries", [1, 7, 10**9])
def test_journal_and_folds_keep_exactly_the_counts_and_last_ts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fold_entries: int
) -> None:
    monkeypatch.setattr(_attest, "FOLD_ENTRIES", fold_entries)
    monkeypatch.setattr(_attest, "fold_journal", lambda _db: None)  # as if killed: no fold
    rng = random.Random(fold_entries)  # noqa: S311 - test data, not secrets
    path = tmp_path / "o.db"
    expected: dict[tuple[int, int, str, str], int] = {}
    last: dict[tuple[str, str], int] = {}
    with Outbox(path) as box:
        attestor = Attestor(10, box.last_ts(), now=T0, grace=SECOND)
        for seq in range(1, 40):
            envelopes = [
                (dev, [p.Sample(rng.choice("abcé"), T0 + rng.randrange(40) * SECOND, 1.0)
                       for _ in range(rng.randrange(1, 6))])
                for dev in rng.sample([DEV, DEV + "2", "设备"], 2)
            ]  # fmt: skip
            tally = attestor.tally(envelopes)
            box.append([], Head(seq, p.GENESIS), tally=tally)
            attestor.committed(tally)
            for key, n in tally.counts.items():
                expected[key] = expected.get(key, 0) + n
            last |= {(d, t): ts for d, tags in tally.last.items() for t, ts in tags.items()}
        assert sum(expected.values()) > 50
        assert {r[:4]: r[4] for r in box.counts(2**62)} == expected
        assert _view(path) == expected
        # a checkpoint takes the periods over and leaves the rest, journal or folded
        _, taken = attestor.checkpoint(T0 + 20 * SECOND, None, box.counts(T0 + 20 * SECOND))
        assert taken
        assert all(row[1] <= T0 + 20 * SECOND for row in taken)
        row = (40, "c", b"{}", 0)
        box.append([row], Head(40, p.GENESIS), attests=(Attested(40, bytes(32), T0), taken))
        for *key, _n in taken:
            del expected[tuple(key)]  # type: ignore[arg-type]
        assert {r[:4]: r[4] for r in box.counts(2**62)} == expected
        tally = attestor.tally([(DEV, samples(T0 + 50 * SECOND, tag="z"))])
        box.append([], Head(41, p.GENESIS), tally=tally)  # stays in the journal
        expected[T0 + 50 * SECOND, T0 + 60 * SECOND, DEV, "z"] = 1
        last[DEV, "z"] = T0 + 50 * SECOND
    assert _view(path) == expected
    if fold_entries > 1:
        assert _journal(path) > 0
    with Outbox(path) as box:  # a new run folds what the journal holds
        assert box.last_ts() == last
        assert {r[:4]: r[4] for r in box.counts(2**62)} == expected
        assert _journal(path) == 0


def test_an_outbox_of_the_summed_table_is_migrated_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE tally (start INTEGER NOT NULL, period_end INTEGER NOT NULL,
            device TEXT NOT NULL, tag TEXT NOT NULL, samples INTEGER NOT NULL,
            PRIMARY KEY (start, period_end, device, tag)) WITHOUT ROWID;
        CREATE TABLE last_ts (device TEXT NOT NULL, tag TEXT NOT NULL, ts INTEGER NOT NULL,
            PRIMARY KEY (device, tag)) WITHOUT ROWID;
        """
    )
    db.execute("INSERT INTO tally VALUES (?, ?, ?, 't', 60)", (T0, T0 + 60 * SECOND, DEV))
    db.execute("INSERT INTO last_ts VALUES (?, 't', ?)", (DEV, T0 + 59 * SECOND))
    db.commit()
    db.close()
    with Outbox(path) as box:
        assert box.counts(2**62) == [(T0, T0 + 60 * SECOND, DEV, "t", 60)]
        assert box.last_ts() == {(DEV, "t"): T0 + 59 * SECOND}
        attestor = Attestor(60, box.last_ts(), now=T0, grace=SECOND)
        tally = attestor.tally([(DEV, samples(T0 + 59 * SECOND, T0 + 61 * SECOND))])
        box.append([], Head(1, p.GENESIS), tally=tally)
    assert _view(path) == {
        (T0, T0 + 60 * SECOND, DEV, "t"): 60,
        (T0 + 60 * SECOND, T0 + 120 * SECOND, DEV, "t"): 1,
    }


def test_a_clean_stop_folds_the_journal(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        attestor = Attestor(60, box.last_ts(), now=T0, grace=SECOND)
        box.append([], Head(1, p.GENESIS), tally=attestor.tally([(DEV, samples(T0 + 5))]))
        assert _journal(tmp_path / "o.db") == 1
    assert _journal(tmp_path / "o.db") == 0
    assert _view(tmp_path / "o.db") == {(T0, T0 + 60 * SECOND, DEV, "t"): 1}


def test_a_fold_that_fails_leaves_the_commit_and_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fold is a transaction of its own after the commit: one the disk refuses loses
    nothing and keeps the commit, and a later one folds everything."""
    monkeypatch.setattr(_attest, "FOLD_ENTRIES", 1)
    real_fold = _attest.fold

    def full(_db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    path = tmp_path / "o.db"
    with Outbox(path, reserve_bytes=0) as box:
        monkeypatch.setattr(_attest, "fold", full)
        attestor = Attestor(60, box.last_ts(), now=T0, grace=SECOND)
        for seq in (1, 2):
            tally = attestor.tally([(DEV, samples(T0 + seq))])
            box.append([(seq, "t", b"x", 1)], Head(seq, p.GENESIS), tally=tally)
            attestor.committed(tally)
        assert box.head() == Head(2, p.GENESIS)
        assert _journal(path) == 2
        assert box.counts(T0 + 60 * SECOND) == [(T0, T0 + 60 * SECOND, DEV, "t", 2)]
        assert caplog.text.count("counts not folded") == 1, "a state change is logged once"
        monkeypatch.setattr(_attest, "fold", real_fold)
        tally = attestor.tally([(DEV, samples(T0 + 3))])
        box.append([(3, "t", b"x", 1)], Head(3, p.GENESIS), tally=tally)
        assert _journal(path) == 0
        assert box.counts(T0 + 60 * SECOND) == [(T0, T0 + 60 * SECOND, DEV, "t", 3)]
