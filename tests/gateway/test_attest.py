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
from gateway import _attest, _envelopes
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


def test_late_counts_travel_under_their_own_period_and_overlaps_go_to_a_partial() -> None:
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
    assert (checkpoint.start, checkpoint.end, checkpoint.previous) == (T0 + m, T0 + m, 7)
    assert checkpoint.partial, "what it cannot hold goes into the next one, of the same end"
    assert checkpoint.restarted
    assert [(x.start, x.end, len(x.counts)) for x in checkpoint.periods] == [
        (T0 - m, T0, 1),
        (T0, T0 + 30 * SECOND, 1),
    ]
    assert rows[2] not in taken, "overlapping periods wait for the next checkpoint"
    env = p.Envelope(GW, 8, bytes(32), T0 + m, checkpoint=checkpoint)  # valid
    after = attestor.attested(done, env)
    assert after == Attested(8, env.digest, T0, upto=T0 + m)
    assert attestor.due(T0, after) == T0 + m, "the rest is due at once"
    assert attestor.next_due(after) == 0
    closing, rest = attestor.checkpoint(T0 + m, after, [r for r in sorted(rows) if r not in taken])
    assert (closing.start, closing.end, closing.previous) == (T0, T0 + m, 8)
    assert rest == [rows[2], rows[3]]
    env = p.Envelope(GW, 9, bytes(32), T0 + m, checkpoint=closing)
    assert attestor.attested(after, env) == Attested(9, env.digest, T0 + m)


def test_counts_beyond_one_checkpoint_go_to_partial_ones_before_the_closing_one() -> None:
    attestor = Attestor(60, {}, now=T0, grace=SECOND)
    m = 60 * SECOND
    rows = [(T0, T0 + m, DEV, f"t{i:05}", 1) for i in range(25)]
    attested, made = None, []
    while True:
        due = attestor.due(T0 + m + 2 * SECOND, attested)
        assert due == T0 + m
        cp, taken = attestor.checkpoint(due, attested, rows[:11], limit=10)
        env = p.Envelope(GW, 10 + len(made), bytes(32), T0 + m, checkpoint=cp)
        attested = attestor.attested(attested, env)
        made.append(cp)
        rows = rows[len(taken) :]
        if not cp.partial:
            break
    assert [(cp.start, cp.end, cp.samples) for cp in made] == [
        (T0 + m, T0 + m, 10),
        (T0 + m, T0 + m, 10),
        (T0, T0 + m, 5),  # a first closing checkpoint starts one interval before its end
    ]
    assert [cp.previous for cp in made] == [0, 10, 11]
    assert attestor.due(T0 + m + 2 * SECOND, attested) is None


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


#: a gateway with more series than a checkpoint holds: 30 devices × 500 tags
BIG = {f"m{i:02}": f"88.709.911/dev.m{i:02}" for i in range(30)}
BIG_TAGS = tuple(f"tag{j:03}" for j in range(500))


async def run_writer(
    path: Path, devices: dict[str, str], tags: tuple[str, ...], seconds: float
) -> tuple[list[p.Envelope], dict[int, int]]:
    """Every tag of every device sampled every 0.4 s for ``seconds`` through a writer with
    1 s checkpoints, until every count is attested: the checkpoints (signatures verified),
    and the samples sent per period."""
    key = Ed25519PrivateKey.generate()
    sent: dict[int, int] = {}  # period start → samples
    with Outbox(path) as box:
        async with EnvelopeWriter(
            box, key, GW, devices, max_delay=0.05, checkpoint_interval=1
        ) as writer:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                now = time.time_ns()
                for name in devices:
                    batch = tuple(Sample(t, 1.0, Quality.GOOD, now) for t in tags)
                    writer.add(Batch(name, "g", batch))
                period = now // 1000 - now // 1000 % SECOND
                sent[period] = sent.get(period, 0) + len(devices) * len(tags)
                await asyncio.sleep(0.4)
            # the last period is over one interval and the grace later: then it is attested
            # at once, however many checkpoints it takes
            until = time.monotonic() + 10
            while box.counts(2**62) and time.monotonic() < until:  # noqa: ASYNC110 - the outbox, no event
                await asyncio.sleep(0.1)
            assert box.counts(2**62) == [], "every count is attested"
        signed = [p.decode_json(e.payload) for e in box.peek(1_000_000)]
    checkpoints = []
    for item in signed:
        if item.envelope.checkpoint is not None:
            item.verify(p.public_key_bytes(key))
            checkpoints.append(item.envelope)
    return checkpoints, sent


def attested_per_period(checkpoints: list[p.Envelope]) -> tuple[dict[int, int], int]:
    """The samples attested per period start, and the partial checkpoints; asserts that the
    checkpoints form one chain, that the partial ones of an end come right before its closing
    one, and that every period is attested by the checkpoints of its own end."""
    previous, pending, attested, made = 0, None, {}, 0
    for env in checkpoints:
        cp = env.checkpoint
        assert cp is not None
        assert cp.previous == previous, "one chain of checkpoints"
        if pending is not None:
            assert cp.end == pending, "the partial ones of an end are followed by its closing one"
        for period in cp.periods:
            assert period.end == cp.end, f"#{env.seq}: a count waited for a later checkpoint"
            attested[period.start] = attested.get(period.start, 0) + sum(
                c.samples for c in period.counts
            )
        partial = cp.start == cp.end
        previous, pending = env.seq, cp.end if partial else None
        made += partial
    assert pending is None
    return attested, made


@pytest.mark.slow
async def test_more_series_than_a_checkpoint_holds_are_all_attested_every_period(
    tmp_path: Path,
) -> None:
    """15,000 series through the real outbox, every one with samples in every second: each
    period is attested whole by the checkpoints of its own end (partial ones, then the
    closing one), and no count waits for a later period's."""
    assert len(BIG) * len(BIG_TAGS) > p.MAX_SAMPLES
    checkpoints, sent = await run_writer(tmp_path / "o.db", BIG, BIG_TAGS, 3.5)
    attested, partial = attested_per_period(checkpoints)
    assert attested == sent
    assert partial >= len(sent), "each period took partial checkpoints"


async def test_long_names_make_smaller_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_envelopes, "CHECKPOINT_BYTES", 4096)
    tags = tuple(f"{'long-name-' * 10}{j:03}" for j in range(40))
    checkpoints, sent = await run_writer(tmp_path / "o.db", {"kiln": DEV}, tags, 1.5)
    attested, partial = attested_per_period(checkpoints)
    assert attested == sent
    assert partial >= len(sent)
    assert max(len(p.encode_json(p.sign(e, Ed25519PrivateKey.generate())))
               for e in checkpoints) <= 4096  # fmt: skip


def test_a_drain_cut_short_by_a_stop_goes_on_after_the_restart(tmp_path: Path) -> None:
    """The outbox remembers that partial checkpoints were made for an end: the next run
    makes the rest of them, and the closing one, with that end, whatever the time."""
    m = 60 * SECOND
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        attestor = Attestor(60, box.last_ts(), now=T0, grace=SECOND)
        tally = attestor.tally([(DEV, [p.Sample(f"t{i}", T0 + i, 1.0) for i in range(5)])])
        box.append([], Head(1, p.GENESIS), tally=tally)
        cp, taken = attestor.checkpoint(T0 + m, None, box.counts(T0 + m, 3), limit=2)
        env = p.Envelope(GW, 2, p.GENESIS, T0 + m, checkpoint=cp)
        attested = attestor.attested(None, env)
        box.append([(2, "c", b"{}", 0)], Head(2, env.digest), attests=(attested, taken))
    with Outbox(path) as box:  # much later
        assert box.attested() == attested
        again = Attestor(60, box.last_ts(), now=T0 + 60 * m, grace=SECOND)
        assert again.due(T0 + 60 * m, box.attested()) == T0 + m
        cp, taken = again.checkpoint(T0 + m, box.attested(), box.counts(T0 + m))
        assert (cp.start, cp.end, cp.previous, cp.samples) == (T0, T0 + m, 2, 3)


def test_an_outbox_from_before_partial_checkpoints_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE attested (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL, "
        "hash BLOB NOT NULL, period_end INTEGER NOT NULL)"
    )
    db.execute("INSERT INTO attested VALUES (1, 7, ?, ?)", (bytes(32), T0))
    db.commit()
    db.close()
    with Outbox(path) as box:
        assert box.attested() == Attested(7, bytes(32), T0)
        later = Attested(8, b"\x01" * 32, T0, upto=T0 + 60 * SECOND)
        box.append([(8, "c", b"{}", 0)], Head(8, p.GENESIS), attests=(later, []))
        assert box.attested() == later


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
