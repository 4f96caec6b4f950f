"""The gateway's outbox: every envelope is on disk before it is published.

An envelope enters the outbox in the same SQLite transaction that advances the gateway's chain
head (sequence number and hash of the last envelope), so after a crash, even ``kill -9`` or a
power cut with ``synchronous=FULL``, the chain continues exactly where the committed data ends:
no sequence number is used twice and none is skipped without a record. Entries leave only when
the broker has acknowledged them (:meth:`Outbox.ack`).

The outbox is bounded by the bytes of the envelopes it holds. When a new envelope does not fit,
the oldest are dropped; the dropped ranges are returned and, in the same transaction, recorded
as pending losses (a range contiguous with a pending one extends it) that stay until the
gateway commits the signed loss envelope declaring them (``append(..., settles=...)``). A
crash between the drop and the declaration therefore cannot hide a gap. Entries without
samples (the loss declarations themselves) are never dropped: they are what makes a drop
visible, and they are few.

The SQLite file itself is a little larger than the payload bound (1.02–1.03 × ``max_bytes``
for 2–20 kB envelopes, ``bench/outbox_bench.py``), plus the WAL between checkpoints.

A full disk must not stop the outbox from draining: deleting acknowledged envelopes is a write
too (pages go to the WAL first), and SQLite keeps the pages it frees for its own reuse, so the
filesystem sees no more room after a delete than before it. The outbox therefore admits a
commit only if, measured with ``statvfs`` and counting the free pages SQLite will reuse, it
leaves :data:`RESERVE_BYTES` of the filesystem free; deletes and WAL checkpoints may use that
reserve, commits may not (near full, the WAL is truncated around commits and after deletes,
so its frames hold room only for a moment). A refused commit
raises :class:`OutboxDiskFull` before SQLite writes anything; it is taken again once
acknowledgements have freed room for it and a margin (so it does not flap). Control envelopes
(loss declarations, checkpoints: no samples) may use half of the reserve.

Errors::

    OutboxError             the outbox cannot be used (corrupt, unwritable, disk full)
     +-- OutboxDiskFull     no room for this commit: retry once acknowledgements freed some
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from gateway import _attest
from gateway._attest import Attested, Tally

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    samples INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS loss (
    first INTEGER PRIMARY KEY,
    last INTEGER NOT NULL,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    samples INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS head (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    bytes INTEGER NOT NULL
);
"""


_MAX_ID = 2**63 - 1
#: the room on the outbox's filesystem that commits leave free for deletes and checkpoints.
#: Deleting up to 256 acknowledged envelopes writes 8-40 kB to the WAL (secure_delete=FAST,
#: 2-20 kB envelopes, measured); deletes alone may grow the WAL to SQLite's auto-checkpoint,
#: 1,000 pages of 4 KiB, before it starts over: the reserve holds that.
RESERVE_BYTES = 4 << 20
#: pages a commit writes besides its envelopes' (b-tree interior pages, head, tally, loss)
_OVERHEAD_PAGES = 32
#: SQLite's default WAL auto-checkpoint, in pages: a WAL grows to about this before it restarts
_AUTOCHECKPOINT_PAGES = 1000
#: free bytes beyond the reserve that a fold of the counts' journal must find: it rewrites
#: pages of the summed counts (some 10 MB at 100,000 series) through the WAL
_FOLD_ROOM = 64 << 20
#: the per-frame header of a WAL frame
_FRAME_HEADER = 24

logger = logging.getLogger(__name__)


class OutboxError(Exception):
    """The outbox cannot be used; ``path`` names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"outbox {path}: {reason}")


class OutboxDiskFull(OutboxError):
    """The outbox's filesystem has no room for a commit beyond the reserve (or SQLite met
    ENOSPC): nothing was written; retry once acknowledgements have freed room."""


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    seq: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Head:
    """The last envelope committed: the next one gets ``seq + 1`` and ``prev_hash = hash``."""

    seq: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class Dropped:
    """Envelopes with sequence numbers ``first..last`` were dropped unsent to make room."""

    first: int
    last: int
    count: int
    bytes: int
    samples: int = 0


class Outbox:
    """Durable FIFO of encoded envelopes in one SQLite file (WAL mode); thread-safe."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 1 << 30,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        reserve_bytes: int = RESERVE_BYTES,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        #: True from a commit refused (or a delete failed) for want of space to the next
        #: commit that succeeds
        self.disk_full = False
        self._synchronous = synchronous
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._fold_failing = False
        self._page = 4096

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> Outbox:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            # Debian's SQLite zeroes every deleted page (SECURE_DELETE): an acknowledgement
            # would write as many bytes as it deletes, and need that much free disk. FAST
            # zeroes only what costs no extra I/O; the envelopes were published anyway.
            db.execute("PRAGMA secure_delete=FAST")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                db.close()
                raise OutboxError(self.path, f"integrity check failed: {check}")
            db.executescript(_SCHEMA)
            _attest.prepare(db)
        except sqlite3.DatabaseError as exc:
            raise OutboxError(self.path, str(exc)) from exc
        self._db = db
        self._page = int(db.execute("PRAGMA page_size").fetchone()[0])
        # earlier versions kept their reserve in a file of zeros; the reserve is free space now
        with contextlib.suppress(FileNotFoundError):
            self.path.with_name(self.path.name + "-reserve").unlink()
        return self

    def close(self) -> None:
        if self._db is not None:
            with self._lock:
                self._fold()  # or the next open does
            self._db.close()
            self._db = None

    def __enter__(self) -> Outbox:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError(self.path, "not open")
        return self._db

    # -- state ----------------------------------------------------------------------------------

    def head(self) -> Head | None:
        """The chain head, or None for a gateway that has never sent anything."""
        with self._lock:
            row = self._conn.execute("SELECT seq, hash FROM head").fetchone()
        return None if row is None else Head(row[0], bytes(row[1]))

    def attested(self) -> Attested | None:
        """The last checkpoint committed, or None before the first."""
        with self._lock:
            return _attest.read_attested(self._conn)

    def counts(self, upto: int, limit: int = -1) -> list[tuple[int, int, str, str, int]]:
        """Counts not yet attested of the periods that end by ``upto`` (µs), in contract
        order; the first ``limit`` (all for -1)."""
        with self._lock:
            return _attest.read_counts(self._conn, upto, limit)

    def last_ts(self) -> dict[tuple[str, str], int]:
        """The newest counted ``ts`` per (device, tag)."""
        with self._lock:
            return _attest.read_last(self._conn)

    def depth(self) -> tuple[int, int]:
        """(envelopes, payload bytes) waiting to be acknowledged."""
        with self._lock:
            count = self._conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
            return count, self._bytes()

    def _bytes(self) -> int:
        row = self._conn.execute("SELECT bytes FROM head").fetchone()
        return 0 if row is None else int(row[0])

    # -- writing --------------------------------------------------------------------------------

    def append(
        self,
        items: Iterable[tuple[int, str, bytes, int]],
        head: Head,
        *,
        settles: Iterable[Dropped] = (),
        tally: Tally | None = None,
        attests: tuple[Attested, list[tuple[int, int, str, str, int]]] | None = None,
    ) -> list[Dropped]:
        """Commit envelopes ``(seq, topic, payload, samples)`` and the new chain head at once.

        Returns the ranges dropped to stay within ``max_bytes`` (oldest first); they are also
        recorded as pending losses until an append ``settles`` them, i.e. commits the loss
        envelope that declares them. ``tally`` counts the envelopes' samples for the next
        checkpoint; ``attests`` is the checkpoint among ``items`` and the counts it holds.
        """
        rows = list(items)
        incoming = sum(len(p) for _, _, p, _ in rows)
        if incoming > self.max_bytes:
            raise OutboxError(self.path, f"{incoming} bytes do not fit in {self.max_bytes}")
        with self._lock:
            tight = self._admit(incoming, control=not any(r[3] for r in rows))
            db = self._conn
            try:
                db.execute("BEGIN IMMEDIATE")
                used = self._bytes()
                dropped = self._make_room(used + incoming - self.max_bytes)
                used -= sum(d.bytes for d in dropped)
                db.executemany(
                    "INSERT INTO outbox (seq, topic, payload, samples) VALUES (?, ?, ?, ?)", rows
                )
                db.execute(
                    "INSERT INTO head (one, seq, hash, bytes) VALUES (1, ?, ?, ?) "
                    "ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
                    "bytes = excluded.bytes",
                    (head.seq, head.hash, used + incoming),
                )
                db.executemany("DELETE FROM loss WHERE first = ?", [(d.first,) for d in settles])
                for d in dropped:
                    self._record_loss(d)
                if tally is not None:
                    tally.write(db)
                if attests is not None:
                    _attest.write_attested(db, *attests)
                db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise self._failed(exc) from exc
            self.disk_full = False
            if tight:  # give the WAL's room back now: acknowledgements need it
                with contextlib.suppress(OutboxError):
                    self._checkpoint()
            elif tally is not None and _attest.journal_full(db):
                self._fold()
        return dropped

    def _fold(self) -> None:
        """Fold the counts' journal in a transaction of its own, after a commit; not while
        room is short (the journal waits, exact as it is, to be folded later)."""
        try:
            if self.free_bytes() - self.reserve_bytes < _FOLD_ROOM:
                return
            _attest.fold_journal(self._conn)
        except (sqlite3.DatabaseError, OSError) as exc:
            if not self._fold_failing:
                logger.warning(
                    "outbox %s: counts not folded (%s); trying again later", self.path, exc
                )
            self._fold_failing = True
        else:
            self._fold_failing = False

    # -- room on disk ---------------------------------------------------------------------------

    def free_bytes(self) -> int:
        """Bytes free on the outbox's filesystem for an unprivileged writer (``statvfs``)."""
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it: the WAL's room goes back to the disk."""
        with self._lock:
            self._checkpoint()

    def _checkpoint(self) -> bool:
        """Whether the WAL is now empty (a checkpoint stops short while a reader needs it)."""
        try:
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc) from exc
        return not busy

    def _admit(self, incoming: int, *, control: bool) -> bool:
        """Refuse a commit of ``incoming`` payload bytes that would eat into the reserve;
        whether room is tight (the caller then checkpoints after the commit).

        A commit writes its pages to the WAL, and the checkpoint then copies them into the
        file, which grows unless SQLite has free pages to reuse; so, counted without reuse,
        a commit may need twice its size. Near full, the WAL is checkpointed and truncated
        before the commit and again after it: its frames then hold room only for a moment, and
        may take it from half of the reserve; the file's growth must leave all of it.
        """
        page, frame = self._page, self._page + _FRAME_HEADER
        floor = self.reserve_bytes // 2 if control else self.reserve_bytes
        pages = -(-incoming * 11 // (10 * page)) + _OVERHEAD_PAGES
        free = self.free_bytes()
        if free - floor >= pages * (page + frame) + _AUTOCHECKPOINT_PAGES * frame:
            return False
        truncated = self._checkpoint()
        try:
            reusable = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc) from exc
        # once refused, wait for acknowledgements to free a margin more, so as not to flap
        margin = self.reserve_bytes // 4 // page if self.disk_full and self._bytes() > 0 else 0
        grows = max(0, pages + margin - reusable) * page
        passing = pages * frame + (0 if truncated else _AUTOCHECKPOINT_PAGES * frame)
        free = self.free_bytes()
        # what the file grows by is gone for good, the WAL's frames only until the checkpoint
        if (grows and free - grows < floor) or free - grows - passing < floor // 2:
            self.disk_full = True
            raise OutboxDiskFull(
                self.path,
                f"disk full: {free} bytes free; a commit of {incoming} bytes needs {grows} "
                f"more in the file and {passing} in passing, and {floor} are kept for "
                "acknowledgements",
            )
        return True

    def _failed(self, exc: sqlite3.DatabaseError) -> OutboxError:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_FULL:
            self.disk_full = True
            return OutboxDiskFull(self.path, f"disk full: {exc}")
        return OutboxError(self.path, str(exc))

    def _record_loss(self, d: Dropped) -> None:
        extended = self._conn.execute(
            "UPDATE loss SET last = ?, count = count + ?, bytes = bytes + ?, samples = samples + ? "
            "WHERE last = ? RETURNING first",
            (d.last, d.count, d.bytes, d.samples, d.first - 1),
        ).fetchone()
        if extended is None:
            self._conn.execute(
                "INSERT INTO loss (first, last, count, bytes, samples) VALUES (?, ?, ?, ?, ?)",
                (d.first, d.last, d.count, d.bytes, d.samples),
            )

    def losses(self) -> list[Dropped]:
        """Dropped ranges that no committed loss envelope declares yet, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT first, last, count, bytes, samples FROM loss ORDER BY first"
            ).fetchall()
        return [Dropped(*row) for row in rows]

    def _make_room(self, excess: int) -> list[Dropped]:
        """Delete the oldest entries until ``excess`` bytes are freed; inside a transaction."""
        if excess <= 0:
            return []
        victims: list[tuple[int, int, int, int]] = []
        freed = 0
        for row_id, seq, size, samples in self._conn.execute(
            "SELECT id, seq, length(payload), samples FROM outbox WHERE samples > 0 ORDER BY id"
        ):
            victims.append((row_id, seq, size, samples))
            freed += size
            if freed >= excess:
                break
        if freed < excess:
            raise OutboxError(self.path, "full of loss declarations: nothing left to drop")
        self._conn.execute("DELETE FROM outbox WHERE samples > 0 AND id <= ?", (victims[-1][0],))
        ranges: list[Dropped] = []
        for _, seq, size, samples in victims:
            last = ranges[-1] if ranges else None
            if last is not None and seq == last.last + 1:
                ranges[-1] = Dropped(
                    last.first, seq, last.count + 1, last.bytes + size, last.samples + samples
                )
            else:
                ranges.append(Dropped(seq, seq, 1, size, samples))
        return ranges

    # -- reading and acknowledging --------------------------------------------------------------

    def peek(self, limit: int, after_id: int = 0, upto_id: int | None = None) -> list[Entry]:
        """Up to ``limit`` oldest entries with ``after_id < id <= upto_id``, in commit order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, seq, topic, payload FROM outbox WHERE id > ? AND id <= ? "
                "ORDER BY id LIMIT ?",
                (after_id, _MAX_ID if upto_id is None else upto_id, limit),
            ).fetchall()
        return [Entry(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def last_id(self) -> int:
        """The id of the newest entry (0 when empty): what is committed later is newer."""
        with self._lock:
            return int(self._conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0])

    def ack(self, ids: Iterable[int]) -> int:
        """Delete acknowledged entries; unknown ids (already dropped) are ignored."""
        keys = [(i,) for i in ids]
        if not keys:
            return 0
        with self._lock:
            db = self._conn
            try:
                db.execute("BEGIN IMMEDIATE")
                removed = freed = 0
                for (key,) in keys:
                    row = db.execute(
                        "DELETE FROM outbox WHERE id = ? RETURNING length(payload)", (key,)
                    ).fetchone()
                    if row is not None:
                        removed += 1
                        freed += row[0]
                db.execute("UPDATE head SET bytes = bytes - ?", (freed,))
                db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise self._failed(exc) from exc
            if self.disk_full:  # the WAL's room goes back to the disk for the next ones
                with contextlib.suppress(OutboxError):
                    self._checkpoint()
        return removed
