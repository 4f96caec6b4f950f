"""Modbus RTU over a serial line: a socat pseudo-terminal pair, several units on one line."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

import simulators
from guantong import _configfile
from guantong.cli import cli
from simulators import PROFILES, FactoryConfig, Simulator

Decoder = Callable[[simulators.TagSpec, list[int]], simulators.Value]
SEED = 485
T = math.floor(time.time()) - 600 + 0.5
UNITS = {1: "meter", 2: "compressor", 7: "kiln"}

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat")


def expected_state(unit: int, profile: str) -> int:
    return int(simulators.value(SEED, profile, f"{profile}-{unit}", "state", T))


def factory(link: Path) -> FactoryConfig:
    return FactoryConfig.model_validate(
        {
            "kind": "factory",
            "name": "SerialWorks",
            "firm": {"name": "Serial Works", "prefix": "88.709.913"},
            "seed": SEED,
            "endpoints": [
                {
                    "name": "rs485",
                    "protocol": "modbus-rtu",
                    "pty_link": str(link),
                    "baudrate": 38400,
                },
            ],
            "lines": [
                {
                    "name": "Utilities",
                    "machines": [
                        {"name": f"{p}-{u}", "profile": p, "endpoint": "rs485", "unit_id": u}
                        for u, p in UNITS.items()
                    ],
                }
            ],
        }
    )


async def test_every_unit_on_the_line_reads_as_predicted(
    tmp_path: Path, decode_registers: Decoder
) -> None:
    link = tmp_path / "ttyRS485"
    async with Simulator(factory(link), clock=lambda: T) as sim:
        assert sim.address("rs485") == str(link)
        client = AsyncModbusSerialClient(
            str(link), framer=FramerType.RTU, baudrate=38400, timeout=1, retries=0
        )
        assert await client.connect()
        try:
            for unit, name in UNITS.items():
                expected = simulators.values(SEED, name, f"{name}-{unit}", T)
                for spec in PROFILES[name].tags:
                    read = {
                        "hr": client.read_holding_registers,
                        "ir": client.read_input_registers,
                        "co": client.read_coils,
                        "di": client.read_discrete_inputs,
                    }[spec.table]
                    response = await read(spec.register, count=spec.count, device_id=unit)
                    assert not response.isError(), f"{name}.{spec.name}: {response}"
                    if spec.table in ("co", "di"):
                        got: simulators.Value = bool(response.bits[0])
                    elif spec.bit is not None:
                        got = bool(response.registers[0] >> spec.bit & 1)
                    else:
                        got = decode_registers(spec, response.registers)
                    assert got == expected[spec.name], f"{name}.{spec.name}"
            busy = await sim.faults.inject("kiln-7", "exception", code="device_busy")
            assert busy == {"exception": "device_busy"}
            response = await client.read_holding_registers(0, count=1, device_id=7)
            assert response.exception_code == 6
            await sim.faults.clear("kiln-7")
            await sim.faults.inject("kiln-7", "silent")  # a dead device on the line
            with pytest.raises(ModbusException):
                await client.read_holding_registers(0, count=1, device_id=7)
            await sim.faults.clear("kiln-7")
            if not client.connected:
                assert await client.connect()
            meter = await client.read_holding_registers(0, count=1, device_id=1)
            assert meter.registers == [expected_state(1, "meter")]
            kiln = await client.read_holding_registers(0, count=1, device_id=7)
            assert kiln.registers == [expected_state(7, "kiln")]
        finally:
            client.close()
    assert not link.exists()


def test_the_rs485_example_makes_a_valid_gateway_config(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "configs" / "factory.rs485.yaml"
    out = tmp_path / "gateway.yaml"
    result = CliRunner().invoke(cli, ["sim", "gateway-config", "-c", str(example), "-o", str(out)])
    assert result.exit_code == 0, result.output
    config = _configfile.load(out)
    ports = {d.connection.port for d in config.devices}  # type: ignore[attr-defined]
    assert ports == {str(example.parent / "ttyRS485")}
    assert sorted(d.connection.unit_id for d in config.devices) == [1, 2, 10]  # type: ignore[attr-defined]


def test_parity_on_a_pseudo_terminal_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="use parity N"):
        FactoryConfig.model_validate(
            {**factory(tmp_path / "x").model_dump(), "endpoints": [
                {"name": "rs485", "protocol": "modbus-rtu", "pty_link": "x", "parity": "E"}
            ]}
        )  # fmt: skip
