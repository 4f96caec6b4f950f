"""Modbus RTU: on a serial line (a socat pseudo-terminal pair) and as RTU frames over TCP
(socat in front of the serial line, as a serial-to-Ethernet converter would be)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edge import Device, Quality
from edge.drivers.modbus.driver import ModbusDriver
from simulators import ModbusEndpoint

Start = Callable[..., Awaitable[ModbusEndpoint]]


async def socat(*addresses: str, wait_for: list[Path]) -> asyncio.subprocess.Process:
    exe = shutil.which("socat")
    assert exe is not None, "socat is needed (Debian package 'socat'; scripts/setup installs it)"
    proc = await asyncio.create_subprocess_exec(
        exe, *addresses, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    for _ in range(250):
        if all(p.exists() for p in wait_for):
            return proc
        await asyncio.sleep(0.02)
    proc.kill()
    await proc.wait()
    raise AssertionError("socat did not create its pseudo-terminals")


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(proc.wait(), 5)


def rtu_device(sim: Any, m: Any, connection: dict[str, Any]) -> Device:
    raw = sim.device_for(m, 1).model_dump(mode="json")
    raw["connection"] = {**connection, "unit_id": m.unit_id, "timeout": 1.0, "backoff_max": 0.1}
    return Device.model_validate(raw)


async def test_rtu_on_a_serial_line_with_two_slaves(
    sim: Any,
    make_endpoint: Start,
    processes: list[asyncio.subprocess.Process],
    tmp_path: Path,
) -> None:
    plc, client = tmp_path / "plc", tmp_path / "gateway"
    processes.append(
        await socat(
            f"pty,raw,echo=0,link={plc}", f"pty,raw,echo=0,link={client}", wait_for=[plc, client]
        )
    )
    meter, kiln = sim.machine("meter", unit_id=3), sim.machine("kiln", unit_id=5)
    await make_endpoint(meter, kiln, protocol="modbus-rtu", serial=str(plc), baudrate=115200)
    line = {"protocol": "modbus-rtu", "port": str(client), "baudrate": 115200}
    devices = [rtu_device(sim, m, {**line, "frame_gap": "2ms"}) for m in (meter, kiln)]
    driver = ModbusDriver(devices)
    try:
        items = await driver.read_once()
    finally:
        driver.close()
    assert len(driver.links) == 1  # two slaves on one bus: one port, one lock
    for m in (meter, kiln):
        got = {
            s.tag: s
            for item in items
            if getattr(item, "device", None) == m.name
            for s in getattr(item, "samples", ())
        }
        assert {t: s.value for t, s in got.items()} == sim.expected(m)
        assert all(s.quality is Quality.GOOD for s in got.values())


async def test_rtu_frames_over_tcp(
    sim: Any,
    make_endpoint: Start,
    processes: list[asyncio.subprocess.Process],
    tmp_path: Path,
) -> None:
    plc = tmp_path / "plc"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    processes.append(
        await socat(
            f"pty,raw,echo=0,link={plc}",
            f"tcp-listen:{port},bind=127.0.0.1,reuseaddr",
            wait_for=[plc],
        )
    )
    press = sim.machine("extrusion", unit_id=7)
    await make_endpoint(press, protocol="modbus-rtu", serial=str(plc), baudrate=115200)
    device = rtu_device(
        sim, press, {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": port, "framer": "rtu"}
    )
    driver = ModbusDriver([device])
    try:
        # socat listens a moment after it made the pseudo-terminal, and accepts one
        # connection only: no probing, the driver's backoff retries until it is there
        for _ in range(50):
            items = await driver.read_once()
            if driver.readers[0].up:
                break
            await asyncio.sleep(0.1)
    finally:
        driver.close()
    samples = [s for item in items for s in getattr(item, "samples", ())]
    assert {s.tag: s.value for s in samples} == sim.expected(press)
    assert all(s.quality is Quality.GOOD for s in samples)
