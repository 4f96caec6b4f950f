"""Fault scenarios with the gateway in the test process, fed batches as fast as it takes them:
source time is compressed, the volume of data is not.

The gateway is the real one (envelope writer, outbox on disk, signing, MQTT uplink); only
the drivers are replaced by the test putting batches into its sample stream, so an hour of
polling takes a minute or two. The uplink goes through a :class:`_harness.Link` the test cuts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _tinyfs import tiny_filesystem
from faults._harness import Outcome, Plant, feed, load_average

from gateway._runtime import Gateway

Record = Callable[[Outcome], Outcome]

#: seconds of uplink outage at 1,000 samples/s; scripts/faults sets the full hour
OUTAGE_SECONDS = int(os.environ.get("GUANTONG_FAULT_OUTAGE_SECONDS", "60"))
DEVICES, TAGS = 10, 10  # polled every 100 ms of source time: 1,000 samples/s


def check(row: Outcome) -> None:
    assert row.passed, f"{row.scenario}: {row.verdict} ({'; '.join(row.notes)})"


async def test_uplink_outage_at_1000_samples_per_second(
    pg_dsn: str, plant_factory: Any, outcome: Record
) -> None:
    """The uplink is cut for ``OUTAGE_SECONDS`` of source time at 1,000 samples/s; the
    outbox keeps every envelope and delivers the backlog when the link is back."""
    plant: Plant = await plant_factory(pg_dsn, fed=(DEVICES, TAGS), via_link=True)
    assert plant.config is not None
    assert plant.link is not None
    polls = OUTAGE_SECONDS * 10
    loop = asyncio.get_running_loop()
    async with Gateway(plant.config, drain_timeout=600) as gw:
        await feed(gw.stream, DEVICES, TAGS, range(20))  # two seconds with the link up
        await plant.grows()
        await plant.link.cut()
        started = loop.time()
        put = await feed(gw.stream, DEVICES, TAGS, range(20, 20 + polls))
        await plant.kit_wait(lambda: gw.writer.stats.samples >= put + 20 * DEVICES * TAGS)
        committed = loop.time() - started
        backlog = gw.outbox.depth()
        assert gw.uplink.stats.connected is False
        await plant.link.mend()
        started = loop.time()
        await asyncio.wait_for(gw.uplink.drained(), timeout=1800)
        delivered = loop.time() - started
    row = outcome(
        await plant.reconcile(
            f"uplink outage, {OUTAGE_SECONDS} s at 1,000 samples/s", within=120 + OUTAGE_SECONDS
        )
    )
    row.notes.append(
        f"{put} samples in {committed:.1f} s; backlog of {backlog[0]} envelopes "
        f"({backlog[1] / 1e6:.1f} MB) delivered in {delivered:.1f} s; "
        f"load average {load_average()}"
    )
    assert put == OUTAGE_SECONDS * 1000
    assert backlog[0] > 0
    check(row)


async def test_outbox_limit_reached_declares_the_loss(
    pg_dsn: str, plant_factory: Any, outcome: Record
) -> None:
    """A long outage fills the outbox up to its ``max_bytes``: the oldest envelopes go, and
    the gateway declares each dropped range in a signed loss envelope."""
    plant: Plant = await plant_factory(
        pg_dsn, fed=(DEVICES, TAGS), via_link=True, outbox_max_bytes=16 << 20
    )
    assert plant.config is not None
    assert plant.link is not None
    async with Gateway(plant.config, drain_timeout=120) as gw:
        await feed(gw.stream, DEVICES, TAGS, range(10))
        await plant.grows()
        await plant.link.cut()
        # 600,000 samples, ≈23 MB: beyond the smallest outbox a config may set (16 MiB)
        put = await feed(gw.stream, DEVICES, TAGS, range(10, 6010))
        await plant.kit_wait(lambda: gw.writer.stats.samples >= put + 10 * DEVICES * TAGS)
        await plant.link.mend()
        await asyncio.wait_for(gw.uplink.drained(), timeout=120)
    dropped = gw.writer.stats.dropped_envelopes
    row = outcome(await plant.reconcile("outbox limit reached during an outage"))
    row.notes.append(f"{dropped} envelopes dropped, declared in {row.lost} lost samples")
    assert dropped > 0
    assert row.lost > 0
    check(row)


async def test_disk_full_on_the_gateway(
    pg_dsn: str, plant_factory: Any, outcome: Record, tmp_path: Path
) -> None:
    """The outbox lives on a 24 MB filesystem and the uplink is cut: the disk fills (a real
    ENOSPC), the gateway stops taking samples instead of losing them, and once the link is
    back and the backlog delivered it takes them again."""
    with tiny_filesystem(tmp_path / "disk", "24m") as disk:
        plant: Plant = await plant_factory(
            pg_dsn, fed=(DEVICES, TAGS), via_link=True, outbox_dir=disk
        )
        assert plant.config is not None
        assert plant.link is not None
        async with Gateway(plant.config, drain_timeout=10) as gw:
            await feed(gw.stream, DEVICES, TAGS, range(10))
            await plant.grows()
            await plant.link.cut()
            # 1,400,000 samples, ≈53 MB: twice what the disk holds
            feeding = asyncio.create_task(feed(gw.stream, DEVICES, TAGS, range(10, 14010)))
            await plant.kit_wait(lambda: gw.writer.stats.commit_errors > 0, within=60)
            blocked = not feeding.done()
            reported = gw.outbox.disk_full  # what /healthz and the metrics show
            await asyncio.sleep(1)
            await plant.link.mend()
            put = await asyncio.wait_for(feeding, timeout=90)
            await plant.kit_wait(lambda: gw.writer.stats.samples >= put + 10 * DEVICES * TAGS,
                                 within=60)  # fmt: skip
            await asyncio.wait_for(gw.uplink.drained(), timeout=60)
            errors = gw.writer.stats.commit_errors
            recovered = not gw.outbox.disk_full
        row = outcome(await plant.reconcile("disk full on the gateway (24 MB tmpfs)"))
    row.notes.append(f"{errors} commits refused with the disk full; the feed waited: {blocked}")
    assert blocked
    assert reported
    assert recovered
    check(row)
