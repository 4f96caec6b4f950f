"""Polling: every profile and type read exactly from the simulator over TCP, in chunks."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua

import simulators
from edge import Batch, ConnectivityEvent, Device, Quality, Sample
from edge.drivers.opcua import OpcUaDriver
from edge.drivers.opcua.session import Session
from simulators import OpcUaEndpoint

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(sim: Any) -> AsyncIterator[OpcUaEndpoint]:
    """One frozen machine of every profile; tests that inject faults clear them."""
    machines = [sim.machine(p) for p in sorted(simulators.PROFILES)]
    async with OpcUaEndpoint("ua", sim.FACTORY, machines) as endpoint:
        yield endpoint


def machine(server: OpcUaEndpoint, profile: str) -> simulators.Machine:
    return next(m for m in server.machines if m.profile_name == profile)


def samples_of(items: list[Batch | ConnectivityEvent], device: str) -> dict[str, Sample]:
    return {
        s.tag: s
        for item in items
        if isinstance(item, Batch) and item.device == device
        for s in item.samples
    }


async def test_every_profile_and_type_reads_exactly(sim: Any, server: OpcUaEndpoint) -> None:
    machines = server.machines
    driver = OpcUaDriver([sim.device_for(m, server.url) for m in machines])
    items = await driver.read_once()
    assert [i for i in items if isinstance(i, ConnectivityEvent)] == []
    second = math.floor(sim.T) * 1_000_000_000
    for m in machines:
        got = samples_of(items, m.name)
        want = sim.expected(m)
        assert set(got) == set(want), m.name
        for spec in m.profile.tags:
            sample = got[spec.name]
            assert sample.quality is Quality.GOOD, (m.name, spec.name)
            assert sample.value == want[spec.name], (m.name, spec.name)
            assert type(sample.value) is type(want[spec.name]), (m.name, spec.name)
            if not spec.writable:  # setpoints keep the time they were written at
                assert sample.source_ts == second, (m.name, spec.name)
    served = {spec.opcua_type for m in machines for spec in m.profile.tags}
    # every type the simulator serves (signed Modbus integers are scaled, so served as Double)
    assert served == {"Boolean", "UInt16", "UInt32", "Float", "Double", "String"}


async def test_reads_are_chunked_by_the_cap_and_the_servers_limit(
    sim: Any, server: OpcUaEndpoint
) -> None:
    m = machine(server, "cnc")
    device = sim.device_for(m, server.url, groups=False, max_nodes_per_read=4)
    tags = len(m.profile.tags)
    assert tags > 8
    driver = OpcUaDriver([device])
    (reader,) = driver.readers
    session = Session(reader.plan)
    await session.open()
    try:
        assert session.server_max_nodes_per_read == 10000  # what asyncua advertises
        assert session.nodes_per_read == 4
        samples = await session.read(reader.plan.groups[0])
        assert session.read_requests == math.ceil(tags / 4)
        assert {s.tag: s.value for s in samples} == sim.expected(m)
        # a server that advertises less than the cap is obeyed
        session.server_max_nodes_per_read = 3
        await session.read(reader.plan.groups[0])
        assert session.read_requests == math.ceil(tags / 4) + math.ceil(tags / 3)
    finally:
        await session.close()


async def test_the_servers_advertised_limit_is_read_from_operation_limits(
    sim: Any, server: OpcUaEndpoint
) -> None:
    m = machine(server, "meter")
    # the simulator's own asyncua server: lower its advertised MaxNodesPerRead to 2
    limit = ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
    asyncua_server = server._server
    assert asyncua_server is not None

    async def advertise(n: int) -> None:
        await asyncua_server.write_attribute_value(
            limit, ua.DataValue(ua.Variant(n, ua.VariantType.UInt32))
        )

    await advertise(2)
    driver = OpcUaDriver([sim.device_for(m, server.url, groups=False)])
    session = Session(driver.readers[0].plan)
    await session.open()
    try:
        assert session.server_max_nodes_per_read == 2
        samples = await session.read(driver.readers[0].plan.groups[0])
        assert session.read_requests == math.ceil(len(m.profile.tags) / 2)
        assert {s.tag: s.value for s in samples} == sim.expected(m)
    finally:
        await session.close()
        await advertise(10000)


async def test_bad_and_uncertain_status_codes(sim: Any, server: OpcUaEndpoint) -> None:
    kiln, meter = machine(server, "kiln"), machine(server, "meter")
    faults = sim.faults(server)
    driver = OpcUaDriver([sim.device_for(m, server.url) for m in (kiln, meter)])
    await faults.inject("kiln-1", "status", code="BadSensorFailure")
    await faults.inject("meter-1", "status", code="UncertainLastUsableValue")
    try:
        items = await driver.read_once()
    finally:
        await faults.clear()
    assert [i for i in items if isinstance(i, ConnectivityEvent)] == []
    bad = samples_of(items, "kiln-1")
    read_only = [s.name for s in kiln.profile.tags if not s.writable]
    assert all(bad[t].quality is Quality.BAD and bad[t].value is None for t in read_only)
    assert bad[read_only[0]].source_ts == math.floor(sim.T) * 1_000_000_000
    uncertain = samples_of(items, "meter-1")
    want = sim.expected(meter)
    for spec in meter.profile.tags:
        if not spec.writable:
            assert uncertain[spec.name].quality is Quality.UNCERTAIN
            assert uncertain[spec.name].value == want[spec.name]
    items = await driver.read_once()
    assert all(s.quality is Quality.GOOD for s in samples_of(items, "kiln-1").values())


async def test_an_unknown_node_is_bad_and_the_rest_good(sim: Any, server: OpcUaEndpoint) -> None:
    m = machine(server, "meter")
    device = sim.device_for(m, server.url).model_dump(mode="json")
    device["groups"][0]["tags"].append(
        {"name": "ghost", "address": "ns=2;s=NoSuchNode", "type": "float64"}
    )
    driver = OpcUaDriver([Device.model_validate(device)])
    got = samples_of(await driver.read_once(), m.name)
    assert got.pop("ghost").quality is Quality.BAD
    assert {t: s.value for t, s in got.items()} == sim.expected(m)


async def test_a_read_the_server_refuses_as_too_large_is_halved(
    sim: Any, server: OpcUaEndpoint
) -> None:
    """A server that advertises no limit (or a wrong one) but answers BadTooManyOperations."""
    from asyncua.common.callback import CallbackType  # noqa: PLC0415
    from asyncua.common.utils import ServiceError  # noqa: PLC0415

    asyncua_server = server._server
    assert asyncua_server is not None
    sizes: list[int] = []

    def enforce(event: Any, dispatcher: Any) -> None:
        sizes.append(len(event.request_params.NodesToRead))
        if len(event.request_params.NodesToRead) > 5:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)

    m = machine(server, "cnc")
    driver = OpcUaDriver([sim.device_for(m, server.url, groups=False, max_nodes_per_read=16)])
    session = Session(driver.readers[0].plan)
    await session.open()
    asyncua_server.subscribe_server_callback(CallbackType.PreRead, enforce)
    try:
        samples = await session.read(driver.readers[0].plan.groups[0])
        assert session.nodes_per_read == 4  # 16, refused; 8, refused; 4
        assert {s.tag: s.value for s in samples} == sim.expected(m)
        assert all(s.quality is Quality.GOOD for s in samples)
        assert not session.lost.is_set()
        assert sizes[:3] == [16, 8, 4]
        assert max(sizes[2:]) == 4
    finally:
        asyncua_server.unsubscribe_server_callback(CallbackType.PreRead, enforce)
        await session.close()
