"""Modbus TCP: a plain pymodbus client reads every profile and gets what value() predicts."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ExceptionResponse

import simulators
from simulators import PROFILES, Machine, ModbusEndpoint

Decoder = Callable[[simulators.TagSpec, list[int]], simulators.Value]
SEED = 2026
#: one machine of every profile behind one endpoint, unit ids 1…7, as behind an RS-485 gateway
UNITS = dict(enumerate(sorted(PROFILES), start=1))


def machines(clock: Callable[[], float]) -> list[Machine]:
    return [
        Machine(f"{name}-01", name, SEED, unit_id=unit, clock=clock) for unit, name in UNITS.items()
    ]


@pytest.fixture
async def endpoint(frozen: Callable[[], float]) -> AsyncIterator[ModbusEndpoint]:
    async with ModbusEndpoint("plant", machines(frozen)) as ep:
        yield ep


@pytest.fixture
async def client(endpoint: ModbusEndpoint) -> AsyncIterator[AsyncModbusTcpClient]:
    c = AsyncModbusTcpClient("127.0.0.1", port=endpoint.port, timeout=2, retries=0)
    assert await c.connect()
    yield c
    c.close()


async def read_tag(
    client: AsyncModbusTcpClient, unit: int, spec: simulators.TagSpec, decode: Decoder
) -> simulators.Value:
    functions = {
        "hr": client.read_holding_registers,
        "ir": client.read_input_registers,
        "co": client.read_coils,
        "di": client.read_discrete_inputs,
    }
    response = await functions[spec.table](spec.register, count=spec.count, device_id=unit)
    assert not response.isError(), f"{spec.name}: {response}"
    if spec.table in ("co", "di"):
        return bool(response.bits[0])
    if spec.bit is not None:
        return bool(response.registers[0] >> spec.bit & 1)
    return decode(spec, response.registers)


@pytest.mark.parametrize("unit", sorted(UNITS))
async def test_every_tag_reads_as_predicted(
    client: AsyncModbusTcpClient,
    frozen: Callable[[], float],
    decode_registers: Decoder,
    unit: int,
) -> None:
    name = UNITS[unit]
    expected = simulators.values(SEED, name, f"{name}-01", frozen())
    for spec in PROFILES[name].tags:
        got = await read_tag(client, unit, spec, decode_registers)
        assert got == expected[spec.name], f"{name}.{spec.name}"
        assert type(got) is type(expected[spec.name])


async def test_a_block_read_spans_several_tags(
    client: AsyncModbusTcpClient, frozen: Callable[[], float], decode_registers: Decoder
) -> None:
    """Reading ir:100…105 of the CNC at once gives the three float32s in their orders."""
    response = await client.read_input_registers(100, count=6, device_id=1)
    prof = PROFILES["cnc"]
    regs = response.registers
    for name, offset in (("spindle_speed", 0), ("spindle_load", 2), ("feed_rate", 4)):
        spec = prof.tag(name)
        got = decode_registers(spec, regs[offset : offset + 2])
        assert got == simulators.value(SEED, "cnc", "cnc-01", name, frozen())


async def test_values_follow_the_real_clock() -> None:
    """Without a frozen clock a read made within one second gets that second's value."""
    async with ModbusEndpoint("live", [Machine("cnc-01", "cnc", SEED, unit_id=1)]) as ep:
        c = AsyncModbusTcpClient("127.0.0.1", port=ep.port, timeout=2, retries=0)
        assert await c.connect()
        try:
            checked = 0
            while checked < 3:
                before = time.time()
                response = await c.read_input_registers(200, count=2, device_id=1)
                after = time.time()
                if math.floor(before) != math.floor(after):
                    continue  # the read straddled a second boundary: either value is right
                regs = response.registers
                got = regs[1] << 16 | regs[0]  # part_count is uint32 CDAB
                assert got == simulators.value(SEED, "cnc", "cnc-01", "part_count", before)
                checked += 1
        finally:
            c.close()


async def test_gaps_and_unknown_units_are_exceptions(client: AsyncModbusTcpClient) -> None:
    gap = await client.read_holding_registers(4, count=1, device_id=1)  # between hr:3 and hr:300
    assert isinstance(gap, ExceptionResponse)
    assert gap.exception_code == 2
    across = await client.read_input_registers(104, count=8, device_id=1)  # runs into a gap
    assert across.exception_code == 2
    nobody = await client.read_holding_registers(0, count=1, device_id=42)
    assert nobody.exception_code == 11  # gateway target failed to respond
    ok = await client.read_holding_registers(0, count=1, device_id=1)
    assert not ok.isError()


async def test_setpoints_are_read_write_and_the_rest_read_only(
    client: AsyncModbusTcpClient, frozen: Callable[[], float]
) -> None:
    assert not (await client.write_register(400, 85, device_id=1)).isError()  # feed_override
    assert (await client.read_holding_registers(400, count=1, device_id=1)).registers == [85]
    # a float32 setpoint (CDAB) written whole, on the extrusion press
    unit = next(u for u, n in UNITS.items() if n == "extrusion")
    spec = PROFILES["extrusion"].tag("ram_speed_setpoint")
    registers = simulators.encode(spec, 9.25)
    assert not (await client.write_registers(110, registers, device_id=unit)).isError()
    assert (await client.read_holding_registers(110, count=2, device_id=unit)).registers == (
        registers
    )
    half = await client.write_register(110, 0, device_id=unit)  # half of a float
    assert half.exception_code == 2
    read_only = await client.write_register(0, 3, device_id=1)  # the state register
    assert read_only.exception_code == 2
    assert not (await client.write_coil(0, False, device_id=1)).isError()
    assert (await client.read_coils(0, count=1, device_id=1)).bits[0] is False
    assert (await client.write_coil(1, True, device_id=1)).exception_code == 2  # coolant_on
    # other units are untouched
    other = await client.read_holding_registers(0, count=1, device_id=1)
    assert other.registers[0] == simulators.value(SEED, "cnc", "cnc-01", "state", frozen())


async def test_two_machines_of_one_profile_differ_by_unit(frozen: Callable[[], float]) -> None:
    pair = [Machine(f"press-{i}", "extrusion", SEED, unit_id=i, clock=frozen) for i in (3, 4)]
    async with ModbusEndpoint("pair", pair) as ep:
        c = AsyncModbusTcpClient("127.0.0.1", port=ep.port, timeout=2, retries=0)
        assert await c.connect()
        try:
            counts = []
            for unit in (3, 4):
                regs = (await c.read_input_registers(20, count=2, device_id=unit)).registers
                counts.append(regs[1] << 16 | regs[0])  # billet_count, uint32 CDAB
        finally:
            c.close()
    assert counts == [
        simulators.value(SEED, "extrusion", f"press-{i}", "billet_count", frozen()) for i in (3, 4)
    ]
    assert counts[0] != counts[1]


async def test_unit_ids_must_be_unique() -> None:
    with pytest.raises(simulators.EndpointError, match="unit id 1 is used twice"):
        ModbusEndpoint("x", [Machine("a", "cnc", 1, unit_id=1), Machine("b", "cnc", 1, unit_id=1)])


async def test_a_port_in_use_is_an_endpoint_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        machine = Machine("m", "cnc", 1)
        with pytest.raises(simulators.EndpointError, match=f"cannot listen on 127.0.0.1:{port}"):
            async with ModbusEndpoint("x", [machine], port=port):
                pass
        with pytest.raises(simulators.EndpointError, match=f"cannot listen on 127.0.0.1:{port}"):
            async with simulators.OpcUaEndpoint("y", "F", [machine], port=port):
                pass
