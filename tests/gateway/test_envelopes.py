"""Edge batches become signed, chained envelopes in the outbox; dropped ones are declared."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as p
from edge import Batch, ConnectivityEvent, Quality, Sample, SampleStream
from gateway._envelopes import EnvelopeWriter, to_wire
from gateway._outbox import Outbox

GW = "88.709.911/gw.1"
DEVICES = {"kiln": "88.709.911/dev.kiln", "cnc": "88.709.911/dev.cnc"}
NS = 1_764_000_000_000_000_000


def batch(device: str, start: int, count: int) -> Batch:
    samples = tuple(
        Sample(f"t{i}", float(i), Quality.GOOD, NS + i * 1000) for i in range(start, start + count)
    )
    return Batch(device, "g", samples)


def decoded(box: Outbox, key: Ed25519PrivateKey) -> list[p.Envelope]:
    public = p.public_key_bytes(key)
    out = []
    for entry in box.peek(100_000):
        signed = p.decode_json(entry.payload)
        signed.verify(public)
        p.check_topic(entry.topic, signed.envelope)
        assert entry.seq == signed.envelope.seq
        out.append(signed.envelope)
    return out


def assert_chained(envelopes: list[p.Envelope], first_prev: bytes = p.GENESIS) -> None:
    prev = first_prev
    for i, env in enumerate(envelopes):
        assert env.seq == envelopes[0].seq + i
        assert env.prev == prev
        prev = env.digest


def test_edge_samples_map_onto_the_wire_contract() -> None:
    assert to_wire(Sample("a", 1.5, Quality.GOOD, NS + 999)) == p.Sample("a", NS // 1000, 1.5)
    assert to_wire(Sample("a", None, Quality.GOOD, 5_000, NS)).ts == NS // 1000  # source ts
    nan = to_wire(Sample("a", math.nan, Quality.GOOD, NS))
    assert (nan.value, nan.quality) == (None, p.Quality.UNCERTAIN)
    bad_inf = to_wire(Sample("a", math.inf, Quality.BAD, NS))
    assert (bad_inf.value, bad_inf.quality) == (None, p.Quality.BAD)
    assert to_wire(Sample("a", b"\x01\xff", Quality.GOOD, NS)).value == "01ff"
    assert to_wire(Sample("a", 2**60, Quality.GOOD, NS)).value == str(2**60)
    assert to_wire(Sample("a", 2**53, Quality.GOOD, NS)).value == 2**53


async def test_batches_become_chained_signed_envelopes_cut_by_size(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    with Outbox(tmp_path / "o.db") as box:
        stream = SampleStream()
        async with EnvelopeWriter(box, key, GW, DEVICES, max_samples=100, max_delay=60) as w:
            consumer = asyncio.create_task(w.consume(stream))
            for n in range(5):
                await stream.put(batch("kiln", n * 70, 70))
            await stream.put(ConnectivityEvent("cnc", up=False, ts=NS, reason="timeout"))
            await stream.put(batch("cnc", 0, 3))
            stream.close()
            await consumer
        envelopes = decoded(box, key)
        assert w.stats.device_events == 1
    # 350 kiln samples: 3 full envelopes while running, 50 + 3 cnc flushed at the stop
    kiln = [e for e in envelopes if e.device == DEVICES["kiln"]]
    assert [len(e.samples) for e in kiln] == [100, 100, 100, 50]
    assert [s.tag for e in kiln for s in e.samples] == [f"t{i}" for i in range(350)]
    assert [len(e.samples) for e in envelopes if e.device == DEVICES["cnc"]] == [3]
    assert_chained(envelopes)
    assert w.stats.samples == 353


async def test_a_quiet_device_is_flushed_after_max_delay(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    with Outbox(tmp_path / "o.db") as box:
        commits = asyncio.Event()
        async with EnvelopeWriter(
            box, key, GW, DEVICES, max_samples=500, max_delay=0.05, on_commit=commits.set
        ) as writer:
            writer.add(batch("kiln", 0, 2))
            await asyncio.wait_for(commits.wait(), timeout=5)
            assert [len(e.samples) for e in decoded(box, key)] == [2]


async def test_the_chain_continues_across_restarts(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "o.db"
    for round_ in range(3):
        with Outbox(path) as box:
            async with EnvelopeWriter(box, key, GW, DEVICES, max_samples=10) as writer:
                writer.add(batch("kiln", round_ * 25, 25))
    with Outbox(path) as box:
        envelopes = decoded(box, key)
    assert [len(e.samples) for e in envelopes] == [10, 10, 5] * 3
    assert_chained(envelopes)


async def test_a_full_outbox_declares_exactly_what_it_dropped(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    with Outbox(tmp_path / "o.db", max_bytes=40_000) as box:
        async with EnvelopeWriter(box, key, GW, DEVICES, max_samples=50) as writer:
            for n in range(40):  # ≈2.2 kB an envelope: about 18 fit
                writer.add(batch("kiln", n * 50, 50))
        envelopes = decoded(box, key)
        assert box.losses() == []
    data = [e for e in envelopes if e.kind is p.Kind.DATA]
    losses = [e for e in envelopes if e.kind is p.Kind.LOSS]
    assert losses, "the outbox overflowed, so a loss envelope must declare it"
    declared = {seq for e in losses for seq in range(e.loss.first, e.loss.last + 1)}  # type: ignore[union-attr]
    kept = {e.seq for e in envelopes}
    # every number up to the head is either still in the outbox or declared lost, never both
    assert declared | kept == set(range(1, envelopes[-1].seq + 1))
    assert not declared & kept
    dropped_samples = sum(e.loss.samples for e in losses)  # type: ignore[union-attr]
    assert dropped_samples + sum(len(e.samples) for e in data) == 40 * 50
    assert writer.stats.dropped_envelopes == len(declared)
    assert_chained(envelopes, first_prev=envelopes[0].prev)


async def test_a_full_disk_holds_the_samples_back_until_the_outbox_takes_them(
    tmp_path: Path,
) -> None:
    key = Ed25519PrivateKey.generate()
    with Outbox(tmp_path / "o.db") as box:
        assert box._db is not None
        pages = box._db.execute("PRAGMA page_count").fetchone()[0]
        async with EnvelopeWriter(box, key, GW, DEVICES, max_samples=50, max_delay=0.01) as w:
            with box._lock:  # the committer thread uses the connection too
                box._db.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLite's "disk full"
            for n in range(20):
                w.add(batch("kiln", n * 50, 50))
            async with asyncio.timeout(10):
                while w.stats.commit_errors < 2:  # noqa: ASYNC110 - polling a counter
                    await asyncio.sleep(0.01)
            assert w.stats.samples < 1000
            with box._lock:
                box._db.execute("PRAGMA max_page_count = 1073741823")  # space is freed
            async with asyncio.timeout(20):
                while w.stats.samples < 1000:  # noqa: ASYNC110 - polling a counter
                    await asyncio.sleep(0.01)
        envelopes = decoded(box, key)
    assert [s.tag for e in envelopes for s in e.samples] == [f"t{i}" for i in range(1000)]
    assert_chained(envelopes)
