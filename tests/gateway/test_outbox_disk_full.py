"""The outbox on a real, tiny filesystem (tmpfs, root only): ENOSPC during an append, an
acknowledgement and a WAL checkpoint fails cleanly, keeps everything committed, and the outbox
works again once there is room; commits stop at the reserve so acknowledgements always fit."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from _services import MqttServer
from _tinyfs import fill, tiny_filesystem

from gateway._outbox import Head, Outbox, OutboxDiskFull
from gateway._uplink import MqttSettings, Uplink

SIZE = 64 << 10  # bytes per envelope


def payload(seq: int) -> bytes:
    return hashlib.sha256(str(seq).encode()).digest() * (SIZE // 32)


def head(seq: int) -> Head:
    return Head(seq, hashlib.sha256(payload(seq)).digest())


def row(seq: int) -> tuple[int, str, bytes, int]:
    return seq, "t", payload(seq), 1


class Heedless(Outbox):
    """An outbox that sees plenty of room, as if another program filled the disk between its
    look and its write: SQLite itself meets ENOSPC."""

    def free_bytes(self) -> int:
        return 1 << 40


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tiny_filesystem(tmp_path / "disk", "6m") as mounted:
        yield mounted


def intact(box: Outbox, seqs: list[int]) -> None:
    entries = box.peek(1000)
    assert [e.seq for e in entries] == seqs
    assert all(e.payload == payload(e.seq) for e in entries)
    assert box._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def append_until_refused(box: Outbox) -> tuple[int, OutboxDiskFull]:
    """Append one envelope at a time until the outbox refuses; the last seq committed."""
    for seq in range(1, 1000):
        try:
            box.append([row(seq)], head(seq))
        except OutboxDiskFull as exc:
            return seq - 1, exc
    raise AssertionError("the outbox took 64 MB on a 6 MB disk")


def test_commits_stop_at_the_reserve_and_resume_once_acknowledged(disk: Path) -> None:
    reserve = 1 << 20
    with Outbox(disk / "o.db", reserve_bytes=reserve) as box:
        seq, refusal = append_until_refused(box)
        assert "disk full" in str(refusal)
        assert box.disk_full
        assert 20 < seq < 100  # about 6 MB minus the reserve, in 64 KiB envelopes
        assert box.head() == head(seq)
        assert box.free_bytes() >= reserve  # what acknowledgements need is still there
        intact(box, list(range(1, seq + 1)))
        # the broker acknowledges in small steps: every delete fits, none needs the commits' room
        entries = box.peek(1000)
        for entry in entries[: seq // 2]:
            assert box.ack([entry.id]) == 1
        box.append([row(seq + 1)], head(seq + 1))  # the room freed is taken again
        assert not box.disk_full
        intact(box, list(range(seq // 2 + 1, seq + 2)))


def test_enospc_during_an_append_commits_nothing(disk: Path) -> None:
    with Heedless(disk / "o.db", reserve_bytes=0) as box:
        box.append([row(1)], head(1))
        filler = disk / "other-program"
        fill(filler)
        with pytest.raises(OutboxDiskFull, match="full"):
            box.append([row(s) for s in range(2, 12)], head(11))
        assert box.disk_full
        assert box.head() == head(1)
        intact(box, [1])
        filler.unlink()
        box.append([row(s) for s in range(2, 12)], head(11))
        assert not box.disk_full
        intact(box, list(range(1, 12)))
    with Outbox(disk / "o.db") as box:
        assert box.head() == head(11)


def test_enospc_during_an_acknowledgement_keeps_the_entries(disk: Path) -> None:
    with Outbox(disk / "o.db", reserve_bytes=0) as box:
        box.append([row(s) for s in range(1, 21)], head(20))
        box.checkpoint()  # an empty WAL: the delete must grow it
        assert not (disk / "o.db-wal").stat().st_size
        filler = disk / "other-program"
        fill(filler)
        ids = [e.id for e in box.peek(10)]
        with pytest.raises(OutboxDiskFull, match="full"):
            box.ack(ids)
        intact(box, list(range(1, 21)))
        filler.unlink()
        assert box.ack(ids) == 10
        intact(box, list(range(11, 21)))


def test_enospc_during_a_checkpoint_keeps_the_wal(disk: Path) -> None:
    with Outbox(disk / "o.db", reserve_bytes=0) as box:
        box.append([row(1)], head(1))
        box.checkpoint()
        # 5 envelopes in the WAL only: the checkpoint must grow the file by about 330 kB
        box.append([row(s) for s in range(2, 7)], head(6))
        assert (disk / "o.db-wal").stat().st_size > 5 * SIZE
        filler = disk / "other-program"
        fill(filler)
        with pytest.raises(OutboxDiskFull, match="full"):
            box.checkpoint()
        intact(box, list(range(1, 7)))
        filler.unlink()
        box.checkpoint()
        assert not (disk / "o.db-wal").stat().st_size
        intact(box, list(range(1, 7)))
    db = sqlite3.connect(disk / "o.db")
    try:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 6
    finally:
        db.close()


def test_a_steady_load_on_a_full_disk_never_stalls_the_outbox(disk: Path) -> None:
    """The stall this replaces: new commits took the room acknowledgements freed, and the
    next acknowledgement found none. Here the broker acknowledges two envelopes for every
    three the gateway tries to commit, for 300 rounds, on a disk that is full from the start."""
    with Outbox(disk / "o.db", reserve_bytes=1 << 20) as box:
        seq, _ = append_until_refused(box)
        first_full = seq
        refused = 0
        for _ in range(300):
            for _ in range(3):
                try:
                    box.append([row(seq + 1)], head(seq + 1))
                    seq += 1
                except OutboxDiskFull:
                    refused += 1
            box.ack([e.id for e in box.peek(2)])  # never raises: the reserve is kept
        assert refused > 0  # the disk stayed full all along …
        assert seq - first_full > 500  # … and the outbox kept taking what was acknowledged
        kept = [e.seq for e in box.peek(1000)]
        assert kept == list(range(seq - len(kept) + 1, seq + 1))
        intact(box, kept)


async def test_the_uplink_keeps_its_connection_while_deletes_fail(
    disk: Path, mqtt_broker: MqttServer, caplog: pytest.LogCaptureFixture
) -> None:
    """PUBACKs arrive but the disk is too full to delete: the uplink keeps the ids, says so
    once, stays connected, and deletes them when room comes back."""
    topic = f"gt/v1/88.709.911/gw.disk{id(disk) % 10_000}/data"
    with Outbox(disk / "o.db", reserve_bytes=0) as box:
        box.append([(s, topic, b"envelope %d" % s, 1) for s in range(1, 51)], Head(50, bytes(32)))
        box.checkpoint()
        filler = disk / "other-program"
        fill(filler)
        settings = MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port, inflight=100)
        caplog.set_level(logging.INFO, logger="gateway._uplink")
        async with Uplink(box, settings) as uplink:
            async with asyncio.timeout(20):
                while uplink.stats.acks_timed < 50:  # noqa: ASYNC110 - polling a counter
                    await asyncio.sleep(0.01)
                await asyncio.sleep(2.5)  # a few rounds of retries
            assert box.depth()[0] == 50
            assert uplink.stats.acked == 0
            filler.unlink()
            await asyncio.wait_for(uplink.drained(), timeout=20)
            assert uplink.stats.acked == 50
            assert uplink.stats.connects == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot delete acknowledged envelopes" in m for m in messages) == 1
    assert not any("connection loop failed" in m for m in messages)
    assert any("deleted again" in m for m in messages)
