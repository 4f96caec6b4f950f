"""Injected faults: hang, drop, server restart; one event down, Bad samples, one event up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from edge import Batch, ConnectivityEvent, Quality, SampleStream
from edge.drivers.opcua import OpcUaDriver
from simulators import OpcUaEndpoint

Start = Callable[..., Awaitable[OpcUaEndpoint]]
Item = Batch | ConnectivityEvent


async def until(
    stream: SampleStream, seen: list[Item], done: Callable[[Item], bool], seconds: float
) -> Item:
    """Take items into ``seen`` until one satisfies ``done``; fail after ``seconds``."""
    async with asyncio.timeout(seconds):
        while True:
            item = await stream.get()
            seen.append(item)
            if done(item):
                return item


def is_event(up: bool) -> Callable[[Item], bool]:
    return lambda item: isinstance(item, ConnectivityEvent) and item.up is up


def good(item: Item) -> bool:
    return isinstance(item, Batch) and all(s.quality is Quality.GOOD for s in item.samples)


async def settled(driver: OpcUaDriver) -> None:
    """Until every device has a session with all its subscriptions made."""
    async with asyncio.timeout(5):
        for reader in driver.readers:
            await reader.settled.wait()
    assert all(r.session is not None for r in driver.readers)


def events(seen: list[Item]) -> list[bool]:
    return [i.up for i in seen if isinstance(i, ConnectivityEvent)]


async def test_hang_while_polling(sim: Any, make_server: Start) -> None:
    m = sim.machine("meter")
    server = await make_server(m)
    device = sim.device_for(m, server.url, interval="200ms", groups=False, timeout=0.5)
    stream = SampleStream()
    seen: list[Item] = []
    async with OpcUaDriver([device], stream) as driver:
        await until(stream, seen, good, 5)
        server.hang = True
        down = await until(stream, seen, is_event(False), 5)
        assert isinstance(down, ConnectivityEvent)
        assert "no answer" in down.reason
        # Bad samples for the group at its ticks, while the device stays down
        bad = [await until(stream, seen, lambda i: isinstance(i, Batch), 2) for _ in range(3)]
        for batch in bad:
            assert isinstance(batch, Batch)
            assert {s.tag for s in batch.samples} == {spec.name for spec in m.profile.tags}
            assert all(s.quality is Quality.BAD and s.value is None for s in batch.samples)
        server.hang = False
        await until(stream, seen, is_event(True), 10)
        await until(stream, seen, good, 5)
        (reader,) = driver.readers
        assert reader.stats.sessions == 2
    assert events(seen) == [False, True]


async def test_drop_while_subscribed(sim: Any, make_server: Start) -> None:
    m = sim.machine("kiln", live=True)
    server = await make_server(m)
    device = sim.device_for(m, server.url, mode="subscribe")
    stream = SampleStream()
    seen: list[Item] = []
    async with OpcUaDriver([device], stream) as driver:
        await settled(driver)
        await until(stream, seen, good, 5)
        assert server.drop() >= 1
        await until(stream, seen, is_event(False), 5)
        await until(stream, seen, is_event(True), 10)
        resumed = time.time_ns()
        # fresh notifications from the new session's subscriptions
        await until(
            stream,
            seen,
            lambda i: (
                good(i)
                and isinstance(i, Batch)
                and all((s.source_ts or 0) >= resumed - 1_000_000_000 for s in i.samples)
            ),
            5,
        )
        assert driver.readers[0].stats.sessions == 2
    assert events(seen) == [False, True]


async def test_server_restart_rebuilds_session_and_subscriptions(
    sim: Any, make_server: Start
) -> None:
    m = sim.machine("cnc", live=True)
    server = await make_server(m)
    device = sim.device_for(m, server.url, mode="subscribe", interval="500ms")
    groups = {g.name for g in device.groups}
    setpoints = {spec.name for spec in m.profile.tags if spec.writable}  # written once, at start
    stream = SampleStream()
    seen: list[Item] = []
    async with OpcUaDriver([device], stream) as driver:
        await settled(driver)
        await until(stream, seen, good, 5)
        server.restart(2.0)
        await until(stream, seen, is_event(False), 5)
        went_down = len(seen)
        back = await until(stream, seen, is_event(True), 15)
        while_down = [i for i in seen[went_down:] if isinstance(i, Batch)]
        # every group said Bad while the server was away
        assert {b.group for b in while_down} == groups
        assert all(s.quality is Quality.BAD for b in while_down for s in b.samples)
        after: set[str] = set()
        while after != groups:
            item = await until(stream, seen, good, 5)
            assert isinstance(item, Batch)
            fresh = [s for s in item.samples if s.tag not in setpoints]
            assert all((s.source_ts or 0) >= back.ts - 2_000_000_000 for s in fresh)
            after.add(item.group)
        (reader,) = driver.readers
        assert reader.stats.sessions == 2
        assert reader.session is not None
        assert len(reader.session.subscriptions) == len(groups)
    assert events(seen) == [False, True]


async def test_hang_while_subscribed_is_found_by_the_watchdog(sim: Any, make_server: Start) -> None:
    m = sim.machine("meter", live=True)
    server = await make_server(m)
    device = sim.device_for(m, server.url, mode="subscribe", groups=False, watchdog=0.5)
    stream = SampleStream()
    seen: list[Item] = []
    async with OpcUaDriver([device], stream) as driver:
        await settled(driver)
        await until(stream, seen, good, 5)
        server.hang = True  # connections stay open; nothing comes back
        down = await until(stream, seen, is_event(False), 5)
        assert isinstance(down, ConnectivityEvent)
        bad = await until(stream, seen, lambda i: isinstance(i, Batch), 3)
        assert isinstance(bad, Batch)
        assert all(s.quality is Quality.BAD for s in bad.samples)
        server.hang = False
        await until(stream, seen, is_event(True), 10)
        await until(stream, seen, good, 5)
    assert events(seen) == [False, True]
