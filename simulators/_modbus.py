"""Modbus TCP and RTU slaves: several unit ids behind one endpoint.

pymodbus handles framing and function codes; the datastore below answers every read from a
register image of the machine built from the value function once per tick, on the first read
of that tick (values change only on whole seconds), so a read is exactly
``value(seed, profile, machine, tag, t)`` and a thousand reads in one second cost one
computation of each value. What clients wrote and value faults are part of the image's key.

Addresses that no tag covers answer ``illegal address`` (``holes="refuse"``, the default), or
zero (``holes="zero"``, as PLCs that answer a whole register area do). Writes to read-only tags,
to holes and writes that cover part of a multi-register value are always ``illegal address``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from typing import Literal, Self

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from simulators._exceptions import EndpointError
from simulators._machine import Machine
from simulators._profiles import TagSpec
from simulators._registers import Area, Cell, decode, image, register_map

logger = logging.getLogger(__name__)

_ZERO: dict[str, int | bool] = {"co": False, "di": False, "hr": 0, "ir": 0}
_TABLES = {1: "co", 2: "di", 3: "hr", 4: "ir", 5: "co", 15: "co", 6: "hr", 16: "hr", 23: "hr"}


class _Datastore(ModbusServerContext):
    """The server's view of the machines of one endpoint, by unit id.

    It takes the datastore path pymodbus keeps for custom simulators (``old_simulator``), so
    none of the deprecated device-context machinery is built.
    """

    def __init__(self, endpoint: ModbusEndpoint) -> None:  # no super(): nothing of it is used
        self.old_simulator = True
        self.simdevices = []
        self._endpoint = endpoint
        #: unit id → (image key, image)
        self._images: dict[int, tuple[tuple[object, ...], dict[str, Area]]] = {}

    def device_ids(self) -> list[int]:
        return list(self._endpoint.units)

    def _machine(self, device_id: int) -> Machine:
        try:
            return self._endpoint.units[device_id]
        except KeyError:
            raise NoSuchIdException(f"no unit id {device_id}") from None

    async def _before(self, machine: Machine) -> ExcCodes | None:
        if self._endpoint.latency > 0:
            await asyncio.sleep(self._endpoint.latency)
        code = machine.faults.exception
        return None if code is None else ExcCodes(code)

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        machine = self._machine(device_id)
        if (refused := await self._before(machine)) is not None:
            return refused
        t = math.floor(machine.clock())
        key = (t, machine.faults.values, machine.faults.state, tuple(machine.written.items()))
        cached = self._images.get(device_id)
        if cached is None or cached[0] != key:
            cached = key, image(machine.profile, machine.raw(machine.profile.tags, t))
            self._images[device_id] = cached
        table = _TABLES[func_code]
        fill = None if self._endpoint.holes == "refuse" else _ZERO[table]
        window = cached[1][table].window(address, count, fill)
        return ExcCodes.ILLEGAL_ADDRESS if window is None else window

    async def async_setValues(
        self,
        device_id: int,
        func_code: int,
        address: int,
        values: Sequence[int] | Sequence[bool],
    ) -> ExcCodes | None:
        machine = self._machine(device_id)
        if (refused := await self._before(machine)) is not None:
            return refused
        return write(machine, _TABLES[func_code], address, list(values))


def write(
    machine: Machine, table: str, address: int, values: list[int] | list[bool]
) -> ExcCodes | None:
    """Apply a client write; only whole writable tags can be written."""
    rmap = register_map(machine.profile)
    if table == "co":
        specs: list[TagSpec] = []
        for a in range(address, address + len(values)):
            spec = rmap.bits["co"].get(a)
            if spec is None or not spec.writable:
                return ExcCodes.ILLEGAL_ADDRESS
            specs.append(spec)
        for spec, bit in zip(specs, values, strict=True):
            machine.write(spec, bool(bit))
        return None
    cells = _cells(rmap.words[table], address, len(values))
    if (
        cells is None
        or any(not cell.writable for cell in cells)
        or cells[0].start != address
        or cells[-1].start + cells[-1].count != address + len(values)
    ):
        return ExcCodes.ILLEGAL_ADDRESS
    for cell in cells:
        regs = [int(v) for v in values[cell.start - address : cell.start - address + cell.count]]
        if cell.bits:
            for spec in cell.tags:
                machine.write(spec, bool(regs[0] >> (spec.bit or 0) & 1))
        else:
            machine.write(cell.tags[0], decode(cell.tags[0], regs))
    return None


def _cells(table: dict[int, Cell], address: int, count: int) -> list[Cell] | None:
    """The cells covering ``address`` … ``address + count - 1``; None if one is not mapped."""
    cells: list[Cell] = []
    for a in range(address, address + count):
        cell = table.get(a)
        if cell is None:
            return None
        if not cells or cells[-1] is not cell:
            cells.append(cell)
    return cells


class ModbusEndpoint:
    """Modbus slaves of one TCP port or serial line; an async context manager.

    ``latency`` delays every answer; ``hang`` keeps the connection open but stops answering;
    :meth:`drop` closes every client connection; :meth:`restart` goes away and comes back.
    A machine whose ``faults.silent`` is set never answers; the other units still do.
    ``holes`` says how addresses that hold no tag answer: ``"refuse"`` (illegal address) or
    ``"zero"``.
    """

    def __init__(
        self,
        name: str,
        machines: Sequence[Machine],
        *,
        protocol: Literal["modbus-tcp", "modbus-rtu"] = "modbus-tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        serial: str | None = None,
        baudrate: int = 9600,
        parity: Literal["N", "E", "O"] = "N",
        stopbits: Literal[1, 2] = 1,
        holes: Literal["refuse", "zero"] = "refuse",
    ) -> None:
        self.name = name
        self.holes = holes
        self.protocol = protocol
        self.host = host
        self.port = port
        self.serial = serial
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.units: dict[int, Machine] = {}
        for machine in machines:
            if machine.unit_id in self.units:
                raise EndpointError(name, f"unit id {machine.unit_id} is used twice")
            self.units[machine.unit_id] = machine
        self.latency = 0.0
        self.hang = False
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._restarting: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """Discard answers while hanging, and those of silent units (the unit id is byte 6 of
        the MBAP header over TCP, the first byte of an RTU frame)."""
        if not sending or not data:
            return data
        if self.hang:
            return b""
        position = 6 if self.protocol == "modbus-tcp" else 0
        machine = self.units.get(data[position]) if len(data) > position else None
        return b"" if machine is not None and machine.faults.silent else data

    async def start(self) -> None:
        context = _Datastore(self)
        if self.protocol == "modbus-tcp":
            server: ModbusTcpServer | ModbusSerialServer = ModbusTcpServer(
                context, address=(self.host, self.port), trace_packet=self._trace_packet
            )
        else:
            if self.serial is None:
                raise EndpointError(self.name, "a Modbus RTU endpoint needs a serial port")
            server = ModbusSerialServer(
                context,
                framer=FramerType.RTU,
                port=self.serial,
                baudrate=self.baudrate,
                parity=self.parity,
                stopbits=self.stopbits,
                bytesize=8,
                trace_packet=self._trace_packet,
            )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            where = f"{self.host}:{self.port}" if self.serial is None else self.serial
            raise EndpointError(self.name, f"cannot listen on {where}") from exc
        if self.protocol == "modbus-tcp" and self.port == 0:
            sockets = getattr(server.transport, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]
        self._server = server
        logger.info("%s: %s serving units %s", self.name, self.protocol, sorted(self.units))

    async def stop(self) -> None:
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restarting
            self._restarting = None
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def drop(self) -> int:
        """Close every client connection now; return how many were closed."""
        if self._server is None:
            return 0
        connections = list(self._server.active_connections.values())
        for connection in connections:
            connection.close()
        return len(connections)

    def restart(self, downtime: float) -> None:
        """Stop serving (connections drop), and serve again after ``downtime`` seconds."""
        if self._restarting is not None and not self._restarting.done():
            return
        self._restarting = asyncio.get_running_loop().create_task(
            self._restart(downtime), name=f"restart {self.name}"
        )

    async def _restart(self, downtime: float) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        logger.info("%s: down for %.1f s", self.name, downtime)
        await asyncio.sleep(downtime)
        await self.start()
