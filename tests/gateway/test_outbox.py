"""The outbox keeps every committed envelope through crashes and declares what it drops."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway._outbox import Dropped, Head, Outbox, OutboxError


def payload(seq: int, size: int = 100) -> bytes:
    return hashlib.sha256(str(seq).encode()).digest() * (size // 32) + bytes(size % 32)


def head(seq: int) -> Head:
    return Head(seq, hashlib.sha256(payload(seq)).digest())


def test_fifo_ack_and_head_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as box:
        assert box.head() is None
        assert box.depth() == (0, 0)
        for seq in range(1, 6):
            assert box.append([(seq, f"t/{seq}", payload(seq), 1)], head(seq)) == []
        entries = box.peek(3)
        assert [e.seq for e in entries] == [1, 2, 3]
        assert box.ack([entries[0].id, entries[1].id, 999_999]) == 2
    with Outbox(path) as box:
        assert box.head() == head(5)
        assert box.depth() == (3, 300)
        rest = box.peek(10)
        assert [(e.seq, e.topic, e.payload) for e in rest] == [
            (s, f"t/{s}", payload(s)) for s in (3, 4, 5)
        ]
        assert [e.seq for e in box.peek(10, after_id=rest[0].id)] == [4, 5]


def test_full_outbox_drops_oldest_and_reports_ranges(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=1000) as box:
        for seq in range(1, 11):
            assert box.append([(seq, "t", payload(seq), 1)], head(seq)) == []
        box.ack([box.peek(1)[0].id])  # seq 1 was delivered
        assert box.depth() == (9, 900)
        dropped = box.append([(11, "t", payload(11), 1), (12, "t", payload(12, 250), 1)], head(12))
        # 350 new bytes into 900 used of 1000: 250 must go, so seqs 2, 3, 4 (300 bytes)
        assert dropped == [Dropped(first=2, last=4, count=3, bytes=300, samples=3)]
        assert box.losses() == dropped
        assert box.depth() == (8, 950)
        assert [e.seq for e in box.peek(100)] == [5, 6, 7, 8, 9, 10, 11, 12]
        with pytest.raises(OutboxError, match="do not fit"):
            box.append([(13, "t", payload(13, 2000), 1)], head(13))
        assert box.head() == head(12)


def test_dropped_ranges_split_where_sequence_numbers_jump(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=500) as box:
        box.append([(1, "t", payload(1), 1), (2, "t", payload(2), 1)], head(2))
        box.append([(7, "t", payload(7), 1), (8, "t", payload(8), 1)], head(8))
        dropped = box.append([(9, "t", payload(9, 400), 1)], head(9))
        # 400 new bytes into 400 used of 500: 300 must go
        assert dropped == [Dropped(1, 2, 2, 200, 2), Dropped(7, 7, 1, 100, 1)]
        assert [e.seq for e in box.peek(10)] == [8, 9]


def test_pending_losses_last_until_an_append_settles_them(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, max_bytes=300) as box:
        for seq in range(1, 4):
            box.append([(seq, "t", payload(seq), 5)], head(seq))
        dropped = box.append([(4, "t", payload(4), 7)], head(4))
        assert dropped == [Dropped(1, 1, 1, 100, 5)]
    with Outbox(path, max_bytes=400) as box:  # a crash here must not forget the gap
        assert box.losses() == dropped
        box.append([(5, "loss", payload(5, 10), 0)], head(5), settles=dropped)
        assert box.losses() == []
        assert [e.seq for e in box.peek(10)] == [2, 3, 4, 5]


def test_contiguous_drops_extend_one_pending_loss_and_declarations_stay(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=300) as box:
        box.append([(1, "t", payload(1), 2), (2, "loss", payload(2, 50), 0)], head(2))
        for seq in range(3, 9):  # each append pushes the oldest data envelope out
            box.append([(seq, "t", payload(seq), 2)], head(seq))
        # 1 went first; the declaration 2 stayed; 3, 4, 5, 6 followed: two pending ranges
        assert box.losses() == [Dropped(1, 1, 1, 100, 2), Dropped(3, 6, 4, 400, 8)]
        assert [e.seq for e in box.peek(10)] == [2, 7, 8]


def test_not_an_outbox_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match=r"junk\.db"):
        Outbox(path).open()


def test_disk_full_fails_cleanly_and_keeps_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        box.append([(1, "t", payload(1), 1)], head(1))
        assert box._db is not None
        pages = box._db.execute("PRAGMA page_count").fetchone()[0]
        box._db.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLite's own "disk full"
        with pytest.raises(OutboxError, match="full"):
            box.append([(s, "t", payload(s, 4096), 1) for s in range(2, 10)], head(9))
        assert box.head() == head(1)
        assert [e.seq for e in box.peek(10)] == [1]


WRITER = textwrap.dedent(
    """
    import hashlib, sys
    from gateway._outbox import Head, Outbox
    box = Outbox(sys.argv[1]).open()
    seq = box.head().seq if box.head() else 0
    while True:
        seq += 1
        data = hashlib.sha256(str(seq).encode()).digest() * 8
        box.append([(seq, "t", data, 1)], Head(seq, hashlib.sha256(data).digest()))
        print(seq, flush=True)
    """
)


@pytest.mark.parametrize("round_", range(3))
def test_kill_9_loses_no_committed_envelope(tmp_path: Path, round_: int) -> None:
    path = tmp_path / "o.db"
    last_printed = 0
    for _ in range(3):  # kill the writer three times in a row, then check the whole history
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        for _ in range(50 + 37 * round_):
            last_printed = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    with Outbox(path) as box:
        top = box.head()
        assert top is not None
        assert top.seq >= last_printed
        entries = box.peek(100_000)
    assert [e.seq for e in entries] == list(range(1, top.seq + 1))
    for e in entries:
        assert e.payload == hashlib.sha256(str(e.seq).encode()).digest() * 8
    assert top.hash == hashlib.sha256(entries[-1].payload).digest()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def test_deletes_do_not_rewrite_what_they_free_and_the_old_reserve_file_goes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    reserve = path.with_name("o.db-reserve")  # earlier versions kept 8 MiB of zeros there
    reserve.write_bytes(bytes(1 << 20))
    with Outbox(path) as box:
        assert not reserve.exists()
        # deletes must not rewrite every freed page (Debian's SQLite zeroes them by default):
        # on a full disk they could not
        assert box._conn.execute("PRAGMA secure_delete").fetchone()[0] == 2  # FAST
        assert box.free_bytes() > 0
