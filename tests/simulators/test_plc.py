"""Line PLCs (``plc-<N>``) and endpoints whose holes answer zero, read with a plain client."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

import simulators
from simulators import Machine, ModbusEndpoint
from simulators._registers import register_map

Decoder = Callable[[simulators.TagSpec, list[int]], simulators.Value]
SEED = 2026


def test_a_plc_profile_is_generated_the_same_every_time() -> None:
    prof = simulators.profile("plc-500")
    assert prof is simulators.profile("plc-500")
    assert len(prof.tags) == 500
    assert len({t.name for t in prof.tags}) == 500
    register_map(prof)  # raises if two tags overlap
    kinds = {(t.type, t.order) for t in prof.tags}
    for kind in ("bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "string"):
        assert any(k == kind for k, _ in kinds), kind
    assert {o for k, o in kinds if k == "float32"} == {"ABCD", "CDAB", "BADC", "DCBA"}
    assert {t.table for t in prof.tags} == {"hr", "ir", "co", "di"}
    # scattered: tags next to each other, holes of a few registers, and separate blocks
    for table in ("hr", "ir"):
        used = sorted(register_map(prof).words[table])
        gaps = [b - a - 1 for a, b in itertools.pairwise(used) if b - a > 1]
        assert max(gaps) > 10, table
        assert len(used) < used[-1] - used[0] + 1


@pytest.mark.parametrize("name", ["plc-0", "plc-20001", "plc-x", "plc1000"])
def test_other_names_are_unknown_profiles(name: str) -> None:
    with pytest.raises(simulators.UnknownProfile):
        simulators.profile(name)


def test_a_factory_may_place_plcs_on_endpoints_with_zero_holes() -> None:
    factory = simulators.FactoryConfig.model_validate(
        {
            "kind": "factory", "name": "F", "firm": {"name": "F", "prefix": "88.1.2"},
            "endpoints": [{"name": "e", "protocol": "modbus-tcp", "port": 0, "holes": "zero"}],
            "lines": [{"name": "L", "machines": [
                {"name": "p", "profile": "plc-2000", "endpoint": "e", "unit_id": 1}]}],
        }
    )  # fmt: skip
    assert factory.endpoints[0].holes == "zero"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="plc-<N>"):
        simulators.FactoryConfig.model_validate(
            {
                "kind": "factory", "name": "F", "firm": {"name": "F", "prefix": "88.1.2"},
                "endpoints": [{"name": "e", "protocol": "modbus-tcp", "port": 0}],
                "lines": [{"name": "L", "machines": [
                    {"name": "p", "profile": "plc-99999", "endpoint": "e", "unit_id": 1}]}],
            }
        )  # fmt: skip


async def read_everything(
    client: AsyncModbusTcpClient, unit: int, prof: simulators.Profile, holes: str
) -> dict[str, dict[int, Any]]:
    """Every address of every table up to its last tag, in 125-register (2000-bit) requests;
    a request with a hole is refused when ``holes`` is "refuse", else the hole reads zero."""
    rmap = register_map(prof)
    got: dict[str, dict[int, Any]] = {}
    for table, read, size in (
        ("hr", client.read_holding_registers, 125),
        ("ir", client.read_input_registers, 125),
        ("co", client.read_coils, 2000),
        ("di", client.read_discrete_inputs, 2000),
    ):
        used = rmap.words.get(table) or rmap.bits[table]
        got[table] = {}
        for start in range(0, max(used) + 1, size):
            count = min(size, max(used) + 1 - start)
            response = await read(start, count=count, device_id=unit)
            if holes == "refuse" and any(a not in used for a in range(start, start + count)):
                assert response.exception_code == 2
                continue
            assert not response.isError(), (table, start)
            values = response.bits if table in ("co", "di") else response.registers
            for a in range(start, start + count):
                got[table][a] = values[a - start]
                assert a in used or not values[a - start], (table, a)
    return got


@pytest.mark.parametrize("holes", ["zero", "refuse"])
async def test_a_plc_reads_as_predicted_in_whole_blocks(
    frozen: Callable[[], float], decode_registers: Decoder, holes: str
) -> None:
    prof = simulators.profile("plc-300")
    expected = simulators.values(SEED, "plc-300", "line-1", frozen())
    machine = Machine("line-1", "plc-300", SEED, unit_id=5, clock=frozen)
    async with ModbusEndpoint("plc", [machine], holes=holes) as ep:  # type: ignore[arg-type]
        client = AsyncModbusTcpClient("127.0.0.1", port=ep.port, timeout=2, retries=0)
        assert await client.connect()
        try:
            got = await read_everything(client, 5, prof, holes)
        finally:
            client.close()
    if holes == "refuse":
        return
    for spec in prof.tags:
        if spec.table in ("co", "di"):
            value: simulators.Value = got[spec.table][spec.register]
        elif spec.bit is not None:
            value = bool(got[spec.table][spec.register] >> spec.bit & 1)
        else:
            regs = [got[spec.table][spec.register + i] for i in range(spec.count)]
            value = decode_registers(spec, regs)
        assert value == expected[spec.name], spec.name
