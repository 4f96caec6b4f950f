"""What the gateway attests: per series and period of sample time, the samples it accepted.

Counting happens as envelopes are committed: :meth:`Attestor.tally` counts the samples of
the envelopes of one outbox transaction, and the outbox writes the counts in that same
transaction (:meth:`Tally.write`), so a count exists exactly when its samples are committed,
whatever kills the gateway. A checkpoint takes the counts of every period that is over and
deletes them in the transaction that commits it, and records itself as the predecessor of
the next one (docs/protocol.md, "Checkpoints").

A sample whose ``ts`` equals the previous sample's of the same series is not counted: the
store keeps one sample per ``(series, ts)``, and an OPC UA value polled again unchanged keeps
its source timestamp. The last ``ts`` per series is kept in the outbox with the counts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway import protocol

SCHEMA = """
CREATE TABLE IF NOT EXISTS tally (
    start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    device TEXT NOT NULL,
    tag TEXT NOT NULL,
    samples INTEGER NOT NULL,
    PRIMARY KEY (start, period_end, device, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS last_ts (
    device TEXT NOT NULL,
    tag TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (device, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attested (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    period_end INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Attested:
    """The last checkpoint committed: the next names it and starts at its ``end``."""

    seq: int
    hash: bytes
    end: int


@dataclass(slots=True)
class Tally:
    """The counts of one outbox transaction, and the new last ``ts`` of the series it saw."""

    counts: dict[tuple[int, int, str, str], int] = field(default_factory=dict)
    last: dict[tuple[str, str], int] = field(default_factory=dict)

    def write(self, db: sqlite3.Connection) -> None:
        """Add the counts to the outbox; inside the caller's transaction."""
        db.executemany(
            "INSERT INTO tally (start, period_end, device, tag, samples) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET samples = samples + excluded.samples",
            [(*key, n) for key, n in self.counts.items()],
        )
        db.executemany(
            "INSERT INTO last_ts (device, tag, ts) VALUES (?, ?, ?) "
            "ON CONFLICT DO UPDATE SET ts = excluded.ts",
            [(*key, ts) for key, ts in self.last.items()],
        )


def write_attested(
    db: sqlite3.Connection, attested: Attested, rows: Sequence[tuple[int, int, str, str, int]]
) -> None:
    """Record the checkpoint and forget the counts it attests; inside the caller's transaction."""
    db.executemany(
        "DELETE FROM tally WHERE start = ? AND period_end = ? AND device = ? AND tag = ?",
        [row[:4] for row in rows],
    )
    db.execute(
        "INSERT INTO attested (one, seq, hash, period_end) VALUES (1, ?, ?, ?) "
        "ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
        "period_end = excluded.period_end",
        (attested.seq, attested.hash, attested.end),
    )


def read_attested(db: sqlite3.Connection) -> Attested | None:
    row = db.execute("SELECT seq, hash, period_end FROM attested").fetchone()
    return None if row is None else Attested(row[0], bytes(row[1]), row[2])


def read_counts(db: sqlite3.Connection, upto: int) -> list[tuple[int, int, str, str, int]]:
    """(start, end, device, tag, samples) of the periods over by ``upto``, in contract order."""
    rows = db.execute(
        "SELECT start, period_end, device, tag, samples FROM tally WHERE period_end <= ?",
        (upto,),
    ).fetchall()
    # code-point order, as the contract says (SQLite's default collation compares bytes of
    # UTF-8, which is the same order, but sorting here says it where it matters)
    return sorted(rows)


def read_last(db: sqlite3.Connection) -> dict[tuple[str, str], int]:
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

        It runs for every sample the gateway sends: per device, counts are kept by (period
        start, tag) and the period is recomputed only when a sample leaves it.
        """
        interval = self.interval
        #: device → (tag → last ts, (period start, tag) → samples)
        per_device: dict[str, tuple[dict[str, int], dict[tuple[int, str], int]]] = {}
        for device, samples in envelopes:
            state = per_device.get(device)
            if state is None:
                state = per_device[device] = ({}, {})
            last, counts = state
            known = self._last.get(device) or {}
            low = high = 0
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
                key = (low, tag)
                counts[key] = counts.get(key, 0) + 1
        out = Tally()
        for device, (last, counts) in per_device.items():
            for (low, tag), n in counts.items():
                out.counts[low, low + interval, device, tag] = n
            for tag, ts in last.items():
                out.last[device, tag] = ts
        return out

    def committed(self, tally: Tally) -> None:
        """``tally`` is in the outbox: its last timestamps are what the next one compares to."""
        for (device, tag), ts in tally.last.items():
            self._last.setdefault(device, {})[tag] = ts

    def _end(self, now: int) -> int:
        """The end of the newest period that is over, grace included, at ``now``."""
        return (now - self.grace) // self.interval * self.interval

    def due(self, now: int, attested: Attested | None) -> int | None:
        """The ``to`` of the checkpoint to make at ``now`` (µs), or None if none is due."""
        end = self._end(now)
        if end <= (self._first_after if attested is None else attested.end):
            return None
        return end

    def next_due(self, attested: Attested | None) -> int:
        """When (µs) the next checkpoint is due."""
        last = self._first_after if attested is None else attested.end
        return last + self.interval + self.grace

    def checkpoint(
        self, end: int, attested: Attested | None, rows: list[tuple[int, int, str, str, int]]
    ) -> tuple[protocol.Checkpoint, list[tuple[int, int, str, str, int]]]:
        """The checkpoint closing ``end`` from the counts ``rows``, and the rows it holds.

        Rows it cannot hold wait for the next checkpoint, which counts them under their own
        period: those beyond the contract's 10,000 counts, and those of a period overlapping
        one already taken (after a change of the interval).
        """
        periods: list[protocol.Period] = []
        taken: list[tuple[int, int, str, str, int]] = []
        group: list[protocol.Count] = []
        for i, row in enumerate(rows):
            start, stop, device, tag, samples = row
            if len(taken) == protocol.MAX_SAMPLES:
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
        if attested is None:
            begin = min([end - self.interval] + [p.start for p in periods])
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
