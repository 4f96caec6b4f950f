"""What the gateway attests: per series and period of sample time, the samples it accepted.

Counting happens as envelopes are committed: :meth:`Attestor.tally` counts the samples of
the envelopes of one outbox transaction, and the outbox writes the counts in that same
transaction (:meth:`Tally.write`), so a count exists exactly when its samples are committed,
whatever kills the gateway. A checkpoint takes the counts of every period that is over and
subtracts them (negative journal entries) in the transaction that commits it, and records
itself as the predecessor of the next one (docs/protocol.md, "Checkpoints"). Counts beyond
what one checkpoint holds go into *partial* checkpoints of the same ``to``, one per step of
the committer, before the closing one: a gateway with 100,000 series attests them all every
period, in ten checkpoints, without stalling its commits.

A sample whose ``ts`` equals the previous sample's of the same series is not counted: the
store keeps one sample per ``(series, ts)``, and an OPC UA value polled again unchanged keeps
its source timestamp. The last ``ts`` per series is kept in the outbox with the counts.

How the counts are stored: a transaction adds to the journal a row per period and device
(``tally_log``, the counts by tag as JSON) and a row per device (``last_log``, the last
timestamps by tag), instead of two upserts per series (at 100,000 series a second those
upserts were a third of the gateway's CPU). SQLite folds the journal into the summed tables
``tally_folded`` and ``last_ts`` (in C, without the GIL) and empties it: in a transaction of
its own once it holds :data:`FOLD_ENTRIES` entries, and at every open and clean stop. The
view ``tally`` shows both, one row per journal entry: summed per ``(start, period_end,
device, tag)`` it is what is counted and not yet attested (zero once attested).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gateway import protocol

#: journal entries (series × period of one transaction) that trigger a fold: some 5 s of
#: 100,000 series at 1 s, about 15 MB of JSON
FOLD_ENTRIES = 500_000

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tally_folded (
    start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    device TEXT NOT NULL,
    tag TEXT NOT NULL,
    samples INTEGER NOT NULL,
    PRIMARY KEY (start, period_end, device, tag)
) WITHOUT ROWID""",
    # per transaction, a row per (period, device): {tag: samples}; total: the journal's
    # entries up to this row (the newest row says when to fold, without a scan)
    """CREATE TABLE IF NOT EXISTS tally_log (
    id INTEGER PRIMARY KEY,
    start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    device TEXT NOT NULL,
    total INTEGER NOT NULL,
    counts TEXT NOT NULL
)""",
    # per transaction, a row per device: {tag: the newest ts counted}
    """CREATE TABLE IF NOT EXISTS last_log (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    last TEXT NOT NULL
)""",
    """CREATE VIEW IF NOT EXISTS tally (start, period_end, device, tag, samples) AS
SELECT start, period_end, device, tag, samples FROM tally_folded
UNION ALL
SELECT l.start, l.period_end, l.device, t.key, t.value
FROM tally_log AS l, json_each(l.counts) AS t""",
    """CREATE TABLE IF NOT EXISTS last_ts (
    device TEXT NOT NULL,
    tag TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (device, tag)
) WITHOUT ROWID""",
    # period_end: where the next closing checkpoint starts; upto: its end once partial
    # checkpoints have been committed for it (NULL otherwise)
    """CREATE TABLE IF NOT EXISTS attested (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    period_end INTEGER NOT NULL,
    upto INTEGER
)""",
)

_FOLD_COUNTS = """
INSERT INTO tally_folded (start, period_end, device, tag, samples)
SELECT l.start, l.period_end, l.device, t.key, sum(t.value)
FROM tally_log AS l, json_each(l.counts) AS t
WHERE true
GROUP BY 1, 2, 3, 4
ON CONFLICT DO UPDATE SET samples = samples + excluded.samples
"""

# a bare column beside max() comes from the row holding the maximum: the newest transaction's
_FOLD_LAST = """
INSERT INTO last_ts (device, tag, ts)
SELECT device, tag, ts FROM (
    SELECT l.device AS device, t.key AS tag, t.value AS ts, max(l.id)
    FROM last_log AS l, json_each(l.last) AS t
    GROUP BY 1, 2
)
WHERE true
ON CONFLICT DO UPDATE SET ts = excluded.ts
"""


def prepare(db: sqlite3.Connection) -> None:
    """Create or migrate the tables and fold the journal; its own transaction.

    Outboxes written before the journal have the summed counts in a table named ``tally``:
    it becomes ``tally_folded`` unchanged, and ``tally`` the view; those written before
    partial checkpoints get the column ``attested.upto``.
    """

    def migrate() -> None:
        row = db.execute("SELECT type FROM sqlite_master WHERE name = 'tally'").fetchone()
        if row is not None and row[0] == "table":
            db.execute("ALTER TABLE tally RENAME TO tally_folded")
        for statement in SCHEMA:
            db.execute(statement)
        columns = {row[1] for row in db.execute("PRAGMA table_info(attested)")}
        if "upto" not in columns:  # an outbox from before partial checkpoints
            db.execute("ALTER TABLE attested ADD COLUMN upto INTEGER")
        fold(db)

    _in_transaction(db, migrate)


def fold_journal(db: sqlite3.Connection) -> None:
    """Fold the journal in a transaction of its own: once it is full, and at a clean stop (an
    outbox left so can be taken back to the summed table alone, docs/operations.md)."""
    _in_transaction(db, lambda: fold(db))


def _in_transaction(db: sqlite3.Connection, work: Callable[[], None]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        work()
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def fold(db: sqlite3.Connection) -> None:
    """Move the journal into the summed tables; inside the caller's transaction."""
    db.execute(_FOLD_COUNTS)
    db.execute("DELETE FROM tally_folded WHERE samples = 0")  # attested
    db.execute(_FOLD_LAST)
    db.execute("DELETE FROM tally_log")
    db.execute("DELETE FROM last_log")


@dataclass(frozen=True, slots=True)
class Attested:
    """The last checkpoint committed: the next names it (``seq``, ``hash``). The next closing
    checkpoint starts at ``end``; ``upto`` is its end once partial checkpoints were committed
    for it, and then the next checkpoint is due at once."""

    seq: int
    hash: bytes
    end: int
    upto: int | None = None


@dataclass(slots=True)
class Tally:
    """The counts of one outbox transaction, and the new last ``ts`` of the series it saw."""

    #: (period start, period end, device) → tag → samples
    periods: dict[tuple[int, int, str], dict[str, int]] = field(default_factory=dict)
    #: device → tag → the newest ts counted
    last: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def counts(self) -> dict[tuple[int, int, str, str], int]:
        """(start, end, device, tag) → samples."""
        return {(*key, tag): n for key, tags in self.periods.items() for tag, n in tags.items()}

    def write(self, db: sqlite3.Connection) -> None:
        """Add the counts to the outbox; inside the caller's transaction."""
        if not self.periods:
            return  # nothing counted, no newer ts
        _journal_counts(db, self.periods)
        db.executemany(
            "INSERT INTO last_log (device, last) VALUES (?, ?)",
            [(device, _encoder.encode(tags)) for device, tags in self.last.items()],
        )


def _journal_counts(
    db: sqlite3.Connection, periods: dict[tuple[int, int, str], dict[str, int]]
) -> None:
    dumps = _encoder.encode
    total = _journal_entries(db)
    rows = []
    for key, tags in periods.items():
        total += len(tags)
        rows.append((*key, total, dumps(tags)))
    db.executemany(
        "INSERT INTO tally_log (start, period_end, device, total, counts) VALUES (?, ?, ?, ?, ?)",
        rows,
    )


def journal_full(db: sqlite3.Connection) -> bool:
    """Whether the journal holds :data:`FOLD_ENTRIES` entries: time to :func:`fold_journal`.

    The fold is a transaction of its own after the commit, not part of it: a commit stays as
    small as its envelopes (the outbox commits in small transactions on a full disk).
    """
    return _journal_entries(db) >= FOLD_ENTRIES


def _journal_entries(db: sqlite3.Connection) -> int:
    """The journal's entries: the running total its newest row carries (no scan)."""
    newest = db.execute("SELECT total FROM tally_log ORDER BY id DESC LIMIT 1").fetchone()
    return 0 if newest is None else int(newest[0])


_encoder = json.JSONEncoder(separators=(",", ":"))


def write_attested(
    db: sqlite3.Connection, attested: Attested, rows: Sequence[tuple[int, int, str, str, int]]
) -> None:
    """Record the checkpoint and take the counts it attests off; inside the caller's
    transaction.

    The counts go off as negative journal entries, folded with the rest later: the
    checkpoint's transaction stays as small as its envelope (room on disk may be short).
    """
    periods: dict[tuple[int, int, str], dict[str, int]] = {}
    for start, end, device, tag, n in rows:
        periods.setdefault((start, end, device), {})[tag] = -n
    _journal_counts(db, periods)
    db.execute(
        "INSERT INTO attested (one, seq, hash, period_end, upto) VALUES (1, ?, ?, ?, ?) "
        "ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
        "period_end = excluded.period_end, upto = excluded.upto",
        (attested.seq, attested.hash, attested.end, attested.upto),
    )


def read_attested(db: sqlite3.Connection) -> Attested | None:
    row = db.execute("SELECT seq, hash, period_end, upto FROM attested").fetchone()
    return None if row is None else Attested(row[0], bytes(row[1]), row[2], row[3])


def read_counts(
    db: sqlite3.Connection, upto: int, limit: int = -1
) -> list[tuple[int, int, str, str, int]]:
    """(start, end, device, tag, samples) of the periods over by ``upto``, in contract order;
    the first ``limit`` of them (all for -1)."""
    # SQLite's default collation compares the bytes of UTF-8, which is code-point order, the
    # order the contract says
    return db.execute(
        "SELECT start, period_end, device, tag, sum(samples) FROM tally WHERE period_end <= ? "
        "GROUP BY start, period_end, device, tag HAVING sum(samples) <> 0 "
        "ORDER BY start, period_end, device, tag LIMIT ?",
        (upto, limit),
    ).fetchall()


def read_last(db: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """The newest counted ``ts`` per series; the journal is folded at every open."""
    return {(d, t): ts for d, t, ts in db.execute("SELECT device, tag, ts FROM last_ts")}


class Attestor:
    """Counts samples into clock-aligned periods and builds checkpoints from the counts."""

    def __init__(
        self, interval: float, last: dict[tuple[str, str], int], *, now: int, grace: int
    ) -> None:
        self.interval = round(interval * 1_000_000)
        if self.interval <= 0:
            raise ValueError("the checkpoint interval must be positive")
        self.grace = grace
        #: device → tag → the last counted ts (what the outbox's ``last_ts`` holds)
        self._last: dict[str, dict[str, int]] = {}
        for (device, tag), ts in last.items():
            self._last.setdefault(device, {})[tag] = ts
        #: a gateway's first checkpoint closes the first period that ends after it started
        self._first_after = self._end(now)
        self.restarted = True  # until the first checkpoint of this run is committed

    def tally(self, envelopes: Iterable[tuple[str, Sequence[protocol.Sample]]]) -> Tally:
        """The counts of ``(device, samples)`` about to be committed together.

        It runs for every sample the gateway sends: counts are kept per (period, device) by
        tag, and the period is recomputed only when a sample leaves it.
        """
        interval = self.interval
        out = Tally()
        periods = out.periods
        for device, samples in envelopes:
            last = out.last.get(device)
            if last is None:
                last = out.last[device] = {}
            known = self._last.get(device) or {}
            low = high = 0
            counts: dict[str, int] = {}
            for s in samples:
                tag, ts = s.tag, s.ts
                before = last.get(tag)
                if before is None:
                    before = known.get(tag)
                if before == ts:
                    continue
                last[tag] = ts
                if not low <= ts < high:
                    low = ts - ts % interval
                    high = low + interval
                    key = (low, high, device)
                    counts = periods.get(key) or periods.setdefault(key, {})
                counts[tag] = counts.get(tag, 0) + 1
            if not last:
                del out.last[device]
        return out

    def committed(self, tally: Tally) -> None:
        """``tally`` is in the outbox: its last timestamps are what the next one compares to."""
        for device, tags in tally.last.items():
            self._last.setdefault(device, {}).update(tags)

    def _end(self, now: int) -> int:
        """The end of the newest period that is over, grace included, at ``now``."""
        return (now - self.grace) // self.interval * self.interval

    def due(self, now: int, attested: Attested | None) -> int | None:
        """The ``to`` of the checkpoint to make at ``now`` (µs), or None if none is due."""
        if attested is not None and attested.upto is not None:
            return attested.upto  # partial checkpoints were made: the rest, at once
        end = self._end(now)
        if end <= (self._first_after if attested is None else attested.end):
            return None
        return end

    def next_due(self, attested: Attested | None) -> int:
        """When (µs) the next checkpoint is due."""
        if attested is not None and attested.upto is not None:
            return 0
        last = self._first_after if attested is None else attested.end
        return last + self.interval + self.grace

    def checkpoint(
        self,
        end: int,
        attested: Attested | None,
        rows: list[tuple[int, int, str, str, int]],
        limit: int = protocol.MAX_SAMPLES,
    ) -> tuple[protocol.Checkpoint, list[tuple[int, int, str, str, int]]]:
        """The next checkpoint of ``end`` from the counts ``rows`` that are due, and the rows
        it holds: the closing checkpoint if it holds them all, else a partial one.

        A checkpoint holds at most ``limit`` counts, and no two overlapping periods (after a
        change of the interval): the rows it cannot hold go into the next checkpoint of the
        same ``end``, made at once. ``rows`` may stop at ``limit + 1``: more do not change
        what this checkpoint holds.
        """
        periods: list[protocol.Period] = []
        taken: list[tuple[int, int, str, str, int]] = []
        group: list[protocol.Count] = []
        for i, row in enumerate(rows):
            start, stop, device, tag, samples = row
            if len(taken) == limit:
                break
            if periods and start < periods[-1].end:
                continue
            group.append(protocol.Count(device, tag, samples))
            taken.append(row)
            if i + 1 == len(rows) or rows[i + 1][:2] != (start, stop):
                periods.append(protocol.Period(start, stop, tuple(group)))
                group = []
        if group:  # cut short by the limit
            periods.append(protocol.Period(taken[-1][0], taken[-1][1], tuple(group)))
        if len(taken) < len(rows):
            begin = end  # partial: the closing checkpoint follows
        elif attested is None:
            begin = self._begin(end, periods)
        else:
            begin = attested.end
        checkpoint = protocol.Checkpoint(
            begin,
            end,
            0 if attested is None else attested.seq,
            protocol.GENESIS if attested is None else attested.hash,
            self.restarted,
            tuple(periods),
        )
        return checkpoint, taken

    def _begin(self, end: int, periods: Sequence[protocol.Period]) -> int:
        """Where a gateway's first closing checkpoint starts: one interval before its end, or
        at the oldest count of the first checkpoint made for it."""
        return min([end - self.interval] + [p.start for p in periods])

    def attested(self, before: Attested | None, envelope: protocol.Envelope) -> Attested:
        """What the checkpoint ``envelope`` leaves for the next one, made after ``before``."""
        cp = envelope.checkpoint
        if cp is None:
            raise ValueError(f"envelope #{envelope.seq} is not a checkpoint")
        if not cp.partial:
            return Attested(envelope.seq, envelope.digest, cp.end)
        start = self._begin(cp.end, cp.periods) if before is None else before.end
        return Attested(envelope.seq, envelope.digest, start, upto=cp.end)
