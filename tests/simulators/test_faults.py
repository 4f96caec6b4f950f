"""Fault injection: each fault, switched on and off while a plain client is connected."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import pytest_asyncio
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

import simulators
from simulators import FactoryConfig, Simulator

pytestmark = pytest.mark.asyncio(loop_scope="module")

SEED = 5
T = math.floor(time.time()) - 7200 + 0.5


def frozen() -> float:
    return T


FACTORY = FactoryConfig.model_validate(
    {
        "kind": "factory",
        "name": "FaultyWorks",
        "firm": {"name": "Faulty Works", "prefix": "88.709.912"},
        "seed": SEED,
        "endpoints": [
            {"name": "tcp", "protocol": "modbus-tcp", "port": 0},
            {"name": "ua", "protocol": "opcua", "port": 0},
        ],
        "lines": [
            {
                "name": "L1",
                "machines": [
                    {"name": "cnc-01", "profile": "cnc", "endpoint": "tcp", "unit_id": 1},
                    {"name": "meter-01", "profile": "meter", "endpoint": "tcp", "unit_id": 2},
                    {"name": "kiln-01", "profile": "kiln", "endpoint": "ua"},
                ],
            }
        ],
        "control": {"port": 0},
    }
)
KILN_TEMP = "ns=2;s=FaultyWorks/L1/kiln-01/zone1_temp"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(FACTORY, clock=frozen) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def control(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    assert sim.control_url is not None
    async with httpx.AsyncClient(base_url=sim.control_url, timeout=10) as http:
        yield http
    await sim.faults.clear()


@pytest_asyncio.fixture(loop_scope="module")
async def modbus(sim: Simulator) -> AsyncIterator[AsyncModbusTcpClient]:
    port = sim.endpoints["tcp"].port  # type: ignore[union-attr]
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
    assert await client.connect()
    yield client
    client.close()
    await sim.faults.clear()


async def state_register(client: AsyncModbusTcpClient, unit: int = 1) -> int:
    response = await client.read_holding_registers(0, count=1, device_id=unit)
    assert not response.isError(), response
    return int(response.registers[0])


def expected_state(machine: str, profile: str) -> int:
    return int(simulators.value(SEED, profile, machine, "state", T))


# --- machine faults --------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "number"), [("device_busy", 6), ("illegal_address", 2)])
async def test_modbus_exceptions(
    control: httpx.AsyncClient, modbus: AsyncModbusTcpClient, code: str, number: int
) -> None:
    on = await control.put("/faults/cnc-01/exception", json={"code": code})
    assert on.status_code == 200, on.text
    response = await modbus.read_holding_registers(0, count=1, device_id=1)
    assert response.isError()
    assert response.exception_code == number
    assert await state_register(modbus, 2) == expected_state("meter-01", "meter")  # other unit
    assert (await control.get("/faults")).json()["machines"] == {"cnc-01": {"exception": code}}
    off = await control.delete("/faults/cnc-01/exception")
    assert off.json() == {"endpoints": {}, "machines": {}}
    assert await state_register(modbus) == expected_state("cnc-01", "cnc")


async def test_nan_and_out_of_range_values(sim: Simulator, modbus: AsyncModbusTcpClient) -> None:
    spec = simulators.profile("meter").tag("active_power")  # float32 DCBA at hr:30

    async def active_power() -> float:
        regs = (await modbus.read_holding_registers(30, count=2, device_id=2)).registers
        return float(simulators.decode(spec, regs))

    await sim.faults.inject("meter-01", "values", mode="nan")
    assert math.isnan(await active_power())
    assert await state_register(modbus, 2) == expected_state("meter-01", "meter")  # ints stay
    await sim.faults.inject("meter-01", "values", mode="out_of_range")
    assert await active_power() > 3e38
    freq = (await modbus.read_holding_registers(33, count=1, device_id=2)).registers[0]
    assert freq == 65535  # uint16 at its maximum: 655.35 Hz
    await sim.faults.clear("meter-01")
    assert await active_power() == simulators.value(SEED, "meter", "meter-01", "active_power", T)


async def test_a_forced_state_shows_in_every_tag_until_cleared(
    control: httpx.AsyncClient, modbus: AsyncModbusTcpClient
) -> None:
    on = await control.put("/faults/cnc-01/state", json={"state": "alarm"})
    assert on.json() == {"state": "alarm"}
    assert await state_register(modbus) == 3
    bits = (await modbus.read_holding_registers(2, count=1, device_id=1)).registers[0]
    assert bits & 0b111 == 0b100  # running and idle off, alarm on
    assert (await control.get("/faults")).json()["machines"] == {"cnc-01": {"state": "alarm"}}
    assert await state_register(modbus, 2) == expected_state("meter-01", "meter")  # other unit
    bad = await control.put("/faults/cnc-01/state", json={"state": "asleep"})
    assert bad.status_code == 400
    assert "use one of off, idle, running, alarm" in bad.text
    await control.delete("/faults/cnc-01/state")
    assert await state_register(modbus) == expected_state("cnc-01", "cnc")


async def test_opcua_bad_status_and_values(sim: Simulator, control: httpx.AsyncClient) -> None:
    async with Client(sim.address("ua"), watchdog_intervall=30) as opc:
        node = opc.get_node(KILN_TEMP)
        on = await control.put("/faults/kiln-01/status", json={"code": "BadSensorFailure"})
        assert on.status_code == 200, on.text
        (dv,) = await opc.read_attributes([node])
        assert dv.StatusCode.value == ua.StatusCodes.BadSensorFailure
        await control.put("/faults/kiln-01/status", json={"code": "UncertainLastUsableValue"})
        (dv,) = await opc.read_attributes([node])
        assert dv.StatusCode.value == ua.StatusCodes.UncertainLastUsableValue
        await control.delete("/faults/kiln-01/status")
        (dv,) = await opc.read_attributes([node])
        assert dv.StatusCode.is_good()
        assert dv.Value.Value == simulators.value(SEED, "kiln", "kiln-01", "zone1_temp", T)
        await control.put("/faults/kiln-01/values", json={"mode": "nan"})
        assert math.isnan(await node.read_value())
        await control.delete("/faults/kiln-01")
        assert not math.isnan(await node.read_value())


# --- connection faults, Modbus ---------------------------------------------------------------


async def test_modbus_latency(control: httpx.AsyncClient, modbus: AsyncModbusTcpClient) -> None:
    await control.put("/faults/tcp/latency", json={"seconds": 0.3})
    started = time.monotonic()
    assert await state_register(modbus) == expected_state("cnc-01", "cnc")
    assert time.monotonic() - started >= 0.3
    await control.put("/faults/tcp/latency", json={"seconds": 2.0})  # beyond the client's 0.5 s
    with pytest.raises(ModbusException):
        await modbus.read_holding_registers(0, count=1, device_id=1)
    await control.delete("/faults/tcp/latency")
    await asyncio.sleep(2.0)  # let the late answer pass
    await _reconnected(modbus)
    assert await state_register(modbus) == expected_state("cnc-01", "cnc")


async def test_modbus_hang(control: httpx.AsyncClient, modbus: AsyncModbusTcpClient) -> None:
    await control.put("/faults/tcp/hang")
    with pytest.raises(ModbusException):
        await modbus.read_holding_registers(0, count=1, device_id=1)
    await control.delete("/faults/tcp/hang")
    await _reconnected(modbus)
    assert await state_register(modbus) == expected_state("cnc-01", "cnc")


async def test_a_silent_unit_times_out_while_the_others_answer(
    control: httpx.AsyncClient, modbus: AsyncModbusTcpClient
) -> None:
    assert (await control.put("/faults/cnc-01/silent")).json() == {"silent": True}
    with pytest.raises(ModbusException):
        await modbus.read_holding_registers(0, count=1, device_id=1)
    await _reconnected(modbus)
    assert await state_register(modbus, 2) == expected_state("meter-01", "meter")
    assert (await control.get("/faults")).json()["machines"] == {"cnc-01": {"silent": True}}
    await control.delete("/faults/cnc-01/silent")
    assert await state_register(modbus) == expected_state("cnc-01", "cnc")


async def test_modbus_drop(control: httpx.AsyncClient, modbus: AsyncModbusTcpClient) -> None:
    assert await state_register(modbus) == expected_state("cnc-01", "cnc")
    dropped = await control.put("/faults/tcp/drop")
    assert dropped.json() == {"dropped": 1}
    await _until(lambda: not modbus.connected)
    await _reconnected(modbus)
    assert await state_register(modbus) == expected_state("cnc-01", "cnc")


async def test_modbus_restart(sim: Simulator, modbus: AsyncModbusTcpClient) -> None:
    port = sim.endpoints["tcp"].port  # type: ignore[union-attr]
    await sim.faults.inject("tcp", "restart", downtime=1.0)
    await _until(lambda: not modbus.connected)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await _until(lambda: _accepts(port), within=5)
    await _reconnected(modbus)
    assert await state_register(modbus) == expected_state("cnc-01", "cnc")


# --- connection faults, OPC UA ---------------------------------------------------------------


async def test_opcua_latency_and_hang(sim: Simulator) -> None:
    async with Client(sim.address("ua"), timeout=1, watchdog_intervall=30) as opc:
        node = opc.get_node(KILN_TEMP)
        await sim.faults.inject("ua", "latency", seconds=0.3)
        started = time.monotonic()
        await node.read_value()
        assert time.monotonic() - started >= 0.3
        await sim.faults.clear("ua", "latency")
        await sim.faults.inject("ua", "hang")
        with pytest.raises(TimeoutError):
            await node.read_value()
        await sim.faults.clear("ua")
    async with Client(sim.address("ua"), timeout=2, watchdog_intervall=30) as opc:
        value = await opc.get_node(KILN_TEMP).read_value()
    assert value == simulators.value(SEED, "kiln", "kiln-01", "zone1_temp", T)


async def test_opcua_drop_and_restart(sim: Simulator) -> None:
    url = sim.address("ua")
    port = sim.endpoints["ua"].port
    opc = Client(url, timeout=2, watchdog_intervall=30)
    await opc.connect()
    try:
        assert (await sim.faults.inject("ua", "drop"))["dropped"] == 1
        with pytest.raises((ConnectionError, ua.UaError, TimeoutError)):
            await opc.get_node(KILN_TEMP).read_value()
    finally:
        await opc.disconnect()
    await sim.faults.inject("ua", "restart", downtime=1.0)
    await _until(lambda: not _accepts(port))
    await _until(lambda: _accepts(port), within=5)
    async with Client(url, timeout=2, watchdog_intervall=30) as again:
        value = await again.get_node(KILN_TEMP).read_value()
    assert value == simulators.value(SEED, "kiln", "kiln-01", "zone1_temp", T)


# --- the interface itself --------------------------------------------------------------------


async def test_bad_requests_are_refused_with_a_reason(control: httpx.AsyncClient) -> None:
    cases = [
        ("/faults/lathe-9/hang", {}, 404, "no machine 'lathe-9'"),
        ("/faults/tcp/smoke", {}, 400, "unknown fault 'smoke'"),
        ("/faults/tcp/latency", {"seconds": -1}, 400, "above 0"),
        ("/faults/tcp/latency", {"secs": 1}, 400, "unknown parameter 'secs'"),
        ("/faults/cnc-01/status", {}, 400, "use the 'exception' fault"),
        ("/faults/kiln-01/exception", {}, 400, "use the 'status' fault"),
        ("/faults/kiln-01/status", {"code": "Good"}, 400, "not a Bad or Uncertain"),
        ("/faults/cnc-01/exception", {"code": "on_fire"}, 400, "unknown Modbus exception"),
        ("/faults/cnc-01/drop", {}, 400, "fault of an endpoint"),
        ("/faults/kiln-01/silent", {}, 400, "'silent' is for Modbus units"),
    ]
    for path, body, status, reason in cases:
        response = await control.put(path, json=body)
        assert response.status_code == status, path
        assert reason in response.json()["detail"], path
    machines = (await control.get("/machines")).json()
    assert [m["machine"] for m in machines] == ["cnc-01", "meter-01", "kiln-01"]
    assert (await control.get("/faults")).json() == {"endpoints": {}, "machines": {}}


# --- helpers ---------------------------------------------------------------------------------


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _until(condition: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def _reconnected(client: AsyncModbusTcpClient) -> None:
    if not client.connected:
        client.close()
        assert await client.connect()
