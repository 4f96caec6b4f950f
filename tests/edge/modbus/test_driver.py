"""The Modbus driver against the project's simulators over real TCP, faults included."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from edge import Batch, ConnectivityEvent, Quality, Sample, SampleStream
from edge.drivers.modbus.driver import DeviceReader, ModbusDriver
from simulators import ModbusEndpoint

Start = Callable[..., Awaitable[ModbusEndpoint]]


def events(items: list[Batch | ConnectivityEvent]) -> list[tuple[str, bool]]:
    return [(e.device, e.up) for e in items if isinstance(e, ConnectivityEvent)]


async def poll_all(reader: DeviceReader) -> tuple[list[Sample], list[ConnectivityEvent]]:
    samples: list[Sample] = []
    happened: list[ConnectivityEvent] = []
    for group in reader.plan.groups:
        got, events = await reader.poll(group)
        samples += got
        happened += events
    return samples, happened


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_every_profile_type_and_order_reads_exactly(sim: Any, make_endpoint: Start) -> None:
    machines = [sim.machine(p, unit_id=i + 1) for i, p in enumerate(sim.PROFILES)]
    endpoint = await make_endpoint(*machines)
    driver = ModbusDriver([sim.device_for(m, endpoint.port) for m in machines])
    try:
        first = await driver.read_once()
        splits = sum(r.stats.splits for r in driver.readers)
        second = await driver.read_once()  # with the plan learnt from the first
    finally:
        driver.close()
    assert len(driver.links) == 1  # seven unit ids behind one endpoint share one connection
    for items in (first, second):
        assert events(items) == []
        for m in machines:
            for name, value in sim.expected(m).items():
                sample = next(
                    s
                    for item in items
                    if isinstance(item, Batch) and item.device == m.name
                    for s in item.samples
                    if s.tag == name
                )
                assert sample.quality is Quality.GOOD, (m.name, name)
                assert sample.value == value, (m.name, name)
                assert type(sample.value) is type(value), (m.name, name)
    types = {spec.type for m in machines for spec in m.profile.tags}
    orders = {spec.order for m in machines for spec in m.profile.tags if spec.order}
    assert {"bool", "int16", "uint16", "int32", "uint32", "float32", "string"} <= types
    assert {"ABCD", "CDAB", "BADC"} <= orders
    # holes the simulator refuses (illegal address) were learnt once, not retried every poll
    assert splits > 0
    assert sum(r.stats.splits for r in driver.readers) == splits


@pytest.mark.parametrize("holes", ["zero", "refuse"])
async def test_a_line_plc_reads_exactly_in_full_requests(
    sim: Any, make_endpoint: Start, holes: str
) -> None:
    """Hundreds of tags of every type and order, scattered: with readable gaps the planned
    125-register requests are read whole, each decoded by its compiled program; with refused
    gaps the driver splits them, and either way every value is the one predicted."""
    plc = sim.machine("plc-400")
    endpoint = await make_endpoint(plc, holes=holes)
    driver = ModbusDriver([sim.device_for(plc, endpoint.port)])
    try:
        items = await driver.read_once()
        again = await driver.read_once()
    finally:
        driver.close()
    reader = driver.readers[0]
    planned = reader.plan.request_count
    assert 400 / planned > 20  # packed: dozens of tags per request
    if holes == "zero":
        assert reader.stats.splits == 0
    else:
        assert reader.stats.splits > 0
    want = sim.expected(plc)
    for batches in (items, again):
        got = {s.tag: s for b in batches if isinstance(b, Batch) for s in b.samples}
        assert got.keys() == want.keys()
        for name, value in want.items():
            assert got[name].quality is Quality.GOOD, name
            assert got[name].value == value, name
            assert type(got[name].value) is type(value), name


async def test_hang_gives_one_event_bad_samples_then_recovery(
    sim: Any, make_endpoint: Start
) -> None:
    m = sim.machine("kiln")
    endpoint = await make_endpoint(m)
    driver = ModbusDriver([sim.device_for(m, endpoint.port)])
    (reader,) = driver.readers
    try:
        samples, happened = await poll_all(reader)
        assert happened == []
        endpoint.hang = True
        down: list[ConnectivityEvent] = []
        bad: list[Sample] = []
        for _ in range(3):
            samples, happened = await poll_all(reader)
            down += happened
            bad += samples
        assert [(e.device, e.up) for e in down] == [(m.name, False)]
        assert "no answer" in down[0].reason
        assert {s.tag for s in bad} == {spec.name for spec in m.profile.tags}
        assert all(s.quality is Quality.BAD and s.value is None for s in bad)
        assert reader.stats.timeouts == 1  # further polls waited for the backoff, without I/O
        endpoint.hang = False
        await asyncio.sleep(0.25)  # past the backoff (at most backoff_max = 0.2 s)
        samples, happened = await poll_all(reader)
        assert [(e.device, e.up) for e in happened] == [(m.name, True)]
        assert all(s.quality is Quality.GOOD for s in samples)
        assert {s.tag: s.value for s in samples} == sim.expected(m)
        tags = len(m.profile.tags)
        assert (reader.stats.samples, reader.stats.bad_samples) == (5 * tags, 3 * tags)
    finally:
        driver.close()


async def test_dropped_connections_are_reopened_without_losing_a_poll(
    sim: Any, make_endpoint: Start
) -> None:
    m = sim.machine("meter")
    endpoint = await make_endpoint(m)
    driver = ModbusDriver([sim.device_for(m, endpoint.port)])
    (reader,) = driver.readers
    try:
        await poll_all(reader)
        assert endpoint.drop() == 1
        await asyncio.sleep(0.05)
        samples, happened = await poll_all(reader)
        assert happened == []
        assert all(s.quality is Quality.GOOD for s in samples)
        assert reader.link.connects == 2
    finally:
        driver.close()


async def test_busy_is_retried_within_bounds(sim: Any, make_endpoint: Start) -> None:
    m = sim.machine("compressor")
    endpoint = await make_endpoint(m)
    driver = ModbusDriver([sim.device_for(m, endpoint.port, busy_retries=3)])
    (reader,) = driver.readers
    try:
        m.faults.exception = 6
        asyncio.get_running_loop().call_later(0.08, setattr, m.faults, "exception", None)
        samples, happened = await poll_all(reader)
        assert happened == []
        assert all(s.quality is Quality.GOOD for s in samples)
        assert {s.tag: s.value for s in samples} == sim.expected(m)

        m.faults.exception = 6  # busy for good: bounded retries, then Bad, device still up
        samples, happened = await poll_all(reader)
        assert happened == []
        assert reader.up
        assert all(s.quality is Quality.BAD for s in samples)
        assert reader.stats.refused == sum(len(g.requests) for g in reader.plan.groups)
    finally:
        m.faults.exception = None
        driver.close()


async def test_illegal_address_isolates_the_unreadable_tags(sim: Any, make_endpoint: Start) -> None:
    m = sim.machine("reflow")
    endpoint = await make_endpoint(m)
    device = sim.device_for(m, endpoint.port)
    # a tag the device does not have, right after ones it has: only it must come out Bad
    raw = device.model_dump(mode="json")
    words = [s for s in m.profile.tags if s.table in ("hr", "ir") and s.bit is None]
    spec = max(words, key=lambda s: s.register)
    ghost = spec.register + spec.count
    group = next(g for g in raw["groups"] if g["name"] == spec.group)
    group["tags"].append({"name": "ghost", "address": f"{spec.table}:{ghost}", "type": "uint16"})
    device = type(device).model_validate(raw)
    driver = ModbusDriver([device])
    (reader,) = driver.readers
    try:
        samples, happened = await poll_all(reader)
        assert happened == []
        got = {s.tag: s for s in samples}
        assert got["ghost"].quality is Quality.BAD
        assert all(s.quality is Quality.GOOD for name, s in got.items() if name != "ghost")
        assert reader.stats.splits >= 1  # it was read in one request with its neighbours
        assert {n: s.value for n, s in got.items() if n != "ghost"} == sim.expected(m)

        learnt = {g.name: reader.requests(g.name) for g in reader.plan.groups}

        m.faults.exception = 2  # the whole device refuses: every tag Bad, but it is up
        samples, happened = await poll_all(reader)
        assert happened == []
        assert reader.up
        assert all(s.quality is Quality.BAD for s in samples)

        m.faults.exception = None  # it teaches nothing: back to the plan, holes learnt anew
        for g in reader.plan.groups:
            assert reader.requests(g.name) == g.requests
        samples, _ = await poll_all(reader)
        assert {s.tag for s in samples if s.quality is not Quality.GOOD} == {"ghost"}
        assert {g.name: reader.requests(g.name) for g in reader.plan.groups} == learnt
    finally:
        m.faults.exception = None
        driver.close()


async def test_server_restart_is_one_outage(sim: Any, make_endpoint: Start) -> None:
    m = sim.machine("cnc")
    endpoint = await make_endpoint(m)
    driver = ModbusDriver([sim.device_for(m, endpoint.port)])
    (reader,) = driver.readers
    try:
        await poll_all(reader)
        endpoint.restart(0.4)
        await asyncio.sleep(0.05)
        happened: list[ConnectivityEvent] = []
        samples: list[Sample] = []
        for _ in range(40):
            samples, more = await poll_all(reader)
            happened += more
            if any(e.up for e in happened):
                break
            await asyncio.sleep(0.05)
        assert [e.up for e in happened] == [False, True]
        assert all(s.quality is Quality.GOOD for s in samples)
    finally:
        driver.close()


async def test_backup_host_takes_over(sim: Any, make_endpoint: Start) -> None:
    m = sim.machine("meter")
    endpoint = await make_endpoint(m)
    dead = free_port()
    device = sim.device_for(m, dead, backup_host="127.0.0.1", backup_port=endpoint.port)
    driver = ModbusDriver([device])
    (reader,) = driver.readers
    try:
        samples, happened = await poll_all(reader)
        assert happened == []
        assert {s.tag: s.value for s in samples} == sim.expected(m)
        assert reader.link.endpoint == f"127.0.0.1:{endpoint.port}"
    finally:
        driver.close()


async def test_a_hanging_device_does_not_stall_the_others(sim: Any, make_endpoint: Start) -> None:
    healthy, stuck = sim.machine("meter", name="meter-ok"), sim.machine("kiln", name="kiln-stuck")
    ok_endpoint = await make_endpoint(healthy)
    stuck_endpoint = await make_endpoint(stuck)
    stuck_endpoint.hang = True
    stream = SampleStream(maxsize=10_000)
    devices = [
        sim.device_for(healthy, ok_endpoint.port),
        sim.device_for(stuck, stuck_endpoint.port, timeout=0.5),
    ]
    async with ModbusDriver(devices, stream) as driver:
        await asyncio.sleep(1.5)
    stream.close()
    items = [item async for item in stream]
    ok = [i for i in items if isinstance(i, Batch) and i.device == "meter-ok"]
    ok_groups = len({g.name for g in driver.readers[0].plan.groups})
    assert len(ok) >= 8 * ok_groups  # ~15 ticks of 100 ms each, none lost to the other device
    assert all(s.quality is Quality.GOOD for b in ok for s in b.samples)
    assert events(items) == [("kiln-stuck", False)]
    stuck_batches = [i for i in items if isinstance(i, Batch) and i.device == "kiln-stuck"]
    assert stuck_batches
    assert all(s.quality is Quality.BAD for b in stuck_batches for s in b.samples)
    stats = driver.readers[0].stats.groups
    assert all(g.polls >= 8 for g in stats.values())
    assert driver.readers[1].stats.timeouts >= 1
    assert all(g.overruns == 0 for g in stats.values())


@pytest.mark.parametrize("framer", ["socket"])
async def test_driver_runs_as_a_context_manager_with_report_by_exception(
    sim: Any, make_endpoint: Start, framer: str
) -> None:
    m = sim.machine("meter")
    endpoint = await make_endpoint(m)
    raw = sim.device_for(m, endpoint.port, framer=framer).model_dump(mode="json")
    for group in raw["groups"]:
        for tag in group["tags"]:
            tag["deadband"] = 0.0 if tag["type"] not in ("bool", "string") else None
            tag["max_silence"] = 60
    device = type(sim.device_for(m, endpoint.port)).model_validate(raw)
    stream = SampleStream()
    async with ModbusDriver([device], stream) as driver:
        await asyncio.sleep(0.55)
    stream.close()
    batches = [i async for i in stream if isinstance(i, Batch)]
    # the clock stands still, so after the first poll of each group nothing changes
    assert len(batches) == len(device.groups)
    assert driver.readers[0].stats.polls >= 4 * len(device.groups)


async def test_nan_readings_are_uncertain_and_out_of_range_is_read_as_is(
    sim: Any, make_endpoint: Start
) -> None:
    m = sim.machine("kiln")
    endpoint = await make_endpoint(m)
    driver = ModbusDriver([sim.device_for(m, endpoint.port)])
    (reader,) = driver.readers
    floats = {s.name for s in m.profile.tags if s.type in ("float32", "float64")}
    try:
        m.faults.values = "nan"
        samples, _ = await poll_all(reader)
        for sample in samples:
            if sample.tag in floats:
                assert sample.quality is Quality.UNCERTAIN, sample.tag
                assert math.isnan(sample.value), sample.tag  # type: ignore[arg-type]
            else:
                assert sample.quality is Quality.GOOD, sample.tag
        m.faults.values = "out_of_range"
        samples, _ = await poll_all(reader)
        assert {s.tag: s.value for s in samples} == sim.expected(m)
    finally:
        m.faults.values = None
        driver.close()


async def test_latency_within_the_timeout_is_fine_beyond_it_is_an_outage(
    sim: Any, make_endpoint: Start
) -> None:
    m = sim.machine("compressor")
    endpoint = await make_endpoint(m)
    driver = ModbusDriver([sim.device_for(m, endpoint.port, timeout=0.2)])
    (reader,) = driver.readers
    group = reader.plan.groups[0]
    try:
        endpoint.latency = 0.05
        samples, events = await reader.poll(group)
        assert events == []
        assert all(s.quality is Quality.GOOD for s in samples)
        endpoint.latency = 0.4
        samples, events = await reader.poll(group)
        assert [e.up for e in events] == [False]
        assert all(s.quality is Quality.BAD for s in samples)
    finally:
        endpoint.latency = 0.0
        driver.close()
